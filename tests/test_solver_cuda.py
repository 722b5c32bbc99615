"""The solver on CUDA (run by benchmarks/gpu_check.sh on a lent GPU; skipped elsewhere):
same answer as on CPU for any check_every, and no host sync between check steps."""
from __future__ import annotations

import math

import pytest
import torch

from fastpicard import picard

pytestmark = pytest.mark.cuda
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
F64 = torch.float64


def _problem(device):
    g = torch.Generator().manual_seed(0)
    A = torch.randn(16, 16, generator=g, dtype=F64)
    A = 0.8 * A / torch.linalg.matrix_norm(A, 2)
    f = torch.randn(6, 16, generator=g, dtype=F64) * torch.logspace(-2, 2, 6, dtype=F64)[:, None]
    return A.to(device), f.to(device)


@cuda
@pytest.mark.parametrize("check_every", [1, 8])
@pytest.mark.parametrize("stop", ["abs", "rel"])
def test_cuda_solve_matches_cpu(check_every, stop):
    out = {}
    for dev in ("cpu", "cuda"):
        A, f = _problem(dev)
        out[dev] = picard(lambda x: torch.tanh(x @ A.T) + f, torch.zeros_like(f), tol=1e-9,
                          max_iter=400, batch="leading", stop=stop,
                          check_every=check_every if dev == "cuda" else 1)
    (xc, sc), (xg, sg) = out["cpu"], out["cuda"]
    torch.testing.assert_close(xg.cpu(), xc, rtol=1e-12, atol=1e-12)
    assert torch.equal(sg.iterations, sc.iterations) and sg.converged.all()
    assert sc.steps <= sg.steps < sc.steps + check_every


@cuda
def test_cuda_divergence_and_best_iterate():
    gain = torch.tensor([[3.0], [0.5], [1.0]], dtype=F64, device="cuda")
    with pytest.warns(RuntimeWarning, match="diverged"):
        x, st = picard(lambda x: gain * x + 1, torch.ones(3, 2, dtype=F64, device="cuda"),
                       alpha=0.0, tol=1e-12, max_iter=30, batch="leading",
                       divergence_factor=10.0, check_every=8)
    assert st.diverged.tolist() == [True, False, False]
    assert st.converged.tolist() == [False, True, False]
    assert torch.isfinite(x).all() and int(st.iterations[2]) == 30


@cuda
def test_cuda_no_host_sync_between_checks():
    A, f = _problem("cuda")
    x0 = torch.zeros_like(f)
    from fastpicard.solver.loop import CppLoop

    loop = CppLoop(x0, 0.5, torch.arange(6, device="cuda"), 6, True, 1e-30, False, 100, 1e3, 50,
                   True)
    x, _, _ = loop.step(x0, torch.tanh(x0 @ A.T) + f)  # first step: one-time setup
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(9):  # check_every=50: no step here may read the device
            x, active, _ = loop.step(x, torch.tanh(x @ A.T) + f)
            assert active == -1
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert math.isfinite(float(x.sum()))


@cuda
def test_cuda_control_kernels_agree():
    S = 33
    g = torch.Generator().manual_seed(2)
    res = torch.rand(S, generator=g)
    res[::7] = math.nan
    norm = torch.rand(S, generator=g)
    outs = []
    for dev in ("cpu", "cuda"):
        st = [torch.zeros(S, dtype=torch.bool), torch.zeros(S, dtype=torch.bool),
              torch.zeros(S, dtype=torch.bool), torch.zeros(S, dtype=torch.int64),
              torch.full((3, S), math.inf), torch.full((2, S), math.nan),
              torch.zeros(S, dtype=torch.bool), torch.zeros(S, dtype=torch.bool),
              torch.zeros(4, dtype=torch.int64)]
        st = [t.to(dev) for t in st]
        torch.ops.fastpicard.picard_control_(res.to(dev), norm.to(dev), *st, 0, 0.3, False, 1e3)
        outs.append([t.cpu() for t in st])
    for a, b in zip(*outs):
        torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)
