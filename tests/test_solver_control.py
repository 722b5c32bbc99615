"""The solver's loop control: picard_control_ (C++ CPU kernel, Triton kernel) against its
pure-torch reference, and the PicardLoop class against PyLoop."""
from __future__ import annotations

import math

import pytest
import torch

import fastpicard
from fastpicard.ops import _backend
from fastpicard.solver import loop as loop_mod
from fastpicard.ops import picard_control_
from fastpicard.ops import reference as ref_ops
from fastpicard.solver.pyloop import PyLoop

from helpers import on_backend

pytestmark = pytest.mark.skipif(not fastpicard.extension_available(),
                                reason="compiled extension not available")

TRITON = _backend.triton_available() and _backend.triton_interpreting()
KINDS = ("cpp", "triton")


OP_STATE = ("frozen", "converged", "diverged", "iters", "stats", "trace", "improved", "new_div",
            "summary")


def fresh_state(S, dtype, cap):
    return {
        "frozen": torch.zeros(S, dtype=torch.bool),
        "converged": torch.zeros(S, dtype=torch.bool),
        "diverged": torch.zeros(S, dtype=torch.bool),
        "iters": torch.zeros(S, dtype=torch.int64),
        "stats": torch.full((3, S), math.inf, dtype=dtype),
        "trace": torch.full((cap, S), math.nan, dtype=dtype),
        "improved": torch.ones(S, dtype=torch.bool),  # poisoned: the op must write them
        "new_div": torch.ones(S, dtype=torch.bool),
        "summary": torch.full((4,), -7, dtype=torch.int64),
    }


def run_op(kind, st, res, norm, step, tol, rel, factor):
    if kind == "triton" and not TRITON:
        pytest.skip("triton (TRITON_INTERPRET=1) not available")
    with on_backend(kind):
        picard_control_(res, norm, *(st[k] for k in OP_STATE), step, tol, rel, factor,
                        backend=kind)
    return st["improved"], st["new_div"], st["summary"]


def random_residuals(S, dtype, step, g):
    res = torch.rand(S, generator=g, dtype=torch.float64) * 2.0 ** (-step)
    special = torch.randint(0, 12, (S,), generator=g)
    res[special == 0] = math.nan
    res[special == 1] = math.inf
    res[special == 2] = 0.0
    res[special == 3] = 1e-3  # exactly tol: not converged (strict <)
    res[special == 4] = 50.0  # growth past the factor
    norm = torch.rand(S, generator=g, dtype=torch.float64) * 3
    norm[special == 5] = 0.0
    return res.to(dtype), norm.to(dtype)


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # inf * 0 in
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])           # the interpreter
@pytest.mark.parametrize("rel", [False, True])
@pytest.mark.parametrize("factor", [10.0, math.inf])
def test_control_kernels_match_reference_rules(dtype, rel, factor):
    S, steps, tol = 37, 8, 1e-3
    g = torch.Generator().manual_seed(1)
    states = {k: fresh_state(S, dtype, steps) for k in KINDS}
    ref = fresh_state(S, dtype, steps)
    for k in range(steps):
        res, norm = random_residuals(S, dtype, k, g)
        ref_ops.picard_control_(res, norm, *(ref[n] for n in OP_STATE), k, tol, rel, factor)
        for kind in KINDS:
            st = states[kind]
            st["improved"].fill_(True)
            st["new_div"].fill_(True)
            run_op(kind, st, res, norm, k, tol, rel, factor)
            for name in OP_STATE:
                torch.testing.assert_close(st[name], ref[name], rtol=0, atol=0, equal_nan=True,
                                           msg=f"{kind} {name}")
            assert st["summary"].tolist() == [
                int((~st["frozen"]).sum()), int(st["improved"].sum()), int(st["new_div"].sum()),
                int(st["diverged"].sum())]
    # the random inputs exercised every outcome
    assert ref["converged"].any() and ref["diverged"].any() and (~ref["converged"]).any()


