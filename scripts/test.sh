#!/usr/bin/env bash
# The one test command (README, CI): set up .venv, make sure the Docker engine runs, run pytest.
#   scripts/test.sh            unit + CLI + real-Docker integration tests
#   scripts/test.sh --slow     also the multi-GB CUDA image build
#   scripts/test.sh -k NAME    any other pytest arguments pass through
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ "${ENVBUILDER_SKIP_DOCKER:-}" != 1 ]; then
  bash scripts/system-deps.sh
  bash scripts/engine.sh
fi
# A single-node Slurm cluster for the `submit --to slurm` tests (skippable on machines that must not run daemons).
if [ "${ENVBUILDER_SKIP_SLURM:-}" != 1 ] && [ "${ENVBUILDER_SKIP_DOCKER:-}" != 1 ]; then
  bash scripts/slurm.sh
fi
# SkyPilot's own task parser checks the rendered tasks; it pins click < 8.2, so it lives in its own venv.
skypilot_venv=${ENVBUILDER_SKYPILOT_VENV:-$HOME/.cache/envbuilder-skypilot}
if [ -z "${ENVBUILDER_SKYPILOT_PYTHON:-}" ] && [ ! -x "$skypilot_venv/bin/sky" ]; then
  # A failed install must not stop the rest of the suite: the SkyPilot tests then fail and say why.
  { python3 -m venv "$skypilot_venv" && "$skypilot_venv/bin/pip" install -q --disable-pip-version-check skypilot; } \
    || echo "envbuilder: could not install SkyPilot into $skypilot_venv; its tests will fail" >&2
fi
export ENVBUILDER_SKYPILOT_PYTHON=${ENVBUILDER_SKYPILOT_PYTHON:-$skypilot_venv/bin/python}
args=()
for a in "$@"; do
  if [ "$a" = "--slow" ]; then args+=(--run-slow); else args+=("$a"); fi
done
export TESTCONTAINERS_RYUK_DISABLED=true
set +e
.venv/bin/python -m pytest -q -p no:cacheprovider "${args[@]}"
code=$?
set -e
# BuildKit's cache grows with every build the suite makes (~1 GB of layers a run) and nothing trims it. On CI,
# where runs follow one another on one disk, the newest 10 GB are kept (ENVBUILDER_TEST_BUILD_CACHE changes it).
if [ "${CI:-}" = true ] && [ "${ENVBUILDER_SKIP_DOCKER:-}" != 1 ]; then
  docker builder prune -f --keep-storage "${ENVBUILDER_TEST_BUILD_CACHE:-10gb}" > /dev/null 2>&1 \
    || echo "envbuilder: could not trim BuildKit's cache (docker builder prune)" >&2
fi
# pytest exits 5 when a selection matched no test: that is a broken selection, not a pass.
exit $code
