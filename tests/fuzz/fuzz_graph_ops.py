"""spmm, spmm_update and their backward ops, called as the dispatcher sees them (raw CSR
tensors, as any torch.ops user may pass them), on drawn graphs, shapes, strides, dtypes,
devices (meta included) and index values, on every backend: the reference's answer (and
gradients) or a clear error."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from cases import (DTYPES, assert_ran, assert_refused, close, examples, layout, log_case,
                   outcome)
from fastpicard import Graph
from fastpicard.ops import _backend, reference
from fastpicard.ops.spmm import graph_tensors

GRAPH = ("rowptr", "col", "weight", "t_rowptr", "t_col", "t_perm", "t_weight")
ACTS = ("relu", "identity", "tanh", "leaky_relu")
# defect -> exception kinds; forward and backward defects are drawn for their own op
FORWARD = {
    None: None, "alias_x_h": None, "all_meta": None, "no_t_weight": None, "int64_index": None,
    "col_high": IndexError, "col_negative": IndexError, "col_huge": IndexError,
    "rowptr_decreasing": IndexError, "rowptr_end": IndexError, "rowptr_start": IndexError,
    "col_length": ValueError, "rowptr_length": ValueError, "index_dtypes": TypeError,
    "index_2d": ValueError, "weight_dtype": TypeError, "weight_length": ValueError,
    "t_weight_alone": ValueError, "h_integer": TypeError, "h_1d": ValueError,
    "meta": ValueError, "reduce": ValueError,
    # spmm_update only
    "x_shape": ValueError, "x_dtype": TypeError, "bias_shape": ValueError,
    "bias_dtype": TypeError, "act": ValueError, "slope": ValueError, "alpha": ValueError,
    "dropout_one": ValueError, "seed_missing": ValueError, "seed_shape": ValueError,
    "seed_value": (ValueError, IndexError), "batch_high": IndexError,
    "batch_negative": IndexError, "samples_over_nodes": ValueError,
    "samples_unbatched": ValueError, "frozen_length": ValueError, "frozen_dtype": TypeError,
}
SPMM_ONLY = {"reduce"}
UPDATE_ONLY = {"x_shape", "x_dtype", "bias_shape", "bias_dtype", "act", "slope", "alpha",
               "dropout_one", "seed_missing", "seed_shape", "seed_value", "batch_high",
               "batch_negative", "samples_over_nodes", "samples_unbatched", "frozen_length",
               "frozen_dtype", "alias_x_h"}
NEEDS_EDGES = {"col_high", "col_negative", "col_huge", "col_length", "weight_length"}
NEEDS_ROWS = {"rowptr_decreasing", "batch_high", "batch_negative", "samples_over_nodes",
              "frozen_length", "frozen_dtype"}


def defects(op):
    return [d for d in FORWARD if not (d in SPMM_ONLY and op != "spmm")
            and not (d in UPDATE_ONLY and op == "spmm")]


@st.composite
def cases(draw, op, defect=None):
    n = draw(st.integers(2 if defect == "rowptr_decreasing" else
                         int(defect in NEEDS_ROWS or defect in NEEDS_EDGES), 9))
    e = draw(st.integers(int(defect in NEEDS_EDGES or defect == "rowptr_decreasing"), 3 * n))
    return dict(
        op=op, defect=defect, seed=draw(st.integers(0, 2 ** 16)), n=n, e=e,
        width=draw(st.integers(0, 5)), dtype=draw(st.sampled_from(DTYPES)),
        norm=draw(st.sampled_from(["gcn", "mean", "sum"])), self_loops=draw(st.booleans()),
        weighted=draw(st.booleans()), layout=draw(st.sampled_from(["contiguous", "strided"])),
        reduce=draw(st.sampled_from(["sum", "mean", "max"])), act=draw(st.sampled_from(ACTS)),
        alpha=draw(st.floats(0.0, 0.95)), dropout=draw(st.sampled_from([0.0, 0.0, 0.3])),
        bias=draw(st.booleans()), batched=draw(st.booleans()), frozen=draw(st.booleans()),
        grad=draw(st.booleans()))


def build(case):
    """(positional args of the op, meta-able tensor names) for a case."""
    g = torch.Generator().manual_seed(case["seed"])
    n, e, dtype, defect = case["n"], case["e"], case["dtype"], case["defect"]
    ei = torch.randint(0, max(n, 1), (2, e), generator=g) if n else torch.empty(2, 0).long()
    ew = torch.rand(e, generator=g, dtype=torch.float64) + 0.1 if case["weighted"] else None
    batch = num_graphs = None
    if case["batched"] and n:
        num_graphs = int(torch.randint(1, n + 1, (1,), generator=g))
        batch = torch.randint(0, num_graphs, (n,), generator=g)
    graph = Graph.from_edge_index(ei, n, edge_weight=ew, norm=case["norm"],
                                  add_self_loops=case["self_loops"], batch=batch,
                                  num_graphs=num_graphs)
    t = dict(zip(GRAPH, graph_tensors(graph, dtype)))
    t = {k: v if v is None else v.clone() for k, v in t.items()}
    if defect == "int64_index":
        t.update({k: t[k].long() for k in ("rowptr", "col", "t_rowptr", "t_col", "t_perm")})
    elif defect == "no_t_weight":
        t["t_weight"] = None
    elif defect == "col_high":
        t["col"][0] = n
    elif defect == "col_negative":
        t["col"][-1] = -1
    elif defect == "col_huge":
        t["col"] = t["col"].long()
        t["col"][0] = 2 ** 40
        t.update({k: t[k].long() for k in ("rowptr", "t_rowptr", "t_col", "t_perm")})
    elif defect == "rowptr_decreasing":
        t["rowptr"][1] = t["rowptr"][2] + 1
    elif defect == "rowptr_end":
        t["rowptr"][-1] += 1
    elif defect == "rowptr_start":
        t["rowptr"][0] = -1
    elif defect == "col_length":
        t["col"] = t["col"][:-1]
    elif defect == "rowptr_length":
        t["rowptr"] = torch.cat([t["rowptr"], t["rowptr"][-1:]])
    elif defect == "index_dtypes":
        t["col"] = t["col"].long() if t["col"].dtype == torch.int32 else t["col"].int()
    elif defect == "index_2d":
        t["t_perm"] = t["t_perm"][None]
    elif defect in ("weight_dtype", "weight_length", "t_weight_alone"):
        w = t["weight"] if t["weight"] is not None else torch.ones(t["col"].numel())
        t["weight"] = (w.half() if defect == "weight_dtype" else
                       torch.cat([w, w[:1]]) if defect == "weight_length" else None)
        t["t_weight"] = w if defect == "t_weight_alone" else None
    F = case["width"]
    h = layout(torch.randn(n, F, generator=g, dtype=torch.float64).to(dtype), case["layout"])
    if defect == "h_integer":
        h = h.double().mul(10).long()
    elif defect == "h_1d":
        h = h.reshape(-1)
    if case["op"] == "spmm":
        return [*t.values(), h, "reduce?" if defect == "reduce" else case["reduce"]]
    x = torch.randn(n, F, generator=g, dtype=torch.float64).to(dtype)
    bias = torch.randn(F, generator=g, dtype=torch.float64).to(dtype) if case["bias"] else None
    S = graph.num_graphs
    frozen = (torch.rand(S, generator=g) < 0.5) if case["frozen"] else None
    dropout, seed = case["dropout"], torch.randint(0, 2 ** 31, (2,), generator=g)
    alpha, act, slope = case["alpha"], case["act"], 0.125
    batch = graph.batch
    if defect == "alias_x_h":
        x = h
    elif defect == "x_shape":
        x = x[:, :-1] if F else torch.randn(n, 1).to(dtype)
    elif defect == "x_dtype":
        x = x.to(torch.float64 if dtype != torch.float64 else torch.float32)
    elif defect == "bias_shape":
        bias = torch.randn(F + 1).to(dtype)
    elif defect == "bias_dtype":
        bias = torch.randn(F).to(torch.float64 if dtype != torch.float64 else torch.float32)
    elif defect == "act":
        act = "gelu"
    elif defect == "slope":
        act, slope = "leaky_relu", -1.0
    elif defect == "alpha":
        alpha = 1.0
    elif defect == "dropout_one":
        dropout = 1.0
    elif defect == "seed_missing":
        dropout, seed = 0.5, None
    elif defect == "seed_shape":
        dropout, seed = 0.5, torch.zeros(3, dtype=torch.long)
    elif defect == "seed_value":
        dropout, seed = 0.5, torch.tensor([-4, 2 ** 40])
    elif defect in ("batch_high", "batch_negative"):
        batch = torch.zeros(n, dtype=torch.long) if batch is None else batch.clone()
        batch[0] = S if defect == "batch_high" else -1
    elif defect == "samples_over_nodes":
        batch, S, frozen = torch.zeros(n, dtype=torch.long), n + 1, None
    elif defect == "samples_unbatched":
        batch, S, frozen = None, 2, None
    elif defect == "frozen_length":
        frozen = torch.zeros(S + 1, dtype=torch.bool)
    elif defect == "frozen_dtype":
        frozen = torch.zeros(S, dtype=torch.long)
    return [*t.values(), h, x, alpha, bias, act, slope, dropout, seed, batch, S, frozen,
            True, False]


def to_meta(args, everything):
    """All tensor arguments on meta, or (everything=False) one of them."""
    idx = [i for i, a in enumerate(args) if isinstance(a, torch.Tensor)]
    pick = idx if everything else idx[len(idx) // 2: len(idx) // 2 + 1]
    return [a.to("meta") if i in pick else a for i, a in enumerate(args)]


def vjp(out, ins, gy):
    """Gradients of <out, gy> (None for inputs out does not depend on, e.g. empty graphs)."""
    if not out.requires_grad:
        return [None] * len(ins)
    return torch.autograd.grad(out, ins, gy, allow_unused=True)


def forward(op, args, backend):
    if backend == "reference":  # the public functions' reference route
        getattr(torch.ops.fastpicard, f"{op}_check")(*args)
        return getattr(reference, op)(*args)
    return getattr(torch.ops.fastpicard, op)(*args)


def run(case, backend):
    log_case(backend=backend, **case)
    op, defect = case["op"], case["defect"]
    args = build(case)
    if defect in ("meta", "all_meta"):
        args = to_meta(args, defect == "all_meta")
        backend = "cpp" if defect == "all_meta" else backend
    kinds = FORWARD[defect]
    want_grad = kinds is None and case["grad"] and case["dtype"] == torch.float64 and \
        defect != "all_meta"
    if want_grad:  # gradients of h, x, bias and the weights through the op's own autograd
        args = [a.detach().requires_grad_() if isinstance(a, torch.Tensor) and
                a.is_floating_point() and i != GRAPH.index("t_weight") else a
                for i, a in enumerate(args)]
    with _backend.triton_cpu_kernels() if backend == "triton" else torch.enable_grad():
        got, err = outcome(lambda: forward(op, args, backend))
        if kinds is not None:
            assert_refused(err, kinds, op, defect)
            return
        assert_ran(err, defect)
        if defect == "all_meta":
            assert got[0].device.type == "meta"
            return
        ins = [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]
        gy = torch.randn_like(got[0])
        grads = vjp(got[0], ins, gy) if want_grad else ()
    ref_args = [a.detach().double().requires_grad_(a.requires_grad)
                if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args]
    expected = getattr(reference, op)(*ref_args)
    dtype = case["dtype"]
    close(got[0], expected[0], dtype, "out")
    if op == "spmm_update":
        close(got[1], expected[1], dtype, "res")
        close(got[2], expected[2], dtype, "norm")
    if want_grad:
        ref_ins = [a for a in ref_args if isinstance(a, torch.Tensor) and a.requires_grad]
        exp = vjp(expected[0], ref_ins, gy.double())
        for a, b in zip(grads, exp):
            if b is None:
                assert a is None or not a.any()
            else:
                close(a, b, dtype, "gradient")


UNREAD_OK = {"t_perm_high"}  # t_perm is read only without t_weight (or for max)
BACKWARD = {
    None: None, "grad_shape": ValueError, "grad_meta": ValueError, "arg_shape": ValueError,
    "need_weight_without_h": ValueError, "t_perm_high": IndexError, "t_col_negative": IndexError,
    "t_rowptr_decreasing": IndexError, "act_out_missing": ValueError, "h_meta": ValueError,
}


def backward_defects(op):
    return [d for d in BACKWARD if not (d == "arg_shape" and op != "spmm")
            and not (d == "act_out_missing" and op == "spmm")]


@st.composite
def backward_cases(draw, op, defect):
    case = draw(cases(op))
    case["backward"] = defect
    if case["backward"] in ("t_perm_high", "t_col_negative", "t_rowptr_decreasing"):
        case["n"], case["e"] = max(case["n"], 2), max(case["e"], 1)
        case["self_loops"] = True
    return case


def run_backward(case, backend):
    """The backward ops called directly: refused defects, or finite gradients."""
    log_case(backend=backend, **dict(case, defect=case["backward"]))
    op, defect = case["op"], case["backward"]
    args = build(case)
    graph = args[:7]
    n, F = case["n"], case["width"]
    h = args[7]
    grad = torch.randn(n, F, dtype=h.dtype)
    if defect in ("t_perm_high", "t_col_negative", "t_rowptr_decreasing"):
        graph = [a.clone() if isinstance(a, torch.Tensor) else a for a in graph]
        if defect == "t_perm_high":
            graph[5][0] = case["e"] + 7 if graph[5].numel() else 0
        elif defect == "t_col_negative":
            graph[4][0] = -1
        else:
            graph[3][1] = graph[3][2] + 1
    if defect == "grad_shape":
        grad = torch.randn(n, F + 1, dtype=h.dtype)
    elif defect == "grad_meta":
        grad = grad.to("meta")
    if op == "spmm":
        reduce = case["reduce"]
        arg = torch.zeros(n, F, dtype=graph[1].dtype) if reduce == "max" else graph[1][:0]
        if defect == "arg_shape":
            reduce, arg = "max", graph[1][:0]
        hh = h.to("meta") if defect == "h_meta" else h
        need_w = graph[2] is not None and defect != "need_weight_without_h"
        call_args = [grad, *graph, None if defect == "need_weight_without_h" else hh, arg, reduce,
                     True, need_w or defect == "need_weight_without_h"]
        if defect == "need_weight_without_h" and graph[2] is None:
            return
    else:
        alpha, act, slope, dropout, seed, batch, S, frozen = args[9], *args[11:17], args[17]
        act_out = None if act == "identity" or defect == "act_out_missing" else \
            torch.rand(n, F, dtype=h.dtype)
        if defect == "act_out_missing" and act == "identity":
            act = "relu"
        hh = h.to("meta") if defect == "h_meta" else h
        need_w = graph[2] is not None and defect != "need_weight_without_h"
        if defect == "need_weight_without_h" and graph[2] is None:
            return
        call_args = [grad, act_out, *graph, None if defect == "need_weight_without_h" else hh,
                     alpha, act, slope, dropout, seed, batch, frozen, True, True,
                     need_w or defect == "need_weight_without_h", True]
    backward = getattr(torch.ops.fastpicard, f"{op}_backward")
    with _backend.triton_cpu_kernels() if backend == "triton" else torch.enable_grad():
        got, err = outcome(lambda: backward(*call_args))
        if defect in UNREAD_OK and err is None:  # a kernel that never reads the bad value may
            valid = list(call_args)                # accept it, with the valid graph's answer
            start = 1 if op == "spmm" else 2
            valid[start:start + 7] = args[:7]
            for a, b in zip(got, backward(*valid)):
                torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)
            return
    if BACKWARD[defect] is not None:
        assert_refused(err, BACKWARD[defect], f"{op}_backward", defect)
    else:
        assert_ran(err, defect)
        assert all(torch.isfinite(t.double()).all() or not t.numel() for t in got
                   if t.dtype.is_floating_point) or not torch.isfinite(grad).all()


TRITON = pytest.mark.skipif(not (_backend.triton_available() and _backend.triton_interpreting()),
                            reason="Triton interpreter not active")
FORWARD_CASES = [(op, d) for op in ("spmm", "spmm_update") for d in defects(op)]
BACKWARD_CASES = [(op, d) for op in ("spmm", "spmm_update") for d in backward_defects(op)]


@pytest.mark.parametrize("op,defect", FORWARD_CASES, ids=str)
def test_forward(op, defect):
    @examples(120 if defect is None else 6)
    @given(cases(op, defect))
    def check(case):
        run(case, "cpp")
        run(case, "reference")
    check()


@pytest.mark.parametrize("op,defect", BACKWARD_CASES, ids=str)
def test_backward_ops(op, defect):
    @examples(40 if defect is None else 6)
    @given(backward_cases(op, defect))
    def check(case):
        run_backward(case, "cpp")
    check()


@TRITON
@pytest.mark.parametrize("op,defect", FORWARD_CASES, ids=str)
def test_triton(op, defect):
    @examples(20 if defect is None else 1)
    @given(cases(op, defect))
    def check(case):
        run(case, "triton")
    check()


@TRITON
@pytest.mark.parametrize("op,defect", BACKWARD_CASES, ids=str)
def test_triton_backward_ops(op, defect):
    @examples(10 if defect is None else 2)
    @given(backward_cases(op, defect))
    def check(case):
        run_backward(case, "triton")
    check()
