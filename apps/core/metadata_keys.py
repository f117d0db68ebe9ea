"""The organisation's metadata key from inside the apps: import a key file, or create a key.

The rules are the CLI's (``keyvault org metadata-key``): an imported key must be the one whose
fingerprint the control plane has registered; only an owner creates one, a key file is never
overwritten, and a failed registration leaves nothing half done. The key goes to the session's
credential store: the OS keyring, or memory under ``--memory-keyring``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common.errors import ConflictError, KeyVaultError, PermissionDeniedError, ValidationError
from common.metadata_key import MetadataKey

if TYPE_CHECKING:
    from apps.core.session import Session

#: the key file's name wherever one is written or named (CLI, apps, the enroll command)
DEFAULT_KEY_FILE = "keyvault-metadata.key"


def _load(path: Path) -> MetadataKey:
    return MetadataKey.load(path.expanduser())


def _free(out: Path) -> Path:
    """``out`` if a key file may be written there (never over an existing file)."""
    out = out.expanduser()
    if out.exists() or out.is_symlink():
        raise ValidationError(
            f"{out} already exists; choose another file (key files are never overwritten)",
            details={"field": "out"},
        )
    if not out.parent.is_dir():
        raise ValidationError(f"folder {out.parent} does not exist", details={"field": "out"})
    return out


async def _org(client: Any) -> tuple[str, str, str | None, str]:
    """(org id, org name, registered fingerprint or None, caller's role)."""
    me = await client.me()
    org = me["org"]
    fingerprint = org.get("metadata_key_fingerprint")
    return str(org["id"]), str(org.get("name") or org["id"]), fingerprint, str(me["user"]["role"])


async def import_key(session: Session, client: Any, path: Path) -> MetadataKey:
    """Load a key file and keep it, if it is the organisation's registered key."""
    key = await asyncio.to_thread(_load, path)
    org_id, org_name, registered, _ = await _org(client)
    if key.fingerprint != registered:
        raise ConflictError(
            f"{path} holds key {key.fingerprint}, but the control plane has "
            f"{registered or 'no key'} registered for {org_name}; use the current key file "
            "(or create a new key, which replaces it)"
        )
    await asyncio.to_thread(session.store.set_metadata_key, org_id, key)
    return key


async def create_key(
    session: Session, client: Any, out: Path, *, replace: bool = False
) -> MetadataKey:
    """Make a key, write the agents' key file ``out`` (0600), keep it, register its fingerprint."""
    out = await asyncio.to_thread(_free, out)
    org_id, _, current, role = await _org(client)
    if role != "owner":
        raise PermissionDeniedError(f"only an owner can create the metadata key; you are {role}")
    if current and not replace:
        raise ConflictError(
            f"the organisation already has a metadata key ({current}); replacing it makes "
            "agents holding the old key file be refused until they get the new one"
        )
    key = MetadataKey.generate()
    previous = await asyncio.to_thread(session.store.get_metadata_key, org_id)
    await asyncio.to_thread(key.save, out)
    try:
        await asyncio.to_thread(session.store.set_metadata_key, org_id, key)
        await client.put_metadata_key(key.fingerprint)
    except KeyVaultError:
        await asyncio.to_thread(out.unlink, missing_ok=True)
        if previous is not None:
            await asyncio.to_thread(session.store.set_metadata_key, org_id, previous)
        else:
            await asyncio.to_thread(session.store.delete_metadata_key, org_id)
        raise
    return key
