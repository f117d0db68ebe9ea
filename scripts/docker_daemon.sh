#!/usr/bin/env bash
# A Docker engine of our own, for machines where none runs: `start` launches dockerd with its
# data, exec root and socket under ${KEYVAULT_DOCKER_DIR:-${XDG_CACHE_HOME:-~/.cache}/keyvault/dockerd}
# (image layers survive between runs, so later builds reuse them) unless that socket already
# answers; `stop` stops the dockerd it started, by the pid it recorded; `status` exits 0 when
# the socket answers; `env` prints DOCKER_HOST=unix://… for `eval`. Needs root and the Debian package docker.io.
set -euo pipefail
dir="${KEYVAULT_DOCKER_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/keyvault/dockerd}"
sock="$dir/docker.sock"
export DOCKER_HOST="unix://$sock"

say() { echo "docker_daemon: $*" >&2; }
fail() { say "$1"; say "hint: $2"; exit 1; }
answers() { docker version >/dev/null 2>&1; }

case "${1:-start}" in
  env) echo "DOCKER_HOST=$DOCKER_HOST" ;;
  status) answers ;;
  start)
    mkdir -p "$dir"
    exec 9>"$dir/.lock"
    flock 9
    if ! answers; then
      command -v dockerd >/dev/null || fail "dockerd is not installed" "apt-get install -y docker.io"
      [ "$(id -u)" = 0 ] || fail "dockerd needs root here" "run as root, or point DOCKER_HOST at a running engine"
      rm -f "$sock"
      # setsid: the engine outlives this script and the test session that asked for it
      setsid dockerd --data-root "$dir/data" --exec-root "$dir/exec" -H "$DOCKER_HOST" \
        --pidfile "$dir/dockerd.pid" >"$dir/dockerd.log" 2>&1 </dev/null 9>&- &
      for _ in $(seq 1 150); do
        answers && break
        sleep 0.2
      done
      answers || fail "dockerd did not answer in 30 s (log: $dir/dockerd.log)" \
        "is another dockerd using $dir? does this machine allow overlay mounts and iptables?"
      say "started dockerd (pid $(cat "$dir/dockerd.pid")) at $DOCKER_HOST"
    fi
    echo "DOCKER_HOST=$DOCKER_HOST"
    ;;
  stop)
    if [ -s "$dir/dockerd.pid" ]; then
      kill "$(cat "$dir/dockerd.pid")" 2>/dev/null || true
      for _ in $(seq 1 100); do [ -e "$dir/dockerd.pid" ] || break; sleep 0.1; done
    fi
    ;;
  *) fail "unknown command ${1}" "use start, stop or env" ;;
esac
