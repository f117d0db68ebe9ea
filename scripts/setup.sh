#!/usr/bin/env bash
# Make .venv and install KeyVault with the given extras (default: dev), plus the Debian
# packages those extras need. Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-dev}"

need_apt=()
case "$extras" in
  dev|all) for pkg in ${KEYVAULT_APT_PACKAGES:-}; do
             dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg"); done ;;
esac
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "==> installing Debian packages: ${need_apt[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv"
  "$PY" -m venv .venv
fi
stamp=".venv/.installed-$extras"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "==> installing keyvault[$extras] into .venv (first time takes a minute)"
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  # compat mode puts the checkout on sys.path, so a folder named like one of our packages in
  # the working directory (say ./agent) can never shadow it as a namespace package
  .venv/bin/python -m pip install -q -e ".[$extras]" --config-settings editable_mode=compat
  touch "$stamp"
fi
