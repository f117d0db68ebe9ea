"""An in-memory stand-in for ``common.cpclient.AsyncControlPlaneClient``, for view-model and
snapshot tests: the server's JSON shapes (``control_plane/services/*``), fixed ids and a fixed
clock, every call recorded, and an error on demand.

    fake = FakeControlPlane().seed(vaults=3, secrets=4, alerts=2, policies=1)
    fake.fail_next(UnavailableError("cannot reach the control plane at …"))
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

from common import intents
from common.errors import ConflictError, KeyVaultError, NotFoundError, ValidationError
from common.metadata_key import MetadataKey

NOW = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)
ORG_ID = "org_acme"
USER_ID = "usr_owner"
EMAIL = "owner@example.com"
STATUSES = ("online", "online", "online", "offline", "pending", "online", "revoked")
PREFIXES = ("web", "db", "cache", "batch", "edge")
OPERATIONS = ("read", "write", "list")


def iso(moment: datetime | None) -> str | None:
    """The server's ISO form (UTC, ``Z``)."""
    return None if moment is None else moment.isoformat().replace("+00:00", "Z")


def fixed_key() -> MetadataKey:
    """A deterministic metadata key (and nonces) so sealed labels are the same on every run."""
    counter = itertools.count(1)
    return MetadataKey(bytes(range(32)), rng=lambda n: next(counter).to_bytes(n, "big"))


def _page(items: list[Any], key: str, cursor: Any, limit: int | None) -> dict[str, Any]:
    """Keyset paging as the server does it: items after ``cursor`` by ``key``."""
    limit = limit or 100
    rest = [i for i in items if cursor is None or i[key] > cursor]
    page = rest[:limit]
    more = len(rest) > limit
    return {"items": page, "next_cursor": page[-1][key] if more else None}


async def _apages(fetch: Callable[[str | None], Awaitable[dict[str, Any]]]) -> AsyncIterator[Any]:
    """Every item of a cursor-paged listing."""
    cursor: str | None = None
    while True:
        page = await fetch(cursor)
        for item in page["items"]:
            yield item
        cursor = page["next_cursor"]
        if not cursor:
            return


