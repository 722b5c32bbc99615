"""fastpicard.picard: per-sample exact early exit, stats, divergence, arguments."""
from __future__ import annotations

import math
import warnings

import pytest
import torch

import fastpicard
from fastpicard import DivergenceError, picard
from solver_fixtures import loop_impl  # noqa: F401  (autouse: C++ and Python loop)

F64 = torch.float64


def contractive_linear(d, lam=0.6, dtype=F64, seed=0):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(d, d, generator=g, dtype=dtype)
    return lam * A / torch.linalg.matrix_norm(A, 2)


def exact_early_exit(fn_one, x0_one, alpha, tol, max_iter, rel=False):
    """Ground truth for one sample: the textbook loop, a host check after every step."""
    x, best, best_x = x0_one, math.inf, x0_one
    for k in range(max_iter):
        new = alpha * x + (1 - alpha) * fn_one(x)
        res = float(torch.linalg.vector_norm(new - x))
        crit = res / float(torch.linalg.vector_norm(new)) if rel else res
        x = new
        if crit < tol:
            return x, k + 1, True, crit
        if crit < best:
            best, best_x = crit, x
    return best_x, max_iter, False, best


@pytest.mark.parametrize("stop", ["abs", "rel"])
@pytest.mark.parametrize("check_every", [1, 3])
def test_leading_batch_equals_per_sample_early_exit(stop, check_every):
    A = contractive_linear(12)
    f = torch.randn(5, 12, dtype=F64) * torch.tensor([0.01, 1, 10, 0.1, 3], dtype=F64)[:, None]
    x0 = torch.randn(5, 12, dtype=F64)
    x, st = picard(lambda x: x @ A.T + f, x0, alpha=0.3, tol=1e-7, max_iter=200,
                   batch="leading", stop=stop, check_every=check_every)
    assert st.converged.all() and not st.diverged.any()
    for s in range(5):
        ref, iters, conv, res = exact_early_exit(lambda v: v @ A.T + f[s], x0[s], 0.3, 1e-7, 200,
                                                 rel=stop == "rel")
        torch.testing.assert_close(x[s], ref, rtol=1e-12, atol=1e-13)
        assert int(st.iterations[s]) == iters
        crit = st.rel_residual[s] if stop == "rel" else st.abs_residual[s]
        assert float(crit) == pytest.approx(res, rel=1e-9)
    assert len(set(st.iterations.tolist())) > 1  # the scales differ: samples stop at different k
    assert st.trace.shape == (st.steps, 5)
    # trace: finite while a sample runs, NaN after it stopped
    for s in range(5):
        n = int(st.iterations[s])
        assert torch.isfinite(st.trace[:n, s]).all() and torch.isnan(st.trace[n:, s]).all()
        assert float(st.trace[n - 1, s]) < 1e-7


def test_batch_vector_rows_of_unequal_samples():
    A = contractive_linear(6, lam=0.8)
    batch = torch.tensor([2, 0, 1, 2, 2, 0, 1, 3, 0], dtype=torch.int64)
    scale = torch.tensor([1.0, 1e-3, 100.0, 1.0], dtype=F64)[batch][:, None]
    f = torch.randn(9, 6, dtype=F64) * scale
    x0 = torch.zeros(9, 6, dtype=F64)
    x, st = picard(lambda x: torch.tanh(x @ A.T) + f, x0, alpha=0.5, tol=1e-6, max_iter=300,
                   batch=batch)
    assert st.num_samples == 4 and st.converged.all()
    for s in range(4):
        rows = (batch == s).nonzero().flatten()
        ref, iters, _, _ = exact_early_exit(lambda v: torch.tanh(v @ A.T) + f[rows], x0[rows],
                                            0.5, 1e-6, 300)
        torch.testing.assert_close(x[rows], ref, rtol=1e-12, atol=1e-13)
        assert int(st.iterations[s]) == iters


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_low_precision_converges_to_fixed_point(dtype):
    A = contractive_linear(16, lam=0.5)
    f = torch.randn(3, 16, dtype=F64)
    exact = torch.linalg.solve(torch.eye(16, dtype=F64) - A, f.T).T
    tol = 1e-4 if dtype == torch.float32 else 5e-2
    x, st = picard(lambda x: x @ A.T.to(dtype) + f.to(dtype), torch.zeros(3, 16, dtype=dtype),
                   tol=tol, max_iter=100, batch="leading")
    assert x.dtype == dtype and st.abs_residual.dtype == torch.float32
    assert st.converged.all()
    torch.testing.assert_close(x.double(), exact, rtol=0, atol=20 * tol)


