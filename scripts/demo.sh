#!/usr/bin/env bash
# Run the whole product on one machine: `keyvault demo` (a control plane, two agents with sample
# secrets, and the TUI logged in). Pass --headless to only print URLs and credentials.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh all
exec .venv/bin/keyvault demo "$@"
