"""fastpicard.ops.spmm_update (fused aggregation + bias + act + dropout + Picard update +
residual) against the float64 reference on every backend; dropout RNG, gradients, opcheck,
torch.compile, the PyG GCNConv cross-check, bad inputs."""
from __future__ import annotations

import pytest
import torch

from fastpicard import Graph
from fastpicard.ops import reference as ref
from fastpicard.ops import spmm_update
from fastpicard.ops.reference.spmm_update import dropout_keep
from fastpicard.ops.spmm import graph_tensors

from graph_helpers import CASES, make_graph, poisoned_empty, random_edges, triton_on_cpu
from helpers import DTYPES, assert_close, noncontiguous

ACTS = ["relu", "identity", "tanh", "leaky_relu"]
ALPHA = 0.375  # exact in float32: the Triton kernels receive scalars as float32
SLOPE = 0.125


def run(graph, h, x, backend, seed=7, **kw):
    """spmm_update with a fixed dropout key (generator seeded per call)."""
    gen = torch.Generator().manual_seed(seed)
    kw.setdefault("alpha", ALPHA)
    alpha = kw.pop("alpha")
    return spmm_update(graph, h, x, alpha, generator=gen, backend=backend, **kw)


def expected(graph, h, x, seed=7, **kw):
    """The float64 reference on float64 copies of the inputs, same dropout key."""
    kw = dict(kw)
    if kw.get("bias") is not None:
        kw["bias"] = kw["bias"].double()
    return run(graph, h.double(), x.double(), "reference", seed=seed, **kw)


def inputs(graph, width, dtype=torch.float32, bias=True):
    h = torch.randn(graph.num_nodes, width).to(dtype)
    x = torch.randn(graph.num_nodes, width).to(dtype)
    b = torch.randn(width).to(dtype) if bias else None
    return h, x, b


def frozen_for(graph):
    s = graph.num_graphs
    return torch.arange(s) % 2 == 1 if s > 1 else torch.tensor([False])


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("act", ACTS)
def test_cpp_matches_reference(case, act):
    g = make_graph(case, weighted=True)
    for width, dropout, frozen in ((1, 0.0, False), (3, 0.25, True), (64, 0.0, True),
                                   (130, 0.5, False)):
        h, x, b = inputs(g, width)
        kw = dict(bias=b, act=act, negative_slope=SLOPE, dropout=dropout, return_norm=True,
                  frozen=frozen_for(g) if frozen else None)
        with poisoned_empty():
            got = run(g, h, x, "cpp", **kw)
        exp = expected(g, h, x, **kw)
        for a, e in zip(got, exp):
            assert_close(a, e, dtype=torch.float32)


@pytest.mark.parametrize("dtype", DTYPES)
def test_dtypes_and_noncontiguous(dtype):
    g = make_graph("batched", weighted=True)
    h, x, b = inputs(g, 33, dtype)
    h, x = noncontiguous(h), noncontiguous(x)
    kw = dict(bias=b, dropout=0.25, return_norm=True, frozen=frozen_for(g))
    exp = expected(g, h, x, **kw)
    for backend in ("cpp", "reference"):
        got = run(g, h, x, backend, **kw)
        assert got[0].dtype == dtype and got[1].dtype == (
            torch.float64 if dtype == torch.float64 else torch.float32)
        assert_close(got[0], exp[0], dtype=dtype)
        # residuals are accumulated in float32 from rounded-input values
        assert_close(got[1], exp[1], dtype=dtype)


def test_matches_unfused_formula():
    g = make_graph("hub", weighted=True)
    h, x, b = (t.double() for t in inputs(g, 16))
    x_new, res = spmm_update(g, h, x, 0.3, bias=b, backend="cpp")
    dense = torch.zeros(g.num_nodes, g.num_nodes, dtype=torch.float64)
    rows = torch.repeat_interleave(torch.arange(g.num_nodes), g.rowptr.long().diff())
    dense.index_put_((rows, g.col.long()), g.weight.double(), accumulate=True)
    want = 0.3 * x + 0.7 * torch.relu(dense @ h + b)
    torch.testing.assert_close(x_new, want)
    torch.testing.assert_close(res, torch.linalg.vector_norm(want - x).reshape(1))


