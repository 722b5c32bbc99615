"""Backward modes of fastpicard.picard against the analytic gradient of a linear fixed point.

T(x) = x M^T + f with ||M|| < 1 has x* = f (I - M^T)^{-1}; for L = <w, x*>:
dL/df = w (I - M)^{-1}... written row-wise below, and dL/dM = g^T x* with g = w (I - M)^{-1}.
"""
from __future__ import annotations

import pytest
import torch

from solver_fixtures import loop_impl  # noqa: F401  (autouse: C++ and Python loop)

from fastpicard import picard

F64 = torch.float64
MODES = ["unroll", "implicit", "phantom"]


def problem(d=10, b=3, lam=0.5, seed=0):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(d, d, generator=g, dtype=F64)
    M = (lam * A / torch.linalg.matrix_norm(A, 2)).requires_grad_()
    f = torch.randn(b, d, generator=g, dtype=F64).requires_grad_()
    w = torch.randn(b, d, generator=g, dtype=F64)
    return M, f, w


def analytic(M, f, w):
    eye = torch.eye(M.shape[0], dtype=F64)
    x = torch.linalg.solve(eye - M.detach(), f.detach().T).T      # rows: x = M x + f
    g = torch.linalg.solve((eye - M.detach()).T, w.T).T          # rows: g = M^T g + w
    return x, g, g.T @ x                                          # x*, dL/df, dL/dM


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("batch", [None, "leading"])
def test_gradient_matches_analytic(mode, batch):
    M, f, w = problem()
    x0 = torch.zeros_like(f)
    x, st = picard(lambda x: x @ M.T + f, x0, alpha=0.2, tol=1e-13, max_iter=400, batch=batch,
                   backward=mode, phantom_steps=60)
    assert st.converged.all()
    (x * w).sum().backward()
    x_ref, gf, gM = analytic(M, f, w)
    torch.testing.assert_close(x.detach(), x_ref, rtol=1e-11, atol=1e-11)
    torch.testing.assert_close(f.grad, gf, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(M.grad, gM, rtol=1e-9, atol=1e-10)


def test_forward_value_is_the_same_in_every_mode():
    M, f, _ = problem()
    outs = [picard(lambda x: torch.tanh(x @ M.T) + f, torch.zeros_like(f), tol=1e-6,
                   backward=m)[0] for m in MODES]
    for o in outs[1:]:
        torch.testing.assert_close(o.detach(), outs[0].detach(), rtol=0, atol=0)


def test_value_is_the_same_in_every_mode_with_a_diverged_sample():
    # sample 0 blows up (x -> x^2 + 4 from 2: the phantom steps from its rolled-back iterate
    # overflow), sample 1 converges; every mode returns the same finite value
    w = torch.tensor([[1.0], [0.2]], dtype=F64, requires_grad=True)

    def fn(x):
        return torch.where(torch.arange(2)[:, None] == 0, x * x + 4, w * x + 1)

    x0 = torch.full((2, 3), 2.0, dtype=F64)
    outs = []
    for m in MODES:
        with pytest.warns(RuntimeWarning, match="diverged"):
            x, st = picard(fn, x0, alpha=0.0, batch="leading", max_iter=60, backward=m,
                           phantom_steps=12)
        assert st.diverged.tolist() == [True, False]
        outs.append(x)
        (g,) = torch.autograd.grad(x[1].sum(), w)
        assert torch.isfinite(g).all()
    for o in outs:
        assert torch.isfinite(o).all()
        torch.testing.assert_close(o.detach(), outs[0].detach(), rtol=0, atol=0)


def test_phantom_error_shrinks_with_steps():
    M, f, w = problem()
    _, gf, _ = analytic(M, f, w)
    errs = []
    for k in (1, 4, 16):
        f.grad = None
        x, _ = picard(lambda x: x @ M.T + f, torch.zeros_like(f), tol=1e-12, max_iter=300,
                      backward="phantom", phantom_steps=k)
        (x * w).sum().backward()
        errs.append(float((f.grad - gf).norm()))
    assert errs[0] > errs[1] > errs[2]


def test_implicit_matches_unroll_to_convergence_nonlinear():
    M, f, w = problem(lam=0.9)
    grads = {}
    for mode in ("unroll", "implicit"):
        M.grad = f.grad = None
        x, _ = picard(lambda x: torch.tanh(x @ M.T) + f, torch.zeros_like(f), tol=1e-12,
                      max_iter=500, backward=mode, batch="leading")
        (x * w).sum().backward()
        grads[mode] = (M.grad.clone(), f.grad.clone())
    for a, b in zip(grads["unroll"], grads["implicit"]):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-9)


def test_implicit_reports_adjoint_stats():
    M, f, w = problem()
    x, st = picard(lambda x: x @ M.T + f, torch.zeros_like(f), tol=1e-10, max_iter=300,
                   backward="implicit", batch="leading")
    assert st.backward is None
    (x * w).sum().backward()
    assert st.backward is not None and st.backward.converged.all()
    assert st.backward.num_samples == 3


def test_no_grad_needed_returns_plain_tensor():
    M = torch.eye(3, dtype=F64) * 0.5
    for mode in MODES:
        x, _ = picard(lambda x: x @ M + 1, torch.zeros(3, dtype=F64), backward=mode)
        assert not x.requires_grad


def _saved_bytes(mode, max_iter):
    """Bytes of tensors autograd saves for backward during the solve."""
    M, f, _ = problem(d=32, b=8, lam=0.99)
    total = [0]

    def pack(t):
        total[0] += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        x, st = picard(lambda x: torch.tanh(x @ M.T) + f, torch.zeros_like(f), tol=1e-30,
                       max_iter=max_iter, backward=mode, batch="leading")
    assert int(st.iterations.min()) == max_iter  # every step ran
    return total[0]


def test_implicit_memory_does_not_grow_with_iterations():
    # the probe sees activations: unrolling 40 steps saves far more than 5 steps
    assert _saved_bytes("unroll", 40) > 4 * _saved_bytes("unroll", 5)
    assert _saved_bytes("implicit", 40) == _saved_bytes("implicit", 5) > 0
    assert _saved_bytes("phantom", 40) == _saved_bytes("phantom", 5) > 0
