#!/usr/bin/env bash
# Creates .venv (pinned CPU torch) and installs fastpicard into it.
#   FASTPICARD_INSTALL=editable (default): pip install -e, for development
#   FASTPICARD_INSTALL=wheel: a regular install, as users get it (CI uses this)
# The extension is built with --no-build-isolation against the torch in .venv: an isolated
# build would fetch its own torch, and an unpinned torch resolves to a multi-GB CUDA wheel.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
export PIP_DISABLE_PIP_VERSION_CHECK=1
pip install -q torch==2.13.0
pip install -q "scikit-build-core>=0.10" "pybind11>=2.12"
EXTRAS=${FASTPICARD_EXTRAS:-test}
if [ "${FASTPICARD_INSTALL:-editable}" = wheel ]; then
  pip install -q --no-build-isolation ".[$EXTRAS]"
else
  pip install -q --no-build-isolation -e ".[$EXTRAS]"
fi
# checked from outside the source tree, which would shadow a regular install
(cd "${TMPDIR:-/tmp}" && python -c "import fastpicard; assert fastpicard.extension_available(), fastpicard._ext.load_error")