def test_batched_residuals_and_frozen():
    g = make_graph("batched")
    h, x, b = (t.double() for t in inputs(g, 5))
    frozen = torch.tensor([False, True, False, True])
    x_new, res, norm = spmm_update(g, h, x, 0.5, bias=b, frozen=frozen, return_norm=True,
                                   backend="cpp")
    for s in range(4):
        rows = g.batch == s
        if frozen[s]:
            assert torch.equal(x_new[rows], x[rows]) and res[s] == 0
        torch.testing.assert_close(res[s], torch.linalg.vector_norm(x_new[rows] - x[rows]))
        torch.testing.assert_close(norm[s], torch.linalg.vector_norm(x_new[rows]))
    # an explicit batch overrides the graph's
    _, res_all = spmm_update(g, h, x, 0.5, bias=b, backend="cpp")
    one = torch.zeros(g.num_nodes, dtype=torch.int64)
    _, res1 = spmm_update(g, h, x, 0.5, bias=b, batch=one, backend="cpp")
    torch.testing.assert_close(res1, torch.linalg.vector_norm(res_all).reshape(1))


@triton_on_cpu()
@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("case", ["isolated", "batched"])
def test_triton_matches_reference_with_grads(act, case):
    g = make_graph(case, weighted=True)
    width = 3 if case == "isolated" else 70
    h, x, b = (t.double().requires_grad_() for t in inputs(g, width))
    w = g.weight.double().requires_grad_()
    g.weight = w
    kw = dict(bias=b, act=act, negative_slope=SLOPE, dropout=0.25, return_norm=True,
              frozen=frozen_for(g))
    got = run(g, h, x, "triton", **kw)
    exp = run(g, h, x, "reference", **kw)
    for a, e in zip(got, exp):
        assert_close(a, e)
    gy = torch.randn_like(got[0])
    grads = torch.autograd.grad(got[0], (h, x, b, w), gy)
    exp_grads = torch.autograd.grad(exp[0], (h, x, b, w), gy)
    for a, e in zip(grads, exp_grads):
        assert_close(a, e)


@triton_on_cpu()
def test_triton_float32_hub_and_empty():
    for case in ("hub", "empty", "single_loop"):
        g = make_graph(case)
        h, x, b = inputs(g, 130 if case == "hub" else 3)
        kw = dict(bias=b, dropout=0.5)
        got = run(g, h, x, "triton", **kw)
        exp = expected(g, h, x, **kw)
        for a, e in zip(got, exp):
            assert_close(a, e, dtype=torch.float32)


# ------------------------------------------------------------------ dropout
def test_dropout_mask_is_reproducible_and_shared_by_backends():
    g = make_graph("hub")
    h, x, _ = (t.double() for t in inputs(g, 40))
    p = 0.3
    outs = {}
    for backend in ("cpp", "reference"):
        torch.manual_seed(123)
        outs[backend] = spmm_update(g, h, x, 0.0, act="identity", dropout=p, backend=backend)[0]
    torch.manual_seed(123)
    again = spmm_update(g, h, x, 0.0, act="identity", dropout=p, backend="cpp")[0]
    assert torch.equal(outs["cpp"], again)
    torch.testing.assert_close(outs["cpp"], outs["reference"])
    assert torch.equal(outs["cpp"] == 0, outs["reference"] == 0)
    torch.manual_seed(124)
    other = spmm_update(g, h, x, 0.0, act="identity", dropout=p, backend="cpp")[0]
    assert not torch.equal(other == 0, outs["cpp"] == 0)
    # the kept elements are scaled by 1/(1-p)
    full = spmm_update(g, h, x, 0.0, act="identity", backend="cpp")[0]
    kept = outs["cpp"] != 0
    torch.testing.assert_close(outs["cpp"][kept], full[kept] / (1 - p))


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_dropout_rate(p):
    seed = torch.tensor([12345, 678], dtype=torch.int64)
    keep = dropout_keep(seed, 2000, 64, p)
    assert abs(keep.float().mean().item() - (1 - p)) < 0.01
    # rows and features are not correlated: each row/feature keeps about 1-p
    assert (keep.float().mean(0) - (1 - p)).abs().max() < 0.06
    # neighbouring rows/features are independent
    agree = (keep[1:] == keep[:-1]).float().mean().item()
    assert abs(agree - (p * p + (1 - p) ** 2)) < 0.01


