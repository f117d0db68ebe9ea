"""``keyvault vaults …``: the fleet as the control plane sees it — status, enrollment, inventory
(names opened locally with the metadata key) and commands (rotate, resync)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from apps.cli.operator import current_session, echo_json, operator_api, table, wait_for
from apps.core.intents import IntentMaker
from apps.core.outcomes import CommandFailedError, failure_kind, result_text
from common.cliutil import friendly_errors
from common.errors import NotFoundError

if TYPE_CHECKING:
    from common.cpclient import ControlPlaneClient

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
vault_argument = click.argument("vault", metavar="VAULT")


def resolve_vault(cp: ControlPlaneClient, ref: str) -> dict[str, Any]:
    """The vault named ``ref`` or with id ``ref`` (an id is looked up directly first)."""
    from apps.core.names import VAULT_PREFIX, find_vault

    if ref.startswith(VAULT_PREFIX):
        try:
            return dict(cp.get_vault(ref))
        except NotFoundError:
            pass
    return find_vault(cp.iter_vaults(), ref)


def resolve_secret(cp: ControlPlaneClient, vault_id: str, ref: str) -> str:
    """The opaque id of the secret named ``ref`` (or with id ``ref``) in a vault's inventory;
    an id-shaped ``ref`` absent from the inventory is passed on for the agent to judge."""
    from apps.core.labels import LabelOpener
    from apps.core.names import SECRET_PREFIX, find_secret

    opener = LabelOpener(current_session().metadata_key(), vault_id)
    try:
        return find_secret(cp.iter_inventory(vault_id), opener, ref)
    except NotFoundError:
        if ref.startswith(SECRET_PREFIX) and ref.isascii() and ref.replace("_", "").isalnum():
            return ref
        raise


@click.group("vaults")
def vaults_group() -> None:
    """Your organisation's vaults (agents): status, enrollment, inventory, commands."""


@vaults_group.command("list")
@json_option
@friendly_errors
def list_cmd(as_json: bool) -> None:
    """Every vault with its live status."""
    session = current_session()
    with operator_api(session) as cp:
        vaults = list(cp.iter_vaults())
    if as_json:
        echo_json(vaults)
        return
    if not vaults:
        click.echo("no vaults yet; enroll one with `keyvault vaults enroll-token`")
        return
    rows = [
        (
            v["id"],
            v.get("name"),
            v.get("status"),
            v.get("agent_version"),
            v.get("last_heartbeat_at"),
        )
        for v in vaults
    ]
    click.echo(table(("ID", "NAME", "STATUS", "AGENT", "LAST HEARTBEAT"), rows))


@vaults_group.command("show")
@vault_argument
@json_option
@friendly_errors
def show_cmd(vault: str, as_json: bool) -> None:
    """One vault (VAULT is its name or id): status, certificate, health."""
    session = current_session()
    with operator_api(session) as cp:
        doc = resolve_vault(cp, vault)
    if as_json:
        echo_json(doc)
        return
    for key in (
        "id",
        "name",
        "status",
        "agent_version",
        "created_at",
        "last_heartbeat_at",
        "certificate_serial",
        "certificate_not_after",
        "revoked_at",
    ):
        if key in doc:
            click.echo(f"{key + ':':<23}{'-' if doc[key] is None else doc[key]}")
    health = doc.get("health") or {}
    if health:
        click.echo("health:")
        width = max(len(key) for key in health) + 2
        for key in sorted(health):
            value = health[key]
            if isinstance(value, dict):
                value = "  ".join(f"{k}={v}" for k, v in value.items())
            click.echo(f"  {key + ':':<{width}}{'-' if value is None else value}")


@vaults_group.command("revoke")
@vault_argument
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@friendly_errors
def revoke_cmd(vault: str, yes: bool) -> None:
    """Revoke a vault (by name or id): its certificate stops working on its next connection.

    This cannot be undone; without --yes you type the vault's name to confirm."""
    session = current_session()
    with operator_api(session) as cp:
        doc = resolve_vault(cp, vault)
        label = str(doc.get("name") or doc["id"])
        if not yes:
            typed = click.prompt(
                f"Revoking {label} ({doc['id']}) cannot be undone; its agent will be refused "
                f"from now on. Type {label!r} to confirm",
                default="",
                show_default=False,
            )
            if typed.strip() != label:
                raise click.Abort()
        revoked = cp.revoke_vault(str(doc["id"]))
    click.echo(f"vault {revoked['id']} ({revoked.get('name', '')}) revoked")


