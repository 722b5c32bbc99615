"""Contraction tools: spectral caps, Lipschitz estimates, Jacobian penalty."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import fastpicard
from fastpicard import contractive, jacobian_penalty, lipschitz_estimate, picard

F64 = torch.float64


def sigma(w):
    return float(torch.linalg.matrix_norm(w.detach().double(), 2))


def mlp(d=16, scale=3.0):
    m = nn.Sequential(nn.Linear(d, 24), nn.Tanh(), nn.Linear(24, d)).double()
    with torch.no_grad():
        for p in m.parameters():
            p.mul_(scale)
    return m


def test_contractive_caps_every_linear_and_makes_picard_converge():
    m = mlp()
    assert sigma(m[0].weight) > 1 and sigma(m[2].weight) > 1
    f = torch.randn(5, 16, dtype=F64)
    _, st = picard(lambda x: m(x) + f, torch.zeros(5, 16, dtype=F64), alpha=0.0, tol=1e-8,
                   max_iter=60, batch="leading", on_diverge="warn")
    assert not st.converged.all()  # the raw map does not contract
    assert contractive(m, lipschitz=0.8) is m
    bound = 0.8 ** 0.5
    for lin in (m[0], m[2]):
        assert sigma(lin.weight) <= bound * (1 + 1e-6)
    x = torch.randn(5, 16, dtype=F64)
    assert lipschitz_estimate(m, x) <= 0.8 * (1 + 1e-6)
    x_star, st = picard(lambda x: m(x) + f, torch.zeros(5, 16, dtype=F64), alpha=0.0, tol=1e-8,
                        max_iter=200, batch="leading")
    assert st.converged.all()
    torch.testing.assert_close(m(x_star) + f, x_star, rtol=0, atol=1e-7)


def test_small_weights_pass_unchanged_and_cap_tracks_training():
    lin = nn.Linear(6, 6).double()
    with torch.no_grad():
        lin.weight.mul_(0.01)
    raw = lin.weight.detach().clone()
    contractive(lin, lipschitz=0.9)
    torch.testing.assert_close(lin.weight.detach(), raw, rtol=0, atol=0)  # sigma < bound
    x = torch.randn(32, 6, dtype=F64)
    lin = contractive(nn.Linear(6, 6).double(), lipschitz=0.9)
    opt = torch.optim.SGD(lin.parameters(), lr=0.5)
    for _ in range(30):  # push the weights up; the cap holds at every step
        opt.zero_grad()
        (-(lin(x) * x).sum() / 32).backward()
        opt.step()
        assert sigma(lin.weight) <= 0.9 * (1 + 1e-12)
    assert sigma(lin.parametrizations.weight.original) > 1.5  # it is the cap that holds


def test_picard_computes_the_cap_once_per_solve(monkeypatch):
    from fastpicard.contraction import SpectralCap

    m = contractive(mlp(), lipschitz=0.5)
    calls = []
    orig = SpectralCap.forward
    monkeypatch.setattr(SpectralCap, "forward", lambda self, w: calls.append(1) or orig(self, w))
    f = torch.randn(2, 16, dtype=F64)
    _, st = picard(lambda x: m(x) + f, torch.zeros(2, 16, dtype=F64), tol=1e-8, max_iter=100)
    assert st.steps > 5 and len(calls) == 2  # two layers, once each


def test_contractive_finds_pyg_linear():
    pyg = pytest.importorskip("torch_geometric.nn")
    conv = pyg.GCNConv(8, 8)
    with torch.no_grad():
        conv.lin.weight.mul_(10)
    contractive(conv, lipschitz=0.5)
    assert sigma(conv.lin.weight) <= 0.5 * (1 + 1e-5)


def test_contractive_errors():
    with pytest.raises(TypeError, match="module"):
        contractive(lambda x: x)
    with pytest.raises(ValueError, match="lipschitz"):
        contractive(nn.Linear(2, 2), lipschitz=0.0)
    with pytest.raises(TypeError, match="lipschitz"):
        contractive(nn.Linear(2, 2), lipschitz="0.9")
    with pytest.raises(ValueError, match="no linear layer"):
        contractive(nn.Tanh())
    lin = contractive(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="already parametrized"):
        contractive(lin)


def test_lipschitz_estimate_linear_and_nonlinear():
    A = torch.randn(12, 12, dtype=F64)
    x = torch.randn(4, 12, dtype=F64)
    assert lipschitz_estimate(lambda v: v @ A.T, x) == pytest.approx(sigma(A), rel=1e-3)
    # tanh'(0) = 1: at x = 0 the constant is sigma(A); elsewhere it is smaller
    assert lipschitz_estimate(lambda v: torch.tanh(v @ A.T), torch.zeros(1, 12, dtype=F64)) \
        == pytest.approx(sigma(A), rel=1e-3)
    assert lipschitz_estimate(lambda v: torch.tanh(v @ A.T), 3 * x) < sigma(A)
    assert lipschitz_estimate(lambda v: torch.ones_like(v), x) == 0.0


def test_lipschitz_estimate_falls_back_to_double_vjp():
    # picard_update is a C++ autograd op without a forward-mode formula
    A = torch.randn(7, 7, dtype=F64)
    fn = lambda v: fastpicard.ops.picard_update(v, v @ A.T, 0.25)[0]  # noqa: E731
    expected = sigma(0.25 * torch.eye(7, dtype=F64) + 0.75 * A)
    assert lipschitz_estimate(fn, torch.randn(3, 7, dtype=F64), n_iter=200, rtol=1e-9) == \
        pytest.approx(expected, rel=1e-4)


def test_stats_estimate_lipschitz():
    A = torch.randn(5, 5, dtype=F64)
    A = 0.5 * A / sigma(A)
    x, st = picard(lambda v: v @ A.T + 1, torch.zeros(5, dtype=F64))
    assert st.estimate_lipschitz(lambda v: v @ A.T + 1, x) == pytest.approx(0.5, rel=1e-3)
    assert "Lipschitz ~0.5" in st.summary()


def test_jacobian_penalty_unbiased_and_differentiable():
    A = torch.randn(8, 8, dtype=F64, requires_grad=True)
    x = torch.randn(3, 8, dtype=F64)
    torch.manual_seed(0)
    pen = jacobian_penalty(lambda v: v @ A.T, x, n_samples=400)
    exact = 3 * float(A.detach().square().sum())  # three row blocks of A
    assert float(pen.detach()) == pytest.approx(exact, rel=0.06)
    pen.backward()  # E[grad] = 2 * 3 * A
    expected = 2 * 3 * A.detach()
    assert float((A.grad - expected).norm() / expected.norm()) < 0.15


def test_jacobian_penalty_errors():
    with pytest.raises(ValueError, match="n_samples"):
        jacobian_penalty(lambda v: v, torch.zeros(2), n_samples=0)
    with pytest.raises(TypeError, match="x"):
        jacobian_penalty(lambda v: v, torch.zeros(2, dtype=torch.int64))
    with pytest.raises(TypeError, match="fn"):
        lipschitz_estimate(3, torch.zeros(2))
