"""picard_control_ (the solver's stopping rules) on drawn sample counts, residuals (NaN, inf,
0), state dtypes, shapes, strides, devices (meta included) and aliasing between its buffers,
on every backend: the reference's writes or a clear error."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from cases import assert_ran, assert_refused, examples, log_case, outcome
from fastpicard.ops import _backend, picard_control_, reference

STATE = ("frozen", "converged", "diverged", "iters", "stats", "trace", "improved", "new_div",
         "summary")
DEFECTS = {
    None: None, "all_meta": None,
    "res_integer": TypeError, "res_2d": ValueError, "norm_length": ValueError,
    "norm_dtype": TypeError, "state_dtype": TypeError, "state_length": ValueError,
    "state_strided": ValueError, "state_meta": ValueError, "res_meta": ValueError,
    "state_aliased": ValueError, "state_over_res": ValueError, "trace_width": ValueError,
    "step_negative": IndexError, "step_beyond": IndexError, "tol_zero": ValueError,
    "tol_nan": ValueError, "factor_one": ValueError, "res_list": TypeError,
}
NEEDS_SAMPLES = {"state_length", "state_strided", "state_aliased", "state_over_res",
                 "norm_length", "trace_width"}


@st.composite
def cases(draw, defect):
    S = draw(st.integers(2 if defect == "state_strided" else int(defect in NEEDS_SAMPLES), 12))
    return dict(defect=defect, seed=draw(st.integers(0, 2 ** 16)), S=S,
                steps=draw(st.integers(1, 5)), dtype=draw(st.sampled_from([torch.float32,
                                                                            torch.float64])),
                rel=draw(st.booleans()), tol=draw(st.sampled_from([1e-3, 0.5, 1e30])),
                factor=draw(st.sampled_from([2.0, 1e3, math.inf])),
                victim=draw(st.sampled_from(STATE)), other=draw(st.sampled_from(STATE)))


def build(case):
    g = torch.Generator().manual_seed(case["seed"])
    S, dtype, defect = case["S"], case["dtype"], case["defect"]
    res = torch.rand(S, generator=g, dtype=torch.float64) * 2.0
    kind = torch.randint(0, 8, (S,), generator=g)
    res[kind == 0], res[kind == 1], res[kind == 2] = math.nan, math.inf, 0.0
    res, norm = res.to(dtype), (torch.rand(S, generator=g, dtype=torch.float64) * 3).to(dtype)
    st_ = dict(frozen=torch.rand(S, generator=g) < 0.3, converged=torch.zeros(S, dtype=torch.bool),
               diverged=torch.zeros(S, dtype=torch.bool),
               iters=torch.randint(0, 5, (S,), generator=g),
               stats=torch.rand(3, S, generator=g, dtype=torch.float64).to(dtype) * 4,
               trace=torch.full((case["steps"], S), math.nan, dtype=dtype),
               improved=torch.ones(S, dtype=torch.bool), new_div=torch.ones(S, dtype=torch.bool),
               summary=torch.full((4,), -7, dtype=torch.int64))
    step, tol, factor = case["steps"] - 1, case["tol"], case["factor"]
    v = case["victim"]
    if defect == "res_integer":
        res = res.nan_to_num().long()
    elif defect == "res_2d":
        res = res[None]
    elif defect == "norm_length":
        norm = norm[:-1]
    elif defect == "norm_dtype":
        norm = norm.to(torch.float64 if dtype == torch.float32 else torch.float32)
    elif defect == "state_dtype":
        st_[v] = st_[v].to(torch.int32)
    elif defect == "state_length":
        st_[v] = torch.cat([st_[v], st_[v][..., :1]], -1)
    elif defect == "state_strided":
        big = torch.cat([st_[v], st_[v]], -1)
        st_[v] = big[..., ::2]
    elif defect == "state_meta":
        st_[v] = st_[v].to("meta")
    elif defect == "res_meta":
        res = res.to("meta")
    elif defect == "state_aliased":
        other = case["other"] if case["other"] != v else STATE[(STATE.index(v) + 1) % 9]
        a, b = (v, other) if STATE.index(v) < STATE.index(other) else (other, v)
        if st_[a].dtype == st_[b].dtype and st_[a].shape == st_[b].shape:
            st_[b] = st_[a]  # the same tensor twice
        else:  # b's memory inside a's
            nbytes = st_[b].numel() * st_[b].element_size()
            buf = torch.zeros(max(nbytes, st_[a].numel() * st_[a].element_size()),
                              dtype=torch.uint8)
            st_[a] = buf[: st_[a].numel() * st_[a].element_size()].view(st_[a].dtype).view(
                st_[a].shape)
            st_[b] = buf[:nbytes].view(st_[b].dtype).view(st_[b].shape)
    elif defect == "state_over_res":
        nbytes = res.numel() * res.element_size()
        buf = torch.zeros(max(nbytes, st_[v].numel() * st_[v].element_size()), dtype=torch.uint8)
        st_[v] = buf[: st_[v].numel() * st_[v].element_size()].view(st_[v].dtype).view(
            st_[v].shape)
        res = buf[:nbytes].view(res.dtype)
    elif defect == "trace_width":
        st_["trace"] = torch.zeros(case["steps"], S + 1, dtype=dtype)
    elif defect == "step_negative":
        step = -1
    elif defect == "step_beyond":
        step = case["steps"]
    elif defect == "tol_zero":
        tol = 0.0
    elif defect == "tol_nan":
        tol = math.nan
    elif defect == "factor_one":
        factor = 1.0
    elif defect == "res_list":
        res = res.tolist()
    elif defect == "all_meta":
        res, norm = res.to("meta"), norm.to("meta")
        st_ = {k: t.to("meta") for k, t in st_.items()}
    return res, norm, st_, step, tol, case["rel"], factor


def run(case, backend):
    log_case(backend=backend, **case)
    res, norm, state, step, tol, rel, factor = build(case)
    defect = case["defect"]
    kinds = DEFECTS[defect]
    if defect == "all_meta":
        backend = None
    expected = None
    if kinds is None and defect != "all_meta":
        expected = {k: t.clone() for k, t in state.items()}
        reference.picard_control_(res, norm, *(expected[k] for k in STATE), step, tol, rel,
                                  factor)
    with _backend.triton_cpu_kernels() if backend == "triton" else torch.enable_grad():
        _, err = outcome(lambda: picard_control_(res, norm, *(state[k] for k in STATE), step,
                                                 tol, rel, factor, backend=backend))
    if kinds is not None:
        assert_refused(err, kinds, "picard_control", defect)
        return
    assert_ran(err, defect)
    if expected is not None:
        for k in STATE:
            torch.testing.assert_close(state[k], expected[k], rtol=0, atol=0, equal_nan=True,
                                       msg=lambda m, k=k: f"{k}: {m}")


@pytest.mark.parametrize("defect", list(DEFECTS), ids=str)
def test_cpp_and_reference(defect):
    @examples(150 if defect is None else 8)
    @given(cases(defect))
    def check(case):
        run(case, "cpp")
        run(case, "reference")
    check()


@pytest.mark.skipif(not (_backend.triton_available() and _backend.triton_interpreting()),
                    reason="Triton interpreter not active")
@pytest.mark.parametrize("defect", list(DEFECTS), ids=str)
def test_triton(defect):
    @examples(30 if defect is None else 2)
    @given(cases(defect))
    def check(case):
        run(case, "triton")
    check()
