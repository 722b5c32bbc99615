"""fastpicard.ops.spmm (sum / mean / max aggregation) against the float64 reference, on every
backend; gradients, opcheck, torch.compile, bad inputs."""
from __future__ import annotations

import pytest
import torch

from fastpicard.ops import spmm
from fastpicard.ops import reference as ref
from fastpicard.ops.spmm import graph_tensors

from graph_helpers import CASES, dense, make_graph, poisoned_empty, triton_on_cpu
from helpers import DTYPES, assert_close, backends, noncontiguous, on_backend, run_isolated

REDUCES = ["sum", "mean", "max"]


def expected(graph, h, reduce):
    hd = h.double()
    args = graph_tensors(graph, torch.float64) + (hd, reduce)
    return ref.spmm(*args)[0]


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("reduce", REDUCES)
@pytest.mark.parametrize("width", [1, 3, 64, 130])
def test_cpp_matches_reference(case, reduce, width):
    g = make_graph(case, weighted=True)
    h = torch.randn(g.num_nodes, width)
    with poisoned_empty():
        out = spmm(g, h, reduce, backend="cpp")
    assert_close(out, expected(g, h, reduce))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduce", REDUCES)
def test_dtypes_and_noncontiguous(dtype, reduce):
    g = make_graph("hub")
    h = noncontiguous(torch.randn(g.num_nodes, 17).to(dtype))
    for backend in ("cpp", "reference"):
        assert_close(spmm(g, h, reduce, backend=backend), expected(g, h, reduce), dtype=dtype)


def test_sum_is_dense_matmul():
    g = make_graph("loops_dups", weighted=True)
    h = torch.randn(g.num_nodes, 8, dtype=torch.float64)
    torch.testing.assert_close(spmm(g, h), dense(g) @ h)


def test_max_picks_first_and_propagates_nan():
    # node 0 receives from 1 and 2 with equal messages: the first entry wins
    from fastpicard import Graph
    g = Graph.from_edge_index(torch.tensor([[1, 2, 0], [0, 0, 1]]), 3, norm="sum",
                              add_self_loops=False)
    h = torch.tensor([[1.0, -2.0], [5.0, 3.0], [5.0, float("nan")]])
    for backend in backends():
        with on_backend(backend):
            out = spmm(g, h, "max", backend=backend)
        assert out[0, 0] == 5.0 and torch.isnan(out[0, 1]), backend
        assert torch.equal(out[1], h[0]) and torch.equal(out[2], torch.zeros(2)), backend


@triton_on_cpu()
@pytest.mark.parametrize("case", ["empty", "single_loop", "isolated", "hub", "batched"])
@pytest.mark.parametrize("reduce", REDUCES)
def test_triton_matches_reference(case, reduce):
    g = make_graph(case, weighted=True)
    h = torch.randn(g.num_nodes, 3 if case != "hub" else 70, dtype=torch.float64,
                    requires_grad=True)
    w = g.weight.double().requires_grad_()
    g.weight = w
    out = spmm(g, h, reduce, backend="triton")
    exp = expected(g, h, reduce)
    assert_close(out, exp)
    if g.num_nodes:
        gy = torch.randn_like(out)
        grads = torch.autograd.grad(out, (h, w), gy)
        exp_grads = torch.autograd.grad(spmm(g, h, reduce, backend="reference"), (h, w), gy)
        for a, b in zip(grads, exp_grads):
            assert_close(a, b)


@triton_on_cpu()
def test_triton_float32_int64_indices(monkeypatch):
    import fastpicard.graph as graph_mod
    monkeypatch.setattr(graph_mod, "_INT32_MAX", 10)
    g = make_graph("isolated", weighted=True)
    h = torch.randn(g.num_nodes, 5)
    for reduce in REDUCES:
        assert_close(spmm(g, h, reduce, backend="triton"), expected(g, h, reduce))


@pytest.mark.parametrize("reduce", REDUCES)
@pytest.mark.parametrize("case", ["isolated", "loops_dups", "batched"])
def test_gradcheck(reduce, case):
    g = make_graph(case, weighted=True)
    w = g.weight.double().requires_grad_()
    h = torch.randn(g.num_nodes, 3, dtype=torch.float64, requires_grad=True)

    def f(h, w):
        g.weight = w
        return spmm(g, h, reduce, backend="cpp")

    assert torch.autograd.gradcheck(f, (h, w))


def test_opcheck():
    g = make_graph("loops_dups", weighted=True)
    w = g.weight.double().requires_grad_()
    h = torch.randn(g.num_nodes, 4, dtype=torch.float64, requires_grad=True)
    tw = w.detach()[g.t_perm.long()]
    for reduce in REDUCES:
        args = (g.rowptr, g.col, w, g.t_rowptr, g.t_col, g.t_perm, tw, h, reduce)
        torch.library.opcheck(torch.ops.fastpicard.spmm.default, args)
        grad = torch.randn(g.num_nodes, 4, dtype=torch.float64)
        arg = torch.ops.fastpicard.spmm(*args)[1].detach()
        torch.library.opcheck(torch.ops.fastpicard.spmm_backward.default,
                              (grad, g.rowptr, g.col, w.detach(), g.t_rowptr, g.t_col, g.t_perm,
                               tw, h.detach(), arg, reduce, True, True))