def test_control_opcheck():
    S = 5
    st = fresh_state(S, torch.float32, 4)
    res = torch.tensor([1.0, 0.0, math.nan, 0.5, 2.0])
    norm = torch.ones(S)
    torch.library.opcheck(torch.ops.fastpicard.picard_control_.default,
                          (res, norm, *(st[k].clone() for k in OP_STATE), 0, 1e-3, False, 1e3))


@pytest.mark.parametrize("kind", ["cpp", "reference"])
def test_control_bad_arguments(kind):
    S = 3
    res, norm = torch.ones(S), torch.ones(S)
    cases = [
        ("res", dict(res=torch.ones(S, dtype=torch.int32)), TypeError),
        ("norm", dict(norm=torch.ones(S + 1)), ValueError),
        ("frozen", dict(frozen=torch.zeros(S, dtype=torch.uint8)), TypeError),
        ("converged", dict(converged=torch.zeros(S, dtype=torch.int64)), TypeError),
        ("stats", dict(stats=torch.zeros(4, S)), ValueError),
        ("trace", dict(trace=torch.zeros(4, S + 1)), ValueError),
        ("step", dict(step=4), IndexError),
        ("improved", dict(improved=torch.zeros(S + 1, dtype=torch.bool)), ValueError),
        ("summary", dict(summary=torch.zeros(4, dtype=torch.int32)), TypeError),
    ]
    for name, override, exc in cases:
        st = fresh_state(S, torch.float32, 4)
        args = dict(res=res, norm=norm, step=0, **st)
        args.update(override)
        with pytest.raises(exc, match=name):
            picard_control_(args["res"], args["norm"], *(args[k] for k in OP_STATE),
                            args["step"], 1e-3, False, 1e3, backend=kind)


def _drive(loop, fn, x, max_iter):
    reads = []
    for _ in range(max_iter):
        x, active, n_div = loop.step(x, fn(x))
        reads.append((active, n_div))
        if active == 0:
            break
    answer, stats = loop.finish(x)
    return answer, reads, stats


@pytest.mark.parametrize("reuse", [True, False])
@pytest.mark.parametrize("check_every", [1, 4])
@pytest.mark.parametrize("batch_kind", [None, "leading", "vector"])
def test_picard_loop_matches_pyloop_bitwise(check_every, batch_kind, reuse):
    g = torch.Generator().manual_seed(3)
    rows, d = 7, 5
    A = torch.randn(d, d, generator=g, dtype=torch.float64) * 0.3
    gain = torch.tensor([0.5, 1.0, 3.0, 0.9, 0.2, 0.7, 1.0], dtype=torch.float64)[:, None]
    f = torch.randn(rows, d, generator=g, dtype=torch.float64)

    def fn(x):
        y = gain * torch.tanh(x @ A.T) + f
        return torch.where(torch.arange(rows)[:, None] == 4, x * 1.5 + 1, y)  # row 4 grows

    if batch_kind is None:
        batch, S, leading = None, 1, False
    elif batch_kind == "leading":
        batch, S, leading = torch.arange(rows), rows, True
    else:
        batch, S, leading = torch.tensor([0, 1, 2, 1, 3, 0, 2]), 4, False
    x0 = torch.zeros(rows, d, dtype=torch.float64)
    args = (x0, 0.4, batch, S, leading, 1e-9, False, 60, 20.0, check_every, reuse)
    out_c = _drive(loop_mod.CppLoop(*args), fn, x0, 60)
    out_p = _drive(PyLoop(*args), fn, x0, 60)
    assert torch.equal(out_c[0], out_p[0])
    assert out_c[1] == out_p[1]
    for a, b in zip(out_c[2], out_p[2]):
        torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)
    assert torch.equal(x0, torch.zeros_like(x0))  # the caller's x0 is never written
    # off-check steps do not read the device
    if check_every > 1:
        assert all(r == (-1, -1) for i, r in enumerate(out_c[1]) if (i + 1) % check_every)


