#!/usr/bin/env bash
# CycloneDX SBOM (JSON) of the host's .venv: dist/sbom.cdx.json, or the path given as $1.
# The images carry their own, made at build time (/usr/share/keyvault/sbom.cdx.json).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-dist/sbom.cdx.json}"
[ -x .venv/bin/python ] || { echo "sbom: no .venv; run scripts/setup.sh first" >&2; exit 1; }
if [ ! -x .venv/bin/cyclonedx-py ]; then
  .venv/bin/python -m pip install -q 'cyclonedx-bom==7.5.0' \
    || { echo "sbom: could not install cyclonedx-bom; hint: is PyPI reachable?" >&2; exit 1; }
fi
mkdir -p "$(dirname "$out")"
.venv/bin/cyclonedx-py environment --of JSON --output-reproducible --pyproject pyproject.toml \
  -o "$out" .venv/bin/python
echo "$out"
