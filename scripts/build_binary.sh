#!/usr/bin/env bash
# Build the agent binary: dist/keyvault-agent/keyvault-agent (one folder, PyInstaller --onedir)
# and dist/keyvault-agent-<version>-linux-<arch>.tar.gz. Options: --dist DIR | --cache DIR.
# On a fresh clone it first sets up what it needs: .venv with the agent's dependencies
# (scripts/setup.sh agent) and PyInstaller in it. Every failure ends with a hint.
set -euo pipefail
cd "$(dirname "$0")/.."
fail() { echo "build_binary: $1" >&2; echo "hint: $2" >&2; exit 1; }

PY="${PYTHON:-python3}"
command -v "$PY" >/dev/null || fail "$PY is not installed" \
  "install Python 3.11+ with venv support (Debian/Ubuntu: apt-get install python3 python3-venv)"
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || fail "$("$PY" -V 2>&1) is too old" "the agent needs Python 3.11+; set PYTHON=/path/to/python3.11"
command -v objdump >/dev/null || fail "objdump is missing (PyInstaller reads shared libraries with it)" \
  "apt-get install binutils   (dnf install binutils)"

if ! .venv/bin/python -c 'import aiohttp, sqlalchemy, click' 2>/dev/null; then
  echo "==> setting up .venv with the agent's dependencies (first time: a minute)" >&2
  PYTHON="$PY" scripts/setup.sh agent || fail "could not install the agent's dependencies into .venv" \
    "check that PyPI is reachable and python3-venv is installed; then run scripts/build_binary.sh again"
fi
if ! .venv/bin/python -c 'import PyInstaller' 2>/dev/null; then
  echo "==> installing PyInstaller into .venv" >&2
  .venv/bin/python -m pip install -q 'pyinstaller>=6.10,<7' \
    || fail "could not install PyInstaller into .venv" "check that PyPI is reachable"
fi
exec .venv/bin/python deploy/binary/build.py "$@"
