"""Graph.reorder: node orders (rcm, degree, cluster), the relabelled Graph, and PIGN's
transparent permute-in / permute-out."""
import pytest
import torch

import fastpicard
from fastpicard import Graph
from fastpicard.nn import PIGN
from fastpicard.ops import spmm, spmm_update

from graph_helpers import batched_edges, dense, random_edges

pytestmark = pytest.mark.skipif(not fastpicard.extension_available(),
                                reason="compiled extension not available")

METHODS = ("rcm", "degree", "cluster")


def inverse(order):
    inv = torch.empty_like(order)
    inv[order] = torch.arange(order.numel())
    return inv


def shuffled(ei, n, gen):
    """The same graph under a random node numbering: (edge_index, new id of each old node)."""
    p = torch.randperm(n, generator=gen)
    return p[ei], p


def grid_edges(k):
    """A k x k grid, both directions."""
    idx = torch.arange(k * k).view(k, k)
    right = torch.stack([idx[:, :-1].flatten(), idx[:, 1:].flatten()])
    down = torch.stack([idx[:-1].flatten(), idx[1:].flatten()])
    ei = torch.cat([right, down], 1)
    return torch.cat([ei, ei.flip(0)], 1)


def assert_relabelled(g: Graph, r: Graph):
    """r is g with node i of r = node r.node_order[i] of g, transpose included."""
    o = r.node_order
    assert torch.equal(torch.sort(o).values, torch.arange(g.num_nodes))
    torch.testing.assert_close(dense(r), dense(g)[o][:, o], rtol=0, atol=0)
    n = r.num_nodes
    t_rows = torch.repeat_interleave(torch.arange(n), r.t_rowptr.long().diff())
    rows = torch.repeat_interleave(torch.arange(n), r.rowptr.long().diff())
    perm = r.t_perm.long()
    assert torch.equal(torch.sort(perm).values, torch.arange(r.num_edges))
    assert torch.equal(r.col.long()[perm], t_rows) and torch.equal(rows[perm], r.t_col.long())
    if r.weight is not None:
        assert torch.equal(r.t_weight, r.weight.detach()[perm])


@pytest.mark.parametrize("method", METHODS)
def test_reorder_is_a_relabelling(method):
    gen = torch.Generator().manual_seed(0)
    for n, e, hub, iso in ((1, 0, None, 0), (40, 200, None, 5), (61, 400, 3, 0)):
        ei = random_edges(n, e, gen=gen, hub=hub, isolated=iso)
        ew = torch.rand(ei.shape[1], generator=gen) + 0.1
        for g in (Graph.from_edge_index(ei, n), Graph.from_edge_index(ei, n, edge_weight=ew,
                                                                       norm="sum",
                                                                       add_self_loops=False)):
            r = g.reorder(method)
            assert_relabelled(g, r)
            assert r.col.dtype == g.col.dtype and r.norm == g.norm


@pytest.mark.parametrize("method", METHODS)
def test_ops_identical_in_new_order(method):
    """Rows keep their entries in their old sequence: forward and backward of the graph ops
    give the same numbers, bit for bit, in the new row order."""
    gen = torch.Generator().manual_seed(1)
    n = 90
    ei = random_edges(n, 700, gen=gen, hub=4)
    ew = torch.rand(ei.shape[1], generator=gen) + 0.1
    g = Graph.from_edge_index(ei, n, edge_weight=ew)
    r = g.reorder(method)
    o = r.node_order
    h = torch.randn(n, 19, generator=gen, requires_grad=True)
    x = torch.randn(n, 19, generator=gen, requires_grad=True)
    b = torch.randn(19, generator=gen)
    gy = torch.randn(n, 19, generator=gen)
    y, res = spmm_update(g, h, x, 0.3, bias=b, act="tanh")
    gh, gx = torch.autograd.grad(y, (h, x), gy)
    yr, res_r = spmm_update(r, h[o], x[o], 0.3, bias=b, act="tanh")
    ghr, gxr = torch.autograd.grad(yr, (h, x), gy[o])
    assert torch.equal(yr, y[o]) and torch.equal(ghr, gh) and torch.equal(gxr, gx)
    torch.testing.assert_close(res_r, res)
    with torch.no_grad():
        assert torch.equal(spmm(r, h[o], reduce="mean"), spmm(g, h, reduce="mean")[o])


