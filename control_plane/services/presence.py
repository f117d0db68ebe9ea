"""Vault presence, the database side of agents' uplinks: identity, connect/disconnect,
heartbeats, offline checks and certificate renewal. The protocol itself is ``control_plane/gateway/agent_link.py``.

Every connect bumps the vault's ``conn_gen``; a heartbeat or disconnect only counts while its
connection's generation is current, so a replaced connection (on any replica) finds out from
its next write, and the offline check after a disconnect knows whether the vault came back.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from cryptography import x509
from cryptography.x509.oid import NameOID

from common import events, uplink
from common.errors import ValidationError
from common.pki import CertificateAuthority
from common.tls import TLSError
from control_plane import schema as t
from control_plane.db import Batcher, autocommit, aware, fetch, is_postgres, iso
from control_plane.errors import UplinkRefusedError

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from common.events import EventSink
    from control_plane.background import Clock, Spawn
    from control_plane.services.alerts import Alerts
    from control_plane.services.audit import Audit
    from control_plane.services.vaults import Vaults
    from control_plane.settings import ControlPlaneSettings


@dataclass(frozen=True)
class VaultRef:
    """The vault behind an uplink (from its client certificate)."""

    id: str
    org_id: str
    name: str
    serial: str = ""  # the client certificate's serial (hex), for renewal bookkeeping
    # the organisation's registered metadata-key fingerprint, read with the vault's row by
    # identify() (the hello is checked against it without another query)
    key_fingerprint: str | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Connected:
    """What :meth:`VaultPresence.connect` recorded and read back in the same statement."""

    gen: int  # the connection's generation
    audit_head: tuple[int, int]  # the vault's audit head, (epoch, seq)
    offline_alert: bool  # a live "vault offline" alert is waiting to be resolved
    # an earlier connection of the vault may still be open somewhere (it never connected, or
    # its last connection recorded its end: False, and no other replica needs telling)
    earlier_open: bool = True


def _common_name(cert: x509.Certificate) -> str | None:
    attrs = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    value = attrs[0].value if attrs else None
    return value if isinstance(value, str) else None


def _key_id(cert: x509.Certificate, kind: type[Any]) -> bytes | None:
    try:
        ext = cert.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None
    value = getattr(ext, "key_identifier", None) or getattr(ext, "digest", None)
    return bytes(value) if value else None


# What a heartbeat's batch tells its connection: (the generation is still current, a live
# "vault offline" alert of the vault exists).
Counted = tuple[bool, bool]

# One heartbeat waiting to be written: vault id, connection generation, time, health JSON and
# the future its connection awaits.
_Beat = tuple[str, int, datetime, str, "asyncio.Future[Counted]"]

# PostgreSQL: the whole batch in one statement; RETURNING names the rows whose connection was
# still current (and the vault not revoked), so each connection learns whether it counted, and
# whether an offline alert waits to be resolved (the first heartbeat after a connect resolves it
# without a query of its own). Heartbeats are ephemeral (the next one comes within seconds):
# losing the last few to a database crash is harmless, waiting for the WAL flush is not, so the
# statement turns synchronous_commit off for its own transaction (set_config(…, true), the
# SET LOCAL of a statement run in autocommit): one round trip, not BEGIN, SET, UPDATE, COMMIT.
_PG_HEARTBEATS = """
UPDATE cp_vaults AS v SET last_heartbeat_at = b.at, health = b.health
FROM unnest(%s::text[], %s::int[], %s::timestamptz[], %s::text[]) AS b(id, gen, at, health),
     (SELECT set_config('synchronous_commit', 'off', true)) AS local_setting
