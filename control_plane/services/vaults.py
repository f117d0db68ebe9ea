"""Enrollment tokens, vault registration (CSR → client certificate), the registry, heartbeats,
and the sweeps that raise "vault offline" and "certificate expiring"."""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from cryptography import x509

from common import events, uplink
from common.errors import NotFoundError, ValidationError
from control_plane import schema as t
from control_plane.db import aware, iso, new_id
from control_plane.errors import EnrollmentError
from control_plane.services.ca import CAStore
from control_plane.services.principal import Principal

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from common.events import EventSink
    from control_plane.background import Clock
    from control_plane.bus import EventBus
    from control_plane.coordination import SweepLock
    from control_plane.metrics import Metrics
    from control_plane.services.alerts import Alerts
    from control_plane.services.audit import Audit
    from control_plane.services.ca import CAStore
    from control_plane.settings import ControlPlaneSettings

TOKEN_PREFIX = "kve_"  # noqa: S105 - a prefix, not a secret
_TOKEN_RE = re.compile(r"^kve_[A-Za-z0-9_-]{20,64}\.[0-9a-f]{64}$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$")
MAX_CSR = 8192


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def split_token(token: str) -> tuple[str, str]:
    """(secret part, CA pin ``sha256:<hex>``) of an enrollment token ``kve_<secret>.<pin hex>``."""
    if not _TOKEN_RE.match(token):
        raise ValidationError("an enrollment token looks like kve_<secret>.<64 hex digits>")
    secret, pin_hex = token.split(".", 1)
    return secret, "sha256:" + pin_hex


def _check_registration(token: str, csr_pem: str, name: str, agent_version: str) -> None:
    """400s for malformed registration fields (the token's validity is checked later)."""
    split_token(token)
    if not _NAME_RE.match(name):
        raise ValidationError("name must be 1-100 characters of A-Z a-z 0-9 _ . - ")
    if not re.fullmatch(r"[A-Za-z0-9.+_\-]{1,64}", agent_version):
        raise ValidationError("agent_version must be 1-64 characters like 1.2.3")
    if len(csr_pem) > MAX_CSR:
        raise ValidationError(f"csr must be at most {MAX_CSR} characters")


