"""Find a vault or a secret by what an operator types: its name, or its opaque id.

The control plane knows vault names but only sealed secret names, so a secret is found by
opening its vault's inventory labels locally with the metadata key. Every miss says what was
looked for and how to list what exists; an ambiguous name lists the ids to choose from.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from apps.core.labels import LabelOpener
from common.errors import NotFoundError, ValidationError

VAULT_PREFIX = "vlt_"
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
