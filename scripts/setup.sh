#!/usr/bin/env bash
# Create .venv with envbuilder and its test tools. Idempotent: reinstalls only when pyproject.toml changed.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
stamp=.venv/.envbuilder-installed
# The install mode is part of the stamp: changing it (below) reinstalls existing venvs too.
want="$(sha256sum pyproject.toml | cut -d' ' -f1) editable-compat"
if [ -x .venv/bin/python ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
  echo "envbuilder needs Python >= 3.10 (found $("$python" --version 2>&1)); set PYTHON=/path/to/python3.x" >&2
  exit 1
fi
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -U pip
# A plain path in a .pth (compat mode), not setuptools' default import-hook finder: the finder is imported by every
# Python start in the venv (~10 ms of each `envbuilder` command), which an installed envbuilder never pays.
# setuptools calls compat mode transitional: where it is gone, the default mode still works.
# (Its deprecation notice is kept in .venv/install.log, shown only when the install fails.)
if ! .venv/bin/python -m pip install -q --disable-pip-version-check --config-settings editable_mode=compat \
    -e '.[dev]' 2> .venv/install.log; then
  cat .venv/install.log >&2
  .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev]'
fi
echo "$want" > "$stamp"
