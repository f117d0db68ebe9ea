"""``python -m bench``: run every benchmark, print one table (and write it with ``--out``)."""

from __future__ import annotations

import argparse
import platform
import ssl
import sys
import threading
import time
import traceback
from pathlib import Path

from bench import control, kdf, read_tls, rss, writes
from bench.harness import Plan, Report, ab_available, loadavg, log, median, workspace

BENCHES = ("writes", "read", "kdf", "rss", "stream", "uplink")


def machine() -> str:
    """One paragraph about where the figures come from."""
    import os

    import aiohttp

    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    bao = "not installed"
    try:
        import subprocess

        from bench.servers import bao_binary

        binary = bao_binary()
        if binary:
            bao = (
                subprocess.run(
                    [binary, "version"], capture_output=True, text=True, timeout=10, check=False
                )
                .stdout.split(" (")[0]
                .strip()
            )
    except Exception:
        pass
    commit = "unknown commit"
    try:
        import subprocess

        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).resolve().parent.parent,
            timeout=10,
            check=False,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).resolve().parent.parent,
            timeout=10,
            check=False,
        ).stdout.strip()
        commit = f"commit {head}{' + uncommitted changes' if dirty else ''}" if head else commit
    except Exception:
        pass
    return (
        f"{time.strftime('%Y-%m-%d %H:%M:%S %Z')} · {commit} · {os.cpu_count()} CPUs ({model}) · "
        f"Python {platform.python_version()} · aiohttp {aiohttp.__version__} · {ssl.OPENSSL_VERSION} · "
        f"{bao} · load average at start {Path('/proc/loadavg').read_text().split()[0]}"
    )


def os_cpus() -> int:
    """Number of CPUs."""
    import os

    return os.cpu_count() or 1


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks; 0 when they ran (targets missed or not), 1 if one crashed."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="short run (under 3 minutes)")
    parser.add_argument("--out", type=Path, help="also write the markdown table to this file")
    parser.add_argument(
        "--only", action="append", choices=BENCHES, help="run only this benchmark (repeatable)"
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the temp folder (logs) for a look"
    )
    args = parser.parse_args(argv)
    if not ab_available():
        print("ApacheBench is needed: apt-get install -y apache2-utils", file=sys.stderr)
        return 2
    plan = Plan.quick() if args.quick else Plan()
    chosen = args.only or list(BENCHES)
    report = Report()
    header = machine()
    started = time.monotonic()
    crashed = []
    loads: list[float] = []
    done = threading.Event()

    def sample_load() -> None:  # other work on the machine competes with the benchmarks
        while not done.wait(5):
            loads.append(loadavg())

    threading.Thread(target=sample_load, name="loadavg", daemon=True).start()
    try:
        with workspace(keep=args.keep) as (folder, procs):
            for name in BENCHES:
                if name not in chosen:
                    continue
                log(f"--- {name}")
                sub = folder / name
                sub.mkdir()
                try:
                    if name == "writes":
                        writes.run(sub, plan, report)
                    elif name == "read":
                        read_tls.run(sub, procs, plan, report)
                    elif name == "kdf":
                        kdf.run(sub, procs, plan, report)
                    elif name == "rss":
                        rss.run(sub, procs, plan, report)
                    elif name == "stream":
                        control.run_stream(sub, plan, report)
                    else:
                        control.run_uplink(sub, plan, report)
                except KeyboardInterrupt:
                    raise
                except Exception as exc:
                    traceback.print_exc()
                    crashed.append(name)
                    report.notes.append(f"benchmark {name} failed: {exc}")
                finally:
                    procs.close()
    except KeyboardInterrupt:
        log("interrupted; servers stopped and temp files removed")
        return 130
    finally:
        done.set()
    took = time.monotonic() - started
    if loads:
        report.notes.append(
            f"1-minute load average during the run (sampled every 5 s, {os_cpus()} CPUs): min {min(loads):.2f}, "
            f"median {median(loads):.2f}, max {max(loads):.2f}. Above ~1 the servers, ab and other work share "
            "the cores: compare the ratios and the CPU-per-request columns rather than absolute req/s."
        )
    text = "\n".join(
        [
            f"KeyVault benchmarks ({'quick' if args.quick else 'full'} run, {took:.0f} s)",
            "",
            header,
            "",
            report.markdown(),
            *(f"\n{title}\n\n{table}" for title, table in report.sections),
            *(["", *(f"- {n}" for n in report.notes)] if report.notes else []),
        ]
    )
    print(text)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")
    return 1 if crashed else 0


if __name__ == "__main__":
    sys.exit(main())
