#!/usr/bin/env bash
# Build KeyVault's three images with a Docker engine of our own where none runs:
#   keyvault/agent, keyvault/control-plane, keyvault/operator  (tags <version> and latest)
# Starts dockerd (scripts/docker_daemon.sh) unless DOCKER_HOST answers, makes the local base
# images (scripts/docker_base.sh), builds with the classic builder (DOCKER_BUILDKIT=0: nothing is
# pulled), pinning both bases by image ID. `--test` also builds the stand-in PostgreSQL/Redis
# image tests/deploy/test_docker_stack.py uses. Later runs reuse every cached layer. Prints
# DOCKER_HOST=… last; one build at a time (flock), so a background run and the test can share.
set -euo pipefail
cd "$(dirname "$0")/.."
say() { echo "docker_images: $*" >&2; }
if [ -z "${DOCKER_HOST:-}" ] || ! docker version >/dev/null 2>&1; then
  eval "$(scripts/docker_daemon.sh start)"
fi
export DOCKER_HOST DOCKER_BUILDKIT=0
lockdir="${XDG_CACHE_HOME:-$HOME/.cache}/keyvault"
mkdir -p "$lockdir"
exec 8>"$lockdir/images.lock"
flock 8
eval "$(scripts/docker_base.sh)"
version="$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -1)"
revision="$(git rev-parse HEAD 2>/dev/null || echo unknown)"
created="$(git log -1 --format=%cI 2>/dev/null || echo unknown)"
args=(--build-arg "PYTHON_IMAGE=$KEYVAULT_BUILDER_IMAGE" --build-arg "RUNTIME_IMAGE=$KEYVAULT_RUNTIME_IMAGE"
      --build-arg "VERSION=$version" --build-arg "REVISION=$revision" --build-arg "CREATED=$created")
start=$SECONDS
# the classic builder runs every stage before the target: `agent` (the last) builds all three,
# then the other two targets are cache hits
log="$lockdir/docker-build.log"
built() { # $what: the build's output goes to $log, shown when it fails
  "$@" >"$log" 2>&1 && return 0
  grep -v -e DEPRECATED -e 'BuildKit is currently' -e 'environment-variable' "$log" | tail -30 >&2
  say "building $what failed (full log: $log); rerun: DOCKER_HOST=$DOCKER_HOST DOCKER_BUILDKIT=0 ${*}"
  exit 1
}
services=""
if [ "${1:-}" = "--test" ]; then  # needs only the runtime base: build it alongside ours
  log="$lockdir/docker-build-services.log" what=services built docker build \
    --build-arg "BASE=$KEYVAULT_RUNTIME_IMAGE" -t keyvault-test/services:bookworm \
    -f tests/deploy/stack/services.Dockerfile tests/deploy/stack &
  services=$!
fi
for target in agent control-plane operator; do
  what=$target built docker build "${args[@]}" --target "$target" \
    -t "keyvault/$target:$version" -t "keyvault/$target:latest" .
done
if [ -n "$services" ]; then wait "$services"; fi
say "images built in $((SECONDS - start)) s"
echo "DOCKER_HOST=$DOCKER_HOST"
