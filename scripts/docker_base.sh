#!/usr/bin/env bash
# Make the Python base images the Dockerfile builds FROM, locally, with no image registry:
#   python:3.11-slim-bookworm            Debian 12 + python3, python3-venv, pip (builder stages)
#   keyvault/python-runtime:3.11-bookworm Debian 12 + python3 only: no pip, no venv module
# Both come from one `debootstrap --variant=minbase bookworm` root. The root file systems are
# cached as tarballs under ${XDG_CACHE_HOME:-~/.cache}/keyvault/docker-base/<recipe hash>/, the
# hash of RECIPE, suite, mirror and package lists (bump RECIPE when changing how the root is
# made), and imported into the Docker engine at $DOCKER_HOST only when the engine lacks an image
# carrying that hash as a label. Prints the two image IDs as shell assignments
# (KEYVAULT_BUILDER_IMAGE=sha256:… KEYVAULT_RUNTIME_IMAGE=…) on stdout, progress on stderr.
# Safe to run again and concurrently (one flock).
# Needs root and the Debian package debootstrap; `--no-import` only fills the cache.
set -euo pipefail
import=1
[ "${1:-}" = "--no-import" ] && import=0

MIRROR="${KEYVAULT_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
RECIPE=1
SUITE=bookworm
RUNTIME_PKGS="python3 ca-certificates tzdata"
BUILDER_PKGS="python3-venv python3-pip"
recipe_hash="$(echo "$RECIPE $SUITE $MIRROR $RUNTIME_PKGS / $BUILDER_PKGS" | sha256sum | cut -c1-16)"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/keyvault/docker-base/$recipe_hash"
mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9

say() { echo "docker_base: $*" >&2; }
fail() { say "$1"; say "hint: $2"; exit 1; }

if [ ! -s "$cache/runtime.tar" ] || [ ! -s "$cache/builder.tar" ]; then
  command -v debootstrap >/dev/null \
    || fail "debootstrap is not installed" "apt-get install -y debootstrap (as root)"
  [ "$(id -u)" = 0 ] || fail "debootstrap needs root" "run this script as root (or via sudo)"
  root="$cache/root"
  rm -rf "$root" && mkdir -p "$root"
  start=$SECONDS
  say "debootstrap $SUITE into $root (first run only: a minute or two)"
  debootstrap --variant=minbase "$SUITE" "$root" "$MIRROR" >"$cache/debootstrap.log" 2>&1 \
    || fail "debootstrap failed (log: $cache/debootstrap.log)" "is $MIRROR reachable?"
  in_root() { chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
    DEBIAN_FRONTEND=noninteractive "$@"; }
  trim() { # what a container never needs: docs, man pages, locales, apt lists and caches
    in_root apt-get clean
    rm -rf "$root"/var/lib/apt/lists/* "$root"/usr/share/doc/* "$root"/usr/share/man/* \
      "$root"/usr/share/info/* "$root"/var/cache/debconf/*-old "$root"/var/log/*.log
    find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name 'C.*' -exec rm -rf {} +
  }
  mount --bind /proc "$root/proc"
  trap 'umount "$root/proc" 2>/dev/null || true' EXIT
  in_root apt-get update -qq >>"$cache/debootstrap.log" 2>&1
  in_root apt-get install -y -qq --no-install-recommends $RUNTIME_PKGS >>"$cache/debootstrap.log" 2>&1 \
    || fail "apt-get install $RUNTIME_PKGS failed (log: $cache/debootstrap.log)" "is $MIRROR reachable?"
  ln -sf python3 "$root/usr/bin/python"
  trim
  umount "$root/proc"
  tar --numeric-owner -C "$root" -cf "$cache/runtime.tar.part" . && mv "$cache/runtime.tar.part" "$cache/runtime.tar"
  mount --bind /proc "$root/proc"
  in_root apt-get update -qq >>"$cache/debootstrap.log" 2>&1
  in_root apt-get install -y -qq --no-install-recommends $BUILDER_PKGS >>"$cache/debootstrap.log" 2>&1 \
    || fail "apt-get install $BUILDER_PKGS failed (log: $cache/debootstrap.log)" "is $MIRROR reachable?"
  trim
  umount "$root/proc"
  trap - EXIT
  # pip inside the builder works as on this host (same index settings and CA bundle)
  [ -f /etc/pip.conf ] && cp /etc/pip.conf "$root/etc/pip.conf"
  cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
  tar --numeric-owner -C "$root" -cf "$cache/builder.tar.part" . && mv "$cache/builder.tar.part" "$cache/builder.tar"
  rm -rf "$root"
  say "root file systems cached in $cache ($((SECONDS - start)) s)"
fi
[ "$import" = 1 ] || exit 0

command -v docker >/dev/null || fail "no docker client" "apt-get install -y docker.io"
docker version >/dev/null 2>&1 \
  || fail "no Docker engine at ${DOCKER_HOST:-the default socket}" "scripts/docker_daemon.sh start"

import_tar() { # tarball, tag: import unless the engine's image already carries this recipe hash
  local have
  have="$(docker image inspect -f '{{index .Config.Labels "org.keyvault.base-recipe"}}' "$2" 2>/dev/null || true)"
  if [ "$have" != "$recipe_hash" ]; then
    say "importing $2"
    docker import \
      --change "LABEL org.keyvault.base-recipe=$recipe_hash" \
      --change 'LABEL org.opencontainers.image.base.name=debian:bookworm' \
      --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8' \
      --change 'CMD ["python3"]' \
      "$1" "$2" >/dev/null
  fi
  docker image inspect -f '{{.Id}}' "$2"
}
echo "KEYVAULT_BUILDER_IMAGE=$(import_tar "$cache/builder.tar" python:3.11-slim-bookworm)"
echo "KEYVAULT_RUNTIME_IMAGE=$(import_tar "$cache/runtime.tar" keyvault/python-runtime:3.11-bookworm)"
