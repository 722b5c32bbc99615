"""PIGN(lipschitz=...): the contractive PIGN (capped conv weights, input injection, no dropout
inside the iteration) converges to a unique fixed point and stays on the fused GCN path."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.nn.utils import parametrize

import fastpicard
from fastpicard.nn import PIGN
from test_pign import toy_graph, train_losses

pyg_nn = pytest.importorskip("torch_geometric.nn")


def blow_up(model, factor=10.0):
    """Scale the conv's raw weights far beyond the cap."""
    with torch.no_grad():
        for p in model.conv.parameters():
            p.mul_(factor)


def spectral(w):
    return float(torch.linalg.matrix_norm(w.detach(), ord=2))


@pytest.mark.parametrize("conv", ["gcn", "gat", "sage"])
def test_weights_capped(conv):
    torch.manual_seed(0)
    model = PIGN(6, 16, 3, conv=conv, lipschitz=0.8)
    blow_up(model)
    lins = [m for m in model.conv.modules() if parametrize.is_parametrized(m, "weight")]
    bound = 0.8 ** (1 / len(lins))
    assert lins and all(spectral(m.weight) <= bound * (1 + 1e-5) for m in lins)


@pytest.mark.parametrize("fused", [True, False])
def test_gcn_step_is_a_contraction(fused):
    x, ei, _ = toy_graph()
    torch.manual_seed(0)
    model = PIGN(6, 16, 3, lipschitz=0.7, fused=fused)
    blow_up(model)
    f = F.relu(model.encoder(x))
    if fused:
        graph = fastpicard.Graph.from_edge_index(ei, x.shape[0])
        w = model.conv.lin.weight

        def fn(z):  # T itself: one fused step with alpha = 0, as PIGN's solve runs it
            return fastpicard.picard_gcn(graph, z, w.t(), bias=model.conv.bias, act=model.act,
                                         inject=F.linear(f, w), alpha=0.0, tol=None,
                                         max_iter=1)[0]
    else:
        fn = lambda z: model.step(z, ei, f)  # noqa: E731
    assert fastpicard.lipschitz_estimate(fn, torch.randn_like(f)) <= 0.7 * (1 + 1e-4)


@pytest.mark.parametrize("fused", [True, False])
def test_unique_fixed_point_independent_of_start(fused):
    """Banach: the answer does not depend on the number of steps once converged, and
    x* = T(x*) with T(x) = act(conv(x + f))."""
    x, ei, _ = toy_graph()
    torch.manual_seed(0)
    model = PIGN(6, 16, 3, lipschitz=0.9, tol=1e-6, max_iter=500, fused=fused).eval()
    blow_up(model)
    with torch.no_grad():
        out = model(x, ei)
        stats = model.last_stats
        assert bool(stats.converged.all()) and int(stats.iterations.max()) < 500
        model.tol, model.max_iter = 1e-7, 800
        assert torch.allclose(model(x, ei), out, atol=1e-4)
        # the fixed point from a far-away start
        f = F.relu(model.encoder(x))
        z = 100 * torch.randn_like(f)
        for _ in range(400):
            z = model.alpha * z + (1 - model.alpha) * model.step(z, ei, f)
        assert torch.allclose(model.decoder(z), out, atol=1e-3)


def test_fused_matches_unfused():
    x, ei, _ = toy_graph()
    torch.manual_seed(0)
    a = PIGN(6, 16, 3, lipschitz=0.9, max_iter=12)
    b = PIGN(6, 16, 3, lipschitz=0.9, max_iter=12, fused=False)
    b.load_state_dict(a.state_dict())
    assert a.uses_fused_path and not b.uses_fused_path
    for train in (False, True):
        a.train(train), b.train(train)
        torch.manual_seed(3)
        ya = a(x, ei)
        torch.manual_seed(3)
        yb = b(x, ei)
        assert torch.allclose(ya, yb, atol=1e-5)


def test_fused_path_is_used(monkeypatch):
    """The contractive GCN solve runs the C++ loop (one addmm + one spmm_update per step) with
    a tolerance, and one fused spmm_update call per step on the fixed schedule."""
    from fastpicard.solver import gcn
    loops, run = [], gcn._run
    monkeypatch.setattr(gcn, "_run", lambda *a: loops.append(1) or run(*a))
    calls, op = [], gcn.spmm_update
    monkeypatch.setattr(gcn, "spmm_update", lambda *a, **k: calls.append(1) or op(*a, **k))
    x, ei, _ = toy_graph()
    model = PIGN(6, 16, 3, lipschitz=0.9, tol=1e-5, max_iter=50)
    model(x, ei)
    assert len(loops) == 1 and not calls and model.last_stats.steps > 1
    loops.clear()
    model = PIGN(6, 16, 3, lipschitz=0.9, tol=None, max_iter=5)
    model(x, ei)
    assert not loops and len(calls) == 5


def test_no_dropout_inside_the_iteration():
    """In training, dropout hits the encoder output only: T is one fixed map per forward."""
    x, ei, _ = toy_graph()
    torch.manual_seed(0)
    model = PIGN(6, 16, 3, lipschitz=0.9, dropout=0.5).train()
    f = F.relu(model.encoder(x))
    z = torch.randn_like(f)
    assert torch.equal(model.step(z, ei, f), model.step(z, ei, f))


def test_implicit_backward_matches_unrolled_at_the_fixed_point():
    x, ei, y = toy_graph()
    grads = []
    for backward in ("unroll", "implicit"):
        torch.manual_seed(0)
        model = PIGN(6, 16, 3, lipschitz=0.8, tol=1e-7, max_iter=400, dropout=0.0,
                     backward=backward)
        F.cross_entropy(model(x, ei), y).backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert torch.allclose(grads[0], grads[1], rtol=1e-3, atol=1e-5)


def test_training_reduces_loss_with_early_exit():
    x, ei, y = toy_graph()
    torch.manual_seed(0)
    model = PIGN(6, 16, 3, lipschitz=0.9, tol=1e-4, max_iter=200, backward="implicit",
                 dropout=0.1)
    losses = train_losses(model, x, ei, y)
    assert losses[-1] < 0.7 * losses[0]
    assert bool(model.last_stats.converged.all())


def test_state_dict_round_trip_with_pyg_conv():
    """The capped PyG weight is stored once (as the parametrization's original)."""
    x, ei, _ = toy_graph()
    torch.manual_seed(0)
    a = PIGN(6, 16, 3, lipschitz=0.9).eval()
    blow_up(a)
    b = PIGN(6, 16, 3, lipschitz=0.9).eval()
    b.load_state_dict(a.state_dict())  # strict
    assert not any(k.endswith("lin.weight") for k in a.state_dict())
    assert torch.equal(a(x, ei), b(x, ei))


@pytest.mark.parametrize("bad", [0, 1, 1.5, -0.1, True, "0.9", float("nan")])
def test_bad_lipschitz(bad):
    with pytest.raises(ValueError, match="lipschitz"):
        PIGN(6, 16, 3, lipschitz=bad)
