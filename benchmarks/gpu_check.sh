#!/usr/bin/env bash
# One call on a lent CUDA machine: build against the torch there, run the CUDA tests and the
# kernel benchmarks, print a short table last. Usage (device tool):
#   bash benchmarks/gpu_check.sh            # writes logs/CSVs under $OUT when set
# The GPU image has its own torch (no registry there): build with --no-deps --no-build-isolation.
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
OUT=${OUT:-/tmp/fastpicard_gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
PY=python3
$PY -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())"
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,temperature.gpu --format=csv,noheader || true

echo "== build"
$PY -m pip install -q --no-build-isolation --no-deps --no-index "$REPO" > "$OUT/build.log" 2>&1 \
  || { tail -40 "$OUT/build.log"; exit 1; }

echo "== CUDA tests"
cd /tmp  # import the installed package, not the source tree
$PY -m pytest -q -p no:cacheprovider "$REPO/tests" -k "cuda" 2>&1 | tee "$OUT/tests.log" | tail -15

echo "== benchmarks"
$PY -m fastpicard.bench update --sizes 1e5,1e6,1e7,268435456 --dtypes fp32,bf16 \
  --csv "$OUT/update.csv" 2>&1 | tee "$OUT/bench_update.log"
# Further benchmarks (one line each) are added here as they land.
if $PY -c "import fastpicard.bench.graph" 2>/dev/null; then
  $PY -m fastpicard.bench graph --csv "$OUT/graph.csv" 2>&1 | tee "$OUT/bench_graph.log"
fi
$PY -m fastpicard.bench solver --csv "$OUT/solver.csv" 2>&1 | tee "$OUT/bench_solver.log"
