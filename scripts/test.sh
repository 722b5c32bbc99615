#!/usr/bin/env bash
# Sets up .venv (see setup.sh; the install is shared with run.sh) and runs the whole test suite.
# Extra args go to pytest. FASTPICARD_INSTALL=wheel tests a regular install, as pip users get
# it (CI does): pytest, unlike `python -m pytest`, does not put the source tree first.
set -uo pipefail
cd "$(dirname "$0")/.."
export FASTPICARD_T0=$(date +%s)
bash scripts/setup.sh || exit
# pytest found through another environment (a venv layered on a shared one) has no script here
pytest=(.venv/bin/pytest); [ -x "${pytest[0]}" ] || pytest=(.venv/bin/python -m pytest)
printf '[%4ds] running the test suite: %s -q %s\n' $SECONDS "${pytest[*]}" "$*"
"${pytest[@]}" -q "$@"
rc=$?
printf '[%4ds] done (exit %d): total %d min %d s\n' $SECONDS $rc $((SECONDS / 60)) $((SECONDS % 60))
exit $rc
