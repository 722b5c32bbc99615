"""fastpicard.Graph: normalisations (gcn == PyG's gcn_norm), CSR + transpose structure,
constructors, devices, validation."""
from __future__ import annotations

import pytest
import torch

from fastpicard import Graph
from fastpicard.ops import spmm

from graph_helpers import CASES, dense, make_graph, random_edges

pyg = pytest.importorskip("torch_geometric")
from torch_geometric.nn.conv.gcn_conv import gcn_norm  # noqa: E402


def pyg_dense(edge_index, edge_weight, n, add_self_loops):
    ei, w = gcn_norm(edge_index, edge_weight, n, add_self_loops=add_self_loops)
    return torch.zeros(n, n, dtype=torch.float64).index_put_((ei[1], ei[0]), w.double(),
                                                             accumulate=True)


def unique_self_loops(ei):
    """Keep at most one self loop per node (PyG picks an unspecified one among several)."""
    loop = ei[0] == ei[1]
    first = torch.ones_like(loop)
    seen = set()
    for k in torch.nonzero(loop).flatten().tolist():
        if int(ei[0, k]) in seen:
            first[k] = False
        seen.add(int(ei[0, k]))
    return ei[:, first]


@pytest.mark.parametrize("case", ["single", "single_loop", "isolated", "loops_dups", "hub"])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("loops", [True, False])
def test_gcn_matches_pyg(case, weighted, loops):
    gen = torch.Generator().manual_seed(1)
    ei, n, _ = CASES[case](gen)
    if weighted:
        ei = unique_self_loops(ei)
    ew = torch.rand(ei.shape[1], generator=gen) + 0.1 if weighted else None
    g = Graph.from_edge_index(ei, n, edge_weight=ew, norm="gcn", add_self_loops=loops)
    torch.testing.assert_close(dense(g), pyg_dense(ei, ew, n, loops), rtol=1e-6, atol=1e-7)


def test_duplicate_self_loops_keep_last_weight():
    ei = torch.tensor([[0, 1, 1, 1], [1, 1, 1, 0]])
    ew = torch.tensor([1.0, 5.0, 7.0, 1.0])
    g = Graph.from_edge_index(ei, 2, edge_weight=ew, norm="sum")
    a = dense(g)
    assert a[1, 1] == 7.0 and a[0, 0] == 1.0 and a[1, 0] == 1.0 and a[0, 1] == 1.0
    g = Graph.from_edge_index(ei, 2, norm="sum")  # unweighted: loops replaced by weight 1
    assert dense(g)[1, 1] == 1.0


@pytest.mark.parametrize("weighted", [False, True])
def test_mean_and_sum(weighted):
    gen = torch.Generator().manual_seed(2)
    ei = random_edges(30, 120, gen=gen, isolated=3)
    ew = torch.rand(120, generator=gen) + 0.1 if weighted else None
    raw = torch.zeros(30, 30, dtype=torch.float64).index_put_(
        (ei[1], ei[0]), ew.double() if weighted else torch.ones(120, dtype=torch.float64),
        accumulate=True)
    g = Graph.from_edge_index(ei, 30, edge_weight=ew, norm="sum", add_self_loops=False)
    torch.testing.assert_close(dense(g), raw, rtol=1e-6, atol=1e-7)
    assert (g.weight is None) == (not weighted)  # unit weights are not stored
    g = Graph.from_edge_index(ei, 30, edge_weight=ew, norm="mean", add_self_loops=False)
    deg = raw.sum(1, keepdim=True)
    torch.testing.assert_close(dense(g), torch.where(deg > 0, raw / deg, 0.0), rtol=1e-6,
                               atol=1e-7)


@pytest.mark.parametrize("case", list(CASES))
def test_csr_structure(case):
    g = make_graph(case, weighted=True)
    n, e = g.num_nodes, g.num_edges
    assert g.col.dtype == torch.int32 and g.rowptr.dtype == torch.int32
    assert g.rowptr.shape == (n + 1,) and g.t_rowptr.shape == (n + 1,)
    assert int(g.rowptr[-1]) == e and int(g.t_rowptr[-1]) == e
    rows = torch.repeat_interleave(torch.arange(n), g.rowptr.long().diff())
    # sorted by (row, col); the transpose lists entry t_perm[k] under its source node
    key = rows * max(n, 1) + g.col.long()
    assert bool((key.diff() >= 0).all())
    t_rows = torch.repeat_interleave(torch.arange(n), g.t_rowptr.long().diff())
    perm = g.t_perm.long()
    assert torch.equal(torch.sort(perm).values, torch.arange(e))
    assert torch.equal(g.col.long()[perm], t_rows)
    assert torch.equal(rows[perm], g.t_col.long())


