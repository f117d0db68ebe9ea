"""``keyvault secrets …`` and ``keyvault run``: workload commands against an agent."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click

from common.cliutil import agent_options, client_config, friendly_errors, make_client
from common.errors import NotFoundError, ValidationError


@click.group("secrets")
def secrets_group() -> None:
    """Read and write secrets on an agent (values never leave your network)."""


def _labels(items: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValidationError(f"--label {item!r} must look like key=value")
        out[key] = value
    return out


def _value(value: str | None, from_stdin: bool, keep_newline: bool) -> str:
    """The value to store: standard input loses one trailing newline unless asked to keep it."""
    if keep_newline and not (from_stdin or value == "-"):
        raise click.UsageError("--keep-newline applies only to a value read with --stdin or '-'")
    if from_stdin or value == "-":
        if from_stdin and value is not None:
            raise click.UsageError("give the value either as VALUE or with --stdin, not both")
        data = sys.stdin.read()
        if keep_newline:
            return data
        if data.endswith("\r\n"):
            return data[:-2]
        return data[:-1] if data.endswith("\n") else data
    if value is None:
        return str(click.prompt("Value", hide_input=True, confirmation_prompt=True))
    return value


@secrets_group.command("put")
@click.argument("name")
@click.argument("value", required=False)
@click.option(
    "--stdin",
    "from_stdin",
    is_flag=True,
    help="Read the value from standard input; one trailing newline is removed.",
)
@click.option(
    "--keep-newline",
    is_flag=True,
    help="With --stdin: keep the value exactly as read, trailing newline included.",
)
@click.option("--description", help="What the secret is for.")
@click.option("--label", "labels", multiple=True, help="key=value label. Repeatable.")
@agent_options
@friendly_errors
def put_cmd(
    name: str,
    value: str | None,
    from_stdin: bool,
    keep_newline: bool,
    description: str | None,
    labels: tuple[str, ...],
    **conn: Any,
) -> None:
    """Create NAME, or add a new version if it exists. VALUE '-' or --stdin reads standard input
    and removes one trailing newline (as `echo` and editors add one; --keep-newline keeps it);
    with no VALUE you are asked for it (so it stays out of your shell history)."""
    from common.errors import ConflictError

    secret = _value(value, from_stdin, keep_newline)
    with make_client(client_config(**conn)) as kv:
        try:
            meta = kv.create(name, secret, description or "", _labels(labels))
        except ConflictError:
            meta = kv.update(name, secret, description, _labels(labels) if labels else None)
    click.echo(f"{meta['name']}: version {meta['version']} ({meta['id']})")


@secrets_group.command("get")
@click.argument("name")
@click.option("--version", type=int, help="An older version.")
@click.option("--json", "as_json", is_flag=True, help="Print value and metadata as JSON.")
@agent_options
@friendly_errors
def get_cmd(name: str, version: int | None, as_json: bool, **conn: Any) -> None:
    """Print the value of NAME (or id)."""
    with make_client(client_config(**conn)) as kv:
        doc = kv.get(name, version)
    click.echo(json.dumps(doc, indent=2) if as_json else doc["value"])


@secrets_group.command("list")
@click.option("--prefix", default="", help="Only names starting with this.")
@click.option("--deleted", is_flag=True, help="List soft-deleted secrets instead.")
@agent_options
@friendly_errors
def list_cmd(prefix: str, deleted: bool, **conn: Any) -> None:
    """List names, versions and labels (never values)."""
    with make_client(client_config(**conn)) as kv:
        after = None
        while True:
            page = kv.list(prefix, after, 500, deleted)
            for m in page["secrets"]:
                labels = ",".join(f"{k}={v}" for k, v in sorted(m["labels"].items()))
                click.echo(f"{m['name']:<40} v{m['version']:<4} {m['updated_at'][:19]}  {labels}")
            after = page["next"]
            if not after:
                break


@secrets_group.command("versions")
@click.argument("name")
@agent_options
@friendly_errors
def versions_cmd(name: str, **conn: Any) -> None:
    """Show NAME's versions."""
    with make_client(client_config(**conn)) as kv:
        doc = kv.versions(name)
    for v in doc["versions"]:
        click.echo(
            f"v{v['version']:<4} {v['created_at'][:19]}  {v['origin']:<7}{'  (current)' if v['current'] else ''}"
        )


