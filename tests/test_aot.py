"""Every Triton kernel compiles for real GPUs (sm_90, sm_80) on this CPU machine, with every
specialization of the CI set of ``python -m fastpicard.kernels.aot``, and none spills registers.
(The full set, every option crossed with every dtype, width and degree, is about five times
larger; scripts/rehearse_gpu_image.sh runs it.)"""
from __future__ import annotations

import csv
import os
import subprocess
import sys

import pytest

from fastpicard.kernels.aot import global_access_bits

KERNELS = {"_update_flat_kernel", "_update_rows_kernel", "_segment_sqrt_sum_kernel",
           "_control_kernel", "_gather_kernel", "_max_kernel", "_edge_dot_kernel",
           "_update_fwd_kernel", "_update_bwd_rows_kernel"}


def test_global_access_bits():
    ptx = """
    @%p1 ld.global.v4.b32 { %r1, %r2, %r3, %r4 }, [ %rd1 + 0 ];
    ld.global.b16 %rs1, [ %rd2 + 0 ];
    @%p2 st.global.v2.b64 [ %rd3 + 0 ], { %rd4, %rd5 };
    st.global.b8 [ %rd6 + 0 ], %rs2;
    ld.shared.v4.b32 { %r5, %r6, %r7, %r8 }, [ %r9 + 0 ];
    """
    bits = global_access_bits(ptx)
    assert dict(bits["ld"]) == {128: 1, 16: 1} and dict(bits["st"]) == {128: 1, 8: 1}


@pytest.mark.slow
def test_every_kernel_compiles_for_sm90_and_sm80_without_spills(tmp_path):
    pytest.importorskip("triton")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path / "triton-cache")  # compile, do not reuse a cache
    table = tmp_path / "aot.csv"
    r = subprocess.run([sys.executable, "-m", "fastpicard.kernels.aot", "--set", "ci",
                        "--arch", "90,80", "--csv", str(table)],
                       env=env, cwd=tmp_path, capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-3000:]
    assert "0 compile errors, 0 variants with spills" in r.stdout
    rows = list(csv.DictReader(open(table)))
    assert {r["kernel"] for r in rows} == KERNELS
    assert {r["arch"] for r in rows} == {"sm_90", "sm_80"}
    fwd = [r for r in rows if r["kernel"] == "_update_fwd_kernel"]
    assert {r["dtype"] for r in fwd} == {"fp32", "fp16", "bf16", "fp64"}
    assert {a for r in fwd for a in r["constexprs"].split() if a.startswith("ACT=")} == \
        {"ACT=0", "ACT=1", "ACT=2", "ACT=3"}
    # the flat update's full blocks: 128-bit global loads for fp32 and bf16 (16-byte aligned
    # tensors), whatever the element count
    flat = [r for r in rows if r["kernel"] == "_update_flat_kernel" and r["dtype"] in
            ("fp32", "bf16")]
    assert flat and all(r["ld"].startswith("128x") for r in flat)
