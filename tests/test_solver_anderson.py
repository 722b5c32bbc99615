"""Anderson acceleration: same fixed point in fewer steps; singular least squares never raises."""
from __future__ import annotations

import pytest
import torch

from solver_fixtures import loop_impl  # noqa: F401  (autouse: C++ and Python loop)

from fastpicard import picard

F64 = torch.float64


def slow_map(d=24, b=4, lam=0.97, seed=0):
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=F64))
    M = lam * Q @ torch.diag(torch.linspace(-1, 1, d, dtype=F64)) @ Q.T  # symmetric, slow modes
    f = torch.randn(b, d, generator=g, dtype=F64)
    return M, f


@pytest.mark.parametrize("batch", [None, "leading", "vector"])
def test_anderson_same_fixed_point_fewer_iterations(batch):
    M, f = slow_map()
    if batch == "vector":
        batch = torch.tensor([1, 0, 1, 2], dtype=torch.int64)
    fn = lambda x: torch.tanh(x @ M.T) + f  # noqa: E731
    x0 = torch.zeros_like(f)
    xp, sp = picard(fn, x0, alpha=0.0, tol=1e-9, max_iter=2000, batch=batch)
    xa, sa = picard(fn, x0, alpha=0.0, tol=1e-9, max_iter=2000, batch=batch, solver="anderson",
                    anderson_m=6)
    assert sp.converged.all() and sa.converged.all()
    torch.testing.assert_close(xa, xp, rtol=0, atol=1e-7)
    assert int(sa.iterations.max()) * 2 < int(sp.iterations.max())


def test_anderson_singular_least_squares_falls_back():
    # 1-D residuals make every Gram matrix rank one: singular without regularisation
    x, st = picard(lambda x: 0.9 * x + 1.0, torch.zeros(3, 1, dtype=F64), alpha=0.5, tol=1e-10,
                   max_iter=500, batch="leading", solver="anderson", anderson_lam=0.0)
    assert st.converged.all() and not st.diverged.any()
    torch.testing.assert_close(x, torch.full((3, 1), 10.0, dtype=F64), rtol=0, atol=1e-8)
    # exact fixed point from the start: zero residual history
    x, st = picard(lambda x: x, torch.ones(2, 5), solver="anderson", anderson_lam=0.0,
                   batch="leading")
    assert st.converged.all() and torch.equal(x, torch.ones(2, 5))


def test_anderson_m1_is_picard():
    M, f = slow_map(lam=0.5)
    fn = lambda x: x @ M.T + f  # noqa: E731
    xp, sp = picard(fn, torch.zeros_like(f), tol=1e-8, batch="leading")
    xa, sa = picard(fn, torch.zeros_like(f), tol=1e-8, batch="leading", solver="anderson",
                    anderson_m=1)
    torch.testing.assert_close(xa, xp, rtol=0, atol=0)
    assert torch.equal(sa.iterations, sp.iterations)


def test_anderson_gradients_unroll_and_implicit():
    M, f = slow_map(d=8, b=2, lam=0.6)
    M.requires_grad_()
    w = torch.randn_like(f)
    grads = []
    for mode in ("unroll", "implicit"):
        M.grad = None
        x, _ = picard(lambda x: x @ M.T + f, torch.zeros_like(f), tol=1e-12, max_iter=300,
                      solver="anderson", backward=mode, batch="leading")
        (x * w).sum().backward()
        grads.append(M.grad.clone())
    eye = torch.eye(8, dtype=F64)
    xs = torch.linalg.solve(eye - M.detach(), f.T).T
    g = torch.linalg.solve((eye - M.detach()).T, w.T).T
    for gr in grads:
        torch.testing.assert_close(gr, g.T @ xs, rtol=1e-7, atol=1e-8)


@pytest.mark.parametrize("m", [2, 5])
def test_anderson_unrolled_gradients_finite_when_samples_stop_at_different_steps(m):
    """A sample frozen for >= anderson_m steps has an all-zero residual history: its least
    squares is singular and the safeguard picks the Picard step through torch.where, but the
    unused branch's inf/NaN still poisoned every gradient (NaN through where)."""
    d = 6
    M, f = slow_map(d=d, b=3, lam=0.6, seed=2)
    scale = torch.tensor([1e-3, 1.0, 1e3], dtype=F64)[:, None]  # stop at different steps
    f = f * scale
    M.requires_grad_()
    f.requires_grad_()
    w = torch.randn_like(f)
    x, st = picard(lambda x: x @ M.T + f, torch.zeros_like(f), tol=1e-12, max_iter=400,
                   solver="anderson", anderson_m=m, backward="unroll", batch="leading")
    assert st.converged.all()
    assert int(st.iterations.max()) - int(st.iterations.min()) > m  # frozen for > m steps
    (x * w).sum().backward()
    assert torch.isfinite(M.grad).all() and torch.isfinite(f.grad).all()
    eye = torch.eye(d, dtype=F64)
    xs = torch.linalg.solve(eye - M.detach(), f.detach().T).T
    g = torch.linalg.solve((eye - M.detach()).T, w.T).T
    torch.testing.assert_close(M.grad, g.T @ xs, rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(f.grad, g, rtol=1e-6, atol=1e-8)