def test_dropout_mask_is_not_stored():
    g = make_graph("hub")
    h, x, _ = inputs(g, 32)
    h.requires_grad_()
    x.requires_grad_()
    saved = []

    def pack(t):
        saved.append((tuple(t.shape), t.dtype))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out, _ = spmm_update(g, h, x, 0.5, act="identity", dropout=0.5, backend="cpp")
    assert saved and all(s != tuple(h.shape) for s, _ in saved), saved
    out.sum().backward()  # the backward regenerates the mask


# ------------------------------------------------------------------ gradients
@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("case", ["isolated", "batched"])
def test_gradcheck(act, case):
    gen = torch.Generator().manual_seed(3)
    ei, n, batch = CASES[case](gen)
    ew = (torch.rand(ei.shape[1], generator=gen, dtype=torch.float64) + 0.1).requires_grad_()
    h = torch.randn(n, 3, dtype=torch.float64, requires_grad=True)
    x = torch.randn(n, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, dtype=torch.float64, requires_grad=True)
    frozen = None if batch is None else torch.tensor([False, True, False, False])

    def f(h, x, b, ew):
        g = Graph.from_edge_index(ei, n, edge_weight=ew, batch=batch)
        gen = torch.Generator().manual_seed(11)
        return spmm_update(g, h, x, 0.3, bias=b, act=act, dropout=0.25, generator=gen,
                           frozen=frozen, backend="cpp")[0]

    assert torch.autograd.gradcheck(f, (h, x, b, ew))


def test_partial_gradients():
    g = make_graph("loops_dups")
    h, x, b = (t.double() for t in inputs(g, 4))
    for need in ("h", "x", "b"):
        hh, xx, bb = (t.clone().requires_grad_(n == need) for t, n in ((h, "h"), (x, "x"),
                                                                      (b, "b")))
        out = spmm_update(g, hh, xx, 0.3, bias=bb, act="tanh", backend="cpp")[0]
        exp = spmm_update(g, hh, xx, 0.3, bias=bb, act="tanh", backend="reference")[0]
        t = {"h": hh, "x": xx, "b": bb}[need]
        gy = torch.randn_like(out)
        torch.testing.assert_close(torch.autograd.grad(out, t, gy)[0],
                                   torch.autograd.grad(exp, t, gy)[0])


def test_opcheck():
    g = make_graph("batched", weighted=True)
    h, x, b = (t.double().requires_grad_() for t in inputs(g, 5))
    w = g.weight.double().requires_grad_()
    seed = torch.tensor([3, 4], dtype=torch.int64)
    frozen = torch.tensor([False, True, False, False])
    tw = w.detach()[g.t_perm.long()]
    args = (g.rowptr, g.col, w, g.t_rowptr, g.t_col, g.t_perm, tw, h, x, 0.3, b, "leaky_relu", 0.1,
            0.25, seed, g.batch, 4, frozen, True, False)
    torch.library.opcheck(torch.ops.fastpicard.spmm_update.default, args)
    act_out = torch.ops.fastpicard.spmm_update(*args[:-1], True)[3].detach()
    bwd = (torch.randn(g.num_nodes, 5, dtype=torch.float64), act_out, g.rowptr, g.col,
           w.detach(), g.t_rowptr, g.t_col, g.t_perm, tw, h.detach(), 0.3, "leaky_relu", 0.1, 0.25,
           seed, g.batch, frozen, True, True, True, True)
    torch.library.opcheck(torch.ops.fastpicard.spmm_update_backward.default, bwd)