def test_reorder_keeps_edge_weight_autograd():
    gen = torch.Generator().manual_seed(2)
    ei = random_edges(30, 150, gen=gen)
    w = (torch.rand(150, generator=gen, dtype=torch.float64) + 0.1).requires_grad_(True)
    h = torch.randn(30, 4, generator=gen, dtype=torch.float64)
    grads = []
    for method in (None, "cluster"):
        g = Graph.from_edge_index(ei, 30, edge_weight=w, reorder=method)
        o = torch.arange(30) if g.node_order is None else g.node_order
        y = spmm(g, h[o])[inverse(o)]
        grads.append(torch.autograd.grad((y * y).sum(), w)[0])
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-12, atol=1e-12)


def test_reorder_composes_and_moves():
    gen = torch.Generator().manual_seed(3)
    ei, n, batch = batched_edges([9, 1, 14], 3, gen=gen)
    g = Graph.from_edge_index(ei, n, batch=batch)
    p = torch.randperm(n, generator=gen)
    r = g.reorder(p).reorder("rcm")
    assert_relabelled(g, r)
    assert torch.equal(r.batch, batch[r.node_order]) and r.num_graphs == 3
    assert torch.equal(r.to("cpu").node_order, r.node_order)
    assert r.reorder(torch.arange(n, dtype=torch.int32)).node_order.dtype == torch.int64


def test_orders_give_locality():
    gen = torch.Generator().manual_seed(4)
    # a shuffled grid: RCM brings the bandwidth back to about the side length
    k = 20
    ei, _ = shuffled(grid_edges(k), k * k, gen)
    r = Graph.from_edge_index(ei, k * k, reorder="rcm")
    rows = torch.repeat_interleave(torch.arange(k * k), r.rowptr.long().diff())
    assert int((rows - r.col.long()).abs().max()) <= k + 1
    # degree: non-increasing degrees
    ei = random_edges(200, 1500, gen=gen, hub=11)
    r = Graph.from_edge_index(ei, 200, reorder="degree")
    deg = r.rowptr.long().diff() + r.t_rowptr.long().diff()
    assert bool((deg.diff() <= 0).all()) and int(r.node_order[0]) == 11
    # cluster: disjoint cliques, shuffled, come out contiguous
    size, count = 7, 9
    blocks = [torch.cartesian_prod(torch.arange(size), torch.arange(size)).t() + size * c
              for c in range(count)]
    ei, p = shuffled(torch.cat(blocks, 1), size * count, gen)
    r = Graph.from_edge_index(ei, size * count, reorder="cluster")
    clique = torch.empty(size * count, dtype=torch.int64)
    clique[p] = torch.arange(size * count) // size
    assert int(clique[r.node_order].diff().ne(0).sum()) == count - 1  # one run per clique


@pytest.mark.parametrize("method", ["cluster", "rcm"])
def test_pign_with_reordered_graph(method):
    """Same outputs in the caller's node order; the same gradients up to rounding (bias and
    GEMM sums run over rows in another order)."""
    gen = torch.Generator().manual_seed(5)
    n = 150
    ei = random_edges(n, 900, gen=gen)
    x = torch.randn(n, 11, generator=gen)
    torch.manual_seed(0)
    model = PIGN(11, 16, 3, max_iter=5, dropout=0.0)
    g = Graph.from_edge_index(ei, n)
    r = g.reorder(method)
    outs = []
    for graph in (g, r, ei):
        model.zero_grad()
        y = model(x, graph)
        (y * torch.linspace(-1, 1, y.numel()).view_as(y)).sum().backward()
        outs.append((y.detach(), [p.grad.clone() for p in model.parameters()]))
    for y, grads in outs[1:]:
        torch.testing.assert_close(y, outs[0][0], rtol=1e-6, atol=1e-6)
        for a, b in zip(grads, outs[0][1]):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    # a batch vector given in the caller's order is permuted with the features
    batch = torch.arange(n) * 3 // n
    model.eval()
    ref = model(x, g, batch)
    torch.testing.assert_close(model(x, r, batch), ref, rtol=1e-6, atol=1e-6)


