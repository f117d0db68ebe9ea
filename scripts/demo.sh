#!/usr/bin/env bash
# Run the whole product on one machine: `keyvault demo` (a control plane, two agents with sample
# secrets, and the TUI logged in). --headless only prints URLs and credentials; --desktop opens
# the desktop app instead of the TUI.
set -euo pipefail
cd "$(dirname "$0")/.."
extras=demo
for arg in "$@"; do [ "$arg" = "--desktop" ] && extras=all; done
scripts/setup.sh "$extras"
exec .venv/bin/keyvault demo "$@"