def test_unbatched_and_scalar_x():
    x, st = picard(lambda x: 0.5 * torch.cos(x), torch.tensor(0.0, dtype=F64), tol=1e-12,
                   max_iter=100)
    assert x.shape == () and bool(st.converged[0])
    assert float(x) == pytest.approx(0.5 * math.cos(float(x)), abs=1e-11)
    ref, iters, _, _ = exact_early_exit(lambda v: 0.5 * torch.cos(v), torch.tensor(0.0, dtype=F64),
                                        0.5, 1e-12, 100)
    assert float(x) == float(ref) and int(st.iterations[0]) == iters


def test_exhausted_sample_returns_lowest_residual_iterate():
    # fn adds a prescribed step each call: residuals (1-alpha)*|c_k| = 0.5, 0.25, 1.0, 1.5
    steps = iter([1.0, 0.5, 2.0, 3.0])
    x0 = torch.zeros(2, 1, dtype=F64)

    def fn(x):
        c = next(steps)
        return x + torch.tensor([[c], [c]], dtype=F64)

    x, st = picard(fn, x0, alpha=0.5, tol=1e-9, max_iter=4, batch="leading")
    assert not st.converged.any() and not st.diverged.any()
    assert st.iterations.tolist() == [4, 4]
    # best step is the second: x_2 = 0.5*1 + 0.5*0.5
    torch.testing.assert_close(x, torch.full((2, 1), 0.75, dtype=F64))
    torch.testing.assert_close(st.abs_residual, torch.full((2,), 0.25, dtype=F64))


def test_never_converged_monotone_returns_last_iterate():
    x, st = picard(lambda x: 0.99 * x + 1, torch.zeros(4, dtype=F64), alpha=0.0, tol=1e-9,
                   max_iter=7)
    ref = torch.zeros(4, dtype=F64)
    for _ in range(7):
        ref = 0.99 * ref + 1
    torch.testing.assert_close(x, ref, rtol=0, atol=0)
    assert not bool(st.converged[0]) and int(st.iterations[0]) == 7 and st.steps == 7


def test_nan_sample_is_flagged_rolled_back_and_others_unaffected():
    A = contractive_linear(8)
    f = torch.randn(3, 8, dtype=F64)
    calls = {"n": 0}
    iterates = []

    def fn(x):
        calls["n"] += 1
        iterates.append(x.clone())
        out = x @ A.T + f
        if calls["n"] == 4:  # step index 3 produces NaN for sample 1 only
            out = out.clone()
            out[1, 2] = math.nan
        return out

    with pytest.warns(RuntimeWarning, match="1 of 3 samples diverged"):
        x, st = picard(fn, torch.zeros(3, 8, dtype=F64), tol=1e-10, max_iter=200,
                       batch="leading")
    assert st.diverged.tolist() == [False, True, False]
    assert st.converged.tolist() == [True, False, True]
    assert int(st.iterations[1]) == 4 and math.isnan(float(st.abs_residual[1]))
    torch.testing.assert_close(x[1], iterates[3][1], rtol=0, atol=0)  # x_3: last finite iterate
    assert torch.isfinite(x).all()
    for s in (0, 2):
        ref, iters, _, _ = exact_early_exit(lambda v: v @ A.T + f[s], torch.zeros(8, dtype=F64),
                                            0.5, 1e-10, 200)
        torch.testing.assert_close(x[s], ref, rtol=1e-12, atol=1e-13)
        assert int(st.iterations[s]) == iters


def test_growth_divergence_and_raise():
    x0 = torch.ones(2, 3, dtype=F64)
    gain = torch.tensor([[3.0], [0.5]], dtype=F64)  # sample 0 expands, sample 1 contracts
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        x, st = picard(lambda x: gain * x, x0, alpha=0.0, tol=1e-8, max_iter=100,
                       batch="leading", divergence_factor=10.0)
    assert len([m for m in w if "diverged" in str(m.message)]) == 1  # one warning per solve
    assert st.diverged.tolist() == [True, False] and st.converged.tolist() == [False, True]
    # residuals of sample 0: 2*3^k*sqrt(3); flagged at the step where it passes 10x the first
    k = int(st.iterations[0])
    assert k == 4  # 3^3 = 27 > 10 at step index 3
    torch.testing.assert_close(x[0], torch.full((3,), 3.0 ** (k - 1), dtype=F64))
    with pytest.raises(DivergenceError, match="diverged"):
        picard(lambda x: gain * x, x0, alpha=0.0, tol=1e-8, max_iter=100, batch="leading",
               divergence_factor=10.0, on_diverge="raise")
    # inf disables the growth rule: runs to max_iter
    _, st = picard(lambda x: gain * x, x0, alpha=0.0, tol=1e-8, max_iter=20, batch="leading",
                   divergence_factor=math.inf)
    assert not st.diverged.any() and st.iterations.tolist()[0] == 20