class Vaults:
    """The vault registry of every organisation."""

    def __init__(
        self,
        *,
        engine: AsyncEngine,
        clock: Clock,
        settings: ControlPlaneSettings,
        bus: EventBus,
        lock: SweepLock,
        metrics: Metrics,
        sink: EventSink,
        audit: Audit,
        alerts: Alerts,
        cas: CAStore,
    ) -> None:
        self.engine = engine
        self.clock = clock
        self.settings = settings
        self.bus = bus
        self.lock = lock
        self.metrics = metrics
        self.sink = sink
        self.audit = audit
        self.alerts = alerts
        self.cas = cas

    async def _emit(self, kind: events.EventKind, org_id: str, data: dict[str, Any]) -> None:
        """Publish one operator event of ``kind`` to the sink, stamped with the clock."""
        await self.sink.publish(events.make(kind, org_id, self.clock(), data))

    # ------------------------------------------------------------------ status

    def status_of(self, row: Any, now: datetime) -> str:
        """online / offline / pending (never heard from) / revoked."""
        if row.revoked_at is not None:
            return "revoked"
        last = aware(row.last_heartbeat_at)
        if last is None:
            return "pending"
        limit = timedelta(seconds=self.settings.offline_after_seconds)
        return "online" if now - last <= limit else "offline"

    def vault_json(self, row: Any, now: datetime) -> dict[str, Any]:
        """A vault as the API shows it."""
        return {
            "id": row.id,
            "name": row.name,
            "agent_version": row.agent_version,
            "status": self.status_of(row, now),
            "created_at": iso(row.created_at),
            "last_heartbeat_at": iso(row.last_heartbeat_at),
            "certificate_serial": row.cert_serial,
            "certificate_not_after": iso(row.cert_not_after),
            "revoked_at": iso(row.revoked_at),
            "health": json.loads(row.health or "{}"),
        }

    # ------------------------------------------------------------------ tokens
    async def create_token(
        self, who: Principal, description: str, ttl_seconds: int | None
    ) -> dict[str, Any]:
        """A single-use enrollment token carrying the service CA's pin (the gateway's root)."""
        ttl = ttl_seconds or self.settings.enrollment_ttl_seconds
        if not 10 <= ttl <= 7 * 86400:
            raise ValidationError("ttl_seconds must be from 10 to 604800")
        await self.cas.get(who.org_id)  # the organisation's CA exists before its first agent
        ca = await self.cas.service()
        token = f"{TOKEN_PREFIX}{secrets.token_urlsafe(32)}.{ca.pin().removeprefix('sha256:')}"
        now, token_id = self.clock(), new_id("enr")
        expires = now + timedelta(seconds=ttl)
        async with self.engine.begin() as conn:
            await conn.execute(
                t.enrollment_tokens.insert().values(
                    id=token_id,
                    org_id=who.org_id,
                    token_hash=_sha(token),
                    description=description,
                    created_by=who.user_id,
                    created_at=now,
                    expires_at=expires,
                )
            )
        return {
            "id": token_id,
            "token": token,
            "ca_pin": ca.pin(),
            "description": description,
            "created_at": iso(now),
            "expires_at": iso(expires),
        }

    def _token_json(self, row: Any, now: datetime) -> dict[str, Any]:
        expires = aware(row.expires_at)
        assert expires is not None
        state = (
            "revoked"
            if row.revoked_at
            else "used"
            if row.used_at
            else "expired"
            if expires <= now
            else "active"
        )
        return {
            "id": row.id,
            "description": row.description,
            "state": state,
            "created_at": iso(row.created_at),
            "expires_at": iso(row.expires_at),
            "used_at": iso(row.used_at),
            "revoked_at": iso(row.revoked_at),
            "vault_id": row.vault_id,
        }

    async def list_tokens(self, who: Principal) -> list[dict[str, Any]]:
        """The organisation's enrollment tokens (never the token strings)."""
        q = (
            sa.select(t.enrollment_tokens)
            .where(t.enrollment_tokens.c.org_id == who.org_id)
            .order_by(t.enrollment_tokens.c.created_at.desc())
            .limit(500)
        )
        now = self.clock()
        async with self.engine.connect() as conn:
            return [self._token_json(r, now) for r in await conn.execute(q)]

    async def revoke_token(self, who: Principal, token_id: str) -> dict[str, Any]:
        """Revoke an unused enrollment token."""
        et = t.enrollment_tokens
        async with self.engine.begin() as conn:
            row = (
                await conn.execute(
                    sa.select(et).where(et.c.id == token_id, et.c.org_id == who.org_id)
                )
            ).first()
            if row is None:
                raise NotFoundError(f"no enrollment token {token_id}")
            if row.revoked_at is None:
                await conn.execute(
                    et.update().where(et.c.id == token_id).values(revoked_at=self.clock())
                )
            row = (await conn.execute(sa.select(et).where(et.c.id == token_id))).one()
        return self._token_json(row, self.clock())

    # ------------------------------------------------------------------ registration
    async def register(
        self, token: str, csr_pem: str, name: str, agent_version: str
    ) -> tuple[dict[str, Any], bool]:
        """Sign the agent's CSR into a client certificate; returns (identity, newly created).

        The token is claimed atomically, so concurrent registrations with one token create
        exactly one vault. Retrying with the same CSR within the grace window returns the
        same identity.
        """
        _check_registration(token, csr_pem, name, agent_version)
        et, now, csr_sha = t.enrollment_tokens, self.clock(), _sha(csr_pem.strip())
        async with self.engine.connect() as conn:
            row = (await conn.execute(sa.select(et).where(et.c.token_hash == _sha(token)))).first()
        if row is None or row.revoked_at is not None:
            raise EnrollmentError()
        if row.used_at is not None:
            return await self._retry(row, csr_sha, now), False
        expires = aware(row.expires_at)
        if expires is None or expires <= now:
            raise EnrollmentError()
        ca = await self.cas.get(row.org_id)
        vault = {
            "id": new_id("vlt"),
            "org_id": row.org_id,
            "name": name,
            "agent_version": agent_version,
            "csr_sha256": csr_sha,
            "enrollment_token_id": row.id,
            "created_at": now,
        }
        cert_pem = ca.sign_csr(
            csr_pem.encode(),
            common_name=vault["id"],
            valid_for=timedelta(hours=self.settings.cert_valid_hours),
            clock=self.clock,
        )
        cert = x509.load_pem_x509_certificate(cert_pem)
        vault.update(
            cert_pem=cert_pem.decode(),
            cert_serial=format(cert.serial_number, "x"),
            cert_not_after=cert.not_valid_after_utc,
        )
        if not await self._claim(row.id, vault, now):
            async with self.engine.connect() as conn:
                fresh = (await conn.execute(sa.select(et).where(et.c.id == row.id))).one()
            return await self._retry(fresh, csr_sha, now), False
        await self.audit.record(
            row.org_id, "vaults.register", actor=f"enrollment:{row.id}", target=vault["id"]
        )
        await self._emit(
            events.VAULT_REGISTERED, row.org_id, {"vault_id": vault["id"], "name": name}
        )
        identity = {
            "vault_id": vault["id"],
            "certificate": vault["cert_pem"],
            "ca_certificate": ca.cert_pem().decode(),
            "name": name,
        }
        return identity, True

    async def _claim(self, token_id: str, vault: dict[str, Any], now: datetime) -> bool:
        """Use the token and insert the vault in one transaction; False if another won."""
        et = t.enrollment_tokens
        async with self.engine.begin() as conn:
            claimed = await conn.execute(
                et.update()
                .where(
                    et.c.id == token_id,
                    et.c.used_at.is_(None),
                    et.c.revoked_at.is_(None),
                    et.c.expires_at > now,
                )
                .values(used_at=now, vault_id=vault["id"])
            )
            if claimed.rowcount != 1:
                return False
            await conn.execute(t.vaults.insert().values(**vault))
        return True

    async def _retry(self, token_row: Any, csr_sha: str, now: datetime) -> dict[str, Any]:
        used = aware(token_row.used_at)
        grace = timedelta(seconds=self.settings.enrollment_grace_seconds)
        if token_row.revoked_at is not None or used is None or now - used > grace:
            raise EnrollmentError()
        async with self.engine.connect() as conn:
            vault = (
                await conn.execute(
                    sa.select(t.vaults).where(t.vaults.c.enrollment_token_id == token_row.id)
                )
            ).first()
        if vault is None or vault.csr_sha256 != csr_sha or vault.revoked_at is not None:
            raise EnrollmentError()
        ca = await self.cas.get(vault.org_id)
        return {
            "vault_id": vault.id,
            "certificate": vault.cert_pem,
            "ca_certificate": ca.cert_pem().decode(),
            "name": vault.name,
        }

    # ------------------------------------------------------------------ registry
    async def list(self, who: Principal, *, after: str | None, limit: int) -> dict[str, Any]:
        """The organisation's vaults with live status, keyset-paginated by id."""
        q = sa.select(t.vaults).where(t.vaults.c.org_id == who.org_id)
        if after:
            q = q.where(t.vaults.c.id > after)
        q = q.order_by(t.vaults.c.id).limit(limit + 1)
        now = self.clock()
        async with self.engine.connect() as conn:
            rows = list(await conn.execute(q))
        page = rows[:limit]
        return {
            "items": [self.vault_json(r, now) for r in page],
            "next_cursor": page[-1].id if len(rows) > limit else None,
        }

    async def get_row(self, org_id: str, vault_id: str) -> Any:
        """The vault's row if it belongs to ``org_id``, else NotFoundError."""
        q = sa.select(t.vaults).where(t.vaults.c.id == vault_id, t.vaults.c.org_id == org_id)
        async with self.engine.connect() as conn:
            row = (await conn.execute(q)).first()
        if row is None:
            raise NotFoundError(f"no vault {vault_id}")
        return row

    async def get(self, who: Principal, vault_id: str) -> dict[str, Any]:
        """One vault of the caller's organisation."""
        return self.vault_json(await self.get_row(who.org_id, vault_id), self.clock())

    async def revoke(self, who: Principal, vault_id: str) -> dict[str, Any]:
        """Revoke a vault: its certificate goes on the CRL and it cannot reconnect."""
        row = await self.get_row(who.org_id, vault_id)
        if row.revoked_at is None:
            async with self.engine.begin() as conn:
                await conn.execute(
                    t.vaults.update()
                    .where(t.vaults.c.id == vault_id, t.vaults.c.revoked_at.is_(None))
                    .values(revoked_at=self.clock())
                )
            await self.alerts.resolve_key(who.org_id, f"vault_offline:{vault_id}")
            await self.alerts.resolve_key(who.org_id, f"certificate_expiring:{vault_id}")
            await self._emit(
                events.VAULT_STATUS, who.org_id, {"vault_id": vault_id, "status": "revoked"}
            )
            await self.bus.route({"vault_id": vault_id, "close": uplink.ERR_REVOKED})
        return await self.get(who, vault_id)

    async def crl(self, org_id: str) -> bytes:
        """The organisation's current CRL (PEM): every revoked vault's current and previous
        certificate serials."""
        v = t.vaults
        q = sa.select(v.c.cert_serial, v.c.prev_cert_serial, v.c.revoked_at).where(
            v.c.org_id == org_id, v.c.revoked_at.is_not(None)
        )
        async with self.engine.connect() as conn:
            rows = list(await conn.execute(q))
        revoked = [
            (int(serial, 16), aware(r.revoked_at))
            for r in rows
            for serial in (r.cert_serial, r.prev_cert_serial)
            if serial
        ]
        ca = await self.cas.get(org_id)
        return ca.build_crl([(s, w) for s, w in revoked if w is not None], clock=self.clock)

    async def ca_info(self, org_id: str) -> dict[str, Any]:
        """The organisation's CA certificate and pin."""
        ca = await self.cas.get(org_id)
        return {"certificate": ca.cert_pem().decode(), "pin": ca.pin()}

    # ------------------------------------------------------------------ heartbeats
    async def heartbeat(self, vault_id: str, health: dict[str, Any] | None = None) -> str:
        """Record a heartbeat outside any uplink connection (tools and tests); returns the
        vault's status. The uplink's fast path is ``VaultPresence.heartbeat``."""
        now = self.clock()
        async with self.engine.begin() as conn:
            row = (await conn.execute(sa.select(t.vaults).where(t.vaults.c.id == vault_id))).first()
            if row is None:
                raise NotFoundError(f"no vault {vault_id}")
            if row.revoked_at is not None:
                return "revoked"
            await conn.execute(
                t.vaults.update()
                .where(t.vaults.c.id == vault_id)
                .values(last_heartbeat_at=now, health=json.dumps(health or {}))
            )
        before = self.status_of(row, now)
        if before != "online":
            await self._emit(
                events.VAULT_STATUS, row.org_id, {"vault_id": vault_id, "status": "online"}
            )
        await self.alerts.resolve_key(row.org_id, f"vault_offline:{vault_id}")
        return "online"

    async def raise_offline(self, org_id: str, vault_id: str, message: str) -> bool:
        """Raise "vault offline" (deduped) and, if new, publish ``vault.status`` offline."""
        _, new = await self.alerts.raise_alert(
            org_id,
            "vault_offline",
            f"vault_offline:{vault_id}",
            message,
            severity="critical",
            vault_id=vault_id,
        )
        if new:
            await self._emit(
                events.VAULT_STATUS, org_id, {"vault_id": vault_id, "status": "offline"}
            )
        return new

    async def sweep_offline(self) -> int:
        """Raise "vault offline" for silent vaults (one replica at a time); returns new alerts.

        The backstop: a replica that holds an uplink raises it itself when the socket closes.
        """
        async with self.lock.hold("keyvault.sweep.offline") as mine:
            if not mine:
                return 0
            self.metrics.sweeps += 1
            now = self.clock()
            cutoff = now - timedelta(seconds=self.settings.offline_after_seconds)
            v = t.vaults
            q = sa.select(v.c.id, v.c.org_id, v.c.name).where(
                v.c.revoked_at.is_(None),
                v.c.last_heartbeat_at.is_not(None),
                v.c.last_heartbeat_at < cutoff,
            )
            async with self.engine.connect() as conn:
                silent = list(await conn.execute(q))
            raised = 0
            for row in silent:
                message = (
                    f"vault {row.name} ({row.id}) has not sent a heartbeat since before "
                    f"{iso(cutoff)}"
                )
                raised += await self.raise_offline(row.org_id, row.id, message)
            return raised

    async def sweep_certificates(self) -> int:
        """Raise "certificate expiring" for vaults whose client certificate ends within
        ``cert_expiry_alert_hours`` (one replica at a time); returns new alerts."""
        async with self.lock.hold("keyvault.sweep.certificates") as mine:
            if not mine:
                return 0
            now = self.clock()
            horizon = now + timedelta(hours=self.settings.cert_expiry_alert_hours)
            v = t.vaults
            q = sa.select(v.c.id, v.c.org_id, v.c.name, v.c.cert_not_after).where(
                v.c.revoked_at.is_(None), v.c.cert_not_after < horizon
            )
            async with self.engine.connect() as conn:
                expiring = list(await conn.execute(q))
            raised = 0
            for row in expiring:
                ends = aware(row.cert_not_after)
                verb = "expired" if ends is not None and ends <= now else "expires"
                _, new = await self.alerts.raise_alert(
                    row.org_id,
                    "certificate_expiring",
                    f"certificate_expiring:{row.id}",
                    f"the client certificate of vault {row.name} ({row.id}) {verb} at "
                    f"{iso(ends)}; the agent renews it while connected",
                    severity="warning",
                    vault_id=row.id,
                )
                raised += new
            return raised
