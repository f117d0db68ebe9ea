"""``keyvault vaults …``: the fleet as the control plane sees it — status, enrollment, inventory
(names opened locally with the metadata key) and commands (rotate, resync)."""

from __future__ import annotations

import shlex
from typing import Any

import click

from apps.cli.operator import (
    CommandFailedError,
    current_session,
    echo_json,
    operator_api,
    table,
    wait_for,
)
from apps.core.intents import IntentMaker
from common.cliutil import friendly_errors

GATEWAY_PLACEHOLDER = "https://<control-plane-host>:8444"

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")


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
@click.argument("vault_id")
@json_option
@friendly_errors
def show_cmd(vault_id: str, as_json: bool) -> None:
    """One vault: status, certificate, health."""
    session = current_session()
    with operator_api(session) as cp:
        vault = cp.get_vault(vault_id)
    if as_json:
        echo_json(vault)
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
        if key in vault:
            click.echo(f"{key + ':':<23}{'-' if vault[key] is None else vault[key]}")
    health = vault.get("health") or {}
    if health:
        click.echo("health:")
        width = max(len(key) for key in health) + 2
        for key in sorted(health):
            value = health[key]
            if isinstance(value, dict):
                value = "  ".join(f"{k}={v}" for k, v in value.items())
            click.echo(f"  {key + ':':<{width}}{'-' if value is None else value}")


@vaults_group.command("revoke")
@click.argument("vault_id")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@friendly_errors
def revoke_cmd(vault_id: str, yes: bool) -> None:
    """Revoke a vault: its certificate stops working on its next connection."""
    session = current_session()
    if not yes:
        click.confirm(f"Revoke vault {vault_id}? Its agent will be refused from now on", abort=True)
    with operator_api(session) as cp:
        vault = cp.revoke_vault(vault_id)
    click.echo(f"vault {vault['id']} ({vault.get('name', '')}) revoked")


@vaults_group.command("enroll-token")
@click.option(
    "--ttl",
    type=click.IntRange(10, 7 * 86400),
    help="Lifetime in seconds (default: the control plane's, usually 1 hour).",
)
@click.option("--description", default="", help="What the token is for (shown in listings).")
@click.option(
    "--gateway-url",
    envvar="KEYVAULT_GATEWAY_URL",
    help="The control plane's agent gateway, e.g. https://cp.example.com:8444 (remembered).",
)
@friendly_errors
def enroll_token_cmd(ttl: int | None, description: str, gateway_url: str | None) -> None:
    """Make a single-use enrollment token and print the command to run on the agent host.

    The token is shown once; it is not stored anywhere here.
    """
    session = current_session()
    with operator_api(session) as cp:
        created = cp.create_enrollment_token(description, ttl)
    if gateway_url:
        gateway_url = gateway_url.strip().rstrip("/")
        if gateway_url != session.profile.gateway_url:
            session.remember(gateway_url=gateway_url)
    gateway = gateway_url or session.profile.gateway_url
    target = shlex.quote(gateway) if gateway else GATEWAY_PLACEHOLDER
    token = created["token"]
    click.echo(
        f"enrollment token {created['id']} (single use, expires {created.get('expires_at')}):"
    )
    click.echo(f"  {token}")
    click.echo("")
    click.echo("Run this on the agent host:")
    click.echo(f"  keyvault agent enroll --control-plane {target} --token {shlex.quote(token)}")
    if not gateway:
        click.echo(
            "(replace the placeholder with the control plane's gateway URL, or pass --gateway-url)",
            err=True,
        )


@vaults_group.command("inventory")
@click.argument("vault_id")
@json_option
@friendly_errors
def inventory_cmd(vault_id: str, as_json: bool) -> None:
    """A vault's secrets: names opened with the metadata key from your keyring, opaque ids
    without it. Never any value."""
    from apps.core.labels import LabelOpener

    session = current_session()
    with operator_api(session) as cp:
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
        click.echo(f"vault {vault_id} reports no secrets")
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


def _send(vault_id: str, command: str, args: dict[str, Any], wait: bool, timeout: float) -> None:
    session = current_session()
    maker = IntentMaker(session.metadata_key)
    with operator_api(session) as cp:
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
    """The agent's message (``result`` is its text; an object's ``message`` is accepted too)."""
    result = cmd.get("result")
    if isinstance(result, dict):
        result = result.get("message")
    bits = [str(result) if result else ""]
    if cmd.get("version") is not None:
        bits.append(f"version {cmd['version']}")
    return ", ".join(b for b in bits if b)


def _report(cmd: dict[str, Any]) -> None:
    message = _result_message(cmd)
    if cmd.get("state") == "failed":
        raise CommandFailedError(
            f"command {cmd['id']} ({_describe(cmd)}) failed" + (f": {message}" if message else "")
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
@click.argument("vault_id")
@click.argument("secret_id")
@wait_option
@timeout_option
@friendly_errors
def rotate_cmd(vault_id: str, secret_id: str, wait: bool, timeout: float) -> None:
    """Ask a vault to rotate one secret (by its opaque id, as `vaults inventory` shows)."""
    _send(vault_id, "rotate", {"secret_id": secret_id}, wait, timeout)


@vaults_group.command("resync")
@click.argument("vault_id")
@wait_option
@timeout_option
@friendly_errors
def resync_cmd(vault_id: str, wait: bool, timeout: float) -> None:
    """Ask a vault to send its whole inventory again."""
    _send(vault_id, "resync", {}, wait, timeout)


@vaults_group.command("commands")
@click.argument("vault_id")
@json_option
@friendly_errors
def commands_cmd(vault_id: str, as_json: bool) -> None:
    """The commands sent to a vault and their states."""
    session = current_session()
    maker = IntentMaker(session.metadata_key)
    with operator_api(session) as cp:
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