@vaults_group.command("enroll-token")
@click.option(
    "--ttl",
    type=click.IntRange(10, 7 * 86400),
    help="Lifetime in seconds (default: the control plane's, usually 1 hour).",
)
@click.option("--name", help="The new vault's name (default: the agent host's name).")
@click.option(
    "--metadata-key-file",
    help="The key file's name on the agent host (default keyvault-metadata.key when this "
    "keyring holds the organisation's key).",
)
@click.option("--description", default="", help="What the token is for (shown in listings).")
@click.option(
    "--gateway-url",
    envvar="KEYVAULT_GATEWAY_URL",
    help="The control plane's agent gateway, e.g. https://cp.example.com:8444 (remembered).",
)
@friendly_errors
def enroll_token_cmd(
    ttl: int | None,
    name: str | None,
    metadata_key_file: str | None,
    description: str,
    gateway_url: str | None,
) -> None:
    """Make a single-use enrollment token and print the one command to run on the agent host.

    The command alone goes to standard output (`> enroll.sh` keeps it); what it is and until
    when it works go to standard error. The token is shown once and stored nowhere here.
    """
    from apps.core.metadata_keys import DEFAULT_KEY_FILE
    from apps.core.viewmodels.enrollment import enroll_command

    session = current_session()
    with operator_api(session) as cp:
        created = cp.create_enrollment_token(description or (name or ""), ttl)
    if gateway_url:
        gateway_url = gateway_url.strip().rstrip("/")
        if gateway_url != session.profile.gateway_url:
            session.remember(gateway_url=gateway_url)
    gateway = gateway_url or session.profile.gateway_url or created.get("gateway_url")
    click.echo(
        f"enrollment token {created['id']} (single use, expires {created.get('expires_at')}); "
        "run this on the agent host:",
        err=True,
    )
    key_file = metadata_key_file or (DEFAULT_KEY_FILE if session.metadata_key() else None)
    click.echo(enroll_command(gateway, created["token"], name, key_file))
    if key_file:
        click.echo(f"(copy {key_file} next to it on the agent host)", err=True)
    if not gateway:
        click.echo(
            "(replace the placeholder with the control plane's gateway URL, or pass --gateway-url)",
            err=True,
        )


@vaults_group.command("inventory")
@vault_argument
@json_option
@friendly_errors
def inventory_cmd(vault: str, as_json: bool) -> None:
    """A vault's secrets (VAULT is its name or id): names opened with the metadata key from
    your keyring, opaque ids without it. Never any value."""
    from apps.core.labels import LabelOpener

    session = current_session()
    with operator_api(session) as cp:
        vault_id = str(resolve_vault(cp, vault)["id"])
        items = list(cp.iter_inventory(vault_id))
    opener = LabelOpener(session.metadata_key(), vault_id)
    opened = [opener.open(item) for item in items]
    if as_json:
        echo_json(
            [
                {**item, "name": o.name, "description": o.description, "labels": o.labels}
                if o.state == "open"
                else {**item, "name": None, "label_state": o.state}
                for item, o in zip(items, opened, strict=True)
            ]
        )
        return
    if not items:
        click.echo(f"vault {vault} reports no secrets")
        return
    rows = []
    for item, o in zip(items, opened, strict=True):
        rotation = item.get("rotation") or {}
        rows.append(
            (
                o.display if o.state == "open" else f"{o.secret_id} *",
                item.get("version"),
                rotation.get("state"),
                rotation.get("next_due_at"),
                item.get("policy_id"),
                item.get("updated_at"),
                "deleted" if item.get("deleted_at") else "live",
            )
        )
    click.echo(
        table(("SECRET", "VERSION", "ROTATION", "NEXT DUE", "POLICY", "UPDATED", "STATE"), rows)
    )
    notes = sorted({o.note for o in opened if o.state != "open"})
    if notes:
        hint = ""
        if not opener.has_key:
            hint = " — import the key file with `keyvault org metadata-key import FILE`"
        click.echo(f"* shown by opaque id: {'; '.join(notes)}{hint}", err=True)


