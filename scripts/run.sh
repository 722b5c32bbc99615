#!/usr/bin/env bash
# Sets up .venv (see setup.sh; the install is shared with test.sh) and runs the main job.
# Extra args go to the job (e.g. --out results/ --epochs 50; --help lists them).
set -uo pipefail
cd "$(dirname "$0")/.."
export FASTPICARD_T0=$(date +%s)
FASTPICARD_EXTRAS=${FASTPICARD_EXTRAS:-pyg,plot} bash scripts/setup.sh || exit
printf '[%4ds] running: .venv/bin/python -m fastpicard.train %s\n' $SECONDS "$*"
.venv/bin/python -m fastpicard.train "$@"
rc=$?
printf '[%4ds] done (exit %d): total %d min %d s\n' $SECONDS $rc $((SECONDS / 60)) $((SECONDS % 60))
exit $rc
