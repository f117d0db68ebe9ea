"""kopf handlers for ``VaultSecret``: sync on create/update/resume, on a timer, and on change.

The timer ticks every 5 s and syncs when ``refreshInterval`` has passed (the fallback poll),
after a back-off, for pending restarts, or when the per-object daemon following the agent's
change stream has seen one of the listed secrets change.

Every handler takes the Kubernetes API from ``memo.api`` and the agent login from
``memo.agent_login`` (a :class:`~k8s_operator.secret_sync.JwtLogin` reading the pod's
projected service-account token, made on first use; tests put a fake API and a fixed token
there), so each one can be called directly with plain dicts.

Errors never touch the existing Secret: the status gets ``Ready=False`` with the reason, a
change handler raises ``kopf.TemporaryError`` so kopf retries it with a growing delay, and the
timer retries with the same back-off (10 s doubling up to 5 minutes) kept in the status.
A refused spec is not retried: it waits for the next change of the spec.

Deletion: the Secret carries a controller ownerReference to the VaultSecret, so Kubernetes'
garbage collector deletes it with the VaultSecret. Timers and daemons need a finalizer, so
kopf puts its own on every VaultSecret and removes it once both are stopped: deleting a
VaultSecret needs the operator running (or the finalizer removed by hand).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import kopf

from k8s_operator import GROUP, VERSION
from k8s_operator.api import HttpKubeApi, KubeApiError
from k8s_operator.secret_sync import (
    SA_TOKEN_PATH,
    JwtLogin,
    Login,
    SyncError,
    SyncHttpKubeApi,
    SyncKubeApi,
    agent_client,
    failed_status,
    follow_changes,
    iso,
    parse_time,
    resolve_connection,
    sync,
    utcnow,
)
from k8s_operator.vaultsecret import (
    MIN_REFRESH,
    PLURAL,
    InvalidVaultSecretError,
    parse_spec,
)

TIMER_INTERVAL = 5.0  # the timer's tick; it syncs only when due (see due())
STREAM_RETRY = 30.0  # seconds before reopening a broken change stream
NO_STREAM_RETRY = 300.0  # ... or asking again an agent that has none
MAX_BACKOFF = 300
TOKEN_PATH_ENV = "KEYVAULT_SA_TOKEN_PATH"  # noqa: S105 - a variable name, not a secret
Log = logging.Logger | logging.LoggerAdapter[Any]


def _api(memo: Any) -> SyncKubeApi:
    """The sync's API: the operator's HTTP client, seen through :class:`SyncHttpKubeApi`."""
    api: SyncKubeApi | None = getattr(memo, "vaultsecret_api", None)
    if api is None:
        base = memo.api
        api = SyncHttpKubeApi(base.client) if type(base) is HttpKubeApi else base
        memo.vaultsecret_api = api
    return api


def _login(memo: Any) -> Login:
    """The agent login kept in the memo (one token cache for the whole operator)."""
    login: Login | None = getattr(memo, "agent_login", None)
    if login is None:
        login = JwtLogin(Path(os.environ.get(TOKEN_PATH_ENV) or SA_TOKEN_PATH))
        memo.agent_login = login
    return login


def _lock(memo: Any, uid: str) -> asyncio.Lock:
    """One lock per VaultSecret, so the timer and a change handler never sync it at once."""
    locks: dict[str, asyncio.Lock] | None = getattr(memo, "vaultsecret_locks", None)
    if locks is None:
        locks = {}
        memo.vaultsecret_locks = locks
    return locks.setdefault(uid, asyncio.Lock())


def _changed(memo: Any) -> set[str]:
    """UIDs of VaultSecrets whose secrets the agent's change stream reported as changed."""
    changed: set[str] | None = getattr(memo, "vaultsecret_changed", None)
    if changed is None:
        changed = set()
        memo.vaultsecret_changed = changed
    return changed


def backoff(failures: int) -> int:
    """Seconds before the next attempt after ``failures`` failed ones in a row."""
    return int(min(MAX_BACKOFF, MIN_REFRESH * 2 ** max(0, failures - 1)))


async def run_sync(body: Mapping[str, Any], memo: Any, logger: Log) -> tuple[dict[str, Any], int]:
    """Sync once; returns (status to write, seconds to wait before retrying, 0 when done).

    Messages hold names and reasons only: never a value.
    """
    meta = body["metadata"]
    ident = f"{meta['namespace']}/{meta['name']}"
    now = utcnow()
    failures = int((body.get("status") or {}).get("failures") or 0)
    try:
        parse_spec(meta["name"], body.get("spec") or {})
    except InvalidVaultSecretError as exc:
        logger.warning("VaultSecret %s refused: %s", ident, exc.message)
        return _failed(body, "InvalidSpec", exc.message, now, failures), 0
    try:
        async with _lock(memo, str(meta.get("uid"))):
            reader = getattr(memo, "agent_reader", None)  # tests may replace the agent reads
            outcome = await sync(_api(memo), body, _login(memo), reader=reader)
    except InvalidVaultSecretError as exc:  # the values do not fit the type
        reason, message = "InvalidContent", exc.message
    except SyncError as exc:
        reason, message = exc.reason, exc.message
    except KubeApiError as exc:
        reason, message = "KubernetesApiError", exc.message
    else:
        status = {**outcome.status, "failures": 0, "lastAttemptTime": iso(now)}
        if outcome.applied or outcome.restarted:
            logger.info("VaultSecret %s: %s", ident, outcome.status["message"])
        return status, 0
    logger.warning("VaultSecret %s not synced (%s): %s", ident, reason, message)
    return _failed(body, reason, message, now, failures + 1), backoff(failures + 1)


