#!/usr/bin/env bash
# Sets up .venv (see setup.sh) and runs the whole test suite. Extra args go to pytest.
# By default fastpicard is installed as a regular wheel, as users get it, so the tests exercise
# the installed package (pytest, unlike `python -m pytest`, does not put the source tree first).
set -euo pipefail
cd "$(dirname "$0")/.."
FASTPICARD_INSTALL=${FASTPICARD_INSTALL:-wheel} bash scripts/setup.sh
exec .venv/bin/pytest -q "$@"