@pytest.mark.parametrize("reduce", REDUCES)
def test_backward_without_transposed_weights(reduce):
    # t_weight=None: the backward reads weight through t_perm; same gradients
    g = make_graph("hub", weighted=True)
    w = g.weight.double().requires_grad_()
    h = torch.randn(g.num_nodes, 20, dtype=torch.float64, requires_grad=True)
    tw = w.detach()[g.t_perm.long()]
    outs = []
    for t_weight in (tw, None):
        out, _ = torch.ops.fastpicard.spmm(g.rowptr, g.col, w, g.t_rowptr, g.t_col, g.t_perm,
                                           t_weight, h, reduce)
        outs.append(torch.autograd.grad(out, (h, w), torch.ones_like(out)))
    for a, b in zip(*outs):
        torch.testing.assert_close(a, b)


def test_compile_fullgraph():
    g = make_graph("hub", weighted=True)
    h = torch.randn(g.num_nodes, 8, requires_grad=True)

    def step(h):
        return torch.relu(spmm(g, h, "sum")) + spmm(g, h, "max")

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    out = compiled(h)
    torch.testing.assert_close(out, step(h))
    gc, = torch.autograd.grad(out.sum(), h)
    ge, = torch.autograd.grad(step(h).sum(), h)
    torch.testing.assert_close(gc, ge)


def test_thread_count_does_not_change_results():
    g = make_graph("hub", weighted=True)
    h = torch.randn(g.num_nodes, 130, requires_grad=True)
    old = torch.get_num_threads()
    outs = []
    try:
        for t in (1, 2):
            torch.set_num_threads(t)
            out = spmm(g, h, "sum", backend="cpp")
            outs.append((out, torch.autograd.grad(out, h, torch.ones_like(out))[0]))
    finally:
        torch.set_num_threads(old)
    assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1])


def test_baseline_instruction_set_agrees(monkeypatch):
    g = make_graph("hub", weighted=True)
    h = torch.randn(g.num_nodes, 130)
    best = [spmm(g, h, r, backend="cpp") for r in REDUCES]
    monkeypatch.setenv("FASTPICARD_CPU_ISA", "base")
    for r, b in zip(REDUCES, best):
        torch.testing.assert_close(spmm(g, h, r, backend="cpp"), b)


# ------------------------------------------------------------------ bad inputs
def test_bad_inputs():
    g = make_graph("isolated")
    h = torch.randn(g.num_nodes, 4)
    with pytest.raises(TypeError, match="graph"):
        spmm("graph", h)
    with pytest.raises(TypeError, match="h"):
        spmm(g, h.numpy())
    with pytest.raises(TypeError, match="h"):
        spmm(g, h.long())
    with pytest.raises(ValueError, match="h must have one row per node"):
        spmm(g, h[:-1])
    with pytest.raises(ValueError, match="h must be 2-D"):
        spmm(g, h[0])
    with pytest.raises(ValueError, match="reduce"):
        spmm(g, h, "min")
    with pytest.raises(ValueError, match="backend"):
        spmm(g, h, backend="cuda")
    with pytest.raises(ValueError, match="h is on"):
        spmm(g, h.to("meta"))


def test_raw_op_checks_indices_before_writing():
    g = make_graph("loops_dups")
    h = torch.randn(g.num_nodes, 4)
    bad = g.col.clone()
    bad[5] = g.num_nodes
    args = [g.rowptr, bad, None, g.t_rowptr, g.t_col, g.t_perm, None, h, "sum"]
    with pytest.raises(IndexError, match="col contains"):
        torch.ops.fastpicard.spmm(*args)
    with pytest.raises(IndexError, match="rowptr must start at 0"):
        torch.ops.fastpicard.spmm(g.rowptr.flip(0), g.col, None, g.t_rowptr, g.t_col, g.t_perm,
                                  None, h, "sum")
    rp = g.rowptr.clone()
    rp[2] = rp[3] + 1
    with pytest.raises(IndexError, match="rowptr decreases at row 2"):
        torch.ops.fastpicard.spmm(rp, g.col, None, g.t_rowptr, g.t_col, g.t_perm, None, h, "sum")
    with pytest.raises(ValueError, match="one row per node"):
        torch.ops.fastpicard.spmm(g.rowptr[:-1], g.col, None, g.t_rowptr, g.t_col, g.t_perm,
                                  None, h, "sum")
    with pytest.raises(TypeError, match="weight must be"):
        torch.ops.fastpicard.spmm(g.rowptr, g.col, g.weight.half(), g.t_rowptr, g.t_col,
                                  g.t_perm, None, h, "sum")
    with pytest.raises(TypeError, match="share one dtype"):
        torch.ops.fastpicard.spmm(g.rowptr.long(), g.col, None, g.t_rowptr, g.t_col, g.t_perm,
                                  None, h, "sum")
    hp = h.detach().requires_grad_()
    out, _ = torch.ops.fastpicard.spmm(g.rowptr, g.col, None, g.t_rowptr, g.t_col,
                                       g.t_perm, None, hp, "sum")
    bad_t = g.t_col.clone()
    bad_t[0] = -1
    out2, _ = torch.ops.fastpicard.spmm(g.rowptr, g.col, None, g.t_rowptr, bad_t, g.t_perm,
                                        None, hp, "sum")
    with pytest.raises(ValueError, match="t_weight is given without weight"):
        torch.ops.fastpicard.spmm(g.rowptr, g.col, None, g.t_rowptr, g.t_col, g.t_perm,
                                  torch.ones(g.num_edges), h, "sum")
    with pytest.raises(IndexError, match="transposed"):
        out2.sum().backward()