def test_picard_loop_refuses_steps_past_max_iter_and_bad_config():
    x0 = torch.zeros(3)
    loop = loop_mod.CppLoop(x0, 0.5, None, 1, False, 1e-30, False, 2, 1e3, 1, True)
    x = x0
    for _ in range(2):
        x, _, _ = loop.step(x, x + 1)
    with pytest.raises(RuntimeError, match="max_iter"):
        loop.step(x, x + 1)
    with pytest.raises(ValueError, match="alpha"):
        loop_mod.CppLoop(x0, 1.0, None, 1, False, 1e-3, False, 2, 1e3, 1, True)
    with pytest.raises(ValueError, match="num_samples"):
        loop_mod.CppLoop(x0, 0.5, None, 2, False, 1e-3, False, 2, 1e3, 1, True)
    cpp = loop_mod.CppLoop(x0, 0.5, None, 1, False, 1e-30, False, 5, 1e3, 1, True)
    x, active, _ = cpp.step(x0, x0 + 1)
    assert active == 1 and torch.equal(x, torch.full((3,), 0.5)) and cpp.steps == 1
    with pytest.raises(TypeError):  # the direct binding checks its argument types too
        cpp.step(x0, 1.0)


def test_picard_loop_step_passes_python_errors_through():
    # a Python exception inside the dispatcher (a Triton kernel on CUDA, a dispatch mode)
    # reaches the caller as itself, not as an empty RuntimeError
    from torch.utils._python_dispatch import TorchDispatchMode

    class Refuse(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if "picard_control_" in str(func):
                raise KeyError("refused picard_control_")
            return func(*args, **(kwargs or {}))

    x0 = torch.zeros(3)
    loop = loop_mod.CppLoop(x0, 0.5, None, 1, False, 1e-30, False, 5, 1e3, 1, True)
    with Refuse(), pytest.raises(KeyError, match="refused picard_control_"):
        loop.step(x0, x0 + 1)


def test_default_loop_is_cpp():
    assert loop_mod.IMPL == "cpp"


# ------------------------------------------------------------------ hostile use
def test_control_with_meta_state_is_an_error():
    """picard_control_ with a meta frozen mask silently did nothing."""
    st = fresh_state(3, torch.float32, 4)
    st["frozen"] = st["frozen"].to("meta")
    with pytest.raises(ValueError, match="meta"):
        torch.ops.fastpicard.picard_control_(torch.ones(3), torch.ones(3),
                                             *(st[k] for k in OP_STATE), 0, 1e-3, False, 1e3)


def test_picard_loop_step_with_meta_is_an_error():
    x0 = torch.zeros(3)
    loop = loop_mod.CppLoop(x0, 0.5, None, 1, False, 1e-30, False, 5, 1e3, 1, True)
    with pytest.raises(ValueError, match="meta"):
        loop.step(x0, torch.ones(3, device="meta"))
    with pytest.raises(ValueError, match="x0"):  # x must be shaped like x0
        loop.step(torch.zeros(4), torch.ones(4))


def test_uninitialised_picard_loop_is_refused():
    """PicardLoop.__new__ without __init__: .steps read garbage, .step() segfaulted."""
    from helpers import run_isolated
    r = run_isolated("""
        import torch
        from fastpicard.solver.loop import CppLoop
        loop = CppLoop.__new__(CppLoop)
        for call in (lambda: loop.steps, lambda: loop.step(torch.ones(3), torch.ones(3)),
                     lambda: loop.finish(torch.ones(3)), lambda: loop.active_rows()):
            try:
                print("RETURNED", call())
            except (TypeError, RuntimeError) as e:
                print("refused:", e)
    """)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("refused:") == 4 and "RETURNED" not in r.stdout, r.stdout


def test_picard_loop_shared_by_threads_loses_no_step():
    """step() released the GIL without a lock: eight threads sharing one loop lost updates
    (a trace row never written, an iteration not counted)."""
    import threading
    x0, z = torch.randn(4), torch.randn(4)
    for reuse in (True, False):
        loop = loop_mod.CppLoop(x0, 0.5, None, 1, False, 1e-30, False, 10 ** 6, math.inf, 1,
                                reuse)
        n = 1500

        def work():
            for _ in range(n):
                loop.step(x0, z)
        threads = [threading.Thread(target=work) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        _, (iters, _, _, _, _, trace) = loop.finish(x0)
        assert loop.steps == 8 * n and int(iters) == 8 * n
        assert trace.shape == (8 * n, 1) and not trace.isnan().any()
