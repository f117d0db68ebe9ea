"""Build the agent binary with PyInstaller: ``python deploy/binary/build.py``.

One folder, not one self-extracting file: ``dist/keyvault-agent/keyvault-agent`` next to its
``_internal/`` libraries, shipped as ``dist/keyvault-agent-<version>-linux-<arch>.tar.gz``. A
one-file build unpacks itself into ``$TMPDIR`` and runs from there, so it fails where ``/tmp``
is mounted ``noexec`` (the CIS default), and its launcher is a second process: SIGKILL of the
launcher left the agent running and a 53 MB temp folder behind. The one-folder executable *is*
the agent process, writes nothing to ``$TMPDIR`` and starts faster (nothing to unpack).

Prints the executable's path on standard output. With ``--cache DIR`` a build from the same
sources (hash of the agent's code, this script, Python and PyInstaller versions) is reused.
"""

from __future__ import annotations

import argparse
import hashlib
import platform
import shutil
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NAME = "keyvault-agent"
ENTRY = ROOT / "deploy" / "binary" / "entry.py"
SOURCES = (
    "agent",
    "common",
    "serverkit",
    "apps/__init__.py",
    "apps/cli/__init__.py",
    "apps/cli/secrets_cmd.py",
)
MIGRATIONS = "agent/store/migrations"

# Never needed by the agent; some are pulled in by optional imports of what it does use.
EXCLUDES = (
    "control_plane", "apps.tui", "apps.desktop", "apps.core", "tests", "bench",
    "textual", "textual_plotext", "plotext", "rich", "pygments",
    "PySide6", "shiboken6", "qasync", "tkinter", "_tkinter",
    "kopf", "kubernetes", "kubernetes_validate",
    "keyring", "secretstorage", "jeepney", "websockets", "redis", "argon2", "aiosqlite", "greenlet",
    "schemathesis", "hypothesis", "pytest", "_pytest", "IPython", "jedi", "mypy", "numpy",
    "sqlalchemy.dialects.mysql", "sqlalchemy.dialects.mssql", "sqlalchemy.dialects.oracle",
    "sqlalchemy.testing",
    "pydantic", "pydantic_core", "pydantic_settings", "common.settings",
)  # fmt: skip


def source_hash() -> str:
    """A short hash of everything that goes into the binary, to name cached builds."""
    import PyInstaller

    digest = hashlib.sha256(f"{sys.version}|{PyInstaller.__version__}".encode())
    files: list[Path] = [ENTRY, Path(__file__).resolve()]
    for item in SOURCES:
        path = ROOT / item
        files += sorted(path.rglob("*")) if path.is_dir() else [path]
    for path in files:
        if path.is_file() and "__pycache__" not in path.parts:
            digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def pyinstaller_args(dist: Path, work: Path) -> list[str]:
    """The PyInstaller command line for the one-folder agent build."""
    sep = ":"  # PyInstaller's SRC:DEST separator (";" was only for Windows before 6.0)
    data = [
        f"{ROOT / MIGRATIONS}/*.py{sep}{MIGRATIONS}",
        f"{ROOT / MIGRATIONS}/*.mako{sep}{MIGRATIONS}",
        f"{ROOT / MIGRATIONS}/versions/*.py{sep}{MIGRATIONS}/versions",
    ]
    args = [
        str(ENTRY),
        "--onedir",  # no self-extraction: works with a noexec TMPDIR, no launcher process
        "--name", NAME,
        "--noconfirm",
        "--strip",  # symbol tables off the shared libraries: less to unpack at each start
        "--log-level", "WARN",
        "--distpath", str(dist),
        "--workpath", str(work),
        "--specpath", str(work),
        "--paths", str(ROOT),
        "--hidden-import", "alembic.op",
        # the migrations' env.py (data, not analysed) needs the Core tables: nothing on the
        # running path imports them any more (the store runs plain SQL)
        "--hidden-import", "agent.store.schema",
        "--hidden-import", "sqlalchemy.dialects.sqlite",
        "--hidden-import", "alembic.context",
    ]  # fmt: skip
    for item in data:
        args += ["--add-data", item]
    for module in EXCLUDES:
        args += ["--exclude-module", module]
    return args


def version() -> str:
    """The project's version, from pyproject.toml."""
    import tomllib

    with (ROOT / "pyproject.toml").open("rb") as fh:
        return str(tomllib.load(fh)["project"]["version"])


def build(dist: Path) -> Path:
    """Build ``dist/keyvault-agent/`` and its tarball (a fresh PyInstaller work folder each time)."""
    import PyInstaller.__main__

    dist.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="kv-pyi-") as work:
        PyInstaller.__main__.run(pyinstaller_args(dist, Path(work)))
    binary = dist / NAME / NAME
    if not binary.is_file():
        raise SystemExit(f"error: PyInstaller finished but {binary} is missing")
    archive = dist / f"{NAME}-{version()}-linux-{platform.machine()}.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(dist / NAME, arcname=NAME)
    return binary


def cached_build(cache: Path) -> Path:
    """Reuse ``cache/<hash>/keyvault-agent/keyvault-agent`` if present, else build it there."""
    folder = cache / source_hash()
    binary = folder / NAME / NAME
    if binary.is_file():
        return binary
    if cache.exists():
        for old in cache.iterdir():  # keep one build: older hashes are stale
            shutil.rmtree(old, ignore_errors=True)
    return build(folder)


def main(argv: list[str] | None = None) -> None:
    """Command line: ``--dist DIR`` (default ./dist) or ``--cache DIR``; prints the path."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dist", type=Path, default=ROOT / "dist", help="output folder")
    parser.add_argument("--cache", type=Path, help="reuse a build of the same sources from here")
    opts = parser.parse_args(argv)
    binary = cached_build(opts.cache) if opts.cache else build(opts.dist)
    print(binary)


if __name__ == "__main__":
    main()
