"""The compiled Graph build (fastpicard::graph_build) against the torch path of
Graph.from_edge_index: bit-identical structure and weights, the same validation, autograd
through edge weights."""
import itertools

import pytest
import torch

import fastpicard
from fastpicard import Graph, graph_build

from graph_helpers import random_edges

pytestmark = pytest.mark.skipif(not fastpicard.extension_available(),
                                reason="compiled extension not available")

FIELDS = ("rowptr", "col", "t_rowptr", "t_col", "t_perm")


def torch_path(*args, **kw):
    """from_edge_index on its torch path (what CUDA tensors and builds without the extension
    take)."""
    mp = pytest.MonkeyPatch()
    mp.setattr(graph_build, "applies", lambda edge_index: False)
    try:
        return Graph.from_edge_index(*args, **kw)
    finally:
        mp.undo()


def bits(t):
    return t.view(torch.int64 if t.dtype == torch.float64 else torch.int32)


def assert_same(a: Graph, b: Graph):
    for f in FIELDS:
        x, y = getattr(a, f), getattr(b, f)
        assert x.dtype == y.dtype and torch.equal(x, y), f
    if b.weight is None:
        assert a.weight is None
    else:  # bit for bit
        assert a.weight.dtype == b.weight.dtype and torch.equal(bits(a.weight), bits(b.weight))
        assert torch.equal(bits(a.t_weight), bits(b.t_weight))


def graphs(gen, count):
    """Random edge lists with duplicates, self loops, isolated nodes and hubs."""
    for i in range(count):
        n = int(torch.randint(1, 120, (1,), generator=gen))
        e = int(torch.randint(0, 6 * n, (1,), generator=gen))
        kind = i % 4
        ei = random_edges(n, e, gen=gen, hub=n // 2 if kind == 1 else None,
                          isolated=n // 3 if kind == 2 else 0, self_loops=kind != 3)
        if kind == 3 and ei.shape[1]:  # sorted by source, as PyG stores edge_index
            ei = ei[:, torch.argsort(ei[0] * n + ei[1], stable=True)]
        yield ei, n


@pytest.mark.parametrize("norm", ["gcn", "mean", "sum"])
def test_bit_identical_random(norm):
    gen = torch.Generator().manual_seed(1)
    for ei, n in graphs(gen, 24):
        e = ei.shape[1]
        for loops, wkind, dtype in itertools.product((True, False), (None, "f32", "f64", "neg"),
                                                      (None, torch.float64)):
            ew = None
            if wkind is not None:
                ew = torch.rand(e, generator=gen, dtype=torch.float64 if wkind == "f64"
                                else torch.float32) + 0.05
                if wkind == "neg":
                    ew = ew * 2 - 1
            kw = dict(edge_weight=ew, norm=norm, add_self_loops=loops, dtype=dtype)
            try:
                expected = torch_path(ei, n, **kw)
            except ValueError as err:  # gcn with a negative degree: the same error
                assert norm == "gcn" and wkind == "neg" and "negative" in str(err)
                with pytest.raises(ValueError) as got:
                    Graph.from_edge_index(ei, n, **kw)
                assert str(got.value).split("\n")[0] == str(err)
                continue
            assert_same(Graph.from_edge_index(ei, n, **kw), expected)
            if wkind is None and dtype is None:  # int32 edge_index, num_nodes inferred
                assert_same(Graph.from_edge_index(ei.int(), None if e else n, **kw),
                            torch_path(ei, None if e else n, **kw))


@pytest.mark.parametrize("threads", [1, 2])
def test_bit_identical_parallel(threads):
    """Large enough for several sort chunks, long rows (stable_sort) and loop bookkeeping
    across chunks."""
    gen = torch.Generator().manual_seed(2)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        n = 3000
        ei = random_edges(n, 140_000, gen=gen, hub=7)
        ei[:, ::97] = ei[0, ::97]  # self loops spread over every chunk
        ew = torch.rand(ei.shape[1], generator=gen) + 0.1
        for norm in ("gcn", "mean"):
            assert_same(Graph.from_edge_index(ei, n, edge_weight=ew, norm=norm),
                        torch_path(ei, n, edge_weight=ew, norm=norm))
        assert_same(Graph.from_edge_index(ei, n + 5, norm="gcn"), torch_path(ei, n + 5))
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("n", [0, 1, 4])
def test_edgeless(n):
    """Also with empty edge weights, whose data pointer can be null (the loops are still
    weighted)."""
    ei = torch.empty(2, 0, dtype=torch.int64)
    for norm, loops, ew in itertools.product(("gcn", "mean", "sum"), (True, False),
                                             (None, torch.empty(0), torch.empty(0).double())):
        kw = dict(norm=norm, add_self_loops=loops, edge_weight=ew)
        assert_same(Graph.from_edge_index(ei, n, **kw), torch_path(ei, n, **kw))


def test_int64_indices(monkeypatch):
    import fastpicard.graph as graph_mod
    gen = torch.Generator().manual_seed(3)
    ei = random_edges(30, 100, gen=gen, self_loops=False)
    monkeypatch.setattr(graph_mod, "_INT32_MAX", 50)  # 30 nodes fit, 130 entries do not
    g = Graph.from_edge_index(ei, 30)
    assert g.col.dtype == torch.int64
    assert_same(g, torch_path(ei, 30))
    # the upper bound (edges + nodes) does not fit, the count after merging loops does
    loops = torch.arange(30).repeat(2, 1)
    monkeypatch.setattr(graph_mod, "_INT32_MAX", 45)
    g = Graph.from_edge_index(torch.cat([ei[:, :10], loops], 1), 30)
    assert g.col.dtype == torch.int32 and g.num_edges == 40
    assert_same(g, torch_path(torch.cat([ei[:, :10], loops], 1), 30))


@pytest.mark.parametrize("norm", ["gcn", "mean", "sum"])
@pytest.mark.parametrize("loops", [True, False])
def test_edge_weight_autograd(norm, loops):
    gen = torch.Generator().manual_seed(4)
    ei = random_edges(40, 200, gen=gen)
    w0 = torch.rand(200, generator=gen, dtype=torch.float64) + 0.1
    probe = torch.randn(200 + (40 if loops else 0), generator=gen, dtype=torch.float64)
    grads = []
    for build in (Graph.from_edge_index, torch_path):
        w = w0.clone().requires_grad_(True)
        g = build(ei, 40, edge_weight=w, norm=norm, add_self_loops=loops)
        assert g.weight.requires_grad
        (g.weight * probe[: g.num_edges]).sum().backward()
        grads.append((g, w.grad))
    assert_same(grads[0][0], grads[1][0])
    torch.testing.assert_close(grads[0][1], grads[1][1], rtol=0, atol=0)
    w = w0[:50].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda w: Graph.from_edge_index(ei[:, :50] % 12, 12, edge_weight=w, norm=norm,
                                        add_self_loops=loops).weight, (w,))