def test_int64_indices(monkeypatch):
    import fastpicard.graph as graph_mod
    monkeypatch.setattr(graph_mod, "_INT32_MAX", 10)
    g = make_graph("loops_dups")
    assert g.col.dtype == torch.int64 and g.t_perm.dtype == torch.int64
    h = torch.randn(g.num_nodes, 5, dtype=torch.float64)
    ref = dense(g) @ h
    for backend in ("cpp", "reference"):
        torch.testing.assert_close(spmm(g, h, backend=backend), ref)


@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")
def test_from_sparse_matches_matmul():
    gen = torch.Generator().manual_seed(3)
    ei = random_edges(20, 70, gen=gen)
    a = torch.sparse_coo_tensor(ei, torch.rand(70, generator=gen), (20, 20),
                                check_invariants=True).coalesce()
    h = torch.randn(20, 4)
    expect = (a @ h)
    for adj in (a, a.to_sparse_csr()):
        g = Graph.from_sparse(adj)
        torch.testing.assert_close(spmm(g, h), expect, rtol=1e-5, atol=1e-5)
    with pytest.raises(TypeError, match="adj"):
        Graph.from_sparse(a.to_dense())
    with pytest.raises(ValueError, match="square"):
        Graph.from_sparse(torch.sparse_coo_tensor(ei, torch.ones(70), (20, 21),
                                                  check_invariants=True))


def test_from_pyg_data_and_batch():
    from torch_geometric.data import Batch, Data
    gen = torch.Generator().manual_seed(4)
    datas = [Data(edge_index=random_edges(n, 3 * n, gen=gen), num_nodes=n) for n in (5, 9, 3)]
    g = Graph.from_pyg(datas[1])
    expect = Graph.from_edge_index(datas[1].edge_index, 9)
    torch.testing.assert_close(dense(g), dense(expect))
    b = Batch.from_data_list(datas)
    g = Graph.from_pyg(b)
    assert g.num_graphs == 3 and torch.equal(g.batch, b.batch)
    assert g.num_nodes == 17
    weighted = Data(edge_index=datas[0].edge_index, num_nodes=5,
                    edge_weight=torch.rand(datas[0].edge_index.shape[1], generator=gen))
    g = Graph.from_pyg(weighted, norm="sum", add_self_loops=False)
    assert torch.equal(g.weight.sort().values, weighted.edge_weight.sort().values)


@pytest.mark.parametrize("vdtype", [torch.int64, torch.bool])
def test_from_sparse_integer_adjacency(vdtype):
    # a 0/1 adjacency stored as int or bool: unit weights
    dense_adj = (torch.rand(7, 7, generator=torch.Generator().manual_seed(2)) < 0.4)
    h = torch.randn(7, 3)
    for adj in (dense_adj.to(vdtype).to_sparse_csr(), dense_adj.to(vdtype).to_sparse()):
        g = Graph.from_sparse(adj)
        torch.testing.assert_close(spmm(g, h), dense_adj.float() @ h)


def test_weight_dtype():
    ei = torch.tensor([[0, 1, 2], [1, 2, 0]])
    assert Graph.from_edge_index(ei, 3).weight.dtype == torch.float32
    g64 = Graph.from_edge_index(ei, 3, dtype=torch.float64)
    assert g64.weight.dtype == torch.float64 and g64.t_weight.dtype == torch.float64
    torch.testing.assert_close(g64.weight.float(), Graph.from_edge_index(ei, 3).weight)
    with pytest.raises(TypeError, match="dtype"):
        Graph.from_edge_index(ei, 3, dtype=torch.float16)


def test_learnable_weights_after_an_optimizer_step():
    # the backward reads transposed weights cached on the Graph: they must follow in-place
    # updates of the weights (an optimizer step), or grad h uses stale weights
    g = torch.Generator().manual_seed(0)
    ei = torch.randint(0, 10, (2, 30), generator=g)
    graph = Graph.from_edge_index(ei, 10, edge_weight=torch.rand(30, generator=g,
                                                                 dtype=torch.float64),
                                  norm="sum", add_self_loops=False)
    p = torch.nn.Parameter(graph.weight.clone())
    graph.weight = p
    opt = torch.optim.SGD([p], lr=0.5)
    h = torch.randn(10, 3, dtype=torch.float64, requires_grad=True)
    for _ in range(3):
        spmm(graph, h).square().sum().backward()
        h_ref = h.detach().clone().requires_grad_()
        spmm(graph, h_ref, backend="reference").square().sum().backward()
        torch.testing.assert_close(h.grad, h_ref.grad)
        h.grad = None
        opt.step()
        opt.zero_grad()


