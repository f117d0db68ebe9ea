"""The README as a new user walks it: every ``sh`` block, in order, in one shell, in a fresh
folder, with the ``keyvault`` the README puts on PATH.

Only blocks marked ``<!-- readme-test: set-up -->`` (the two commands that make .venv),
``remote host`` (they need a real remote host), ``long-running`` (the benchmarks) or ``pending``
(the policy example until ``keyvault policies`` lands) are left out, and the test checks that
nothing else is. The default ports (agent 8080, control plane 8443/8444) are moved to
free ones so the walk never meets another program; everything else runs as written.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.apps.secret_service import MissingTool, secret_service
from tests.conftest import need_service

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
MARK = re.compile(r"<!-- readme-test: (?P<mark>[a-z -]+?)(?: —[^>]*)? -->")
BLOCK = re.compile(r"^```sh\n(?P<body>.*?)^```", re.M | re.S)
SKIPPED = {"set-up", "remote host", "long-running", "pending"}
DEFAULT_PORTS = (8080, 8443, 8444)


@dataclass(frozen=True)
class Block:
    """One ``sh`` block: where it starts, how it is marked, its text."""

    line: int
    mark: str | None
    body: str


def blocks(text: str) -> list[Block]:
    """Every ``sh`` block with the mark on the line before it (if any)."""
    found = []
    for match in BLOCK.finditer(text):
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        mark = MARK.fullmatch(before.strip())
        found.append(
            Block(
                text.count("\n", 0, match.start()) + 1,
                mark["mark"] if mark else None,
                match["body"],
            )
        )
    return found


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def script(found: list[Block], ports: dict[int, int]) -> str:
    """One bash script: stop at the first failing command, name the block it was in."""
    lines = [
        "set -euo pipefail",
        "trap 'kill $(jobs -p) 2>/dev/null || true; wait || true' EXIT",
        f"cd {ROOT}",
    ]
    for block in found:
        if block.mark in SKIPPED:
            continue
        body = block.body
        for default, free in ports.items():
            body = re.sub(rf"(?<![0-9]){default}(?![0-9])", str(free), body)
        lines.append(f"echo '>>> README block at line {block.line}' >&2")
        lines.append(body)
    lines.append("echo '>>> README walked to the end' >&2")
    return "\n".join(lines) + "\n"


@pytest.fixture
def keyring(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A private, unlocked Secret Service for the operator's commands."""
    try:
        with secret_service(tmp_path / "keyring") as env:
            yield env
    except MissingTool as exc:
        need_service("gnome-keyring", exc)


def test_only_set_up_and_remote_blocks_are_marked() -> None:
    found = blocks(README.read_text(encoding="utf-8"))
    assert len(found) >= 6
    marks = [b.mark for b in found if b.mark is not None]
    assert set(marks) <= SKIPPED, marks
    set_up = [b for b in found if b.mark == "set-up"]
    commands = [ln for b in set_up for ln in b.body.splitlines() if ln.strip()]
    assert [c.split()[0] for c in commands] == ["./scripts/demo.sh", "./scripts/test.sh"]
    assert marks.count("long-running") <= 1 and "pending" not in marks, marks
    long = [b for b in found if b.mark == "long-running"]
    assert all(
        ln.startswith(".venv/bin/python -m bench") for b in long for ln in b.body.splitlines()
    )
    for block in found:
        if block.mark is None:
            assert "$CP" not in block.body and "$SESSION" not in block.body, block.line
            code = "\n".join(re.sub(r"(^|\s)#.*$", "", ln) for ln in block.body.splitlines())
            assert "…" not in code, f"a placeholder in the block at line {block.line}"


def test_every_command_block_runs_in_order(keyring: dict[str, str], tmp_path: Path) -> None:
    found = blocks(README.read_text(encoding="utf-8"))
    ports = dict(zip(DEFAULT_PORTS, _free_ports(len(DEFAULT_PORTS)), strict=True))
    walk = tmp_path / "walk.sh"
    walk.write_text(script(found, ports), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KEYVAULT_", "VAULT_"))}
    venv_bin = str(ROOT / ".venv" / "bin")
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if p != venv_bin)
    env.update(keyring)
    # the servers' default ports, moved like the URLs in the text
    env["KEYVAULT_PORT"] = str(ports[8080])
    env["KEYVAULT_CP_PORT"] = str(ports[8443])
    env["KEYVAULT_CP_GATEWAY_PORT"] = str(ports[8444])
    env["TMPDIR"] = str(tmp_path)  # the README's `mktemp -d` lands in this test's folder
    proc = subprocess.Popen(
        ["bash", str(walk)],
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=420)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
        pytest.fail(f"the README walk did not finish in time:\n{out[-6000:]}")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, out[-6000:]
    assert ">>> README walked to the end" in out
    assert "Traceback" not in out and "internal error" not in out, out[-6000:]