def test_nan_start_is_reported_not_hidden():
    x0 = torch.tensor([1.0, math.nan], dtype=F64)
    with pytest.warns(RuntimeWarning, match="diverged"):
        x, st = picard(lambda x: 0.5 * x, x0, tol=1e-6)
    assert bool(st.diverged[0]) and st.steps == 1


def test_empty_batch_returns_at_once():
    calls = []
    x, st = picard(lambda x: calls.append(1) or x, torch.zeros(0, 4), batch="leading")
    assert x.shape == (0, 4) and calls == [] and st.steps == 0 and st.num_samples == 0


def test_converged_at_first_step_and_fixed_point_start():
    x, st = picard(lambda x: x, torch.randn(3, 2), batch="leading")
    assert st.converged.all() and st.iterations.tolist() == [1, 1, 1]
    assert float(st.abs_residual.max()) == 0.0


def test_stats_summary_and_plot(tmp_path):
    _, st = picard(lambda x: 0.5 * x + 1, torch.zeros(3, 4), batch="leading", tol=1e-5)
    line = st.summary()
    assert "3/3 converged" in line and "\n" not in line and "tol 1e-05" in line
    mpl = pytest.importorskip("matplotlib")
    mpl.use("Agg")
    fig = st.plot(path=tmp_path / "trace.png")
    ax, = fig.axes
    assert ax.get_yscale() == "log" and len(ax.get_lines()) == 3 + 1
    assert (tmp_path / "trace.png").stat().st_size > 0


BAD_ARGS = [
    (dict(alpha=1.0), ValueError, "alpha"),
    (dict(alpha=-0.1), ValueError, "alpha"),
    (dict(alpha=True), TypeError, "alpha"),
    (dict(tol=0.0), ValueError, "tol"),
    (dict(tol=math.nan), ValueError, "tol"),
    (dict(max_iter=0), ValueError, "max_iter"),
    (dict(max_iter=2.5), TypeError, "max_iter"),
    (dict(stop="max"), ValueError, "stop"),
    (dict(backward="adjoint"), ValueError, "backward"),
    (dict(solver="broyden"), ValueError, "solver"),
    (dict(on_diverge="ignore"), ValueError, "on_diverge"),
    (dict(check_every=0), ValueError, "check_every"),
    (dict(phantom_steps=0), ValueError, "phantom_steps"),
    (dict(anderson_m=0), ValueError, "anderson_m"),
    (dict(anderson_lam=-1.0), ValueError, "anderson_lam"),
    (dict(divergence_factor=1.0), ValueError, "divergence_factor"),
    (dict(batch="trailing"), ValueError, "batch"),
    (dict(batch=torch.zeros(4, dtype=torch.int32)), TypeError, "batch"),
    (dict(batch=torch.zeros(3, dtype=torch.int64)), ValueError, "batch"),
    (dict(batch=torch.tensor([0, -1, 0, 0])), IndexError, "batch"),
    (dict(batch=torch.tensor([0, 7, 0, 0])), ValueError, "without gaps"),
    (dict(batch=[0, 1]), TypeError, "batch"),
    (dict(dist_sync=1), TypeError, "dist_sync"),
    (dict(dist_sync=True), RuntimeError, "dist_sync"),
    (dict(tolerance=1e-3), TypeError, "tolerance"),
]


@pytest.mark.parametrize("kw,exc,name", BAD_ARGS, ids=[b[2] + str(i) for i, b in enumerate(BAD_ARGS)])
def test_bad_arguments(kw, exc, name):
    with pytest.raises(exc, match=name):
        picard(lambda x: x, torch.zeros(4, 2), **kw)


@pytest.mark.parametrize("good,bad,exc", [
    (dict(max_iter=3), dict(max_iter=3.0), TypeError),  # 3 == 3.0: equal keys, other types
    (dict(max_iter=1), dict(max_iter=True), TypeError),
    (dict(alpha=0.0), dict(alpha=False), TypeError),
    (dict(check_every=1), dict(check_every=1.0), TypeError),
    (dict(anderson_lam=0.0), dict(anderson_lam=[0.0]), TypeError),  # unhashable: uncached
])
def test_validated_options_cache_keeps_rejecting(good, bad, exc):
    # options are validated once and cached; a value equal to a cached one but of a wrong
    # type must still be refused
    x0 = torch.zeros(4, 2)
    picard(lambda x: x, x0, **good)
    with pytest.raises(exc, match=next(iter(bad))):
        picard(lambda x: x, x0, **bad)
    picard(lambda x: x, x0, **good)


