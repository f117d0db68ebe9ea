"""Micro-benchmark of ``AuditLog.append``: appends per second without and with fsync.

Run from the repository root: ``.venv/bin/python bench/audit_append.py``.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.audit import AuditLog, verify

RUNS = [("no fsync", False, 100_000), ("fsync", True, 2_000)]


def run(folder: Path, key: bytes, *, fsync: bool, count: int) -> float:
    """Append ``count`` typical entries; return the elapsed seconds."""
    with AuditLog(folder, key, fsync=fsync) as log:
        start = time.perf_counter()
        for i in range(count):
            log.append(
                op="secret.read",
                outcome="allowed",
                status=200,
                actor="token:ci-deploy",
                target=f"prod/db/password-{i % 50}",
                remote="10.1.2.3",
                request_id=f"req-{i:012d}",
                extra={"version": 3},
            )
        return time.perf_counter() - start


def main() -> None:
    """Print a small table of appends/s."""
    key = os.urandom(32)
    print(f"{'mode':<10} {'appends':>9} {'seconds':>8} {'appends/s':>11} {'us/append':>10}")
    for name, fsync, count in RUNS:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            elapsed = run(folder, key, fsync=fsync, count=count)
            report = verify(folder, key)
            assert report.ok and report.entries == count, report.problems
        print(
            f"{name:<10} {count:>9,} {elapsed:>8.2f} {count / elapsed:>11,.0f} "
            f"{elapsed / count * 1e6:>10.1f}"
        )


if __name__ == "__main__":
    main()
