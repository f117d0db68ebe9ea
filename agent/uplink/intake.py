"""Intake of operator intents: the agent runs only what the organisation's operators sealed.

Every policy, policy deletion and command the control plane relays is an intent
(:mod:`common.intents`) sealed and authenticated with subkeys of the organisation's metadata
key, which the control plane does not hold. Here the agent opens each one and refuses, with an
``intent_refused`` alert upstream and no change, anything that:

* does not verify (forged, altered, sealed with another key, a plaintext policy),
* is not meant for this vault, or is expired (commands),
* is replayed: a policy revision below (or equal to, but different from) the one held, a
  command id seen before (``kv_commands``, :mod:`agent.uplink.commands`),
* asks for what the agent's own ``agent.yaml`` forbids (:mod:`agent.rotation.limits`), or
  holds a selector outside the glob limits (:mod:`common.globs`).

Policies are merged, never replaced: a policy the control plane stops sending is kept (and
alerted) until a verified deletion with a higher revision arrives. The verified set is kept in
``kv_meta`` (:data:`HELD`) and the rotation engine's list (:data:`meta.POLICIES`) is derived from
it.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from datetime import UTC, datetime, timedelta
from typing import Any

from agent.assembly import Agent
from agent.rotation import limits
from agent.rotation.policy import Policy
from agent.store.sql import Connection
from agent.uplink import meta, outbox
from agent.uplink.health import policies_version
from common import intents
from common.errors import IntegrityError, ValidationError
from common.metadata_key import MetadataKey

log = logging.getLogger("keyvault.agent.uplink")
HELD = "uplink.intents"  # {"policies": {id: {"revision", "mac", "deleted", "doc"}}}
MAX_POLICIES = 200  # intents in one ``policies`` frame (tombstones included)
CLOCK_SKEW = timedelta(minutes=5)
ALERT_EVERY = 60.0  # seconds between two alerts with the same text
MAX_ALERT_KEYS = 256


class Refused(Exception):
    """An intent the agent will not run; ``reason`` is the alert's text (no names, no values)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Alerts:
    """``intent_refused`` alerts through the outbox, each text at most once a minute."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.refused = 0
        self._last: OrderedDict[str, float] = OrderedDict()

    async def raise_(self, reason: str) -> None:
        """Log, count and (rate-limited) queue one refusal alert."""
        self.refused += 1
        log.warning("refused an intent from the control plane: %s", reason)
        now = time.monotonic()
        if now - self._last.get(reason, float("-inf")) < ALERT_EVERY:
            return
        self._last[reason] = now
        self._last.move_to_end(reason)
        while len(self._last) > MAX_ALERT_KEYS:
            self._last.popitem(last=False)
        alert = {"kind": "intent_refused", "message": reason[:300]}
        stamp = datetime.now(UTC).isoformat()
        await self.agent.store.write(lambda c: outbox.enqueue(c, outbox.ALERT, alert, stamp))


def _policy_doc(intent: intents.Intent) -> dict[str, Any]:
    """The rotation engine's form of a verified policy intent."""
    h, body = intent.header, intent.body
    scope = {"all": True} if h.vault_ids is None else {"vault_ids": list(h.vault_ids)}
    return {"id": h.id, "name": str(body.get("name", ""))[:200], "version": h.revision,
            "body": {"selector": body.get("selector"), "rotator": body.get("rotator"),
                     "interval_seconds": h.interval_seconds,
                     "notice_seconds": h.notice_seconds, "scope": scope}}  # fmt: skip


