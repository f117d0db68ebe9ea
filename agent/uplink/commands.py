"""Commands from the control plane, each executed at most once per id.

An id is claimed in ``kv_commands`` (state ``running``) before anything runs; the work and its
``command_result`` outbox row then commit in *one* transaction, with the row marked ``done``.
So a command delivered twice runs once, and a crash between claim and finish leaves a
``running`` row that :meth:`CommandRunner.recover` reports as failed -- it is never run again.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from agent.assembly import Agent
from agent.crypto import Clock, utcnow
from agent.generate import GeneratorSpec
from agent.rotation.engine import RotationFailedError
from agent.rotation.limits import Protected
from agent.secrets import ID_RE, SecretMeta
from agent.store.sql import Connection
from agent.uplink import outbox
from common.errors import (
    ConflictError,
    KeyVaultError,
    NotFoundError,
    UnavailableError,
    ValidationError,
)
from common.uplink import COMMANDS, opaque_id

log = logging.getLogger("keyvault.agent.uplink")

# Fixed texts: a result never carries a name or a value.
FAILURES: list[tuple[type[KeyVaultError], str]] = [
    (NotFoundError, "no such secret on this vault (or it is deleted)"),
    (ConflictError, "the secret's state does not allow it"),
    (ValidationError, "the command's arguments are not valid"),
    (UnavailableError, "the agent's store or audit log is unavailable"),
]
INTERRUPTED = "the agent stopped while running this command; it was not retried"
REFUSED = "the agent refused this command: it did not verify as an operator's intent for this vault"
PROTECTED = "the secret is protected by rotation.protected_names in agent.yaml"


def _failure_text(exc: KeyVaultError) -> str:
    for kind, text in FAILURES:
        if isinstance(exc, kind):
            return text
    return "the command failed on the agent; see its log"


class CommandRunner:
    """Runs ``rotate`` and ``resync`` commands for one agent."""

    def __init__(self, agent: Agent, *, clock: Clock = utcnow) -> None:
        self.agent = agent
        self._clock = clock
        self._protected = Protected(agent.settings.rotation)

    def _now(self) -> str:
        return self._clock().isoformat()

    # ------------------------------------------------------------------ bookkeeping
    def _finish(self, command_id: str, result: dict[str, Any]) -> Callable[[Connection], None]:
        """The transaction part that reports ``result`` and marks the command done."""
        now = self._now()

        def part(conn: Connection) -> None:
            outbox.enqueue(conn, outbox.COMMAND_RESULT, result, now)
            conn.execute(
                "UPDATE kv_commands SET state = 'done', finished_at = ?, result = ? WHERE id = ?",
                (now, json.dumps(result), command_id),
            )

        return part

    async def _claim(self, command_id: str, command: str) -> tuple[bool, str | None]:
        """``(claimed, stored result JSON)``: False when this id was seen before."""
        now = self._now()

        def txn(conn: Connection) -> tuple[bool, str | None]:
            seen = conn.execute(
                "SELECT state, result FROM kv_commands WHERE id = ?", (command_id,)
            ).first()
            if seen is not None:
                return False, seen.result
            conn.execute(
                "INSERT INTO kv_commands (id, command, state, received_at) "
                "VALUES (?, ?, 'running', ?)",
                (command_id, command, now),
            )
            return True, None

        return await self.agent.store.write(txn)

    async def recover(self) -> int:
        """Report every command a crash left ``running`` as failed; returns how many."""
        running = await self.agent.store.read(
            lambda c: (
                c.execute("SELECT id FROM kv_commands WHERE state = 'running'").scalars().all()
            )
        )
        for command_id in running:
            result = {"command_id": command_id, "outcome": "failed", "message": INTERRUPTED}
            await self.agent.store.write(self._finish(command_id, result))
        return len(running)

    async def refuse(self, command_id: Any) -> None:
        """Report a command that did not verify as failed, without claiming its id (so a forged
        frame cannot use up the id of an operator's real command)."""
        try:
            checked = opaque_id(command_id, "command id")
        except ValidationError:
            return
        result = {"command_id": checked, "outcome": "failed", "message": REFUSED}
        now = self._now()
        await self.agent.store.write(
            lambda c: outbox.enqueue(c, outbox.COMMAND_RESULT, result, now)
        )

    # ------------------------------------------------------------------ entry point
    async def handle(self, frame: dict[str, Any]) -> None:
        """Run one ``command`` frame (at most once per id); never raises for bad input."""
        try:
            command_id = opaque_id(frame.get("id"), "command id")
        except ValidationError:
            log.warning("ignored a command without a valid id")
            return
        assert command_id is not None
        command, args = frame.get("command"), frame.get("args")
        claimed, stored = await self._claim(command_id, str(command)[:16])
        if not claimed:
            log.info("command %s was received before; not running it again", command_id)
            if stored is not None:  # report again: results are idempotent by command id
                await self._report(command_id, json.loads(stored))
            return
        log.info("running command %s (%s)", command_id, str(command)[:16])
        if command not in COMMANDS or not isinstance(args, dict):
            await self._report(
                command_id,
                {"command_id": command_id, "outcome": "failed", "message": "unknown command"},
            )
        elif command == "rotate":
            await self._rotate(command_id, args)
        else:
            await self._resync(command_id)

    async def _report(self, command_id: str, result: dict[str, Any]) -> None:
        await self.agent.store.write(self._finish(command_id, result))

    # ------------------------------------------------------------------ commands
    async def _rotate(self, command_id: str, args: dict[str, Any]) -> None:
        secret_id = args.get("secret_id")
        if not isinstance(secret_id, str) or not ID_RE.fullmatch(secret_id):
            await self._report(
                command_id,
                {"command_id": command_id, "outcome": "failed", "message": FAILURES[2][1]},
            )
            return
        audit = self.agent.audit

        def done(conn: Connection, new: SecretMeta) -> None:
            result = {"command_id": command_id, "outcome": "ok", "message": "rotated",
                      "secret_id": secret_id, "version": new.version}  # fmt: skip
            self._finish(command_id, result)(conn)

        try:
            audit.append(op="secrets.rotate", outcome="attempt", status=0, actor=command_id,
                         target=secret_id)  # fmt: skip
            engine = self.agent.rotation
            meta = await self.agent.secrets.meta(secret_id)
            if self._protected.covers(meta.name):
                await self._report(command_id, {"command_id": command_id, "outcome": "failed",
                                                "message": PROTECTED, "secret_id": secret_id})  # fmt: skip
                self._audit(op="secrets.rotate", outcome="error", status=403, actor=command_id,
                            target=secret_id)  # fmt: skip
                return
            policy = await engine.governing(meta) if engine is not None and meta else None
            if engine is not None and policy is not None:  # the policy's rotator, two phases
                await engine.rotate(secret_id, policy, actor=None, also=done)
            else:
                await self.agent.secrets.rotate(secret_id, GeneratorSpec(), also=done)
        except RotationFailedError as exc:
            result = {"command_id": command_id, "outcome": "failed",
                      "message": f"the rotation failed: {exc.reason}", "secret_id": secret_id}  # fmt: skip
            self._audit(op="secrets.rotate", outcome="error", status=exc.http_status,
                        actor=command_id, target=secret_id)  # fmt: skip
            await self._report(command_id, result)
            return
        except KeyVaultError as exc:
            result = {"command_id": command_id, "outcome": "failed",
                      "message": _failure_text(exc), "secret_id": secret_id}  # fmt: skip
            self._audit(op="secrets.rotate", outcome="error", status=exc.http_status,
                        actor=command_id, target=secret_id)  # fmt: skip
            await self._report(command_id, result)
            return
        self._audit(op="secrets.rotate", outcome="ok", status=200, actor=command_id,
                    target=secret_id)  # fmt: skip

    async def _resync(self, command_id: str) -> None:
        result = {"command_id": command_id, "outcome": "ok", "message": "resync queued"}
        resync = outbox.resync(self._now())
        finish = self._finish(command_id, result)

        def txn(conn: Connection) -> None:
            resync(conn)
            finish(conn)

        await self.agent.store.write(txn)

    def _audit(self, **entry: Any) -> None:
        """An outcome entry; a failing audit log is counted (and alerted), not raised."""
        try:
            self.agent.audit.append(**entry)
        except UnavailableError:
            self.agent.metrics.audit_failures += 1
            log.error("audit log write failed after command %s", entry.get("actor"))
