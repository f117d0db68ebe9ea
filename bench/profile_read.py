"""Where the time goes: py-spy profiles of the agent's read path and of its store writes.

Not part of ``python -m bench``; run it when a target is missed::

    .venv/bin/python -m bench.profile_read                # agent read path under ab load
    .venv/bin/python -m bench.profile_read --bare         # the bare aiohttp server, same load
    .venv/bin/python -m bench.profile_read --writes       # store-layer writes (synchronous=NORMAL)

It needs py-spy in the virtualenv (``.venv/bin/pip install py-spy``). The read profile samples a
real ``keyvault agent run`` process while ab (``-k -c32``, mutual TLS 1.3) reads a 1 KB secret;
it prints the busiest functions by own time and by inclusive time, and the share of the agent's
own steps (authentication, audit, metrics, decrypt, JSON) next to aiohttp's and TLS's.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench.harness import ab_argv, log, run_ab, workspace
from bench.servers import agent_target, init_agent, seed_secret, start_agent, start_bare

# inclusive shares worth showing, by the start of py-spy's "function (file:line)" frame name
STEPS = [
    ("TLS: encrypt + send (SSLProtocol._do_write)", "SSLProtocol._do_write "),
    ("TLS: receive + decrypt + HTTP parse (_read_ready)", "_SelectorSocketTransport._read_ready "),
    ("aiohttp: request dispatch (Application._handle)", "Application._handle "),
    ("aiohttp: finish_response (headers, write_eof)", "RequestHandler.finish_response "),
    ("agent: edge middleware, all of it", "edge "),
    ("agent: TokenService.authenticate", "TokenService.authenticate "),
    ("agent: AuditLog.append", "AuditLog.append "),
    ("agent: Metrics.observe", "Metrics.observe "),
    ("agent: read_secret view", "read_secret "),
    ("agent: SecretService.reveal (AES-GCM unwrap + decrypt)", "SecretService.reveal "),
    ("agent:   of which _aad (JSON for the AES-GCM associated data)", "_aad "),
    ("agent: web.json_response (json.dumps + Response)", "json_response "),
    ("store: Store._commit_batch (writer thread)", "Store._commit_batch "),
    ("store: SecretService.create", "SecretService.create "),
    ("store: SecretService.update", "SecretService.update "),
    ("store: SecretService.create.<locals>.txn", "SecretService.create.<locals>.txn "),
    ("store: SecretService.update.<locals>.txn", "SecretService.update.<locals>.txn "),
    ("store: _insert_version", "_insert_version "),
    ("sqlalchemy: Connection.execute (build params, compile cache, run)", "Connection.execute "),
    ("sqlalchemy: statement building (.values / .where)", "values (<sqlalchemy generated"),
    ("sqlalchemy: compile-cache lookup (_compile_w_cache)", "ClauseElement._compile_w_cache "),
    ("sqlite3 C: cursor.execute (DefaultDialect.do_execute)", "DefaultDialect.do_execute "),
    ("sqlalchemy: savepoints (begin_nested)", "Connection.begin_nested "),
    ("sqlalchemy: savepoint release (NestedTransaction.commit)", "NestedTransaction.commit "),
    ("sqlalchemy: transaction commit", "Transaction.commit "),
    ("sqlite3 C: COMMIT (DefaultDialect.do_commit)", "DefaultDialect.do_commit "),
    ("crypto: KeyManager.seal", "KeyManager.seal "),
    ("store: answer callers (_deliver)", "_deliver "),
]
BORING = (
    "_run_module_as_main",
    "_run_code",
    "<module>",
    "main ",
    "Command.",
    "Group.invoke",
    "Context.invoke",
    "friendly_errors",
    "run_cmd",
    "run (asyncio",
    "Runner.run",
    "BaseEventLoop.run_until_complete",
    "BaseEventLoop.run_forever",
    "BaseEventLoop._run_once",
    "Handle._run",
    "Thread._bootstrap",
    "Thread.run",
    "serve ",
    "_serve ",
)


def _idle_leaves() -> tuple[str, ...]:
    """Leaf frames of threads that wait for work (py-spy does not see these as idle)."""
    import inspect

    from agent.store.db import Store

    lines, first = inspect.getsourcelines(Store._write_loop)
    get = next((first + i for i, text in enumerate(lines) if "self._queue.get()" in text), -1)
    return (
        "_worker (concurrent/futures/thread.py:81)",
        f"Store._write_loop (agent/store/db.py:{get})",
        "Condition.wait (threading.py",
        "Event.wait (threading.py",
        "Thread.join (threading.py",
    )


def analyse(
    raw: Path, top: int = 25, *, main_only: bool = False, only_thread: str | None = None
) -> str:
    """A text summary of a py-spy ``--format raw`` (collapsed stacks) file.

    Samples of threads waiting for work are dropped; with ``main_only`` only the event-loop
    (main) thread counts, and shares are of its samples (likewise ``only_thread``, a thread name).
    """
    total = idle = 0
    idle_leaves = _idle_leaves()
    by_thread: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    for line in raw.read_text().splitlines():
        if not line.strip():
            continue
        stack, _, count = line.rpartition(" ")
        n = int(count)
        frames = stack.split(";")
        if frames[-1].startswith(idle_leaves):
            idle += n
            continue
        where = next((f for f in frames if f.startswith("thread ")), None)
        where = where or (
            "other threads" if "Thread._bootstrap" in stack else "event loop (main thread)"
        )
        if (main_only and where != "event loop (main thread)") or (
            only_thread and only_thread not in where
        ):
            by_thread[where] += n
            continue
        total += n
        by_thread[where] += n
        own[frames[-1]] += n
        for f in set(frames):
            incl[f] += n
    if not total:
        return "no samples"
    pct = lambda n: f"{100 * n / total:5.1f}%"  # noqa: E731
    base = (
        "the event loop's samples"
        if main_only
        else f"{only_thread}'s samples"
        if only_thread
        else "all busy samples"
    )
    out = [f"busy samples: {sum(by_thread.values())} (waiting threads left out: {idle})"]
    out += [f"  {n:6d}  {name}" for name, n in by_thread.most_common()]
    out.append(f"\nsteps (inclusive share of {base}):")
    for label, prefix in STEPS:
        n = sum(c for f, c in incl.items() if f.startswith(prefix))
        if n:
            out.append(f"  {pct(n)}  {label}")
    out.append(f"\ntop {top} by own time:")
    out += [f"  {pct(n)}  {f}" for f, n in own.most_common(top)]
    out.append(f"\ntop {top} by inclusive time (outer loop frames left out):")
    shown = [(f, n) for f, n in incl.most_common() if not f.startswith(BORING)]
    out += [f"  {pct(n)}  {f}" for f, n in shown[:top]]
    return "\n".join(out)


def pyspy() -> str:
    """The py-spy executable next to this Python, or on PATH."""
    local = Path(sys.executable).with_name("py-spy")
    found = str(local) if local.exists() else shutil.which("py-spy")
    if not found:
        raise SystemExit("py-spy is needed: .venv/bin/pip install py-spy")
    return found


def profile_read(seconds: float, bare: bool, rate: int) -> str:
    """Profile the agent (or bare server) while ab reads for ``seconds``."""
    with workspace() as (folder, procs):
        setup = init_agent(folder / "agent")
        proc = start_agent(procs, setup)
        secret_id, body = seed_secret(setup)
        target = agent_target(proc, setup, secret_id)
        if bare:
            target = start_bare(procs, folder, setup.tls, body, setup.client_pem(), secret_id)
        run_ab(target, requests=1_000_000, seconds=2)  # warm-up
        raw = folder / "profile.txt"
        ab = subprocess.Popen(
            ab_argv(target, requests=5_000_000, seconds=seconds + 4),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        try:
            time.sleep(1)
            log(f"py-spy on pid {target.pid} for {seconds:.0f} s")
            subprocess.run(
                [
                    pyspy(),
                    "record",
                    "-p",
                    str(target.pid),
                    "-d",
                    str(int(seconds)),
                    "-r",
                    str(rate),
                    "-f",
                    "raw",
                    "-o",
                    str(raw),
                ],
                check=True,
                capture_output=True,
            )
            ab_out, _ = ab.communicate(timeout=seconds + 60)
        finally:
            if ab.poll() is None:
                ab.kill()
                ab.wait()
        rps = next((ln for ln in ab_out.splitlines() if ln.startswith("Requests per second")), "")
        return f"{target.name} under ab -k -c32 (profiled, so slower): {rps}\n" + analyse(
            raw, main_only=True
        )


def writes_child(data_dir: Path, seconds: float) -> None:
    """In the profiled child: open the agent, say ``ready``, run store writes (NORMAL)."""
    from bench.writes import agent_writes, open_agent

    agent = open_agent(data_dir, "NORMAL")
    try:
        print("ready", file=sys.stderr, flush=True)
        time.sleep(0.5)
        done, took = asyncio.run(agent_writes(agent, 10_000_000, seconds, "prof"))
        print(
            f"{done} writes in {took:.1f} s = {done / took:,.0f} writes/s",
            file=sys.stderr,
            flush=True,
        )
    finally:
        agent.close()


def profile_writes(seconds: float, rate: int) -> str:
    """Profile 32-task store-layer writes in a child process, every thread, after its start-up."""
    with workspace() as (folder, _procs):
        setup = init_agent(folder / "agent")
        raw = folder / "profile.txt"
        child = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.profile_read",
                "--writes-child",
                str(setup.data_dir),
                "--seconds",
                str(seconds + 3),
            ],
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert child.stderr is not None
            if child.stderr.readline().strip() != "ready":
                raise RuntimeError("the write child did not start")
            time.sleep(1)
            subprocess.run(
                [
                    pyspy(),
                    "record",
                    "-p",
                    str(child.pid),
                    "-d",
                    str(int(seconds)),
                    "-r",
                    str(rate),
                    "-f",
                    "raw",
                    "-o",
                    str(raw),
                    "--threads",
                ],
                check=True,
                capture_output=True,
            )
            _, rest = child.communicate(timeout=seconds + 60)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
        rate_line = next((ln for ln in rest.splitlines() if "writes/s" in ln), "")
        return (
            f"store-layer writes, 32 tasks, synchronous=NORMAL (profiled): {rate_line}\n"
            + analyse(raw, only_thread="kv-write")
            + "\n\nthe event loop's thread (the service layer around the writes):\n"
            + analyse(raw, only_thread="MainThread")
        )


def main() -> None:
    """Parse the arguments and print a profile summary."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.profile_read", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--rate", type=int, default=200, help="samples per second")
    parser.add_argument(
        "--bare", action="store_true", help="profile the bare aiohttp server instead"
    )
    parser.add_argument("--writes", action="store_true", help="profile store-layer writes instead")
    parser.add_argument("--writes-child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.writes_child:
        writes_child(args.writes_child, args.seconds)
        return
    print(
        profile_writes(args.seconds, args.rate)
        if args.writes
        else profile_read(args.seconds, args.bare, args.rate)
    )


if __name__ == "__main__":
    main()
