"""Open sealed labels (secret names, descriptions, labels) for display, on the operator's side.

The control plane only ever holds sealed labels (``kvl1.…``); the organisation's metadata key,
kept in the operator's keyring, opens them here. Without the key — or for a label that does not
open with it — the secret is shown by its opaque id.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from common.errors import IntegrityError

if TYPE_CHECKING:
    from apps.core.keyring_store import CredentialStore
    from common.metadata_key import MetadataKey

LabelState = Literal["open", "no_key", "no_label", "unreadable"]

STATE_NOTES: dict[str, str] = {
    "open": "",
    "no_key": "no metadata key in this keyring",
    "no_label": "the agent sends no label (it has no metadata key)",
    "unreadable": "the label does not open with this metadata key",
}


@dataclass(frozen=True)
class OpenedLabel:
    """What a sealed label says, or why it cannot be read."""

    secret_id: str
    state: LabelState
    name: str | None = None
    description: str | None = None
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def display(self) -> str:
        """The name when the label opened, else the opaque id."""
        return self.name if self.name else self.secret_id

    @property
    def note(self) -> str:
        """Why the name is not shown ('' when it is)."""
        return STATE_NOTES[self.state]


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def open_label(
    key: MetadataKey | None, vault_id: str, secret_id: str, label: str | None
) -> OpenedLabel:
    """Open one secret's sealed label with ``key`` (None: show the opaque id)."""
    if not label:
        return OpenedLabel(secret_id, "no_label")
    if key is None:
        return OpenedLabel(secret_id, "no_key")
    try:
        doc = key.open(vault_id, secret_id, label)
    except IntegrityError:
        return OpenedLabel(secret_id, "unreadable")
    raw_labels = doc.get("labels")
    labels = {str(k): str(v) for k, v in raw_labels.items()} if isinstance(raw_labels, dict) else {}
    return OpenedLabel(
        secret_id,
        "open",
        name=_text(doc.get("name")),
        description=_text(doc.get("description")),
        labels=labels,
    )


class LabelOpener:
    """Opens the labels of one vault's inventory with the organisation's key (if any)."""

    def __init__(self, key: MetadataKey | None, vault_id: str) -> None:
        self.key = key
        self.vault_id = vault_id

    @classmethod
    def from_store(cls, store: CredentialStore, org_id: str, vault_id: str) -> LabelOpener:
        """An opener with the organisation's metadata key from the keyring (or without one)."""
        return cls(store.get_metadata_key(org_id), vault_id)

    @property
    def has_key(self) -> bool:
        """Whether names can be shown at all."""
        return self.key is not None

    def open(self, item: dict[str, Any]) -> OpenedLabel:
        """Open an inventory item's ``label`` (the item needs ``secret_id``)."""
        return open_label(self.key, self.vault_id, str(item["secret_id"]), item.get("label"))

    def __repr__(self) -> str:
        return f"LabelOpener(vault_id={self.vault_id!r}, has_key={self.has_key})"
