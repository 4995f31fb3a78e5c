#!/usr/bin/env bash
# Make sure a Docker engine answers on /var/run/docker.sock.
# Installs Debian's docker.io when no engine is installed and we are allowed to
# (root, and ENVBUILDER_NO_INSTALL unset); starts dockerd detached when it is not
# running, because a session's processes do not survive it.
set -euo pipefail
sock=/var/run/docker.sock
log=${ENVBUILDER_DOCKERD_LOG:-/var/log/envbuilder-dockerd.log}

engine_answers() { [ -S "$sock" ] && /usr/bin/env docker version >/dev/null 2>&1; }

if engine_answers; then exit 0; fi

if ! command -v dockerd >/dev/null 2>&1; then
  if [ "$(id -u)" != 0 ] || [ -n "${ENVBUILDER_NO_INSTALL:-}" ]; then
    echo "envbuilder: no Docker engine is installed; install docker.io (or Docker CE) and start it" >&2
    exit 1
  fi
  echo "envbuilder: installing docker.io ..." >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq docker.io >/dev/null
fi

if ! pgrep -x dockerd >/dev/null 2>&1; then
  rm -f "$sock" /var/run/docker.pid
  setsid dockerd >>"$log" 2>&1 < /dev/null &
fi
for _ in $(seq 1 120); do
  if engine_answers; then exit 0; fi
  sleep 0.5
done
echo "envbuilder: dockerd did not come up within 60 s; see $log" >&2
tail -n 20 "$log" >&2 || true
exit 1
