"""Find a vault or a secret by what an operator types: its name, or its opaque id.

The control plane knows vault names but only sealed secret names, so a secret is found by
opening its vault's inventory labels locally with the metadata key. Every miss says what was
looked for and how to list what exists; an ambiguous name lists the ids to choose from.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

from apps.core.labels import LabelOpener
from apps.core.timefmt import readable_times
from common.errors import NotFoundError, ValidationError

VAULT_PREFIX = "vlt_"
CONTROL_PLANE = "control_plane"  # an audit entry's source when no vault reported it
SECRET_PREFIX = "sec_"  # noqa: S105 - an id prefix, not a password


def find_vault(vaults: Iterable[dict[str, Any]], ref: str) -> dict[str, Any]:
    """The vault whose id or name is ``ref`` (an id wins; a name must be unique)."""
    ref = ref.strip()
    rows = list(vaults)
    by_id = [v for v in rows if v.get("id") == ref]
    if by_id:
        return by_id[0]
    named = [v for v in rows if v.get("name") == ref]
    if len(named) == 1:
        return named[0]
    if named:
        ids = ", ".join(str(v["id"]) for v in named)
        raise ValidationError(f"{len(named)} vaults are named {ref!r} ({ids}); give the id instead")
    raise NotFoundError(f"no vault {ref} (by name or id); `keyvault vaults list` shows them")


def find_secret(items: Iterable[dict[str, Any]], opener: LabelOpener, ref: str) -> str:
    """The opaque id of the secret whose name or id is ``ref`` in one vault's inventory."""
    ref = ref.strip()
    rows = list(items)
    if any(item.get("secret_id") == ref for item in rows):
        return ref
    opened = [opener.open(item) for item in rows]
    named = [o.secret_id for o in opened if o.state == "open" and o.name == ref]
    if len(named) == 1:
        return named[0]
    if named:
        raise ValidationError(
            f"{len(named)} secrets are named {ref!r} ({', '.join(named)}); give the id instead"
        )
    hint = f"`keyvault vaults inventory {opener.vault_id}` lists them"
    if not opener.has_key and not ref.startswith(SECRET_PREFIX):
        hint = (
            "names are sealed and this keyring holds no metadata key: import it with "
            "`keyvault org metadata-key import FILE`, or give the secret's id"
        )
    raise NotFoundError(f"no secret {ref!r} in vault {opener.vault_id}; {hint}")


ID_PATTERN = re.compile(r"\b(?:vlt|sec|pol|usr|cmd|enr|tok)_[a-z0-9]{4,40}\b")
TOKEN_PREFIX = "tok_"  # noqa: S105 - an id prefix, not a password


def short_token(token_id: str) -> str:
    """An agent token nobody has named, readable: ``tok_3p4zyzgv…`` → ``token 3p4z``
    (its first characters tell two tokens apart; the full id is in the agent's token list)."""
    return f"token {token_id.removeprefix(TOKEN_PREFIX)[:4]}"


Vaults = Callable[[str], str | None]


#: "db-1 (db-1)": a message that named a thing and gave its id, once the id became the name
_SAID_TWICE = re.compile(r"(?<!\S)(\S+) \(\1\)")


class NameBook:
    """Names for the ids the control plane hands out, learned as the apps load data.

    Vault names come from the fleet (``vault_name``), users from what the apps have seen
    (``learn_user``), policies from their list, agent tokens from an agent's token list (an
    unnamed one reads ``token 3p4z``), secret names from inventories opened locally
    with the metadata key (``learn_inventory``; ``forget_secrets`` when the key changes). An id
    nobody has named stays as it is, so nothing is ever hidden (a
    token id is shortened: the control plane never knows its name).
    """

    def __init__(self, vault_name: Vaults | None = None) -> None:
        self._vault_name = vault_name or (lambda _id: None)
        self._names: dict[str, str] = {}
        self._secrets: dict[tuple[str, str], str] = {}
        self._by_secret: dict[str, str] = {}

    def learn(self, object_id: str, name: str | None) -> None:
        """Remember the name of a user, policy, command or token id."""
        if name:
            self._names[object_id] = name

    def learn_inventory(self, vault_id: str, items: Iterable[dict[str, Any]], opener: Any) -> None:
        """Remember the names of one vault's secrets (labels opened with ``opener``)."""
        for item in items:
            opened = opener.open(item)
            if opened.state == "open" and opened.name:
                self._secrets[(vault_id, opened.secret_id)] = opened.name
                self._by_secret[opened.secret_id] = opened.name

    def forget_secrets(self) -> None:
        """Drop every secret name (the metadata key changed)."""
        self._secrets.clear()
        self._by_secret.clear()

    def vault(self, vault_id: str | None) -> str:
        """A vault's name, or its id when unknown ('' for None)."""
        if not vault_id:
            return ""
        return self._vault_name(vault_id) or self._names.get(vault_id) or vault_id

    def secret(self, vault_id: str | None, secret_id: str | None) -> str:
        """A secret's name (opened locally), or its opaque id."""
        if not secret_id:
            return ""
        if vault_id and (vault_id, secret_id) in self._secrets:
            return self._secrets[(vault_id, secret_id)]
        return self._by_secret.get(secret_id, secret_id)

    def source(self, source: str | None) -> str:
        """Where an audit entry comes from: "control plane", or the reporting vault's name."""
        if source == CONTROL_PLANE:
            return "control plane"
        return self.vault(source)

    def label(self, ref: str | None, vault_id: str | None = None) -> str:
        """The name for any id (vault, secret, user, policy…), else the id itself."""
        if not ref:
            return ""
        if ref.startswith(VAULT_PREFIX):
            return self.vault(ref)
        if ref.startswith(SECRET_PREFIX):
            return self.secret(vault_id, ref)
        if ref.startswith(TOKEN_PREFIX) and ref not in self._names:
            return short_token(ref)  # an agent's workload token: named only on its agent
        return self._names.get(ref, ref)

    def humanize(self, text: str, vault_id: str | None = None) -> str:
        """``text`` with every known id replaced by its name and every ISO time made readable
        (alert messages, results: the server's words, as an operator reads them)."""
        named = ID_PATTERN.sub(lambda m: self.label(m.group(0), vault_id), text)
        return readable_times(_SAID_TWICE.sub(r"\1", named))