WHERE v.id = b.id AND v.conn_gen = b.gen AND v.revoked_at IS NULL
RETURNING v.id, v.conn_gen, EXISTS (
    SELECT 1 FROM cp_alerts AS a WHERE a.org_id = v.org_id AND a.open_key = 'vault_offline:' || v.id
)
"""

# The connect sequence's statements on PostgreSQL, for all the vaults of a batch (agents that
# connect meanwhile, control_plane.db.Batcher), run on the driver's connection
# (control_plane.db.fetch): the same as the SQLAlchemy queries used on SQLite below.
_PG_IDENTIFY = """
SELECT v.id, v.org_id, v.name, v.revoked_at, v.cert_serial, v.prev_cert_serial,
       v.prev_cert_valid_until, o.metadata_key_fingerprint
FROM cp_vaults AS v JOIN cp_orgs AS o ON o.id = v.org_id
WHERE v.id = ANY(%s::text[])
"""
# (``earlier`` locks the rows first, so it reads the state the update replaces, even when
# another connect of the vault commits meanwhile.)
_PG_CONNECT = """
WITH earlier AS (
    SELECT id, connected_at IS NOT NULL AND disconnected_at IS NULL AS open
    FROM cp_vaults WHERE id = ANY(%s::text[]) FOR UPDATE
)
UPDATE cp_vaults AS v
SET conn_gen = v.conn_gen + 1, connected_at = b.at, disconnected_at = NULL,
    last_heartbeat_at = b.at, agent_version = b.version
