#!/usr/bin/env bash
# The README's main command: from a bare checkout to a trained, exported and verified model.
#
#   scripts/demo.sh            engine up, .venv, local base image, then `envbuilder pipeline examples/tinynet`
#
# Works without a registry (the base image is bootstrapped from Debian packages) and without
# download.pytorch.org: when that index is unreachable, the torch wheels in $ENVBUILDER_WHEELS (/opt/wheels)
# are served on loopback as the torch index, and the example runs from a copy pinned to that wheel's version.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
wheels=${ENVBUILDER_WHEELS:-/opt/wheels}
work=${ENVBUILDER_DEMO_DIR:-${TMPDIR:-/tmp}/envbuilder-demo}
base=envbuilder/base-python:3.11-bookworm
eb=("$repo/.venv/bin/envbuilder")
say() { printf '\n\033[1m== %s\033[0m\n' "$*" >&2; }

say "Docker engine"
bash scripts/engine.sh

say "envbuilder in .venv"
if [ -f scripts/setup.sh ]; then
  bash scripts/setup.sh
elif [ ! -x .venv/bin/envbuilder ]; then
  python3 -m venv .venv && .venv/bin/pip install -q -e '.[dev]'
fi

say "Base image ($base), made from Debian packages when there is none"
"${eb[@]}" base bootstrap

project=$repo/examples/tinynet
args=(--base-image "$base" --network host)
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
  args+=(--host-ca)  # trust this machine's CA bundle (intercepting proxies) for package downloads
fi

index_pid=
cleanup() { if [ -n "$index_pid" ]; then kill "$index_pid" 2>/dev/null || true; fi; }
trap cleanup EXIT
if ! curl -fsS -m 10 -o /dev/null https://download.pytorch.org/whl/cpu/torch/ 2>/dev/null; then
  wheel=$(ls "$wheels"/torch-*.whl 2>/dev/null | head -n 1 || true)
  if [ -z "$wheel" ]; then
    echo "envbuilder demo: download.pytorch.org is unreachable and $wheels has no torch wheel;" \
         "set ENVBUILDER_WHEELS to a folder with one" >&2
    exit 1
  fi
  version=$(basename "$wheel" | sed -E 's/^torch-([^-+]+).*/\1/')
  say "download.pytorch.org is unreachable: serving $wheels on loopback (torch $version)"
  port=${ENVBUILDER_DEMO_INDEX_PORT:-18080}
  .venv/bin/python tests/support/index_server.py "$wheels" --port "$port" >"$work.index.log" 2>&1 &
  index_pid=$!
  for _ in $(seq 1 50); do
    if curl -fsS -m 1 -o /dev/null "http://127.0.0.1:$port/simple/"; then break; fi
    sleep 0.1
  done
  args+=(--torch-index-url "http://127.0.0.1:$port/simple")
  # The resolver picks the newest torch the matrix knows; this index holds only $version, so pin it
  # in a copy of the example (a constraints file, which envbuilder reads like pip's -c).
  mkdir -p "$work" && rm -rf "$work/tinynet"
  cp -r "$project" "$work/tinynet" && rm -rf "$work/tinynet/artifacts"
  printf -- '-c constraints.txt\n' >"$work/tinynet/requirements.txt"
  printf 'torch==%s\n' "$version" >"$work/tinynet/constraints.txt"
  project=$work/tinynet
fi

say "envbuilder pipeline $project ${args[*]}"
status=0
"${eb[@]}" pipeline "$project" "${args[@]}" || status=$?

say "Runs"
"${eb[@]}" runs list 2>/dev/null | head -n 5 || true
say "Artifacts in $project/artifacts"
ls -l "$project/artifacts" 2>/dev/null || true
if [ -f "$project/artifacts/tinynet.metadata.json" ]; then
  python3 - "$project/artifacts/tinynet.metadata.json" <<'EOF'
import json, sys
meta = json.load(open(sys.argv[1]))
check = meta["verification"]
print(f"tinynet.onnx: opset {meta['opsets']}, {meta['size_bytes']} bytes, sha256 {meta['sha256'][:16]}..., "
      f"torch {meta['plan']['torch']} ({meta['plan']['flavor']}), verified={check['ok']} "
      f"max_abs_diff={check['max_abs_diff']}")
EOF
fi
exit "$status"
