"""fastpicard.picard's fixed schedule (tol=None), its options type, and the warning when a
tolerance is out of reach."""
from __future__ import annotations

import dataclasses
import inspect
import warnings

import pytest
import torch

import fastpicard
from fastpicard import DivergenceError, picard, picard_gcn
from fastpicard.solver import options as options_mod
from fastpicard.solver import solve as solve_mod

F64 = torch.float64


def plain_loop(fn, x, alpha, n):
    for _ in range(n):
        x = alpha * x + (1 - alpha) * fn(x)
    return x


@pytest.mark.parametrize("batch", [None, "leading", "vector"])
def test_fixed_schedule_runs_exactly_max_iter_steps_and_returns_the_last_iterate(batch):
    A = torch.randn(5, 5, dtype=F64, generator=torch.Generator().manual_seed(0))
    fn = lambda x: torch.tanh(x @ A) + 1  # noqa: E731  (not contractive: never converges)
    x0 = torch.randn(6, 5, dtype=F64, requires_grad=True)
    ids = torch.tensor([0, 0, 1, 2, 2, 2]) if batch == "vector" else batch
    x, st = picard(fn, x0, alpha=0.3, tol=None, max_iter=7, batch=ids)
    ref = plain_loop(fn, x0, 0.3, 7)
    torch.testing.assert_close(x, ref, rtol=1e-14, atol=1e-14)
    S = {None: 1, "leading": 6, "vector": 3}[batch]
    assert st.schedule == "fixed" and st.tol is None and st.steps == 7
    assert st.trace.shape == (7, S) and st.iterations.tolist() == [7] * S
    assert not st.diverged.any()
    # the residual of the last step, per sample, and the relative one
    prev = plain_loop(fn, x0, 0.3, 6).detach()
    rows = {None: [list(range(6))], "leading": [[i] for i in range(6)],
            "vector": [[0, 1], [2], [3, 4, 5]]}[batch]
    for s, r in enumerate(rows):
        d = torch.linalg.vector_norm(ref.detach()[r] - prev[r])
        torch.testing.assert_close(st.abs_residual[s].double(), d, rtol=1e-6, atol=1e-12)
        torch.testing.assert_close(st.rel_residual[s].double(),
                                   d / torch.linalg.vector_norm(ref.detach()[r]), rtol=1e-6,
                                   atol=1e-12)
    g, = torch.autograd.grad(x.sum(), x0)  # backpropagates through every step
    g_ref, = torch.autograd.grad(ref.sum(), x0)
    torch.testing.assert_close(g, g_ref, rtol=1e-12, atol=1e-12)


def test_fixed_schedule_does_not_read_as_failure():
    _, st = picard(lambda x: 0.5 * x + 1, torch.zeros(3), tol=None, max_iter=4)
    text = repr(st)
    assert "schedule='fixed'" in text and "converged" not in text and "tol" not in text
    assert "fixed schedule (no tolerance)" in st.summary() and "converged" not in st.summary()
    _, st = picard(lambda x: 0.5 * x + 1, torch.zeros(3), tol=1e-3, max_iter=100)
    assert st.schedule == "tol" and "converged=tensor([True])" in repr(st)
    assert "1/1 converged" in st.summary()


def test_fixed_schedule_reports_nonfinite_values():
    x0 = torch.tensor([[1.0], [float("nan")]])
    with pytest.warns(RuntimeWarning, match="1 of 2 samples produced non-finite") as rec:
        _, st = picard(lambda x: x, x0, tol=None, max_iter=2, batch="leading")
    assert rec[0].filename == __file__  # attributed to the caller
    assert st.diverged.tolist() == [False, True]
    with pytest.raises(DivergenceError):
        picard(lambda x: x, x0, tol=None, max_iter=2, batch="leading", on_diverge="raise")


@pytest.mark.parametrize("kw", [dict(backward="implicit"), dict(backward="phantom"),
                                dict(solver="anderson")])