class FakeControlPlane:
    """The async operator client's methods, in memory."""

    def __init__(self, key: MetadataKey | None = None) -> None:
        self.key = key or fixed_key()
        self.now = NOW
        self._created = iso(NOW - timedelta(days=30))
        self._cert_end = iso(NOW + timedelta(days=20))
        self.url = "http://cp.test"
        self.token: str | None = "kvs_fake"
        self.vaults: dict[str, dict[str, Any]] = {}
        self.inventories: dict[str, list[dict[str, Any]]] = {}
        self.commands: dict[str, dict[str, Any]] = {}
        self.alerts: dict[str, dict[str, Any]] = {}
        self.policies: dict[str, dict[str, Any]] = {}
        self.tokens: dict[str, dict[str, Any]] = {}
        self.audit: list[dict[str, Any]] = []
        self.usage_rows: list[dict[str, Any]] = []
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        self.closed = False
        self._counters: dict[str, itertools.count[int]] = {}
        self._fail: list[tuple[str | None, KeyVaultError]] = []

    # ------------------------------------------------------------ test controls
    def next_id(self, prefix: str) -> str:
        """``<prefix>_000001``, … (sorted by creation, like the server's sorted ids)."""
        counter = self._counters.setdefault(prefix, itertools.count(1))
        return f"{prefix}_{next(counter):06d}"

    def fail_next(self, error: KeyVaultError, method: str | None = None) -> None:
        """Raise ``error`` on the next call (of ``method``, or of any method)."""
        self._fail.append((method, error))

    def called(self, method: str) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
        """The recorded (args, kwargs) of every call of ``method``."""
        return [(a, k) for name, a, k in self.calls if name == method]

    def _call(self, method: str, *args: Any, **kwargs: Any) -> None:
        self.calls.append((method, args, kwargs))
        for i, (name, error) in enumerate(self._fail):
            if name is None or name == method:
                del self._fail[i]
                raise error

    # ------------------------------------------------------------ seeding
    def add_vault(
        self,
        name: str,
        status: str = "online",
        secrets: int = 0,
        version: str = "0.1.0",
        reported: int | None = None,
    ) -> str:
        """One vault with ``secrets`` inventory items; its health reports ``reported`` secrets
        (default: as many as it has). Returns its id."""
        vault_id = self.next_id("vlt")
        count = secrets if reported is None else reported
        seen = None
        if status != "pending":
            ago = 180 if status == "offline" else 0
            seen = iso(self.now - timedelta(seconds=ago + 5 + len(self.vaults) % 50))
        self.vaults[vault_id] = {
            "id": vault_id,
            "name": name,
            "agent_version": version,
            "status": status,
            "created_at": self._created,
            "last_heartbeat_at": seen,
            "certificate_serial": f"{len(self.vaults) + 1:x}",
            "certificate_not_after": self._cert_end,
            "revoked_at": iso(self.now) if status == "revoked" else None,
            "health": {"counts": {"secrets": count, "versions": count, "tokens": 1}},
        }
        self.inventories[vault_id] = []
        for n in range(secrets):
            self.add_secret(vault_id, f"app/secret-{n}", {"env": "prod", "team": PREFIXES[n % 5]})
        return vault_id

    def add_secret(
        self,
        vault_id: str,
        name: str | None,
        labels: dict[str, str] | None = None,
        policy_id: str | None = None,
        key: MetadataKey | None = None,
    ) -> str:
        """An inventory item whose label is sealed with ``key`` (default: the fake's key)."""
        items = self.inventories[vault_id]
        secret_id = f"sec_{vault_id[-6:]}{len(items):04d}"
        sealer = key or self.key
        fields = {"name": name, "description": "", "labels": labels or {}}
        label = sealer.seal(vault_id, secret_id, fields) if name is not None else None
        rotation = None
        if policy_id is not None:
            rotation = {
                "state": "ok",
                "last_rotated_at": iso(self.now - timedelta(days=1)),
                "next_due_at": iso(self.now + timedelta(days=29)),
            }
        items.append(
            {
                "secret_id": secret_id,
                "version": 1 + len(items) % 3,
                "created_at": iso(self.now - timedelta(days=10)),
                "updated_at": iso(self.now - timedelta(hours=len(items))),
                "deleted_at": None,
                "policy_id": policy_id,
                "rotation": rotation,
                "label": label,
                "reported_at": iso(self.now),
            }
        )
        return secret_id

    def add_alert(
        self, kind: str, message: str, severity: str = "warning", vault_id: str | None = None
    ) -> dict[str, Any]:
        """An open alert, as ``alert_json`` shows it."""
        alert_id = self.next_id("alr")
        at = self.now - timedelta(minutes=60 - len(self.alerts) % 60)
        alert = {
            "id": alert_id,
            "key": f"{kind}:{vault_id}",
            "kind": kind,
            "severity": severity,
            "vault_id": vault_id,
            "message": message,
            "state": "open",
            "created_at": iso(at),
            "updated_at": iso(at),
            "acknowledged_at": None,
            "acknowledged_by": None,
            "resolved_at": None,
            "resolved_by": None,
        }
        self.alerts[alert_id] = alert
        return alert

    def seed(
        self,
        vaults: int = 0,
        secrets: int = 0,
        alerts: int = 0,
        policies: int = 0,
        audit: int = 0,
        usage_days: int = 0,
    ) -> FakeControlPlane:
        """Fill the fake: vaults with varied names and statuses (the first has ``secrets``
        secrets), alerts, policies, audit entries and usage; fast (10,000 vaults < 0.5 s)."""
        for i in range(vaults):
            status = STATUSES[i % len(STATUSES)]
            name = f"{PREFIXES[i % len(PREFIXES)]}-{i:05d}"
            secs = secrets if i == 0 else 0
            self.add_vault(name, status, secs, f"0.{1 + i % 3}.0", secs or i % 40)
        ids = list(self.vaults)
        for i in range(alerts):
            vault_id = ids[i % len(ids)] if ids else None
            kind = ("vault_offline", "rotation_failed", "certificate_expiring")[i % 3]
            severity = ("critical", "warning", "info")[i % 3]
            self.add_alert(kind, f"{kind.replace('_', ' ')} on {vault_id}", severity, vault_id)
        for i in range(policies):
            self._store_policy(self._policy_doc(f"policy-{i}", 86400 * (30 + i)))
        for i in range(audit):
            self.add_audit(("vaults.register", "policies.create", "secrets.read")[i % 3])
        for d in range(usage_days):
            day = (self.now - timedelta(days=usage_days - 1 - d)).date().isoformat()
            for j, vault_id in enumerate(ids[:3]):
                for k, operation in enumerate(OPERATIONS):
                    count = 5 + (d * 7 + j * 3 + k * 11) % 40
                    self.usage_rows.append(
                        {"day": day, "vault_id": vault_id, "operation": operation, "count": count}
                    )
        return self

    @staticmethod
    def _policy_doc(name: str, interval: int) -> dict[str, Any]:
        return {
            "name": name,
            "selector": {"labels": {"env": "prod"}, "name_glob": "app/*"},
            "interval_seconds": interval,
            "notice_seconds": min(86400, interval // 2),  # shorter than the interval
            "rotator": {"type": "random", "settings": {"length": 32}},
            "scope": {"all": True},
        }

    def add_audit(self, action: str, source: str = "control_plane", outcome: str = "ok") -> None:
        """One audit entry (``audit_json`` shape)."""
        seq = len(self.audit) + 1
        self.audit.append(
            {
                "seq": seq,
                "event_id": f"evt_{seq:06d}",
                "at": iso(self.now - timedelta(minutes=100 - seq)),
                "source": source,
                "actor": USER_ID,
                "action": action,
                "target": next(iter(self.vaults), None),
                "outcome": outcome,
                "details": {},
            }
        )

    # ------------------------------------------------------------ accounts
    async def login(self, email: str, password: str) -> dict[str, Any]:
        """A session for the owner."""
        self._call("login", email)
        self.token = "kvs_fake"
        user = {"id": USER_ID, "email": EMAIL, "role": "owner"}
        return {
            "token": self.token,
            "expires_at": iso(self.now + timedelta(hours=12)),
            "user": user,
        }

    async def logout(self) -> None:
        """End the session."""
        self._call("logout")
        self.token = None

    async def me(self) -> dict[str, Any]:
        """The caller and their organisation."""
        self._call("me")
        return {
            "user": {"id": USER_ID, "email": EMAIL, "role": "owner"},
            "org": {
                "id": ORG_ID,
                "name": "Acme",
                "metadata_key_fingerprint": getattr(
                    self, "registered_fingerprint", self.key.fingerprint
                ),
            },
        }

    async def put_metadata_key(self, fingerprint: str) -> dict[str, Any]:
        """Register a new metadata key's fingerprint (the fake then reports it)."""
        self._call("put_metadata_key", fingerprint)
        self.registered_fingerprint = fingerprint
        return {"metadata_key_fingerprint": fingerprint}

    async def health(self) -> dict[str, Any]:
        """Liveness."""
        self._call("health")
        return {"status": "ok"}

    async def aclose(self) -> None:
        """Close (recorded)."""
        self.calls.append(("aclose", (), {}))
        self.closed = True

    # ------------------------------------------------------------ vaults
    async def list_vaults(self, cursor: str | None = None, limit: int | None = None) -> Any:
        """One page of vaults, by id."""
        self._call("list_vaults", cursor=cursor, limit=limit)
        return _page(list(self.vaults.values()), "id", cursor, limit)

    async def iter_vaults(self, page_size: int = 200) -> AsyncIterator[dict[str, Any]]:
        """Every vault, page by page."""
        async for item in _apages(lambda c: self.list_vaults(cursor=c, limit=page_size)):
            yield item

    def _vault(self, vault_id: str) -> dict[str, Any]:
        if vault_id not in self.vaults:
            raise NotFoundError(f"no vault {vault_id}")
        return self.vaults[vault_id]

    async def get_vault(self, vault_id: str) -> dict[str, Any]:
        """One vault."""
        self._call("get_vault", vault_id)
        return dict(self._vault(vault_id))

    async def revoke_vault(self, vault_id: str) -> dict[str, Any]:
        """Revoke a vault."""
        self._call("revoke_vault", vault_id)
        vault = self._vault(vault_id)
        if vault["revoked_at"] is None:
            vault.update(revoked_at=iso(self.now), status="revoked")
        return dict(vault)

    async def inventory(
        self, vault_id: str, cursor: str | None = None, limit: int | None = None
    ) -> dict[str, Any]:
        """One page of a vault's inventory, by secret id."""
        self._call("inventory", vault_id, cursor=cursor, limit=limit)
        self._vault(vault_id)
        items = sorted(self.inventories[vault_id], key=lambda i: i["secret_id"])
        return _page(items, "secret_id", cursor, limit)

    async def iter_inventory(
        self, vault_id: str, page_size: int = 500
    ) -> AsyncIterator[dict[str, Any]]:
        """Every inventory item of a vault."""
        async for item in _apages(lambda c: self.inventory(vault_id, cursor=c, limit=page_size)):
            yield item

    # ------------------------------------------------------------ commands
    async def create_command(
        self, vault_id: str, command: str, args: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Store a pending command."""
        self._call("create_command", vault_id, command, args)
        vault = self._vault(vault_id)
        if command not in ("rotate", "resync"):
            raise ValidationError("command must be one of resync, rotate")
        if vault["revoked_at"] is not None:
            raise ConflictError(f"vault {vault_id} is revoked; it takes no commands")
        command_id = self.next_id("cmd")
        doc: dict[str, Any] = {
            "id": command_id,
            "vault_id": vault_id,
            "command": command,
            "args": dict(args or {}),
            "state": "pending",
            "result": None,
            "created_by": USER_ID,
            "created_at": iso(self.now),
            "updated_at": iso(self.now),
        }
        self.commands[command_id] = doc
        return dict(doc)

    async def send_command(self, vault_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """Store a sealed command as the control plane does: opaque, shown as ``sealed``."""
        self._call("send_command", vault_id, body)
        header = intents.parse_header(body["intent"])
        vault = self._vault(vault_id)
        if vault["revoked_at"] is not None:
            raise ConflictError(f"vault {vault_id} is revoked; it takes no commands")
        doc: dict[str, Any] = {
            "id": header.id, "vault_id": vault_id, "command": "sealed", "args": {},
            "intent": body["intent"], "state": "pending", "result": None,
            "created_at": iso(self.now), "updated_at": iso(self.now),
        }  # fmt: skip
        self.commands[header.id] = doc
        return dict(doc)

    async def rotate_secret(self, vault_id: str, secret_id: str) -> dict[str, Any]:
        """Ask a vault to rotate one secret."""
        self._call("rotate_secret", vault_id, secret_id)
        return await self.create_command(vault_id, "rotate", {"secret_id": secret_id})

    async def resync(self, vault_id: str) -> dict[str, Any]:
        """Ask a vault to resend its inventory."""
        self._call("resync", vault_id)
        return await self.create_command(vault_id, "resync", {})

    def finish_command(
        self, command_id: str, state: str = "succeeded", result: str = "ok"
    ) -> dict[str, Any]:
        """Mark a command done (what the agent's result does); returns the ``command.result`` data."""
        doc = self.commands[command_id]
        doc.update(state=state, result=result, updated_at=iso(self.now))
        return dict(doc)

    async def list_commands(
        self, vault_id: str, cursor: str | None = None, limit: int | None = None
    ) -> dict[str, Any]:
        """One page of a vault's commands, oldest first."""
        self._call("list_commands", vault_id, cursor=cursor, limit=limit)
        self._vault(vault_id)
        mine = [c for c in self.commands.values() if c["vault_id"] == vault_id]
        return _page(mine, "id", cursor, limit)

    async def iter_commands(
        self, vault_id: str, page_size: int = 500
    ) -> AsyncIterator[dict[str, Any]]:
        """Every command of a vault, oldest first."""
        async for item in _apages(
            lambda c: self.list_commands(vault_id, cursor=c, limit=page_size)
        ):
            yield item

    async def get_command(self, command_id: str) -> dict[str, Any]:
        """One command."""
        self._call("get_command", command_id)
        if command_id not in self.commands:
            raise NotFoundError(f"no command {command_id}")
        return dict(self.commands[command_id])

    # ------------------------------------------------------------ alerts
    async def list_alerts(
        self, state: str | None = None, cursor: str | None = None, limit: int | None = None
    ) -> dict[str, Any]:
        """One page of alerts by id, optionally of one state."""
        self._call("list_alerts", state=state, cursor=cursor, limit=limit)
        items = [a for a in self.alerts.values() if state is None or a["state"] == state]
        return _page(items, "id", cursor, limit)

    def _move_alert(self, alert_id: str, state: str) -> dict[str, Any]:
        alert = self.alerts.get(alert_id)
        if alert is None:
            raise NotFoundError(f"no alert {alert_id}")
        allowed = ("open",) if state == "acknowledged" else ("open", "acknowledged")
        if alert["state"] not in allowed:
            raise ConflictError(f"alert {alert_id} is {alert['state']}; it cannot become {state}")
        when = iso(self.now)
        alert.update(state=state, updated_at=when)
        prefix = "acknowledged" if state == "acknowledged" else "resolved"
        alert.update({f"{prefix}_at": when, f"{prefix}_by": USER_ID})
        return dict(alert)

    async def acknowledge_alert(self, alert_id: str) -> dict[str, Any]:
        """open → acknowledged."""
        self._call("acknowledge_alert", alert_id)
        return self._move_alert(alert_id, "acknowledged")

    async def resolve_alert(self, alert_id: str) -> dict[str, Any]:
        """→ resolved."""
        self._call("resolve_alert", alert_id)
        return self._move_alert(alert_id, "resolved")

    # ------------------------------------------------------------ enrollment tokens
    async def create_enrollment_token(
        self, description: str = "", ttl_seconds: int | None = None
    ) -> dict[str, Any]:
        """A single-use enrollment token (the string only in this answer)."""
        self._call("create_enrollment_token", description, ttl_seconds)
        ttl = ttl_seconds or 3600
        if not 10 <= ttl <= 7 * 86400:
            raise ValidationError("ttl_seconds must be from 10 to 604800")
        token_id = self.next_id("enr")
        pin = "ab" * 32
        expires = iso(self.now + timedelta(seconds=ttl))
        self.tokens[token_id] = {
            "id": token_id,
            "description": description,
            "state": "active",
            "created_at": iso(self.now),
            "expires_at": expires,
            "used_at": None,
            "revoked_at": None,
            "vault_id": None,
        }
        token = f"kve_{token_id[-6:]:A>43}.{pin}"
        return {
            "id": token_id,
            "token": token,
            "ca_pin": "sha256:" + pin,
            "description": description,
            "expires_at": expires,
        }

    async def list_enrollment_tokens(self) -> dict[str, Any]:
        """``{items}``, newest first, never the token strings."""
        self._call("list_enrollment_tokens")
        return {"items": [dict(t) for t in reversed(self.tokens.values())]}

    async def revoke_enrollment_token(self, token_id: str) -> dict[str, Any]:
        """Revoke an unused token."""
        self._call("revoke_enrollment_token", token_id)
        token = self.tokens.get(token_id)
        if token is None:
            raise NotFoundError(f"no enrollment token {token_id}")
        if token["revoked_at"] is None:
            token.update(revoked_at=iso(self.now), state="revoked")
        return dict(token)

    # ------------------------------------------------------------ policies
    def _store_policy(self, fields: dict[str, Any], policy_id: str | None = None) -> dict[str, Any]:
        from control_plane.services.policy_rules import validate

        partial = policy_id is not None
        checked = validate(fields, partial=partial)
        name = checked.pop("name", None)
        if name is not None and any(
            p["name"] == name and p["id"] != policy_id for p in self.policies.values()
        ):
            raise ConflictError(f"a policy named {name!r} already exists")
        if policy_id is None:
            policy_id = self.next_id("pol")
            self.policies[policy_id] = {
                "id": policy_id,
                "name": name,
                "version": 0,
                "created_at": iso(self.now),
            }
        policy = self.policies[policy_id]
        policy.update(checked)
        if name is not None:
            policy["name"] = name
        policy.update(version=policy["version"] + 1, updated_at=iso(self.now))
        return dict(policy)

    def _policy(self, policy_id: str) -> dict[str, Any]:
        if policy_id not in self.policies:
            raise NotFoundError(f"no policy {policy_id}")
        return self.policies[policy_id]

    async def list_policies(self) -> list[dict[str, Any]]:
        """Every policy, by name."""
        self._call("list_policies")
        return [dict(p) for p in sorted(self.policies.values(), key=lambda p: p["name"])]

    async def get_policy(self, policy_id: str) -> dict[str, Any]:
        """One policy."""
        self._call("get_policy", policy_id)
        return dict(self._policy(policy_id))

    async def create_policy(self, doc: dict[str, Any]) -> dict[str, Any]:
        """A new policy, validated as the server does."""
        self._call("create_policy", doc)
        return self._store_policy(dict(doc))

    async def update_policy(self, policy_id: str, doc: dict[str, Any]) -> dict[str, Any]:
        """Change some fields; the version goes up."""
        self._call("update_policy", policy_id, doc)
        self._policy(policy_id)
        if not doc:
            raise ValidationError("nothing to update")
        return self._store_policy(dict(doc), policy_id)

    async def delete_policy(self, policy_id: str) -> None:
        """Remove a policy."""
        self._call("delete_policy", policy_id)
        self._policy(policy_id)
        del self.policies[policy_id]

    # ------------------------------------------------------------ audit and usage
    async def query_audit(
        self,
        after: int = 0,
        limit: int = 100,
        action: str | None = None,
        source: str | None = None,
        since: str | None = None,
        until: str | None = None,
        before: int | None = None,
    ) -> dict[str, Any]:
        """One page of audit entries: after ``seq`` oldest first, or (``before``, 0 = the
        newest) newest first, as the server pages them."""
        self._call("query_audit", after=after, limit=limit, action=action, source=source)
        rows = [
            r
            for r in self.audit
            if r["seq"] > after
            and (not before or r["seq"] < before)
            and (not action or r["action"] == action)
            and (not source or r["source"] == source)
            and (not since or r["at"] >= since)
            and (not until or r["at"] < until)
        ]
        if before is not None:
            rows.reverse()
        page = rows[:limit]
        nxt = page[-1]["seq"] if len(rows) > limit else None
        return {"items": page, ("next_before" if before is not None else "next_after"): nxt}

    async def usage(
        self, start: str | None = None, end: str | None = None, vault_id: str | None = None
    ) -> dict[str, Any]:
        """``{from, to, rows, total}`` for an inclusive range of days (default: the last 30)."""
        self._call("usage", start, end, vault_id)
        end_day = date.fromisoformat(end) if end else self.now.date()
        start_day = date.fromisoformat(start) if start else end_day - timedelta(days=29)
        if start_day > end_day:
            raise ValidationError("from must not be after to")
        rows = [
            dict(r)
            for r in self.usage_rows
            if start_day.isoformat() <= r["day"] <= end_day.isoformat()
            and (not vault_id or r["vault_id"] == vault_id)
        ]
        rows.sort(key=lambda r: (r["day"], r["vault_id"], r["operation"]))
        total = sum(r["count"] for r in rows)
        return {
            "from": start_day.isoformat(),
            "to": end_day.isoformat(),
            "rows": rows,
            "total": total,
        }
