"""Where a running agent's memory goes, by package: ``python -m bench.rss_breakdown``.

A fresh agent is started with ``python -X importtime``; once it serves, its import tree tells
which modules it loaded and which module first imported each one. A fresh interpreter then
imports every module that is not KeyVault's own, in the same order, and reports ``VmRSS``; each
family of packages is charged the difference when it is left out together with everything only
it pulled in (modules that something else also needs are imported anyway). Each figure is the
median of 3 interpreters. This is the table in docs/performance.md, "Issue 18, round 3: memory".
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.harness import Processes, log, read_url_file, wait_for, workspace
from bench.servers import init_agent

OWN = ("agent", "common", "apps", "serverkit", "control_plane", "k8s_operator", "__main__")
FAMILIES = {
    "SQLAlchemy": ("sqlalchemy",),
    "aiohttp (+ yarl, multidict, attrs, …)": (
        "aiohttp",
        "yarl",
        "multidict",
        "aiohappyeyeballs",
        "aiosignal",
        "frozenlist",
        "propcache",
        "attr",
        "idna",
    ),
    "pydantic (+ core, settings)": (
        "pydantic",
        "pydantic_core",
        "pydantic_settings",
        "annotated_types",
        "typing_inspection",
        "dotenv",
    ),
    "cryptography": ("cryptography", "_cffi_backend"),
    "re2": ("re2",),
    "uvloop": ("uvloop",),
    "yaml": ("yaml", "_yaml"),
    "click": ("click",),
}
IMPORT_ALL = """
import importlib, json, sys
for name in json.loads(sys.argv[1]):
    try:
        importlib.import_module(name)
    except Exception:
        pass
print([int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmRSS")][0])
"""


def import_tree(stderr: str) -> list[tuple[str, list[str]]]:
    """``-X importtime`` output as (module, chain of importers up to the top) in import order."""
    rows = []
    for line in stderr.splitlines():
        if line.startswith("import time:") and "self [us]" not in line:
            name = line.split("|")[2]
            rows.append(((len(name) - len(name.lstrip())) // 2, name.strip()))
    tree = []
    for i, (depth, name) in enumerate(rows):  # a parent is listed after its children
        chain, level = [name], depth
        for parent_depth, parent in rows[i + 1 :]:
            if parent_depth < level:
                chain.append(parent)
                level = parent_depth
        tree.append((name, chain))
    return tree


def _rss_mib(modules: list[str]) -> float:
    runs = [
        subprocess.run(
            [sys.executable, "-c", IMPORT_ALL, json.dumps(modules)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for _ in range(3)
    ]
    return statistics.median(int(out) for out in runs) / 1024


def _agent_imports(folder: Path, procs: Processes) -> list[tuple[str, list[str]]]:
    setup = init_agent(folder / "agent")
    url_file = setup.data_dir / "agent.url"
    argv = [sys.executable, "-X", "importtime", "-m", "apps.cli.main", "agent", "run"]
    err = folder / "importtime.txt"
    proc = procs.start(
        "agent", [*argv, "--data-dir", str(setup.data_dir)], log_file=err, env=setup.env()
    )
    wait_for(lambda: read_url_file(url_file) is not None, proc, 60, "agent.url")
    time.sleep(0.5)
    procs.close()
    return import_tree(err.read_text())


def main() -> None:
    """Print the breakdown as a markdown table."""
    with workspace() as (folder, procs):
        tree = _agent_imports(folder, procs)
    top = {name: [m.split(".")[0] for m in chain] for name, chain in tree}
    others = [name for name, _ in tree if name.split(".")[0] not in OWN]
    total = _rss_mib(others)
    log(f"{len(tree)} modules, {len(others)} not KeyVault's: {total:.1f} MiB")
    print(f"| family | MiB (of {total:.1f} for the {len(others)} modules not KeyVault's) |")
    print("|---|---:|")
    for family, packages in FAMILIES.items():
        kept = [m for m in others if not set(top[m]) & set(packages)]
        print(f"| {family} | {total - _rss_mib(kept):.1f} |")
    print(f"| the interpreter alone | {_rss_mib([]):.1f} |")


if __name__ == "__main__":
    main()