def test_validation_matches_torch_path():
    ei = torch.tensor([[0, 1, 2], [1, 2, 0]])
    cases = [
        (dict(edge_index=ei - 1, num_nodes=3), IndexError, "negative node index -1"),
        (dict(edge_index=ei + 1, num_nodes=3), IndexError, "node 3, but num_nodes=3"),
        (dict(edge_index=ei, num_nodes=3, edge_weight=torch.tensor([1.0, float("nan"), 1.0])),
         ValueError, "NaN or Inf"),
        (dict(edge_index=ei, num_nodes=3, edge_weight=torch.tensor([1.0, float("inf"), 1.0])),
         ValueError, "NaN or Inf"),
    ]
    for kw, exc, msg in cases:
        for build in (Graph.from_edge_index, torch_path):
            with pytest.raises(exc, match=msg):
                build(**kw)


def test_op_rejects_bad_arguments():
    op = torch.ops.fastpicard.graph_build
    ei = torch.tensor([[0, 1], [1, 0]])
    lim = 2**31 - 1
    with pytest.raises(TypeError, match="edge_index"):
        op(ei.float(), 2, None, "gcn", True, False, torch.float32, lim)
    with pytest.raises(ValueError, match="edge_index"):
        op(ei[:1], 2, None, "gcn", True, False, torch.float32, lim)
    with pytest.raises(ValueError, match="num_nodes"):
        op(ei, -1, None, "gcn", True, False, torch.float32, lim)
    with pytest.raises(ValueError, match="norm"):
        op(ei, 2, None, "max", True, False, torch.float32, lim)
    with pytest.raises(ValueError, match="edge_weight"):
        op(ei, 2, torch.ones(3), "gcn", True, False, torch.float32, lim)
    with pytest.raises(TypeError, match="edge_weight"):
        op(ei, 2, torch.ones(2, dtype=torch.float16), "gcn", True, False, torch.float32, lim)
    with pytest.raises(TypeError, match="weight_dtype"):
        op(ei, 2, None, "gcn", True, False, torch.float16, lim)
    with pytest.raises(IndexError, match="num_nodes"):
        op(ei, 1, None, "gcn", True, False, torch.float32, lim)
    # a transposed (non-contiguous) edge_index is read correctly
    eit = torch.tensor([[0, 1], [1, 2], [2, 0]]).t()
    a = op(eit, 3, None, "gcn", True, False, torch.float32, lim)
    b = op(eit.contiguous(), 3, None, "gcn", True, False, torch.float32, lim)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
