#!/usr/bin/env bash
# Sets up .venv (see setup.sh) and runs the main job. Extra args go to the job.
set -euo pipefail
cd "$(dirname "$0")/.."
FASTPICARD_EXTRAS=bench bash scripts/setup.sh
exec .venv/bin/python -m fastpicard.train "$@"