class Intake:
    """Verifies what the control plane relays, against this agent's key, vault and config."""

    def __init__(self, agent: Agent, key: MetadataKey | None, alerts: Alerts) -> None:
        self.agent = agent
        self.keys = intents.IntentKeys(key) if key is not None else None
        self.alerts = alerts

    def _open(self, doc: Any, what: str) -> intents.Intent:
        if self.keys is None:
            raise Refused(f"{what} arrived but this agent has no metadata key to verify it")
        try:
            return self.keys.open(doc)
        except (IntegrityError, ValidationError):
            raise Refused(
                f"{what} did not verify (forged, altered, not sealed, or another key's)"
            ) from None

    # ------------------------------------------------------------------ commands
    async def command(self, frame: dict[str, Any], vault_id: str | None) -> dict[str, Any]:
        """The verified ``{command, args}`` of a ``command`` frame, or Refused."""
        intent = self._open(frame.get("intent"), "a command")
        h = intent.header
        if h.kind != "command" or h.id != frame.get("id"):
            raise Refused(f"command {str(frame.get('id'))[:40]} carries another intent")
        if not h.meant_for(vault_id):
            raise Refused(f"command {h.id} is meant for another vault")
        now = datetime.now(UTC)
        if h.expires_at is None or now > h.expires_at or h.issued_at > now + CLOCK_SKEW:
            raise Refused(f"command {h.id} is expired (or issued in the future)")
        command, args = intent.body.get("command"), intent.body.get("args")
        if command not in ("rotate", "resync") or not isinstance(args, dict):
            raise Refused(f"command {h.id} is not a rotate or resync command")
        return {"type": "command", "id": h.id, "command": command, "args": args}

    # ------------------------------------------------------------------ policies
    async def policies(self, items: Any, vault_id: str | None) -> str | None:
        """Merge a ``policies`` frame into the verified set; the new policies version, or None
        when nothing changed. Each refusal is alerted; nothing refused changes anything."""
        if not isinstance(items, list) or len(items) > MAX_POLICIES:
            await self.alerts.raise_(f"a policy list that is not a list of at most "
                                     f"{MAX_POLICIES} intents")  # fmt: skip
            return None
        held = await self.agent.store.read(lambda c: meta.get(c, HELD)) or {}
        known: dict[str, Any] = dict(held.get("policies") or {})
        changed, seen = False, set()
        for doc in items:
            try:
                intent = self._open(doc, "a policy")
                seen.add(intent.header.id)
                changed |= self._merge(known, intent, vault_id)
            except Refused as exc:
                await self.alerts.raise_(exc.reason)
        withheld = sorted(pid for pid, p in known.items() if not p["deleted"] and pid not in seen)
        if withheld:
            await self.alerts.raise_(f"the control plane stopped sending policy {withheld[0]} "
                                     "without a sealed deletion; it stays in force")  # fmt: skip
        if not changed:
            return None
        return await self._store(known)

    def _merge(self, known: dict[str, Any], intent: intents.Intent, vault_id: str | None) -> bool:
        h = intent.header
        if h.kind not in ("policy", "policy_delete"):
            raise Refused(f"a {h.kind} intent arrived in the policy list")
        held = known.get(h.id)
        if held is not None:
            if h.revision < held["revision"]:
                raise Refused(f"policy {h.id} revision {h.revision} is older than the "
                              f"{held['revision']} this agent holds (replay)")  # fmt: skip
            if h.revision == held["revision"]:
                if intent.mac != held["mac"]:
                    raise Refused(f"policy {h.id} revision {h.revision} differs from the one "
                                  "this agent holds (replay)")  # fmt: skip
                return False
        doc = None
        if h.kind == "policy":
            doc = _policy_doc(intent)
            self._check_policy(doc, h.id)
        known[h.id] = {"revision": h.revision, "mac": intent.mac,
                       "deleted": h.kind == "policy_delete", "doc": doc}  # fmt: skip
        return True

    def _check_policy(self, doc: dict[str, Any], policy_id: str) -> None:
        if Policy.parse(doc) is None:
            raise Refused(f"policy {policy_id} has a selector or rotator this agent cannot use "
                          "(see the glob limits in docs/intents.md)")  # fmt: skip
        refused = limits.rotator_refusal(doc["body"]["rotator"], self.agent.settings.rotation)
        if refused is not None:
            raise Refused(f"policy {policy_id}: {refused}")

    async def _store(self, known: dict[str, Any]) -> str:
        live = [p["doc"] for _, p in sorted(known.items()) if not p["deleted"]]
        version = policies_version(live)

        def txn(conn: Connection) -> None:
            meta.put(conn, HELD, {"policies": known})
            meta.put(conn, meta.POLICIES, {"version": version, "policies": live})

        await self.agent.store.write(txn)
        return version
