"""Every Triton kernel compiles for real GPUs (sm_90, sm_80) on this CPU machine, with every
specialization of the CI set of ``python -m fastpicard.kernels.aot``, and none spills registers.
(The full set, every option crossed with every dtype, width and degree, is about five times
larger; scripts/rehearse_gpu_image.sh runs it.)"""
from __future__ import annotations

import csv
import os
import pathlib
import re
import subprocess
import sys

import pytest

from fastpicard.kernels import aot
from fastpicard.kernels.aot import global_access_bits, local_accesses_in_loops

KERNELS = {"_update_flat_kernel", "_update_rows_kernel", "_segment_sqrt_sum_kernel",
           "_control_kernel", "_gather_kernel", "_max_kernel", "_edge_dot_kernel",
           "_update_fwd_kernel", "_update_bwd_rows_kernel", "_check_kernel"}


def test_every_triton_kernel_is_in_the_aot_set():
    """A kernel added to kernels/ must be added to KERNELS (and to aot.capture) too."""
    src = pathlib.Path(aot.__file__).parent
    found = {name for p in src.glob("*.py")
             for name in re.findall(r"@triton\.jit\s*\ndef (\w+_kernel)\(", p.read_text())}
    assert found == KERNELS


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


def test_local_accesses_in_loops():
    """SASS as cuobjdump prints it: a store before the loops, a load inside the loop
    [0x0100, 0x0300] (closed by the backward branch), a load after it; the final trap
    (a branch to itself) is no loop."""
    sass = """
        /*0080*/                   STL [R1], R6 ;                /* 0x0000000601008387 */
        /*00f0*/              @!P0 BRA 0x400 ;                   /* 0x0000104000008947 */
        /*0100*/                   IMAD R2, R3, R4, RZ ;         /* 0x0000000403027224 */
        /*0200*/                   LDL R9, [R1+0x4] ;            /* 0x0000040001097983 */
        /*0300*/               @P1 BRA 0x100 ;                   /* 0xfffffe4000001947 */
        /*0400*/                   LDL.LU R0, [R1] ;             /* 0x0000000001007983 */
        /*0410*/                   EXIT ;                        /* 0x000000000000794d */
        /*0420*/                   BRA 0x420;                    /* 0xfffffff000007947 */
    """
    assert local_accesses_in_loops(sass) == (1, 2)
    assert local_accesses_in_loops(sass.replace("@P1 BRA 0x100", "@P1 BRA 0x400")) == (0, 3)


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
