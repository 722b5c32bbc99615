#!/usr/bin/env bash
# Rehearses the lent GPU machine on a CPU machine, so that its first minutes find a package that
# builds and a check that runs. Too large for CI (~4 GB of CUDA wheels, ~30 min on 2 cores): run
# it after any change to the build files, csrc/ or kernels/.
#
# A cached venv like the GPU image: Python 3.12, torch==2.11.0 as PyPI serves it (+cu130, with
# NVIDIA's runtime wheels and no CUDA toolkit), triton==3.6.0, and the image's packages that
# the tests use. Then, in it:
#   1. benchmarks/gpu_check.sh builds fastpicard exactly as on the GPU machine and must stop
#      with its "no CUDA device" line (exit 2);
#   2. the whole CPU test suite against that installed build (Triton kernels through the
#      interpreter, on triton 3.6);
#   3. python -m fastpicard.kernels.aot --set full: every kernel specialization compiled for
#      sm_90 and sm_80 by triton 3.6, no error, no spill inside a loop (ptxas 12.8 keeps one
#      4-byte value on the stack across the loops in a few variants: listed, see BENCHMARKS.md).
#
#   FASTPICARD_REHEARSAL_VENV  the venv (default ~/.cache/fastpicard/gpu-image-py312)
#   PYTHON312                  the Python 3.12 that makes it (default python3.12; with pyenv,
#                              PYENV_VERSION=3.12.1 is set when unset)
#   FASTPICARD_AOT_SET         full (default) or ci
#   FASTPICARD_REHEARSAL_TRITON_CACHE  Triton's cache for step 3 (default: a fresh one in the
#                              work folder; Triton keys it by source, compiler and options, so a
#                              kept cache gives the same answers, only faster)
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
VENV=${FASTPICARD_REHEARSAL_VENV:-$HOME/.cache/fastpicard/gpu-image-py312}
export PYENV_VERSION=${PYENV_VERSION:-3.12.1}
export PIP_DISABLE_PIP_VERSION_CHECK=1
# what the GPU image has (torch-geometric etc. for the tests; no transformers, no timm)
REQS="torch==2.11.0 triton==3.6.0 cmake ninja pybind11 scikit-build-core pytest hypothesis
torch-geometric==2.8.0.post1 matplotlib tqdm numpy scipy"
REQS=$(echo $REQS)

if [ ! -x "$VENV/bin/python" ]; then
  echo "== creating $VENV"
  mkdir -p "$(dirname "$VENV")"
  "${PYTHON312:-python3.12}" -m venv "$VENV"
fi
if [ "$(cat "$VENV/.fastpicard-rehearsal" 2>/dev/null)" != "$REQS" ]; then
  echo "== installing: $REQS (about 4 GB the first time)"
  "$VENV/bin/pip" install -q $REQS
  echo "$REQS" > "$VENV/.fastpicard-rehearsal"
fi
PY=$VENV/bin/python
$PY -c "import sys, torch, triton; print('rehearsal venv: python', sys.version.split()[0], 'torch', torch.__version__, 'CUDA', torch.version.cuda, 'triton', triton.__version__)"
echo "nvcc on PATH: $(command -v nvcc || echo none) (the build must not need it)"

WORK=${TMPDIR:-/tmp}/fastpicard-rehearsal  # logs and CSVs of the last run stay here
rm -rf "$WORK" && mkdir -p "$WORK"
T0=$(date +%s)

echo "== 1. benchmarks/gpu_check.sh (builds, then must stop: no CUDA device)"
set +e
OUT=$WORK/gpu_check PYTHON=$PY bash benchmarks/gpu_check.sh > "$WORK/gpu_check.log" 2>&1
rc=$?
set -e
tail -4 "$WORK/gpu_check.log"
if [ $rc -ne 2 ] || ! grep -q "^gpu_check: no CUDA device" "$WORK/gpu_check.log"; then
  cat "$WORK/gpu_check/build.log" 2>/dev/null | tail -40
  echo "rehearsal: FAILED at gpu_check.sh (exit $rc, expected 2 with the no-CUDA line)"
  exit 1
fi

echo "== 2. the CPU test suite against the installed build"
(cd "$WORK" && $PY -m pytest -q -p no:cacheprovider "$REPO/tests") > "$WORK/tests.log" 2>&1 \
  || { tail -60 "$WORK/tests.log"; echo "rehearsal: FAILED in the test suite"; exit 1; }
tail -3 "$WORK/tests.log"

echo "== 3. AOT compile (${FASTPICARD_AOT_SET:-full} set) for sm_90 and sm_80"
(cd "$WORK" && env -u TRITON_INTERPRET TRITON_CACHE_DIR="${FASTPICARD_REHEARSAL_TRITON_CACHE:-$WORK/triton-cache}" \
  $PY -m fastpicard.kernels.aot --set "${FASTPICARD_AOT_SET:-full}" --arch 90,80 \
  --allow-spills-outside-loops \
  --csv "$WORK/aot.csv") > "$WORK/aot.log" 2>&1 \
  || { tail -60 "$WORK/aot.log"; echo "rehearsal: FAILED in the AOT compile"; exit 1; }
grep -E "variants compiled|compile errors" "$WORK/aot.log"

echo "rehearsal: PASS ($(( $(date +%s) - T0 )) s)"
