"""The real operator process (``python -m k8s_operator``, kopf) against a small fake API server
(tests/k8s/fake_apiserver.py): it makes a VaultAgent's objects, adds no finalizer, re-makes a
deleted StatefulSet, and follows the StatefulSet's status; the VaultAgent is deleted at once
after the operator has stopped."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

from tests.k8s.conftest import vault_agent
from tests.k8s.fake_apiserver import FakeApiServer

ROOT = Path(__file__).resolve().parents[2]
AGENTS = ("keyvault.io", "v1", "vaultagents")
STS = ("apps", "v1", "statefulsets")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _until(what: Callable[[], Any], timeout: float = 45) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        value = what()
        if value:
            return value
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


async def test_the_operator_process_makes_repairs_and_never_adds_a_finalizer(
    tmp_path: Path,
) -> None:
    server = FakeApiServer()
    server.create(("", "v1", "namespaces"), {"metadata": {"name": "vaults"}})
    runner = web.AppRunner(server.app, shutdown_timeout=2)
    await runner.setup()
    port = _free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "fake",
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
        "clusters": [{"name": "fake", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
        "users": [{"name": "fake", "user": {"token": "fake-token"}}],
    }
    (tmp_path / "kubeconfig").write_text(yaml.safe_dump(config))
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "PYTHONPATH": str(ROOT),
        "KUBECONFIG": str(tmp_path / "kubeconfig"),
        "KEYVAULT_OPERATOR_LIVENESS": f"http://127.0.0.1:{_free_port()}/healthz",
    }
    log = open(tmp_path / "operator.log", "wb")
    operator = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "k8s_operator", env=env, stdout=log, stderr=log
    )

    def sts() -> dict[str, Any] | None:
        return server.stored(STS, "vaults", "edge")

    def agent() -> dict[str, Any]:
        found = server.stored(AGENTS, "vaults", "edge")
        assert found is not None
        return found

    try:
        await _until(lambda: server.watching(AGENTS) and server.watching(STS))
        body = vault_agent("edge", replicas=1, store={"type": "sqlite"})
        server.create(AGENTS, {k: v for k, v in body.items() if k != "status"})
        first = await _until(sts)
        made = {(k[2], n) for k, bucket in server.objects.items() for (_, n) in bucket}
        assert {
            ("configmaps", "edge-scripts"),
            ("services", "edge"),
            ("services", "edge-headless"),
            ("poddisruptionbudgets", "edge"),
            ("networkpolicies", "edge"),
            ("secrets", "edge-ca"),
            ("secrets", "edge-tls"),
            ("secrets", "edge-client-tls"),
        } <= made
        await _until(lambda: (agent().get("status") or {}).get("phase") == "Progressing")
        # a StatefulSet deleted by hand is made again by the watching operator
        server.delete(STS, "vaults", "edge")
        again = await _until(sts)
        assert again["metadata"]["uid"] != first["metadata"]["uid"]
        # the StatefulSet's progress reaches the VaultAgent's status without any timer
        server.patch(
            STS,
            "vaults",
            "edge",
            {
                "status": {
                    "observedGeneration": again["metadata"]["generation"],
                    "replicas": 1,
                    "readyReplicas": 1,
                    "updatedReplicas": 1,
                }
            },
        )
        await _until(lambda: (agent().get("status") or {}).get("phase") == "Ready")
        assert not agent()["metadata"].get("finalizers")
    finally:
        if operator.returncode is None:
            operator.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.5)
            server.end_watches()
            await asyncio.wait_for(operator.wait(), 30)
        log.close()
    # with the operator gone, deleting the VaultAgent completes at once (no finalizer), and the
    # garbage collector takes what it owned
    assert server.delete(AGENTS, "vaults", "edge") is not None
    assert server.stored(AGENTS, "vaults", "edge") is None
    assert sts() is None
    patched = [p for m, p in server.requests if m == "PATCH" and "/vaultagents/" in p]
    assert patched  # kopf did write to the VaultAgent (progress, status), never a finalizer
    await runner.cleanup()