@secrets_group.command("rotate")
@click.argument("name")
@click.option("--length", type=click.IntRange(8, 1024), help="Length of the new value.")
@click.option("--no-symbols", is_flag=True, help="Letters and digits only.")
@agent_options
@friendly_errors
def rotate_cmd(name: str, length: int | None, no_symbols: bool, **conn: Any) -> None:
    """Give NAME a new random value (the old one stays as a version)."""
    spec: dict[str, Any] = {}
    if length:
        spec["length"] = length
    if no_symbols:
        spec["classes"] = ["lower", "upper", "digits"]
    with make_client(client_config(**conn)) as kv:
        meta = kv.rotate(name, spec)
    click.echo(f"{meta['name']}: rotated to version {meta['version']}")


@secrets_group.command("rm")
@click.argument("name")
@click.option("--destroy", is_flag=True, help="Also erase it for good (no undelete).")
@click.option("--undelete", is_flag=True, help="Bring back a deleted secret instead.")
@agent_options
@friendly_errors
def rm_cmd(name: str, destroy: bool, undelete: bool, **conn: Any) -> None:
    """Delete NAME (soft: it can be undeleted), or with --destroy erase it."""
    if destroy and undelete:
        raise click.UsageError("--destroy and --undelete contradict each other; choose one")
    with make_client(client_config(**conn)) as kv:
        if undelete:
            kv.undelete(name)
            click.echo(f"{name}: restored")
            return
        try:
            kv.delete(name)
        except NotFoundError:
            if not destroy:
                raise
        if destroy:
            kv.destroy(name)
            click.echo(f"{name}: destroyed")
        else:
            click.echo(f"{name}: deleted (undo with: keyvault secrets rm --undelete {name})")


OUR_PREFIXES = ("KEYVAULT_", "VAULT_")


def child_environment(parent: Mapping[str, str]) -> dict[str, str]:
    """The parent's environment without any of our own settings or credentials."""
    return {k: v for k, v in parent.items() if not k.upper().startswith(OUR_PREFIXES)}


@click.command("run", context_settings={"ignore_unknown_options": True})
@click.option(
    "--secret",
    "mappings",
    multiple=True,
    required=True,
    help="ENV=name: put secret NAME into environment variable ENV. Repeatable.",
)
@click.option(
    "--watch",
    is_flag=True,
    help="Stay running: follow the agent's change stream and act when a secret changes.",
)
@click.option(
    "--on-change",
    default="restart",
    show_default=True,
    help="With --watch: 'restart' the child, or 'signal:<SIG>' (e.g. signal:HUP) to it.",
)
@click.option(
    "--grace",
    type=click.FloatRange(0, 3600),
    default=10.0,
    show_default=True,
    help="With --watch: seconds a child has to exit after SIGTERM before SIGKILL.",
)
@click.option(
    "--env-file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="With --watch: also write the values to this file (0600, replaced atomically) "
    "for a signalled child to reread.",
)
@agent_options
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@friendly_errors
def run_cmd(
    mappings: tuple[str, ...],
    watch: bool,
    on_change: str,
    grace: float,
    env_file: Path | None,
    command: tuple[str, ...],
    **conn: Any,
) -> None:
    """Run COMMAND with secrets in its environment: keyvault run --secret DB_PASS=db/pass -- app.

    The child gets the secrets it asked for and the rest of the environment minus every
    ``KEYVAULT_*``/``VAULT_*`` variable: our token, client key, data folder and agent address
    are ours, not the child's. With --watch, a change to one of those secrets restarts the
    child with the new values (or sends it a signal: it then keeps its old environment and
    rereads --env-file).
    """
    pairs = [_mapping(m) for m in mappings]
    if not watch and (env_file is not None or on_change != "restart"):
        raise click.UsageError("--on-change and --env-file apply only with --watch")
    env = child_environment(os.environ)
    cfg = client_config(**conn)
    if watch:
        from apps.cli.watch import Watcher, WatchOptions, parse_on_change

        mode, sig = parse_on_change(on_change)
        options = WatchOptions(mode, sig, grace, env_file)
        sys.exit(Watcher(cfg, pairs, command, env, options).run())
    with make_client(cfg) as kv:
        for var, name in pairs:
            env[var] = kv.get(name)["value"]
    try:
        os.execvpe(command[0], list(command), env)  # noqa: S606 - replacing ourselves is the point
    except OSError as exc:
        raise ValidationError(f"cannot run {command[0]!r}: {exc.strerror}") from None


def _mapping(text: str) -> tuple[str, str]:
    var, sep, name = text.partition("=")
    if not sep or not var.isidentifier() or not name:
        raise ValidationError(f"--secret {text!r} must look like ENV_VAR=secret/name")
    return var, name
