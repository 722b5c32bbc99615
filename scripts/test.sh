#!/usr/bin/env bash
# Sets up .venv (see setup.sh; the install is shared with run.sh) and runs the whole test suite.
# Extra args go to pytest. FASTPICARD_INSTALL=wheel tests a regular install, as pip users get
# it (CI does): pytest, unlike `python -m pytest`, does not put the source tree first.
set -uo pipefail
cd "$(dirname "$0")/.."
export FASTPICARD_T0=$(date +%s)
bash scripts/setup.sh || exit
printf '[%4ds] running the test suite: .venv/bin/pytest -q %s\n' $SECONDS "$*"
.venv/bin/pytest -q "$@"
rc=$?
printf '[%4ds] done (exit %d): total %d min %d s\n' $SECONDS $rc $((SECONDS / 60)) $((SECONDS % 60))
exit $rc