def test_bad_orders():
    g = Graph.from_edge_index(torch.tensor([[0, 1, 2], [1, 2, 0]]), 3)
    with pytest.raises(ValueError, match="method"):
        g.reorder("metis")
    with pytest.raises(TypeError, match="order"):
        g.reorder(3)
    with pytest.raises(TypeError, match="integer"):
        g.reorder(torch.tensor([0.0, 1.0, 2.0]))
    with pytest.raises(ValueError, match="shape"):
        g.reorder(torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="permutation.*repeated"):
        g.reorder(torch.tensor([0, 1, 1]))
    with pytest.raises(ValueError, match="permutation.*out of range"):
        g.reorder(torch.tensor([0, 1, 3]))



def test_raw_constructor_checks_node_order():
    """Graph(...) from raw tensors keeps a valid node_order and refuses a bad one (the
    reordered Graph's fields otherwise pass every other check)."""
    r = Graph.from_edge_index(torch.tensor([[0, 1, 2, 3], [1, 2, 3, 0]]), 4).reorder("rcm")
    fields = {f: getattr(r, f) for f in ("rowptr", "col", "weight", "t_rowptr", "t_col",
                                        "t_perm")}
    assert torch.equal(Graph(num_nodes=4, node_order=r.node_order, **fields).node_order,
                       r.node_order)
    for bad, err, match in ((torch.tensor([0, 1, 1, 2]), ValueError, "permutation"),
                            (torch.tensor([0, 1, 2, 4]), ValueError, "permutation"),
                            (torch.arange(3), ValueError, "shape"),
                            (r.node_order.int(), TypeError, "int64")):
        with pytest.raises(err, match=match):
            Graph(num_nodes=4, node_order=bad, **fields)

def test_ops_reject_malformed_csr():
    """Hand-built (corrupt) CSR reaching the order ops raises instead of reading out of
    bounds."""
    order_op, permute_op = torch.ops.fastpicard.graph_order, torch.ops.fastpicard.graph_permute
    g = Graph.from_edge_index(torch.tensor([[0, 1, 2], [1, 2, 0]]), 3)
    good = (g.rowptr, g.col, g.t_rowptr, g.t_col)
    bad_col = g.col.clone()
    bad_col[1] = 7
    bad_ptr = g.rowptr.clone()
    bad_ptr[1] = 5
    bad_perm = g.t_perm.clone()
    bad_perm[0] = -1
    order = torch.arange(3)
    with pytest.raises(IndexError, match="col"):
        order_op(g.rowptr, bad_col, g.t_rowptr, g.t_col, "rcm")
    with pytest.raises(IndexError, match="rowptr"):
        order_op(bad_ptr, g.col, g.t_rowptr, g.t_col, "degree")
    with pytest.raises(IndexError, match="perm"):
        permute_op(*good, bad_perm, order)
    with pytest.raises(TypeError, match="dtype"):
        order_op(g.rowptr.long(), g.col, g.t_rowptr, g.t_col, "rcm")
    with pytest.raises(ValueError, match="entry per edge"):
        permute_op(g.rowptr, g.col, g.t_rowptr, g.t_col[:2], g.t_perm, order)
    with pytest.raises(TypeError, match="int64"):
        permute_op(*good, g.t_perm, order.int())
