#!/usr/bin/env bash
# Creates .venv (pinned CPU torch) and installs fastpicard into it.
#   FASTPICARD_INSTALL=editable (default): pip install -e, for development
#   FASTPICARD_INSTALL=wheel: a regular install, as users get it (CI uses this)
#   FASTPICARD_TORCH_INDEX=URL: where pip gets torch (e.g. https://download.pytorch.org/whl/cpu
#     on a machine whose pip has no local CPU wheel: plain PyPI serves the multi-GB CUDA build)
# The extension is built with --no-build-isolation against the torch in .venv: an isolated
# build would fetch its own torch, and an unpinned torch resolves to a multi-GB CUDA wheel.
# Needs a C++17 compiler with OpenMP and Python's venv module and headers.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
export PIP_DISABLE_PIP_VERSION_CHECK=1
pip install -q torch==2.13.0 ${FASTPICARD_TORCH_INDEX:+--index-url "$FASTPICARD_TORCH_INDEX"}
pip install -q "scikit-build-core>=0.10" "pybind11>=2.12"
# without build isolation nothing fetches the build tools: take them from PyPI when missing
command -v cmake > /dev/null || pip install -q "cmake>=3.18,<4"
command -v ninja > /dev/null || pip install -q ninja
EXTRAS=${FASTPICARD_EXTRAS:-test}
if [ "${FASTPICARD_INSTALL:-editable}" = wheel ]; then
  pip install -q --no-build-isolation ".[$EXTRAS]"
else
  pip install -q --no-build-isolation -e ".[$EXTRAS]"
fi
# checked from outside the source tree, which would shadow a regular install
(cd "${TMPDIR:-/tmp}" && python -c "import fastpicard; assert fastpicard.extension_available(), fastpicard._ext.load_error")
