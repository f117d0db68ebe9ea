"""``keyvault org metadata-key …``: make, register, export and check the organisation's metadata key.

The key is made here, kept in the OS keyring and written once to a file for the agents
(mode 0600, never overwritten). The control plane only ever receives its fingerprint. No
command prints the key.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from apps.cli.operator import current_session, operator_api
from apps.core.metadata_keys import DEFAULT_KEY_FILE
from common.cliutil import friendly_errors
from common.errors import ConflictError, KeyVaultError, NotFoundError, PermissionDeniedError
from common.errors import ValidationError as BadInput

if TYPE_CHECKING:
    from apps.core.session import Session
    from common.metadata_key import MetadataKey


@click.group("org")
def org_group() -> None:
    """Your organisation on the control plane."""


@org_group.group("metadata-key")
def metadata_key_group() -> None:
    """The key that seals secret names for the control plane (it never sees the key)."""


def _free(out: Path) -> Path:
    if out.exists() or out.is_symlink():
        raise BadInput(
            f"{out} already exists; choose another --out (key files are never overwritten)"
        )
    if not out.parent.is_dir():
        raise BadInput(f"folder {out.parent} does not exist; create it or choose another --out")
    return out


def _undo(session: Session, org_id: str, previous: MetadataKey | None, out: Path) -> None:
    """Nothing half-done: the new file gone, the old key (or none) back in the keyring."""
    out.unlink(missing_ok=True)
    try:
        if previous is not None:
            session.store.set_metadata_key(org_id, previous)
        else:
            session.store.delete_metadata_key(org_id)
    except KeyVaultError:
        pass  # the keyring itself failed: the original error says so


@metadata_key_group.command("create")
@click.option(
    "--out",
    type=click.Path(path_type=Path, dir_okay=False),
    default=Path(DEFAULT_KEY_FILE),
    show_default=True,
    help="Key file to write for the agents (mode 0600; never overwritten).",
)
@click.option(
    "--replace",
    is_flag=True,
    help="Replace the organisation's current key. Agents holding the old key file are then "
    "refused by the control plane until they get the new file.",
)
@friendly_errors
def create_cmd(out: Path, replace: bool) -> None:
    """Make a new metadata key: keep it in the keyring, write the agents' key file, register
    its fingerprint with the control plane (owner role)."""
    from common.metadata_key import MetadataKey

    session = current_session()
    _free(out)
    with operator_api(session) as cp:
        me = cp.me()
        if me["user"]["role"] != "owner":
            raise PermissionDeniedError(
                f"only an owner can register the metadata key; you are {me['user']['role']}"
            )
        org_id = str(me["org"]["id"])
        current = me["org"].get("metadata_key_fingerprint")
        if current and not replace:
            raise ConflictError(
                f"the organisation already has a metadata key ({current}); pass --replace to "
                "make a new one — agents holding the old key file will then be refused by the "
                "control plane until they get the new file"
            )
        key = MetadataKey.generate()
        previous = session.store.get_metadata_key(org_id)
        key.save(out)
        try:
            session.store.set_metadata_key(org_id, key)
            cp.put_metadata_key(key.fingerprint)
        except KeyVaultError:
            _undo(session, org_id, previous, out)
            raise
    click.echo(f"metadata key {key.fingerprint} registered for {me['org']['name']} ({org_id})")
    click.echo("  kept in this OS keyring")
    click.echo(f"  key file for the agents: {out} (mode 0600) — copy it to every agent host")
    if current:
        click.echo(
            "  the previous key is replaced: agents with the old key file are refused until "
            "they get this one",
            err=True,
        )


@metadata_key_group.command("export")
@click.option(
    "--out",
    type=click.Path(path_type=Path, dir_okay=False),
    required=True,
    help="Key file to write (mode 0600; never overwritten).",
)
@friendly_errors
def export_cmd(out: Path) -> None:
    """Write the metadata key from the keyring to a key file for an agent."""
    session = current_session()
    _free(out)
    key = session.metadata_key()
    if key is None:
        raise NotFoundError(
            f"this keyring holds no metadata key for organisation {session.profile.org_id}; "
            "make one with `keyvault org metadata-key create` or import the key file with "
            "`keyvault org metadata-key import FILE`"
        )
    key.save(out)
    click.echo(f"metadata key {key.fingerprint} written to {out} (mode 0600)")


@metadata_key_group.command("import")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@friendly_errors
def import_cmd(file: Path) -> None:
    """Put an existing key file into this keyring (e.g. on a second operator's computer).

    The key must be the one registered with the control plane.
    """
    from common.metadata_key import MetadataKey

    session = current_session()
    key = MetadataKey.load(file)
    with operator_api(session) as cp:
        me = cp.me()
    registered = me["org"].get("metadata_key_fingerprint")
    if key.fingerprint != registered:
        raise ConflictError(
            f"{file} holds key {key.fingerprint}, but the control plane has "
            f"{registered or 'no key'} registered for {me['org']['name']}; use the current key "
            "file (or register a new key with `keyvault org metadata-key create --replace`)"
        )
    session.store.set_metadata_key(str(me["org"]["id"]), key)
    click.echo(f"metadata key {key.fingerprint} imported into this OS keyring")


@metadata_key_group.command("show")
@friendly_errors
def show_cmd() -> None:
    """Show the key's fingerprint (never the key) and whether it matches the control plane's."""
    session = current_session()
    with operator_api(session) as cp:
        me = cp.me()
    registered = me["org"].get("metadata_key_fingerprint")
    key = session.store.get_metadata_key(str(me["org"]["id"]))
    local = key.fingerprint if key else None
    click.echo(f"keyring:       {local or 'no key in this keyring'}")
    click.echo(f"control plane: {registered or 'no key registered'}")
    if local and registered:
        click.echo(f"match:         {'yes' if local == registered else 'NO'}")