def test_fixed_schedule_refuses_fixed_point_options(kw):
    with pytest.raises(ValueError, match="need a tolerance"):
        picard(lambda x: 0.5 * x, torch.zeros(3), tol=None, **kw)


def test_picard_gcn_fixed_schedule_is_the_plain_loop():
    from fastpicard.ops import spmm_update
    g = torch.Generator().manual_seed(1)
    ei = torch.randint(0, 9, (2, 30), generator=g)
    graph = fastpicard.Graph.from_edge_index(ei, 9)
    W = torch.randn(4, 4, dtype=F64, generator=g)
    x0 = torch.randn(9, 4, dtype=F64, generator=g)
    x, st = picard_gcn(graph, x0, W, act="tanh", alpha=0.4, tol=None, max_iter=5)
    ref = plain_loop(lambda x: spmm_update(graph, x @ W, x, 0.0, act="tanh")[0], x0, 0.4, 5)
    torch.testing.assert_close(x, ref, rtol=1e-13, atol=1e-13)
    assert st.schedule == "fixed" and st.steps == 5


def test_options_are_one_frozen_keyword_only_type_with_picards_defaults():
    opts = options_mod.options(torch.zeros(2), alpha=0.25)
    with pytest.raises(dataclasses.FrozenInstanceError):
        opts.alpha = 0.5
    with pytest.raises(TypeError):
        options_mod.Options(0.5)  # keyword-only
    assert opts.alpha == 0.25 and opts.check_every == 1  # resolved for the CPU
    sig = inspect.signature(picard).parameters
    for name, default in options_mod.DEFAULTS.items():
        if name in sig:
            assert sig[name].default == default, name
    assert set(sig) - {"fn", "x0"} <= set(options_mod.DEFAULTS)
    with pytest.raises(TypeError, match="unknown option 'tolerance'"):
        picard_gcn(fastpicard.Graph.from_edge_index(torch.zeros(2, 0, dtype=torch.long), 2),
                   torch.zeros(2, 3), torch.eye(3), tolerance=1e-3)


def _stalled(x):
    return 1.02 * x + 1  # not contractive: the residual grows


def _solve_at_one_site():
    return picard(_stalled, torch.zeros(3), alpha=0.0, tol=1e-6, max_iter=20)


def test_out_of_reach_tolerance_warns_once_per_call_site(monkeypatch):
    monkeypatch.setattr(solve_mod, "_WARNED_SITES", set())
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        for _ in range(3):
            _solve_at_one_site()
        picard(_stalled, torch.zeros(3), alpha=0.0, tol=1e-6, max_iter=20)  # another site
        picard(lambda x: 0.5 * x + 1, torch.zeros(3), tol=1e-6, max_iter=200)  # converges
        picard(lambda x: 0.9 * x + 1, torch.zeros(3), alpha=0.0, tol=1e-6, max_iter=5)  # slow
    msgs = [r for r in rec if "not met" in str(r.message)]
    assert len(msgs) == 2, [str(r.message) for r in rec]
    assert "not contractive" in str(msgs[0].message)
    assert "fastpicard.contractive" in str(msgs[0].message) and "lipschitz=" in str(
        msgs[0].message)
    assert {r.filename for r in msgs} == {__file__}  # the solver's caller


def test_out_of_reach_tolerance_warns_once_per_module_call_site(monkeypatch):
    from fastpicard.nn import PIGN
    monkeypatch.setattr(solve_mod, "_WARNED_SITES", set())
    ring = torch.arange(12)
    ei = torch.stack([torch.cat([ring, (ring + 1) % 12]), torch.cat([(ring + 1) % 12, ring])])
    torch.manual_seed(0)
    model = PIGN(3, 8, 2, tol=1e-8, max_iter=6, act="identity", dropout=0.0).eval()
    with torch.no_grad():
        model.conv.lin.weight.copy_(3 * torch.eye(8))  # expands: no fixed point to reach
    x = torch.randn(12, 3)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        for _ in range(3):
            model(x, ei)
    msgs = [r for r in rec if "not met" in str(r.message)]
    assert len(msgs) == 1 and not model.last_stats.converged.any()
