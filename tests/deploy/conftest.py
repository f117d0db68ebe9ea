"""Deployment-test fixtures: one Docker engine with freshly built images for the whole run."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import need_service

ROOT = Path(__file__).resolve().parents[2]


@contextlib.contextmanager
def _run_lock(folder: Path) -> Iterator[None]:
    """An exclusive lock shared by the xdist workers of this run (POSIX; Docker tests only)."""
    import fcntl  # not on Windows, where these tests are not collected

    with open(folder / "docker_env.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _build_images() -> str:
    """Run ``scripts/docker_images.sh --test`` (waits for a build under way) and return
    DOCKER_HOST; skip, or fail under CI, when Docker cannot be used."""
    missing = [
        t for t in ("docker", "dockerd", "debootstrap", "docker-compose") if not shutil.which(t)
    ]
    if missing:
        need_service("Docker", RuntimeError(f"not installed: {', '.join(missing)}"))
    started = time.monotonic()
    done = subprocess.run(
        [str(ROOT / "scripts" / "docker_images.sh"), "--test"],
        capture_output=True,
        text=True,
        timeout=840,
    )
    if done.returncode != 0:
        need_service("Docker", RuntimeError(done.stderr.strip()[-2000:]))
    print(f"images ready after {time.monotonic() - started:.1f} s: {done.stderr.strip()}")
    return done.stdout.strip().splitlines()[-1].removeprefix("DOCKER_HOST=")


@pytest.fixture(scope="session")
def docker_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment of a Docker engine holding freshly built images (built here or in the
    background by scripts/test.sh; either way this waits for the same lock).

    Built (or found up to date) once per run: under xdist the first worker to need it checks the
    images and leaves DOCKER_HOST in the run's shared temporary folder for the other worker
    (test_docker_stack.py and test_operator_pods.py may land on different workers)."""
    if "PYTEST_XDIST_WORKER" not in os.environ:
        host = _build_images()
    else:
        shared = tmp_path_factory.getbasetemp().parent  # one folder per run, shared by workers
        found = shared / "docker_env.json"
        with _run_lock(shared):
            if found.exists():
                host = json.loads(found.read_text())["DOCKER_HOST"]
            else:
                host = _build_images()
                found.write_text(json.dumps({"DOCKER_HOST": host}))
    return {**os.environ, "DOCKER_HOST": host, "DOCKER_BUILDKIT": "0"}
