#!/usr/bin/env bash
# Run every check: ruff, then mypy and the import-layering contract beside the whole pytest suite
# against the real PostgreSQL and Redis (started here if they are down). Exits non-zero when any
# of them fails.
set -euo pipefail
cd "$(dirname "$0")/.."
# Debian packages the tests need (installed by setup.sh's KEYVAULT_APT_PACKAGES hook when
# missing): a real Secret Service for the operator's keyring tests (tests/apps), the libraries
# offscreen Qt loads (tests/apps/desktop), systemd-analyze for the unit check (tests/deploy),
# a Docker engine, debootstrap and docker-compose for the image and compose-stack test, objdump
# for the binary's build and glibc check (tests/deploy)
export KEYVAULT_APT_PACKAGES="gnome-keyring dbus libegl1 libgl1 libxkbcommon0 libfontconfig1 \
libdbus-1-3 systemd docker.io debootstrap docker-compose binutils ${KEYVAULT_APT_PACKAGES:-}"
scripts/setup.sh dev
export PATH="$PWD/.venv/bin:$PATH"

pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null || {
  echo "==> starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start || true
}
redis-cli -h 127.0.0.1 ping >/dev/null 2>&1 || {
  echo "==> starting Redis"
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no || true
}

# tests/deploy/test_docker_stack.py needs the three images: build them now, in the background,
# while ruff, mypy and the other tests run (mostly download and disk work); the test waits on
# the same lock, then finds every layer cached. KEYVAULT_DOCKER=off skips this head start.
started_dockerd=""
if [ "${KEYVAULT_DOCKER:-auto}" != off ]; then
  mkdir -p .cache
  scripts/docker_daemon.sh status || started_dockerd=1
  echo "==> building the images in the background (log: .cache/docker-images.log)"
  timeout 900 scripts/docker_images.sh --test >.cache/docker-images.log 2>&1 &
fi

echo "==> ruff";        ruff check . && ruff format --check .
# mypy (~15 s of CPU from a cold cache) and the layering contract need no service: they run
# beside pytest's start-up instead of before it; their output is shown, and their failure fails
# the command, once pytest is done
mkdir -p .cache
echo "==> mypy and layering (in the background: .cache/static-checks.log)"
(
  rc=0
  echo "==> mypy";     mypy || rc=1
  echo "==> layering"; lint-imports || rc=1
  exit "$rc"
) >.cache/static-checks.log 2>&1 &
static=$!
echo "==> pytest"
rc=0
# three workers on two cores: much of the suite waits on real processes, schedules and polls, so
# two workers left a third of the CPU idle (docs/performance.md, "Issue 18, round 5")
pytest -n "${KEYVAULT_TEST_WORKERS:-3}" --dist loadfile -q "$@" || rc=$?
static_rc=0
wait "$static" || static_rc=$?
cat .cache/static-checks.log
if [ "$static_rc" -ne 0 ]; then echo "==> mypy or the layering contract failed (above)"; fi
wait  # the background image build, if the tests did not need it
if [ -n "$started_dockerd" ]; then scripts/docker_daemon.sh stop; fi  # ours: stop it by its pid
if [ "$rc" -eq 0 ]; then rc="$static_rc"; fi
exit "$rc"