def _opened(cmd: dict[str, Any], maker: IntentMaker | None) -> dict[str, Any]:
    """A listed command with its sealed intent opened locally (as it was, when it cannot be)."""
    body = maker.open(cmd.get("intent")) if maker is not None and "intent" in cmd else None
    return {**cmd, **body} if body else cmd


def _describe(cmd: dict[str, Any]) -> str:
    args = cmd.get("args") or {}
    target = f" {args['secret_id']}" if args.get("secret_id") else ""
    return f"{cmd.get('command')}{target}"


def _send(vault: str, command: str, secret: str | None, wait: bool, timeout: float) -> None:
    session = current_session()
    maker = IntentMaker(session.metadata_key)
    with operator_api(session) as cp:
        vault_id = str(resolve_vault(cp, vault)["id"])
        args = {"secret_id": resolve_secret(cp, vault_id, secret)} if secret else {}
        cmd = _opened(cp.send_command(vault_id, maker.command(vault_id, command, args)), maker)
        click.echo(f"command {cmd['id']} ({_describe(cmd)}) is {cmd['state']}")
        if not wait:
            return
        from common.cpclient import COMMAND_DONE

        final = wait_for(
            lambda: cp.get_command(cmd["id"]),
            lambda doc: doc.get("state") in COMMAND_DONE,
            what=f"command {cmd['id']}",
            timeout=timeout,
        )
    _report(_opened(final, maker))


def _result_message(cmd: dict[str, Any]) -> str:
    """The agent's message, with the new version when there is one."""
    bits = [result_text(cmd)]
    if cmd.get("version") is not None:
        bits.append(f"version {cmd['version']}")
    return ", ".join(b for b in bits if b)


def _report(cmd: dict[str, Any]) -> None:
    message = _result_message(cmd)
    if cmd.get("state") == "failed":
        raise CommandFailedError(
            f"command {cmd['id']} ({_describe(cmd)}) failed" + (f": {message}" if message else ""),
            failure_kind(result_text(cmd)),
        )
    click.echo(f"command {cmd['id']} {cmd['state']}" + (f": {message}" if message else ""))


wait_option = click.option("--wait", is_flag=True, help="Wait until the vault reports the result.")
timeout_option = click.option(
    "--timeout",
    type=click.FloatRange(0, 3600),
    default=60.0,
    show_default=True,
    help="Seconds to wait with --wait.",
)


@vaults_group.command("rotate")
@vault_argument
@click.argument("secret", metavar="SECRET")
@wait_option
@timeout_option
@friendly_errors
def rotate_cmd(vault: str, secret: str, wait: bool, timeout: float) -> None:
    """Ask VAULT to rotate SECRET (each by name or id; secret names are opened with your
    metadata key). With --wait, a failure exits as `keyvault secrets rotate` would."""
    _send(vault, "rotate", secret, wait, timeout)


@vaults_group.command("resync")
@vault_argument
@wait_option
@timeout_option
@friendly_errors
def resync_cmd(vault: str, wait: bool, timeout: float) -> None:
    """Ask VAULT (name or id) to send its whole inventory again."""
    _send(vault, "resync", None, wait, timeout)


@vaults_group.command("commands")
@vault_argument
@json_option
@friendly_errors
def commands_cmd(vault: str, as_json: bool) -> None:
    """The commands sent to VAULT (name or id) and their states."""
    session = current_session()
    maker = IntentMaker(session.metadata_key)
    with operator_api(session) as cp:
        vault_id = str(resolve_vault(cp, vault)["id"])
        items = [_opened(c, maker) for c in cp.iter_commands(vault_id)]
    if as_json:
        echo_json(items)
        return
    rows = [
        (c["id"], _describe(c), c.get("state"), c.get("created_at"), _result_message(c))
        for c in items
    ]
    click.echo(table(("ID", "COMMAND", "STATE", "CREATED", "RESULT"), rows))


@vaults_group.command("command")
@click.argument("command_id")
@json_option
@friendly_errors
def command_cmd(command_id: str, as_json: bool) -> None:
    """One command's state and result."""
    session = current_session()
    with operator_api(session) as cp:
        cmd = _opened(cp.get_command(command_id), IntentMaker(session.metadata_key))
    if as_json:
        echo_json(cmd)
        return
    message = _result_message(cmd)
    click.echo(
        f"command {cmd['id']} ({_describe(cmd)}) on {cmd.get('vault_id')}: {cmd.get('state')}"
        + (f": {message}" if message else "")
    )