def test_backward_without_transposed_weights():
    # t_weight=None: the backward reads weight through t_perm; same gradients
    g = make_graph("hub", weighted=True)
    h, x, b = (t.double().requires_grad_() for t in inputs(g, 20))
    w = g.weight.double().requires_grad_()
    grads = []
    for tw in (w.detach()[g.t_perm.long()], None):
        out = torch.ops.fastpicard.spmm_update(g.rowptr, g.col, w, g.t_rowptr, g.t_col, g.t_perm,
                                               tw, h, x, 0.3, b, "tanh")[0]
        grads.append(torch.autograd.grad(out, (h, x, b, w), torch.ones_like(out)))
    for a, e in zip(*grads):
        torch.testing.assert_close(a, e)


def test_compile_fullgraph_pign_step():
    g = make_graph("hub", weighted=True)
    lin = torch.nn.Linear(16, 16)
    x0 = torch.randn(g.num_nodes, 16, requires_grad=True)

    def step(x):
        x_new, res = spmm_update(g, x @ lin.weight.t(), x, 0.5, bias=lin.bias, act="relu")
        return x_new, res

    compiled = torch.compile(step, fullgraph=True)
    got = compiled(x0)
    exp = step(x0)
    torch.testing.assert_close(got[0], exp[0])
    torch.testing.assert_close(got[1], exp[1])
    gc = torch.autograd.grad(got[0].square().sum(), (x0, lin.weight, lin.bias))
    ge = torch.autograd.grad(exp[0].square().sum(), (x0, lin.weight, lin.bias))
    for a, e in zip(gc, ge):
        torch.testing.assert_close(a, e)


def test_compile_fullgraph_with_dropout_and_batch():
    g = make_graph("batched")
    x0 = torch.randn(g.num_nodes, 8, requires_grad=True)

    def step(x):
        return spmm_update(g, x, x, 0.5, dropout=0.2, frozen=frozen_for(g), return_norm=True)

    out = torch.compile(step, fullgraph=True, backend="aot_eager")(x0)
    assert out[0].shape == x0.shape and out[1].shape == (4,) and out[2].shape == (4,)
    out[0].sum().backward()
    assert x0.grad is not None and torch.isfinite(x0.grad).all()


def test_matches_pyg_gcnconv():
    from torch_geometric.nn import GCNConv
    gen = torch.Generator().manual_seed(9)
    ei = random_edges(80, 400, gen=gen, isolated=5)
    ew = torch.rand(400, generator=gen) + 0.1
    conv = GCNConv(12, 12)
    torch.nn.init.normal_(conv.bias)
    x = torch.randn(80, 12)
    for weight in (None, ew):
        # PyG picks an unspecified weight among duplicate self loops: keep at most one
        e = ei if weight is None else ei[:, ei[0] != ei[1]]
        w = None if weight is None else weight[ei[0] != ei[1]]
        want = conv(x, e, w)
        g = Graph.from_edge_index(e, 80, edge_weight=w)
        h = conv.lin(x)
        got, _ = spmm_update(g, h, x, 0.0, bias=conv.bias, act="identity")
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_thread_count_and_isa_do_not_change_results(monkeypatch):
    g = make_graph("hub", weighted=True)
    h, x, b = inputs(g, 130)
    h.requires_grad_()
    outs = []
    old = torch.get_num_threads()
    try:
        for t in (1, 2):
            torch.set_num_threads(t)
            out, res = run(g, h, x, "cpp", bias=b, dropout=0.25)
            outs.append((out, res, torch.autograd.grad(out, h, torch.ones_like(out))[0]))
    finally:
        torch.set_num_threads(old)
    for a, e in zip(*outs):
        assert torch.equal(a, e)
    monkeypatch.setenv("FASTPICARD_CPU_ISA", "base")
    out, res = run(g, h, x, "cpp", bias=b, dropout=0.25)
    torch.testing.assert_close(out, outs[0][0])
    torch.testing.assert_close(res, outs[0][1])


