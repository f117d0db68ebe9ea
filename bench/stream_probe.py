"""Timestamps inside a running control plane, per step of the operator stream's fixed path.

Only the benchmark uses this: ``python -m bench.stream --probe FILE`` starts replica A with
:func:`install` applied (the ``PROBE_CLI`` command line), and replica A appends one JSON line per
``POST /policies`` to ``FILE`` (``FILE.base`` for the ``--base`` tree's replica A). Each line holds ``time.perf_counter()`` stamps (CLOCK_MONOTONIC,
the same clock as the benchmark's clients) of the steps the request went through:

``edge``      the edge middleware starts (aiohttp has read and parsed the request)
``auth``      the session check has returned (one SELECT)
``insert0``   the view has read and checked the body; the policy's statement starts
``insert1``   the statement (INSERT … RETURNING, committed) has returned
``publish``   the service hands the event to the bus (``policy_json`` and ``events.make`` done)
``deliver0``  the bus starts the local fan-out (event encoded, PUBLISH written to Redis)
``deliver1``  the local fan-out has written every socket that had room
``reply``     Redis's reply to the PUBLISH has been read
``done``      the edge middleware returns (audit entry written, metrics counted)

The control plane's own code is unchanged; the probe wraps its functions from outside. It costs
a ``perf_counter()`` per step and one ``write`` per request, after the response.
"""

from __future__ import annotations

import functools
import json
import os
import time
from collections.abc import Callable
from typing import Any

ENV = "KEYVAULT_BENCH_PROBE"
# loaded by its path, so a replica run from another tree (``--base``) is probed the same way
PROBE_CLI = (
    "import importlib.util as u; "
    f"s = u.spec_from_file_location('kv_stream_probe', {__file__!r}); "
    "m = u.module_from_spec(s); s.loader.exec_module(m); m.install(); "
    "from control_plane.cli import control_plane_group; control_plane_group()"
)
STEPS = ("edge", "auth", "insert0", "insert1", "publish", "deliver0", "deliver1", "reply", "done")
_current: dict[str, float] | None = None  # the policy request being served (one at a time)


def _stamp(step: str) -> None:
    if _current is not None and step not in _current:
        _current[step] = time.perf_counter()


def _around(owner: Any, name: str, before: str | None, after: str | None) -> Callable[[], None]:
    original: Callable[..., Any] = getattr(owner, name)

    @functools.wraps(original)
    async def wrapped(*args: Any, **kwargs: Any) -> Any:
        if before:
            _stamp(before)
        try:
            return await original(*args, **kwargs)
        finally:
            if after:
                _stamp(after)

    setattr(owner, name, wrapped)
    return lambda: setattr(owner, name, original)


def install(path: str | None = None) -> Callable[[], None]:
    """Wrap the control plane's steps; records go to ``path`` (default: ``$KEYVAULT_BENCH_PROBE``).

    Returns a function that puts the originals back (for tests; a probed replica never does)."""
    from aiohttp import web

    from control_plane import app, bus
    from control_plane.services import accounts, policies

    out = path or os.environ[ENV]
    edge = app.edge

    @web.middleware
    async def probed(request: web.Request, handler: Any) -> web.StreamResponse:
        global _current
        if request.method != "POST" or request.path != "/api/v1/policies":
            return await edge(request, handler)
        _current = {"edge": time.perf_counter()}
        try:
            return await edge(request, handler)
        finally:
            record, _current = _current, None
            record["done"] = time.perf_counter()
            with open(out, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(record) + "\n")

    app.edge = probed  # build_app reads the name when it builds the application
    undo = [
        _around(accounts.Accounts, "authenticate", None, "auth"),
        _around(policies.Policies, "_insert", "insert0", "insert1"),
        _around(bus.BusSink, "publish", "publish", None),
        _around(bus, "_read_reply", None, "reply"),
    ]
    deliver = bus._Hub.deliver

    def delivered(self: Any, org_id: str, text: str) -> None:
        _stamp("deliver0")
        deliver(self, org_id, text)
        _stamp("deliver1")

    bus._Hub.deliver = delivered  # type: ignore[method-assign]

    def uninstall() -> None:
        app.edge = edge
        bus._Hub.deliver = deliver  # type: ignore[method-assign]
        for restore in undo:
            restore()

    return uninstall


def load(path: str) -> list[dict[str, float]]:
    """The records a probed replica wrote (complete ones only)."""
    rows = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            if all(step in row for step in STEPS):
                rows.append(row)
    return rows
