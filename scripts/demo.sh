#!/usr/bin/env bash
# The README's main command: from a bare checkout to a trained, exported and verified model.
#
#   scripts/demo.sh            engine up, .venv, local base image, then `envbuilder pipeline examples/tinynet`
#
# Works without a registry (the base image is bootstrapped from Debian packages) and without
# download.pytorch.org: when that index is unreachable, the torch wheels in $ENVBUILDER_WHEELS (/opt/wheels)
# are served on loopback as the torch index (a stand-in for a corporate mirror).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
wheels=${ENVBUILDER_WHEELS:-/opt/wheels}
base=envbuilder/base-python:3.11-bookworm
eb=("$repo/.venv/bin/envbuilder")
say() { printf '\n\033[1m== %s\033[0m\n' "$*" >&2; }

say "Docker engine"
bash scripts/system-deps.sh
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
  index_log=$(mktemp)
  "${eb[@]}" index serve "$wheels" --port "$port" >"$index_log" 2>&1 &
  index_pid=$!
  index_url=
  for _ in $(seq 1 100); do
    index_url=$(head -n 1 "$index_log")
    if [ -n "$index_url" ] && curl -fsS -m 1 -o /dev/null "$index_url/"; then break; fi
    index_url=
    sleep 0.1
  done
  if [ -z "$index_url" ]; then
    echo "envbuilder demo: the local index did not start:" >&2; cat "$index_log" >&2; exit 1
  fi
  # envbuilder reads this mirror's torch pages before resolving, so the plan picks what it serves.
  args+=(--torch-index-url "$index_url")
fi

say "envbuilder pipeline $project ${args[*]}"
status=0
"${eb[@]}" pipeline "$project" "${args[@]}" || status=$?

say "Runs"
"${eb[@]}" runs list 2>/dev/null | head -n 5 || true
# each run has its own folder; export works in the folder of the train run it follows (train/latest)
run_dir="$project/artifacts/train/latest"
say "Artifacts in $run_dir"
ls -l "$run_dir/" 2>/dev/null || true
if [ -f "$run_dir/tinynet.metadata.json" ]; then
  python3 - "$run_dir/tinynet.metadata.json" <<'EOF'
import json, sys
meta = json.load(open(sys.argv[1]))
check = meta["verification"]
print(f"tinynet.onnx: opset {meta['opsets']}, {meta['size_bytes']} bytes, sha256 {meta['sha256'][:16]}..., "
      f"torch {meta['plan']['torch']} ({meta['plan']['flavor']}), verified={check['ok']} "
      f"max_abs_diff={check['max_abs_diff']}")
EOF
fi
exit "$status"
