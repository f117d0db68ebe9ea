#!/usr/bin/env bash
# Run KeyVault on embedded defaults: `keyvault demo` (an agent on SQLite with a generated key).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh agent
exec .venv/bin/keyvault demo "$@"