def test_bad_fn_and_x0():
    with pytest.raises(TypeError, match="fn"):
        picard(None, torch.zeros(2))
    with pytest.raises(TypeError, match="x0"):
        picard(lambda x: x, [1.0, 2.0])
    with pytest.raises(TypeError, match="x0"):
        picard(lambda x: x, torch.zeros(2, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"fn\(x\) must match x"):
        picard(lambda x: x[:1], torch.zeros(2))
    with pytest.raises(ValueError, match=r"fn\(x\) must match x"):
        picard(lambda x: x.double(), torch.zeros(2))
    with pytest.raises(TypeError, match="fn must return a Tensor"):
        picard(lambda x: 1.0, torch.zeros(2))
    with pytest.raises(ValueError, match="leading"):
        picard(lambda x: x, torch.tensor(1.0), batch="leading")


def test_divergence_warning_points_at_the_caller():
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        picard(lambda x: 3.0 * x, torch.ones(3), alpha=0.0, divergence_factor=10.0)
    (m,) = [m for m in w if "diverged" in str(m.message)]
    assert m.filename == __file__


def test_answer_survives_later_solves():
    # without autograd the loop writes iterates into reused buffers: an answer handed out
    # must never be one of them once another solve runs
    f = torch.randn(5, 4, dtype=torch.float64)
    x1, st1 = picard(lambda x: 0.5 * torch.tanh(x) + f, torch.zeros_like(f), tol=1e-10)
    keep, trace = x1.clone(), st1.trace.clone()
    for check_every in (1, 3):
        picard(lambda x: 0.5 * torch.tanh(x) - f, torch.zeros_like(f), tol=1e-10,
               check_every=check_every, batch="leading")
    assert torch.equal(x1, keep) and torch.equal(st1.trace, trace)


def test_leading_batch_after_inference_mode():
    # state created by one solve (sample ids, options) must not carry its mode into the next
    w = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)
    with torch.inference_mode():
        picard(lambda x: 0.5 * x + 1, torch.zeros(3, 4, dtype=torch.float64), batch="leading")
    x, _ = picard(lambda x: w * x + 1, torch.zeros(3, 4, dtype=torch.float64),
                  batch="leading", tol=1e-10)
    x.sum().backward()
    # x* = 1 / (1 - w) per entry: d(sum x*)/dw = 12 / (1 - w)^2 (unrolled: to ~1e-5)
    torch.testing.assert_close(w.grad, torch.tensor(12 / 0.25, dtype=torch.float64), rtol=1e-4,
                               atol=0)


def test_public_names():
    assert fastpicard.picard is picard
    assert fastpicard.PicardStats.__name__ == "PicardStats"


# ------------------------------------------------------------------ hostile fn and options
def _switching_fn(after):
    """fn that behaves for its first call, then returns ``after(x)``."""
    calls = [0]

    def fn(x):
        calls[0] += 1
        return 0.5 * x + 1 if calls[0] == 1 else after(x)
    return fn


def test_fn_returning_meta_later_is_an_error():
    """fn returning a meta tensor after its first call used to reach the fake kernels:
    uninitialised memory reported as converged."""
    with pytest.raises(ValueError, match="meta"):
        picard(_switching_fn(lambda x: torch.empty_like(x, device="meta")), torch.zeros(3),
               tol=1e-9)


@pytest.mark.parametrize("bad,exc,what", [
    (lambda x: None, TypeError, "NoneType"),
    (lambda x: x.tolist(), TypeError, "list"),
    (lambda x: torch.zeros(4), ValueError, "shape"),
    (lambda x: x.double(), ValueError, "dtype"),
])
def test_fn_returning_garbage_later_says_so(bad, exc, what):
    """fn returning None mid-solve dumped a pybind signature instead of saying what was wrong."""
    with pytest.raises(exc, match=f"fn.*{what}"):
        picard(_switching_fn(bad), torch.zeros(3), tol=1e-9)


@pytest.mark.parametrize("name", ["max_iter", "check_every", "phantom_steps", "anderson_m"])
def test_integer_options_beyond_int64_are_refused_clearly(name):
    """max_iter=10**30 said "Expected a value of type 'int' ... found type 'int'"."""
    with pytest.raises(ValueError, match=f"{name} must be <= 2\\*\\*63 - 1"):
        picard(lambda x: 0.5 * x, torch.zeros(3), **{name: 10 ** 30})