def test_from_sparse_tensor_duck_typed():
    # torch_sparse has no wheels here; any object with its coo()/sparse_sizes() API works
    gen = torch.Generator().manual_seed(5)
    ei = random_edges(12, 40, gen=gen)
    val = torch.rand(40, generator=gen)

    class AdjT:  # adj_t[i, j]: edge j -> i
        def sparse_sizes(self):
            return (12, 12)

        def coo(self):
            return ei[1], ei[0], val

    g = Graph.from_sparse_tensor(AdjT(), norm="gcn")
    torch.testing.assert_close(dense(g), dense(Graph.from_edge_index(ei, 12, edge_weight=val)))
    with pytest.raises(TypeError, match="adj_t"):
        Graph.from_sparse_tensor(object())


def test_to_device_moves_everything():
    g = make_graph("batched", weighted=True)
    m = g.to("meta")
    for name in ("rowptr", "col", "weight", "t_rowptr", "t_col", "t_perm", "batch"):
        assert getattr(m, name).device.type == "meta", name
    assert m.num_nodes == g.num_nodes and m.num_graphs == g.num_graphs
    assert "num_graphs=4" in repr(g)


def test_edge_weight_gradient_flows_through_normalisation():
    gen = torch.Generator().manual_seed(6)
    ei = random_edges(15, 50, gen=gen)
    ew = (torch.rand(50, generator=gen, dtype=torch.float64) + 0.1).requires_grad_()
    h = torch.randn(15, 3, dtype=torch.float64)

    def f(w):
        return spmm(Graph.from_edge_index(ei, 15, edge_weight=w), h, backend="cpp")

    assert torch.autograd.gradcheck(f, (ew,))


# ------------------------------------------------------------------ bad inputs
def test_bad_edge_index():
    with pytest.raises(TypeError, match="edge_index"):
        Graph.from_edge_index([[0, 1], [1, 0]], 2)
    with pytest.raises(TypeError, match="edge_index"):
        Graph.from_edge_index(torch.tensor([[0.0, 1.0], [1.0, 0.0]]), 2)
    with pytest.raises(ValueError, match="edge_index"):
        Graph.from_edge_index(torch.tensor([0, 1, 2]), 3)
    with pytest.raises(ValueError, match="edge_index"):
        Graph.from_edge_index(torch.zeros(3, 2, dtype=torch.int64), 3)
    with pytest.raises(IndexError, match="edge_index.*negative"):
        Graph.from_edge_index(torch.tensor([[0, -1], [1, 0]]), 2)
    with pytest.raises(IndexError, match="num_nodes"):
        Graph.from_edge_index(torch.tensor([[0, 5], [1, 0]]), 3)


def test_bad_arguments():
    ei = torch.tensor([[0, 1], [1, 0]])
    with pytest.raises(TypeError, match="num_nodes"):
        Graph.from_edge_index(ei, 2.0)
    with pytest.raises(ValueError, match="num_nodes"):
        Graph.from_edge_index(torch.empty(2, 0, dtype=torch.int64), -1)
    with pytest.raises(ValueError, match="edge_weight"):
        Graph.from_edge_index(ei, 2, edge_weight=torch.ones(3))
    with pytest.raises(TypeError, match="edge_weight"):
        Graph.from_edge_index(ei, 2, edge_weight=torch.ones(2, dtype=torch.int64))
    with pytest.raises(ValueError, match="edge_weight.*NaN"):
        Graph.from_edge_index(ei, 2, edge_weight=torch.tensor([1.0, float("nan")]))
    with pytest.raises(ValueError, match="norm"):
        Graph.from_edge_index(ei, 2, norm="sym")
    with pytest.raises(TypeError, match="add_self_loops"):
        Graph.from_edge_index(ei, 2, add_self_loops=1)
    with pytest.raises(ValueError, match="batch"):
        Graph.from_edge_index(ei, 2, batch=torch.zeros(3, dtype=torch.int64))
    with pytest.raises(TypeError, match="batch"):
        Graph.from_edge_index(ei, 2, batch=torch.zeros(2))
    with pytest.raises(IndexError, match="num_graphs"):
        Graph.from_edge_index(ei, 2, batch=torch.tensor([0, 3]), num_graphs=2)
    with pytest.raises(ValueError, match="num_graphs"):
        Graph.from_edge_index(ei, 2, num_graphs=3)