FROM unnest(%s::text[], %s::timestamptz[], %s::text[]) AS b(id, at, version)
JOIN earlier ON earlier.id = b.id
WHERE v.id = b.id AND v.revoked_at IS NULL
RETURNING v.id, v.conn_gen, v.audit_epoch, v.audit_seq, EXISTS (
    SELECT 1 FROM cp_alerts AS a WHERE a.org_id = v.org_id AND a.open_key = 'vault_offline:' || v.id
), earlier.open
"""


class HeartbeatBatcher:
    """Writes this replica's heartbeats in batches, with natural group commit.

    A heartbeat that arrives while a batch is being written waits for it to finish; then
    everything that queued meanwhile is written together. There is no fixed delay: a lone
    heartbeat is written at once. At hundreds of heartbeats a second this turns hundreds of
    small transactions (and their short-lived, partly cyclic SQLAlchemy garbage) into a few.
    """

    def __init__(self, engine: AsyncEngine, clock: Clock, spawn: Spawn) -> None:
        self.engine = engine
        self.clock = clock
        self.spawn = spawn
        self._queue: list[_Beat] = []
        self._writer: asyncio.Task[None] | None = None

    async def record(self, vault_id: str, gen: int, health: dict[str, Any]) -> Counted:
        """Queue one heartbeat and wait until its batch is committed; (False, False) if the
        connection is no longer current (replaced, or the vault was revoked), else (True,
        whether a live "vault offline" alert of the vault exists)."""
        done: asyncio.Future[Counted] = asyncio.get_running_loop().create_future()
        self._queue.append((vault_id, gen, self.clock(), json.dumps(health), done))
        if self._writer is None:
            self._writer = self.spawn(self._drain(), "uplink-heartbeats")
        return await done

    async def _drain(self) -> None:
        """Write batches until the queue is empty; every waiter gets its answer or the error."""
        batch: list[_Beat] = []
        try:
            while self._queue:
                batch, self._queue = self._queue, []
                try:
                    current = await self._write(batch)
                except Exception as exc:
                    for beat in batch:
                        if not beat[4].done():
                            beat[4].set_exception(exc)
                    continue
                for vault_id, gen, _, _, done in batch:
                    if not done.done():
                        alert = current.get((vault_id, gen))
                        done.set_result((alert is not None, bool(alert)))
        finally:
            self._writer = None
            for beat in (*batch, *self._queue):  # cancelled (shutdown): nobody waits forever
                beat[4].cancel()
            self._queue = []

    async def _write(self, batch: list[_Beat]) -> dict[tuple[str, int], bool]:
        """Record ``batch`` in one transaction; the (vault id, generation) pairs that counted,
        each with whether a live "vault offline" alert of the vault exists."""
        latest = {(b[0], b[1]): b for b in batch}  # a connection's newest heartbeat wins
        if not is_postgres(self.engine):
            return await self._write_each(list(latest.values()))
        beats = list(latest.values())
        params = ([b[0] for b in beats], [b[1] for b in beats], [b[2] for b in beats])
        # the driver's connection, for this one fixed statement: SQLAlchemy's per-call machinery
        # would cost more than the statement itself at this rate
        rows = await fetch(self.engine, _PG_HEARTBEATS, (*params, [b[3] for b in beats]))
        return {(row[0], row[1]): bool(row[2]) for row in rows}

    async def _write_each(self, beats: list[_Beat]) -> dict[tuple[str, int], bool]:
        """SQLite: one UPDATE (and alert lookup) per heartbeat, all in one transaction."""
        v, a, current = t.vaults, t.alerts, {}
        async with self.engine.begin() as conn:
            for vault_id, gen, at, health, _ in beats:
                done = await conn.execute(
                    v.update()
                    .where(v.c.id == vault_id, v.c.conn_gen == gen, v.c.revoked_at.is_(None))
                    .values(last_heartbeat_at=at, health=health)
                )
                if done.rowcount == 1:
                    alert = sa.select(a.c.id).where(
                        a.c.org_id == v.c.org_id,
                        v.c.id == vault_id,
                        a.c.open_key == f"vault_offline:{vault_id}",
                    )
                    current[(vault_id, gen)] = (await conn.execute(alert)).first() is not None
        return current


class VaultPresence:
    """What the gateway records about agents' connections."""

    def __init__(
        self,
        *,
        engine: AsyncEngine,
        clock: Clock,
        settings: ControlPlaneSettings,
        sink: EventSink,
        spawn: Spawn,
        audit: Audit,
        alerts: Alerts,
        vaults: Vaults,
    ) -> None:
        self.engine = engine
        self.single = autocommit(engine)  # one-statement reads and writes: one round trip each
        self.clock = clock
        self.settings = settings
        self.sink = sink
        self.spawn = spawn
        self.audit = audit
        self.alerts = alerts
        self.vaults = vaults
        self.heartbeats = HeartbeatBatcher(engine, clock, spawn)
        # agents connecting at once (a fleet reconnecting) share statements
        self._rows = Batcher(self._vault_rows, spawn, "uplink-identify", share=True)
        self._connects = Batcher(self._connect_rows, spawn, "uplink-connect", share=False)

    async def identify(self, cert: x509.Certificate) -> VaultRef:
        """The vault a verified client certificate names (CN), or UplinkRefusedError (403).

        The certificate must have been issued by that vault's organisation's CA and be the
        vault's current certificate, or the one its last renewal replaced while the overlap
        lasts (``cert_overlap_seconds``); a superseded certificate also raises an alert.
        """
        vault_id = _common_name(cert)
        unknown = UplinkRefusedError(
            uplink.ERR_UNKNOWN_VAULT, "the client certificate names no enrolled vault"
        )
        try:
            uplink.opaque_id(vault_id, "certificate common name")
        except ValidationError:
            raise unknown from None
        row = await self._rows(str(vault_id), None)
        if row is None:
            raise unknown
        if row.revoked_at is not None:
            raise UplinkRefusedError(uplink.ERR_REVOKED, f"vault {row.id} has been revoked")
        org_ca = await self.vaults.cas.get(row.org_id)
        if _key_id(cert, x509.AuthorityKeyIdentifier) != _key_id(
            org_ca.cert, x509.SubjectKeyIdentifier
        ):
            raise unknown
        vault = VaultRef(
            row.id,
            row.org_id,
            row.name,
            format(cert.serial_number, "x"),
            key_fingerprint=row.metadata_key_fingerprint,
        )
        if not self._serial_ok(row, vault.serial):
            await self._superseded(vault)
        return vault

    async def _vault_rows(self, ids: dict[str, None]) -> dict[str, Any]:
        """Vaults' rows, each joined with its organisation's metadata-key fingerprint."""
        if is_postgres(self.engine):
            return {r.id: r for r in await fetch(self.engine, _PG_IDENTIFY, (list(ids),))}
        found = {}
        for vault_id in ids:
            row = await self._vault_row(vault_id)
            if row is not None:
                found[vault_id] = row
        return found

    async def _vault_row(self, vault_id: str) -> Any:
        """SQLite: one vault's row joined with its organisation's metadata-key fingerprint."""
        v = t.vaults
        q = (
            sa.select(
                v.c.id,
                v.c.org_id,
                v.c.name,
                v.c.revoked_at,
                v.c.cert_serial,
                v.c.prev_cert_serial,
                v.c.prev_cert_valid_until,
                t.orgs.c.metadata_key_fingerprint,
            )
            .join(t.orgs, t.orgs.c.id == v.c.org_id)
            .where(v.c.id == vault_id)
        )
        async with self.single.connect() as conn:
            return (await conn.execute(q)).first()

    def _serial_ok(self, row: Any, serial: str) -> bool:
        """The vault's current serial, or the previous one inside its overlap."""
        if serial == row.cert_serial:
            return True
        until = aware(row.prev_cert_valid_until)
        return serial == row.prev_cert_serial and until is not None and self.clock() < until

    async def _superseded(self, vault: VaultRef) -> None:
        """Alert (deduplicated) and refuse a certificate a renewal has replaced."""
        message = (
            f"a superseded client certificate of vault {vault.name} ({vault.id}, serial "
            f"{vault.serial[:40]}) tried to connect: an agent that lost a renewal, or a copied "
            "key; re-enroll the agent, and revoke the vault if this was not it"
        )
        await self.alerts.raise_alert(
            vault.org_id,
            "integrity_failure",
            f"certificate_superseded:{vault.id}",
            message,
            severity="critical",
            vault_id=vault.id,
        )
        raise UplinkRefusedError(
            uplink.ERR_SUPERSEDED,
            "this client certificate was replaced by a renewal; enroll the agent again",
        )

    async def connect(self, vault: VaultRef, agent_version: str) -> Connected:
        """Record a new connection (one statement: the new generation, the vault's audit head
        and whether an offline alert is live come back with it). Publishes ``vault.status``
        online and resolves a live offline alert."""
        row = await self._connects(vault.id, (self.clock(), agent_version))
        if row is None:
            raise UplinkRefusedError(uplink.ERR_REVOKED, f"vault {vault.id} has been revoked")
        # SQLite (one process, no other replica) reads no earlier state: True
        earlier_open = bool(row[5]) if len(row) > 5 else True
        done = Connected(int(row[1]), (int(row[2]), int(row[3])), bool(row[4]), earlier_open)
        await self.came_back(vault, resolve=done.offline_alert)
        return done

    async def _connect_rows(self, batch: dict[str, tuple[datetime, str]]) -> dict[str, Any]:
        """Record a connection of each vault of ``batch`` (id → time, agent version); for each
        one not revoked: (id, new generation, audit epoch, audit seq, offline alert live,
        and on PostgreSQL whether its earlier connection may still be open)."""
        if is_postgres(self.engine):
            ids, args = list(batch), list(batch.values())
            params = (ids, ids, [a[0] for a in args], [a[1] for a in args])
            return {r[0]: r for r in await fetch(self.engine, _PG_CONNECT, params)}
        found = {}
        for vault_id, (now, agent_version) in batch.items():
            row = await self._connect_one(vault_id, now, agent_version)
            if row is not None:
                found[vault_id] = row
        return found

    async def _connect_one(self, vault_id: str, now: datetime, agent_version: str) -> Any:
        """SQLite: :meth:`_connect_rows` for one vault."""
        v, a = t.vaults, t.alerts
        alert_open = (
            sa.select(a.c.id)
            .where(a.c.org_id == v.c.org_id, a.c.open_key == f"vault_offline:{vault_id}")
            .exists()
        )
        async with self.single.begin() as conn:
            return (
                await conn.execute(
                    v.update()
                    .where(v.c.id == vault_id, v.c.revoked_at.is_(None))
                    .values(
                        conn_gen=v.c.conn_gen + 1,
                        connected_at=now,
                        disconnected_at=None,
                        last_heartbeat_at=now,
                        agent_version=agent_version,
                    )
                    .returning(v.c.id, v.c.conn_gen, v.c.audit_epoch, v.c.audit_seq, alert_open)
                )
            ).first()

    async def came_back(self, vault: VaultRef, *, resolve: bool = True) -> None:
        """Publish ``vault.status`` online and (with ``resolve``) resolve a live offline
        alert."""
        await self.sink.publish(
            events.make(
                events.VAULT_STATUS,
                vault.org_id,
                self.clock(),
                {"vault_id": vault.id, "status": "online"},
            )
        )
        if resolve:
            await self.alerts.resolve_key(vault.org_id, f"vault_offline:{vault.id}")

    async def refused(self, vault: VaultRef, code: str, message: str) -> None:
        """Tell the vault's operators why its agent's connection was refused (``vault.refused``:
        an enrollment screen shows the reason instead of a vault stuck "pending")."""
        await self.sink.publish(
            events.make(
                events.VAULT_REFUSED,
                vault.org_id,
                self.clock(),
                {"vault_id": vault.id, "code": code, "message": message},
            )
        )

    async def heartbeat(self, vault_id: str, gen: int, health: dict[str, Any]) -> bool:
        """Record a heartbeat (batched with the replica's others); False if the connection is
        no longer current (replaced by a newer one, or the vault was revoked)."""
        return (await self.heartbeats.record(vault_id, gen, health))[0]

    async def beat(self, vault_id: str, gen: int, health: dict[str, Any]) -> Counted:
        """Like :meth:`heartbeat`: (still current, a live "vault offline" alert exists)."""
        return await self.heartbeats.record(vault_id, gen, health)

    async def why_stale(self, vault_id: str) -> str:
        """Why a connection's write did not count: ``vault_revoked`` or ``replaced``."""
        q = sa.select(t.vaults.c.revoked_at).where(t.vaults.c.id == vault_id)
        async with self.single.connect() as conn:
            row = (await conn.execute(q)).first()
        return uplink.ERR_REVOKED if row is None or row.revoked_at is not None else "replaced"

    async def disconnect(self, vault_id: str, gen: int) -> bool:
        """Record the end of a connection; False if a newer one already took over."""
        v = t.vaults
        async with self.single.begin() as conn:
            done = await conn.execute(
                v.update()
                .where(v.c.id == vault_id, v.c.conn_gen == gen)
                .values(disconnected_at=self.clock())
            )
        return bool(done.rowcount == 1)

    async def check_offline(self, vault: VaultRef, gen: int) -> bool:
        """After a disconnect: raise ``vault_offline`` unless the vault reconnected (anywhere)
        or is revoked, or its last heartbeat is still recent. True when an alert was raised."""
        v = t.vaults
        q = sa.select(v.c.conn_gen, v.c.revoked_at, v.c.last_heartbeat_at).where(v.c.id == vault.id)
        async with self.single.connect() as conn:
            row = (await conn.execute(q)).first()
        if row is None or row.conn_gen != gen or row.revoked_at is not None:
            return False
        now = self.clock()
        last = aware(row.last_heartbeat_at)
        limit = timedelta(seconds=self.settings.offline_after_seconds)
        if last is not None and now - last < limit - timedelta(seconds=0.5):
            return False
        message = f"vault {vault.name} ({vault.id}) disconnected; last heartbeat {iso(last)}"
        return await self.vaults.raise_offline(vault.org_id, vault.id, message)

    async def renew(self, vault: VaultRef, csr_pem: str) -> tuple[str, str]:
        """Sign a renewal CSR with the organisation's CA (CN = vault id); (leaf, CA) PEMs.

        Refused (UplinkRefusedError) for a revoked vault, and (ValidationError) sooner than
        ``cert_renewal_interval_seconds`` after the last renewal. The new certificate becomes
        the vault's current one; the certificate this connection presented stays valid for
        ``cert_overlap_seconds``; every other serial is refused from now on. A
        ``certificate_expiring`` alert is resolved. TLSError from a bad CSR is a ValidationError.
        """
        row = await self._renewable(vault)
        ca = await self.vaults.cas.get(vault.org_id)
        cert_pem = self._sign(ca, vault, csr_pem)
        cert = x509.load_pem_x509_certificate(cert_pem)
        now, v = self.clock(), t.vaults
        async with self.engine.begin() as conn:
            done = await conn.execute(
                v.update()
                .where(
                    v.c.id == vault.id,
                    v.c.revoked_at.is_(None),
                    v.c.cert_serial == row.cert_serial,  # no other renewal slipped in
                )
                .values(
                    cert_pem=cert_pem.decode(),
                    cert_serial=format(cert.serial_number, "x"),
                    cert_not_after=cert.not_valid_after_utc,
                    prev_cert_serial=vault.serial or row.cert_serial,
                    prev_cert_valid_until=now
                    + timedelta(seconds=self.settings.cert_overlap_seconds),
                    cert_renewed_at=now,
                )
            )
        if done.rowcount != 1:
            await self._renewable(vault)  # revoked meanwhile: refused; else a concurrent one
            raise ValidationError("another renewal of this vault happened meanwhile; try again")
        await self.audit.record(
            vault.org_id, "vaults.renew", actor=f"vault:{vault.id}", target=vault.id
        )
        await self.alerts.resolve_key(vault.org_id, f"certificate_expiring:{vault.id}")
        return cert_pem.decode(), ca.cert_pem().decode()

    def _sign(self, ca: CertificateAuthority, vault: VaultRef, csr_pem: str) -> bytes:
        """The organisation CA's signature on a renewal CSR (CN = vault id); ValidationError
        for a CSR it cannot sign."""
        try:
            return ca.sign_csr(
                csr_pem.encode(),
                common_name=vault.id,
                valid_for=timedelta(hours=self.settings.cert_valid_hours),
                clock=self.clock,
            )
        except TLSError as exc:
            raise ValidationError(exc.message) from None

    async def _renewable(self, vault: VaultRef) -> Any:
        """The vault's row if it may renew now; UplinkRefusedError if revoked or superseded,
        ValidationError if it renewed too recently."""
        v = t.vaults
        q = sa.select(
            v.c.revoked_at,
            v.c.cert_serial,
            v.c.prev_cert_serial,
            v.c.prev_cert_valid_until,
            v.c.cert_renewed_at,
        ).where(v.c.id == vault.id)
        async with self.engine.connect() as conn:
            row = (await conn.execute(q)).first()
        if row is None or row.revoked_at is not None:
            raise UplinkRefusedError(uplink.ERR_REVOKED, f"vault {vault.id} has been revoked")
        if vault.serial and not self._serial_ok(row, vault.serial):
            await self._superseded(vault)
        last = aware(row.cert_renewed_at)
        wait = timedelta(seconds=self.settings.cert_renewal_interval_seconds)
        if last is not None and self.clock() < last + wait:
            raise ValidationError(
                f"this vault renewed its certificate at {iso(last)}; try again after "
                f"{iso(last + wait)}"
            )
        return row

    def offline_deadline(self, last_heartbeat: datetime) -> float:
        """Seconds from now until a vault silent since ``last_heartbeat`` counts as offline."""
        limit = timedelta(seconds=self.settings.offline_after_seconds)
        return max(0.0, (last_heartbeat + limit - self.clock()).total_seconds())