def _failed(
    body: Mapping[str, Any], reason: str, message: str, now: datetime, failures: int
) -> dict[str, Any]:
    return {
        **failed_status(body, reason, message, now),
        "failures": failures,
        "lastAttemptTime": iso(now),
    }


async def sync_handler(
    body: Mapping[str, Any], patch: kopf.Patch, memo: Any, logger: Log, **_: Any
) -> None:
    """Sync on create, on a change of the spec and when the operator starts."""
    status, retry_in = await run_sync(body, memo, logger)
    patch.status.update(status)
    if retry_in:
        raise kopf.TemporaryError(status["message"], delay=retry_in)


def due(body: Mapping[str, Any], now: datetime) -> bool:
    """Whether the timer should sync now: refresh interval passed, back-off over, or a
    restart pending."""
    status = body.get("status") or {}
    if status.get("pendingRestarts"):
        return True
    failures = int(status.get("failures") or 0)
    try:
        spec = parse_spec(body["metadata"]["name"], body.get("spec") or {})
    except InvalidVaultSecretError:
        return False  # refused: wait for a change of the spec
    if failures:
        last = parse_time(status.get("lastAttemptTime"))
        return last is None or now - last >= timedelta(seconds=backoff(failures))
    last = parse_time(status.get("lastSyncTime"))
    return last is None or now - last >= timedelta(seconds=spec.refresh_interval)


async def refresh(
    body: Mapping[str, Any], patch: kopf.Patch, memo: Any, logger: Log, **_: Any
) -> None:
    """The timer: sync when the agent reported a change, when ``refreshInterval`` has passed
    (the fallback poll), after a back-off, or to finish pending restarts."""
    uid = str(body["metadata"].get("uid"))
    changed = _changed(memo)
    if uid not in changed and not due(body, utcnow()):
        return
    changed.discard(uid)
    status, _retry = await run_sync(body, memo, logger)
    patch.status.update(status)


async def watch_changes(
    body: Mapping[str, Any], memo: Any, logger: Log, stopped: Any, **_: Any
) -> None:
    """Follow the agent's change stream; a change to a listed secret makes the next timer tick
    (within 5 s) sync. Without a stream (an older agent) the fallback poll does the work."""
    meta = body["metadata"]
    uid, ident = str(meta.get("uid")), f"{meta['namespace']}/{meta['name']}"
    while not stopped:
        wait = STREAM_RETRY
        try:
            spec = parse_spec(meta["name"], body.get("spec") or {})
            conn = await resolve_connection(_api(memo), meta["namespace"], spec.agent)
            async with agent_client(conn) as client:
                token = await _login(memo).token(client, conn.url, spec.agent.role)
                names = {i.secret for i in spec.items}
                await follow_changes(
                    client, conn.url, token, names, lambda _name: _changed(memo).add(uid)
                )
        except InvalidVaultSecretError:
            wait = NO_STREAM_RETRY  # the handlers report it; wait for a spec change
        except SyncError as exc:
            if exc.reason == "NoChangeStream":
                wait = NO_STREAM_RETRY
                logger.info("VaultSecret %s: the agent has no change stream; polling", ident)
            else:
                logger.info("VaultSecret %s: change stream: %s", ident, exc.message)
        except KubeApiError as exc:
            logger.info("VaultSecret %s: change stream: %s", ident, exc.message)
        await stopped.wait(wait)


async def deleted(body: Mapping[str, Any], logger: Log, **_: Any) -> None:
    """Record the deletion; the ownerReference makes Kubernetes delete the Secret."""
    meta = body["metadata"]
    target = ((body.get("spec") or {}).get("target") or {}).get("name", meta["name"])
    logger.info(
        "VaultSecret %s/%s deleted: its Secret %s goes with it",
        meta["namespace"],
        meta["name"],
        target,
    )


# Registered here rather than by decorators, so the names above stay plain coroutine functions
# that tests call directly.
kopf.on.resume(GROUP, VERSION, PLURAL)(sync_handler)
kopf.on.create(GROUP, VERSION, PLURAL)(sync_handler)
kopf.on.update(GROUP, VERSION, PLURAL, field="spec")(sync_handler)
kopf.timer(GROUP, VERSION, PLURAL, interval=TIMER_INTERVAL, initial_delay=TIMER_INTERVAL)(refresh)
kopf.daemon(GROUP, VERSION, PLURAL, cancellation_timeout=5.0)(watch_changes)
kopf.on.delete(GROUP, VERSION, PLURAL, optional=True)(deleted)
