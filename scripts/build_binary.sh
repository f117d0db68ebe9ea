#!/usr/bin/env bash
# Build the single-file agent binary (dist/keyvault-agent). Options: --dist DIR | --cache DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python deploy/binary/build.py "$@"