@triton_on_cpu()
def test_triton_few_hundred_nodes():
    from fastpicard import Graph
    from graph_helpers import random_edges
    gen = torch.Generator().manual_seed(22)
    g = Graph.from_edge_index(random_edges(300, 1500, gen=gen, isolated=4), 300)
    h = torch.randn(300, 64, requires_grad=True)
    for reduce in REDUCES:
        out = spmm(g, h, reduce, backend="triton")
        exp = spmm(g, h, reduce, backend="reference")
        assert_close(out, exp)
        gy = torch.randn_like(out)
        assert_close(torch.autograd.grad(out, h, gy)[0], torch.autograd.grad(exp, h, gy)[0])


# ------------------------------------------------------------------ hostile input
def test_meta_among_real_tensors_is_an_error():
    """A meta tensor among real ones routed to the fake kernel: garbage returned."""
    g = make_graph("loops_dups", weighted=True)
    gt = graph_tensors(g, torch.float32)
    h = torch.randn(g.num_nodes, 3)
    for i in range(len(gt)):
        if gt[i] is None:
            continue
        args = list(gt) + [h, "sum"]
        args[i] = args[i].to("meta")
        with pytest.raises(ValueError, match="meta"):
            torch.ops.fastpicard.spmm(*args)
    with pytest.raises(ValueError, match="meta"):
        torch.ops.fastpicard.spmm(*gt, h.to("meta"), "sum")
    for reduce in ("sum", "max"):
        arg = torch.zeros(g.num_nodes, 3, dtype=g.col.dtype) if reduce == "max" else g.col[:0]
        with pytest.raises(ValueError, match="meta"):  # grad on meta
            torch.ops.fastpicard.spmm_backward(h.to("meta"), *gt, h, arg, reduce, True, True)
        with pytest.raises(ValueError, match="meta"):  # h on meta
            torch.ops.fastpicard.spmm_backward(h, *gt, h.to("meta"), arg, reduce, True, True)
    meta = [None if t is None else t.to("meta") for t in gt]
    out, arg = torch.ops.fastpicard.spmm(*meta, h.to("meta"), "max")  # all meta: shapes only
    assert out.device.type == "meta" and out.shape == h.shape and arg.shape == h.shape


BAD_GRAPHS = {  # hand-built CSR that reads outside h: col out of range, decreasing rowptr
    "col_huge": dict(rowptr=[0, 1, 2], col=[1, 2 ** 30], t_rowptr=[0, 0, 2], t_col=[0, 1],
                     t_perm=[0, 1]),
    "col_1000": dict(rowptr=[0, 1, 2], col=[1, 1000], t_rowptr=[0, 0, 2], t_col=[0, 1],
                     t_perm=[0, 1]),
    "rowptr_decreasing": dict(rowptr=[0, 2, 1], col=[1, 1], t_rowptr=[0, 0, 2], t_col=[0, 1],
                              t_perm=[0, 1]),
    "t_perm_huge": dict(rowptr=[0, 1, 2], col=[1, 1], t_rowptr=[0, 0, 2], t_col=[0, 1],
                        t_perm=[0, 2 ** 40]),
}


@triton_on_cpu()
@pytest.mark.parametrize("case", list(BAD_GRAPHS))
def test_hand_built_graph_is_validated(case):
    """A Graph built from raw CSR reached the Triton kernels unchecked: a segfault (col=2**30)
    or heap garbage (col=1000) under the interpreter, an out-of-bounds read on CUDA. Every
    backend must refuse it. Run apart, so a crash fails only this test."""
    r = run_isolated(f"""
        import torch
        from fastpicard import Graph
        from fastpicard.ops import spmm, spmm_update
        t = {{k: torch.tensor(v) for k, v in {BAD_GRAPHS[case]!r}.items()}}
        try:
            g = Graph(num_nodes=2, weight=None, **t)
        except (ValueError, IndexError) as e:
            print("refused at build:", e)
        else:
            h = torch.randn(2, 3, requires_grad=True)
            for backend in ("triton", "cpp", "reference"):
                for op in (lambda: spmm(g, h, backend=backend),
                           lambda: spmm_update(g, h, h, 0.5, backend=backend)[0]):
                    try:
                        print("RETURNED", op().sum().item())
                    except (ValueError, IndexError) as e:
                        print("refused:", e)
    """)
    assert r.returncode == 0, r.stderr
    assert "RETURNED" not in r.stdout and "refused" in r.stdout, r.stdout
