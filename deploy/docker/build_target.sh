#!/bin/sh
# Inside the Dockerfile's builder: build_target "PACKAGES" EXTRA makes the venv of one image.
#  1. a wheel of only PACKAGES (pyproject's package list narrowed). The `keyvault` console
#     script is the operator CLI from apps/, which no image carries: the agent image gets
#     agent/console.py's `keyvault agent …` instead (the operator's pods run those words),
#     the other images none,
#  2. /opt/venv without pip, holding that wheel and the EXTRA's dependencies (pip runs from
#     the builder's own Python via --python),
#  3. a CycloneDX JSON SBOM of /opt/venv at /opt/sbom.cdx.json (cyclonedx-py from /opt/sbom).
set -eu
packages="$1"
extra="$2"
cd /src
include=""
for p in $packages; do include="$include\"$p*\", "; done
sed -i "s/^include = .*/include = [${include%, }]/" pyproject.toml
sed -i '/^\[project.scripts\]/,/^$/d' pyproject.toml
case " $packages " in
  *" agent "*) printf '[project.scripts]\nkeyvault = "agent.console:main"\n\n' >> pyproject.toml ;;
esac
pip wheel -q --no-deps --wheel-dir /wheels .
python3 -m venv --without-pip /opt/venv
pip --python /opt/venv/bin/python install -q --no-compile "$(ls /wheels/keyvault-*.whl)[$extra]"
/opt/venv/bin/python -m compileall -q -j 0 /opt/venv/lib >/dev/null
test ! -e /opt/venv/bin/pip
/opt/sbom/bin/cyclonedx-py environment --of JSON --output-reproducible \
  --pyproject /src/pyproject.toml -o /opt/sbom.cdx.json /opt/venv/bin/python