def test_empty_and_isolated_graphs():
    g = Graph.from_edge_index(torch.empty(2, 0, dtype=torch.int64))
    assert g.num_nodes == 0 and g.num_edges == 0
    g = Graph.from_edge_index(torch.empty(2, 0, dtype=torch.int64), 4, add_self_loops=False)
    assert g.num_edges == 0 and torch.equal(g.rowptr, torch.zeros(5, dtype=torch.int32))
    h = torch.randn(4, 3)
    assert torch.equal(spmm(g, h), torch.zeros(4, 3))


@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")
def test_malformed_sparse_csr_is_refused_clearly():
    """A CSR with decreasing crow_indices failed inside torch ("repeats can not be
    negative"); out-of-range columns and short crow_indices likewise."""
    v = torch.ones(3)
    for crow, col, match in (([0, 2, 1, 3], [0, 1, 2], "crow_indices"),
                             ([0, 1, 2, 4], [0, 1, 2], "crow_indices"),
                             ([0, 1, 2], [0, 1, 2], "crow_indices"),
                             ([0, 1, 2, 3], [0, 1, 5], "col_indices"),
                             ([0, 1, 2, 3], [0, -1, 2], "col_indices")):
        adj = torch.sparse_csr_tensor(torch.tensor(crow), torch.tensor(col), v, (3, 3),
                                      check_invariants=False)
        with pytest.raises((ValueError, IndexError), match=match):
            Graph.from_sparse(adj)


def test_gcn_norm_refuses_negative_degrees():
    """Negative edge weights with norm='gcn' gave NaN (or silently wrong) weights: D^-1/2 of a
    negative weighted degree is not real."""
    ei = torch.tensor([[0, 1, 2], [1, 0, 1]])
    with pytest.raises(ValueError, match="negative"):
        Graph.from_edge_index(ei, 3, edge_weight=torch.tensor([-3.0, 0.5, 1.0]), norm="gcn")
    g = Graph.from_edge_index(ei, 3, edge_weight=torch.tensor([-0.5, 0.5, 1.0]), norm="sum")
    assert g.weight.min() < 0  # plain sums may carry signed weights


BAD_CSR = {  # name -> (override of a valid 3-node graph's tensors, what the error names)
    "col_out_of_range": (dict(col=[1, 2, 3]), "col"),
    "col_negative": (dict(col=[1, -1, 0]), "col"),
    "rowptr_decreasing": (dict(rowptr=[0, 2, 1, 3]), "rowptr"),
    "rowptr_end": (dict(rowptr=[0, 1, 2, 2]), "rowptr"),
    "rowptr_length": (dict(rowptr=[0, 1, 3]), "rowptr"),
    "t_perm_out_of_range": (dict(t_perm=[0, 1, 7]), "t_perm"),
    "t_perm_repeated": (dict(t_perm=[0, 0, 2]), "t_perm"),
    "t_col_not_transpose": (dict(t_col=[2, 0, 1]), "t_col"),
    "index_dtypes": (dict(col=torch.tensor([1, 2, 0], dtype=torch.int32)), "dtype"),
    "weight_length": (dict(weight=torch.ones(2)), "weight"),
    "batch_out_of_range": (dict(batch=[0, 0, 3], num_graphs=2), "batch"),
    "too_many_graphs": (dict(batch=[0, 0, 1], num_graphs=4), "num_graphs"),
}


@pytest.mark.parametrize("case", list(BAD_CSR))
def test_graph_from_raw_csr_is_validated(case):
    """Graph(...) with hand-made CSR used to be trusted; every structural fact is checked."""
    # 0 -> 1, 1 -> 2, 2 -> 0 as CSR rows (targets): row 0 lists source 2, row 1 source 0, ...
    good = dict(num_nodes=3, rowptr=[0, 1, 2, 3], col=[2, 0, 1], weight=None,
                t_rowptr=[0, 1, 2, 3], t_col=[1, 2, 0], t_perm=[1, 2, 0])
    Graph(**{k: torch.tensor(v) if isinstance(v, list) else v for k, v in good.items()})
    override, what = BAD_CSR[case]
    kw = dict(good, **override)
    kw = {k: torch.tensor(v) if isinstance(v, list) else v for k, v in kw.items()}
    with pytest.raises((ValueError, IndexError, TypeError), match=what):
        Graph(**kw)
