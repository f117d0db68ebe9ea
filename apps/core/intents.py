"""The operator's side of sealed intents: every policy, deletion and command is made here, once.

The CLI, the TUI and the desktop app all go through :class:`IntentMaker`, which seals with the
organisation's metadata key from the keyring (:mod:`common.intents`), and open what the control
plane lists (sealed policies and commands) with the same key for display. Without the key an
operator can still see the clear fields, but cannot make anything an agent would run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from common import intents, uplink
from common.errors import ConfigError, IntegrityError, ValidationError
from common.metadata_key import MetadataKey

KeySource = Callable[[], MetadataKey | None]
NO_KEY = (
    "this keyring holds no metadata key for the organisation, and agents run only what it "
    "seals: import it with `keyvault org metadata-key import --file FILE` and try again"
)


class IntentMaker:
    """Seals intents for agents and opens the ones the control plane lists."""

    def __init__(self, key_source: KeySource) -> None:
        self._key_source = key_source

    def _keys(self) -> intents.IntentKeys:
        key = self._key_source()
        if key is None:
            raise ConfigError(NO_KEY)
        return intents.IntentKeys(key)

    @property
    def has_key(self) -> bool:
        """Whether sealing (and opening) is possible now."""
        return self._key_source() is not None

    # ------------------------------------------------------------------ making
    def policy(
        self, fields: dict[str, Any], *, policy_id: str | None = None, revision: int = 1
    ) -> dict[str, Any]:
        """The ``{"intent": …}`` body that creates (or, with ``policy_id`` and the next
        ``revision``, replaces) a policy from checked form fields (``PolicyDraft.validate``)."""
        scope = fields.get("scope") or {"all": True}
        header = intents.policy_header(
            policy_id or intents.new_id("pol"),
            revision,
            interval_seconds=int(fields["interval_seconds"]),
            notice_seconds=int(fields.get("notice_seconds") or 0),
            vault_ids=None if scope.get("all") else list(scope["vault_ids"]),
        )
        body = {k: fields[k] for k in ("name", "selector", "rotator")}
        return {"intent": self._keys().seal(header, body)}

    def delete_policy(self, policy_id: str, revision: int) -> dict[str, Any]:
        """The ``{"intent": …}`` body that deletes a policy (``revision`` above its last one)."""
        return {"intent": self._keys().seal(intents.delete_header(policy_id, revision), {})}

    def command(self, vault_id: str, command: str, args: dict[str, Any]) -> dict[str, Any]:
        """The ``{"intent": …}`` body of a ``rotate``/``resync`` command to one vault."""
        if command not in ("rotate", "resync"):
            raise ValidationError("command must be rotate or resync")
        if command == "rotate":
            if set(args) != {"secret_id"}:
                raise ValidationError('rotate takes args {"secret_id": "sec_…"} and nothing else')
            uplink.opaque_id(args["secret_id"], "args.secret_id")
        elif args:
            raise ValidationError("resync takes no args")
        header = intents.command_header(vault_id)
        return {"intent": self._keys().seal(header, {"command": command, "args": dict(args)})}

    # ------------------------------------------------------------------ opening
    def open(self, doc: Any) -> dict[str, Any] | None:
        """The opened body of a listed intent, or None without a key or when it does not verify
        (the app then shows it as sealed)."""
        key = self._key_source()
        if key is None or not isinstance(doc, dict):
            return None
        try:
            return intents.IntentKeys(key).open(doc).body
        except (IntegrityError, ValidationError):
            return None
