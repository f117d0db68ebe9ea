"""``keyvault secrets import`` and ``keyvault secrets export``: moving secrets in and out.

Import reads a ``.env`` file, a JSON/YAML map or ``bao``/``vault kv get -format=json`` output
(``apps/core/secretfiles.py``), checks every name and value before anything is written, and then
creates, updates or skips each secret with a progress bar; ``--dry-run`` prints the plan (names
only). Export writes values, so it never writes them to a terminal unless ``--output -`` asks
for it, and a file it writes is created 0600 and replaced atomically.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import click

from apps.core import secretfiles
from common.cliutil import agent_options, client_config, friendly_errors, make_client
from common.errors import ConflictError, ValidationError


def _existing(kv: Any, prefix: str) -> set[str]:
    """Every live secret name under ``prefix`` the token may list."""
    names: set[str] = set()
    after = None
    while True:
        page = kv.list(prefix, after, 500, False)
        names.update(m["name"] for m in page["secrets"])
        after = page["next"]
        if not after:
            return names


def _common_prefix(names: list[str]) -> str:
    """The longest prefix all names share (to list existing secrets in one range)."""
    return os.path.commonprefix(names) if names else ""  # noqa: RUF071 - by character is meant


@click.command("import")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True, path_type=Path))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(secretfiles.FORMATS),
    help="File format (default: from the extension, then the content).",
)
@click.option("--prefix", default="", help="Put before every name, e.g. 'app/prod/'.")
@click.option("--dry-run", is_flag=True, help="Show what would be created/updated/skipped.")
@click.option("--overwrite", is_flag=True, help="Give existing secrets the file's value.")
@click.option("--skip-existing", is_flag=True, help="Leave existing secrets as they are.")
@agent_options
@friendly_errors
def import_cmd(
    file: Path,
    fmt: str | None,
    prefix: str,
    dry_run: bool,
    overwrite: bool,
    skip_existing: bool,
    **conn: Any,
) -> None:
    """Import secrets from FILE ('-' reads standard input): .env, JSON or YAML map, or the
    output of `bao kv get -format=json` / `vault kv get -format=json`."""
    if overwrite and skip_existing:
        raise click.UsageError("--overwrite and --skip-existing contradict each other; choose one")
    text = _read(file)
    fmt = fmt or secretfiles.detect(file.name, text)
    entries = secretfiles.parse(text, fmt, prefix)
    if not entries:
        raise ValidationError(f"{file} holds no secrets (read as {fmt})")
    with make_client(client_config(**conn)) as kv:
        existing = _existing(kv, _common_prefix([e.name for e in entries]))
        clashes = [e.name for e in entries if e.name in existing]
        if clashes and not (overwrite or skip_existing):
            shown = ", ".join(clashes[:10]) + (" …" if len(clashes) > 10 else "")
            raise ConflictError(
                f"{len(clashes)} secret(s) already exist ({shown}); nothing was imported. "
                "Pass --overwrite to give them the file's values or --skip-existing to keep them"
            )
        plan = [
            (e, "skip" if e.name in existing and skip_existing else
                "update" if e.name in existing else "create")
            for e in entries
        ]  # fmt: skip
        counts = {k: sum(1 for _, a in plan if a == k) for k in ("create", "update", "skip")}
        if dry_run:
            for entry, action in plan:
                click.echo(f"{action:<7} {entry.name}")
            click.echo(
                f"dry run: would create {counts['create']}, update {counts['update']}, "
                f"skip {counts['skip']}"
            )
            return
        with click.progressbar(
            plan, label="importing", file=sys.stderr, show_pos=True, item_show_func=lambda _: None
        ) as bar:
            for entry, action in bar:
                if action == "create":
                    kv.create(entry.name, entry.value)
                elif action == "update":
                    kv.update(entry.name, entry.value)
    click.echo(
        f"imported: {counts['create']} created, {counts['update']} updated, "
        f"{counts['skip']} skipped"
    )


def _read(file: Path) -> str:
    try:
        raw = sys.stdin.buffer.read() if str(file) == "-" else file.read_bytes()
    except OSError as exc:
        raise ValidationError(f"cannot read {file}: {exc.strerror}") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ValidationError(f"{file} is not UTF-8 text") from None


@click.command("export")
@click.option(
    "--format", "fmt", type=click.Choice(["env", "json"]), default="json", show_default=True
)
@click.option("--prefix", default="", help="Only names starting with this (removed from keys).")
@click.option(
    "--output",
    "-o",
    help="File to write (created 0600, replaced atomically); '-' prints to standard output.",
)
@agent_options
@friendly_errors
def export_cmd(fmt: str, prefix: str, output: str | None, **conn: Any) -> None:
    """Export secret values (all, or those under --prefix) as JSON or .env.

    Values never reach a terminal unasked: without --output, standard output must be a file
    or a pipe; --output - prints them anyway."""
    if output is None and sys.stdout.isatty():
        raise ValidationError(
            "refusing to print secret values to a terminal; use --output FILE, a pipe, "
            "or --output - to print them anyway"
        )
    with make_client(client_config(**conn)) as kv:
        names = sorted(_existing(kv, prefix))
        pairs = []
        with click.progressbar(
            names, label="exporting", file=sys.stderr, show_pos=True, item_show_func=lambda _: None
        ) as bar:
            for name in bar:
                pairs.append((name[len(prefix) :], str(kv.get(name)["value"])))
    text = secretfiles.to_env(pairs) if fmt == "env" else secretfiles.to_json(pairs)
    if output is None or output == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        write_private(Path(output), text.encode())
    click.echo(f"exported {len(pairs)} secret(s)", err=True)


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` as a 0600 file, atomically (temporary file, fsync, rename)."""
    folder = path.parent if str(path.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise ValidationError(f"cannot write in {folder}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise ValidationError(f"cannot write {path}: {exc.strerror}") from None