def test_nan_shows_in_residual():
    g = make_graph("loops_dups")
    h, x, _ = inputs(g, 8)
    h[3, 2] = float("nan")
    for backend in ("cpp", "reference"):
        for act in ("relu", "identity"):
            _, res = run(g, h, x, backend, act=act, dropout=0.9)
            assert torch.isnan(res).all(), (backend, act)


def test_no_grad_keeps_no_activation():
    g = make_graph("hub")
    h, x, _ = inputs(g, 8)
    args = graph_tensors(g, h.dtype) + (h, x, 0.5)
    out = torch.ops.fastpicard.spmm_update(*args)
    assert out[3].numel() == 0
    out = torch.ops.fastpicard.spmm_update(*args, save_act=True)
    torch.testing.assert_close(out[3], ref.spmm_update(*args, save_act=True)[3])


# ------------------------------------------------------------------ bad inputs
def test_bad_inputs():
    g = make_graph("batched")
    h, x, b = inputs(g, 4)
    n = g.num_nodes
    with pytest.raises(TypeError, match="graph"):
        spmm_update(None, h, x, 0.5)
    with pytest.raises(TypeError, match="x has dtype"):
        spmm_update(g, h, x.long(), 0.5)
    with pytest.raises(ValueError, match="x has shape"):
        spmm_update(g, h, x[1:], 0.5)
    with pytest.raises(ValueError, match="h must have one row per node"):
        spmm_update(g, h[1:], x[1:], 0.5)
    with pytest.raises(ValueError, match="x has shape"):
        spmm_update(g, h, x[:, :3], 0.5)
    with pytest.raises(TypeError, match="x has dtype"):
        spmm_update(g, h, x.double(), 0.5)
    with pytest.raises(ValueError, match="alpha"):
        spmm_update(g, h, x, 1.0)
    with pytest.raises(TypeError, match="alpha"):
        spmm_update(g, h, x, "0.5")
    with pytest.raises(ValueError, match="bias must have shape"):
        spmm_update(g, h, x, 0.5, bias=b[:3])
    with pytest.raises(TypeError, match="bias has dtype"):
        spmm_update(g, h, x, 0.5, bias=b.double())
    with pytest.raises(ValueError, match="act"):
        spmm_update(g, h, x, 0.5, act="gelu")
    with pytest.raises(ValueError, match="negative_slope"):
        spmm_update(g, h, x, 0.5, act="leaky_relu", negative_slope=-0.1)
    with pytest.raises(ValueError, match="dropout"):
        spmm_update(g, h, x, 0.5, dropout=1.0)
    with pytest.raises(TypeError, match="generator"):
        spmm_update(g, h, x, 0.5, dropout=0.1, generator=3)
    with pytest.raises(TypeError, match="batch"):
        spmm_update(g, h, x, 0.5, batch=torch.zeros(n, dtype=torch.int32))
    with pytest.raises(ValueError, match="batch must have shape"):
        spmm_update(g, h, x, 0.5, batch=torch.zeros(n - 1, dtype=torch.int64))
    with pytest.raises(IndexError, match="batch"):
        spmm_update(g, h, x, 0.5, batch=g.batch, num_samples=2, backend="cpp")
    with pytest.raises(IndexError, match="batch"):
        spmm_update(g, h, x, 0.5, batch=g.batch, num_samples=2, backend="reference")
    with pytest.raises(TypeError, match="frozen"):
        spmm_update(g, h, x, 0.5, frozen=torch.zeros(4))
    with pytest.raises(ValueError, match="frozen must have shape"):
        spmm_update(g, h, x, 0.5, frozen=torch.zeros(3, dtype=torch.bool))
    with pytest.raises(ValueError, match="backend"):
        spmm_update(g, h, x, 0.5, backend="gpu")


