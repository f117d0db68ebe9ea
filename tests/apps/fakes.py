"""Keyring backends that are not OS keyrings, to check they are refused (or allowed explicitly)."""

from __future__ import annotations

from keyring.backend import KeyringBackend

STORE: dict[tuple[str, str], str] = {}


class PlaintextKeyring(KeyringBackend):
    """Stands in for a plaintext file keyring (keyrings.alt's PlaintextKeyring)."""

    priority = 0.5  # type: ignore[assignment]

    def get_password(self, service: str, username: str) -> str | None:
        return STORE.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        STORE[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        STORE.pop((service, username), None)
