#!/usr/bin/env bash
# Install the system programs envbuilder's scripts and tests need, when they are missing:
# docker.io (engine and BuildKit-capable client), debootstrap (base images without a registry), curl, git,
# docker-registry and apache2-utils (a loopback registry with basic auth, for the registry tests).
# Needs root and apt-get; elsewhere it names what is missing and leaves it to you.
set -euo pipefail
need=()
command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v git >/dev/null 2>&1 || need+=(git)
# the registry tests (tests/support/registry.py): a real registry on loopback, and htpasswd for its basic auth
command -v docker-registry >/dev/null 2>&1 || command -v registry >/dev/null 2>&1 || need+=(docker-registry)
command -v htpasswd >/dev/null 2>&1 || need+=(apache2-utils)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1 || [ -n "${ENVBUILDER_NO_INSTALL:-}" ]; then
  echo "envbuilder: missing system packages: ${need[*]}; install them (e.g. sudo apt-get install ${need[*]})" >&2
  exit 1
fi
echo "envbuilder: installing ${need[*]} ..." >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