def test_raw_op_argument_checks():
    g = make_graph("loops_dups")
    h, x, b = inputs(g, 4)
    args = list(graph_tensors(g, h.dtype)) + [h, x, 0.5]
    with pytest.raises(ValueError, match="dropout > 0 needs a seed"):
        torch.ops.fastpicard.spmm_update(*args, dropout=0.5)
    with pytest.raises(ValueError, match="seed must have shape"):
        torch.ops.fastpicard.spmm_update(*args, dropout=0.5, seed=torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="seed values"):
        torch.ops.fastpicard.spmm_update(*args, dropout=0.5,
                                         seed=torch.tensor([-1, 0], dtype=torch.long))
    with pytest.raises(ValueError, match="act must be"):
        torch.ops.fastpicard.spmm_update(*args, act="sigmoid")
    bad = args.copy()
    bad[1] = g.col.clone()
    bad[1][0] = -3
    with pytest.raises(IndexError, match="col contains -3"):
        torch.ops.fastpicard.spmm_update(*bad)


@triton_on_cpu()
def test_triton_few_hundred_nodes():
    gen = torch.Generator().manual_seed(21)
    ei = random_edges(300, 1500, gen=gen, hub=7, isolated=4)
    g = Graph.from_edge_index(ei, 300)
    h, x, b = (t.requires_grad_() for t in inputs(g, 64))
    kw = dict(bias=b, dropout=0.25, return_norm=True)
    got = run(g, h, x, "triton", **kw)
    exp = run(g, h, x, "reference", **kw)
    for a, e in zip(got, exp):
        assert_close(a, e)
    gy = torch.randn_like(got[0])
    for a, e in zip(torch.autograd.grad(got[0], (h, x, b), gy),
                    torch.autograd.grad(exp[0], (h, x, b), gy)):
        assert_close(a, e)


# ------------------------------------------------------------------ hostile input
def test_meta_among_real_tensors_is_an_error():
    """A meta tensor among real ones routed to the fake kernel: garbage returned."""
    g = make_graph("batched", weighted=True)
    h, x, b = inputs(g, 3)
    gt = graph_tensors(g, h.dtype)
    seed = torch.tensor([3, 4])
    frozen = torch.zeros(g.num_graphs, dtype=torch.bool)
    fwd = list(gt) + [h, x, 0.5, b, "relu", 0.01, 0.25, seed, g.batch, g.num_graphs, frozen,
                      True, True]
    tensors = [i for i, a in enumerate(fwd) if isinstance(a, torch.Tensor)]
    for i in tensors:
        args = list(fwd)
        args[i] = args[i].to("meta")
        with pytest.raises(ValueError, match="meta"):
            torch.ops.fastpicard.spmm_update(*args)
    bwd = [h, h] + list(gt) + [h, 0.5, "relu", 0.01, 0.25, seed, g.batch, frozen,
                               True, True, True, True]
    for i in [i for i, a in enumerate(bwd) if isinstance(a, torch.Tensor)]:
        args = list(bwd)
        args[i] = args[i].to("meta")
        with pytest.raises(ValueError, match="meta"):
            torch.ops.fastpicard.spmm_update_backward(*args)
    meta = [a.to("meta") if isinstance(a, torch.Tensor) else a for a in fwd]
    out = torch.ops.fastpicard.spmm_update(*meta)  # all meta: shapes only
    assert out[0].device.type == "meta" and out[1].shape == (g.num_graphs,)


def test_num_samples_is_bounded_by_the_nodes():
    g = make_graph("isolated")
    h, x, _ = inputs(g, 3)
    batch = torch.zeros(g.num_nodes, dtype=torch.long)
    for s in (g.num_nodes + 1, 2 ** 30, 2 ** 62, 2 ** 64):
        with pytest.raises(ValueError, match="num_samples"):
            spmm_update(g, h, x, 0.5, batch=batch, num_samples=s)
