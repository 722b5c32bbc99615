"""The Graph builders — from_edge_index, from_sparse (CSR and COO) and Graph(...) from raw CSR
— on drawn sizes, index values, dtypes, weights and batches, valid or broken: a Graph whose
aggregation is the dense matrix product of what was given, or a clear error."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from cases import assert_ran, assert_refused, examples, log_case, outcome
from fastpicard import Graph
from fastpicard.ops import spmm

EDGE_DEFECTS = {
    None: None, "int32": None, "weighted": None, "batched": None,
    "negative_index": IndexError, "index_beyond": IndexError, "float_index": TypeError,
    "shape_3": ValueError, "weight_length": ValueError, "weight_nan": ValueError,
    "weight_integer": TypeError, "gcn_negative": ValueError, "num_nodes_negative": ValueError,
    "num_nodes_float": TypeError, "batch_length": ValueError, "batch_negative": IndexError,
    "graphs_over_nodes": ValueError, "graphs_below_ids": IndexError, "norm": ValueError,
    "not_tensor": TypeError,
}
CSR_DEFECTS = {
    None: None, "coo": None, "crow_decreasing": ValueError, "crow_end": ValueError,
    "crow_length": ValueError, "col_beyond": IndexError, "col_negative": IndexError,
    "coo_beyond": ValueError, "not_square": ValueError, "not_sparse": TypeError,
}
RAW_DEFECTS = {
    None: None, "col_beyond": IndexError, "col_negative": IndexError,
    "rowptr_decreasing": ValueError, "rowptr_end": ValueError, "rowptr_length": ValueError,
    "t_perm_repeat": ValueError, "t_perm_beyond": ValueError, "t_col_swapped": ValueError,
    "dtypes": TypeError, "weight_length": ValueError, "weight_integer": TypeError,
    "meta": TypeError, "num_nodes": (ValueError, IndexError), "batch_beyond": IndexError,
    "norm": ValueError,
}


def dense_of(src, dst, w, n):
    a = torch.zeros(n, n, dtype=torch.float64)
    return a.index_put_((dst, src), w.double(), accumulate=True)


@st.composite
def edge_cases(draw, defect):
    n = draw(st.integers(1 if defect in ("batch_negative", "graphs_over_nodes",
                                         "graphs_below_ids") else 0, 8))
    e = draw(st.integers(1 if defect in ("negative_index", "index_beyond", "weight_nan",
                                         "gcn_negative", "float_index") else 0, 3 * n + 1))
    return dict(defect=defect, seed=draw(st.integers(0, 2 ** 16)), n=max(n, int(e > 0)), e=e,
                norm=draw(st.sampled_from(["gcn", "mean", "sum"])), loops=draw(st.booleans()))


def run_edges(case):
    log_case(**case)
    g = torch.Generator().manual_seed(case["seed"])
    n, e, defect = case["n"], case["e"], case["defect"]
    ei = torch.randint(0, max(n, 1), (2, e), generator=g)
    kw = dict(norm=case["norm"], add_self_loops=case["loops"])
    num_nodes = n
    w = torch.rand(e, generator=g, dtype=torch.float64) + 0.1 if defect == "weighted" else None
    if defect == "int32":
        ei = ei.int()
    elif defect == "batched":
        kw["batch"] = torch.randint(0, max(n, 1), (n,), generator=g).sort()[0]
    elif defect == "negative_index":
        ei[0, 0] = -1
    elif defect == "index_beyond":
        ei[1, -1] = n
    elif defect == "float_index":
        ei = ei.float()
    elif defect == "shape_3":
        ei = torch.cat([ei, ei[:1]])
    elif defect == "weight_length":
        w = torch.rand(e + 1, generator=g)
    elif defect == "weight_nan":
        w = torch.rand(e, generator=g)
        w[0] = math.nan
    elif defect == "weight_integer":
        w = torch.ones(e, dtype=torch.long)
    elif defect == "gcn_negative":
        kw.update(norm="gcn", add_self_loops=False)
        ei[1] = 0  # every edge into node 0
        w = -torch.rand(e, generator=g) - 0.5
    elif defect == "num_nodes_negative":
        num_nodes = -1
    elif defect == "num_nodes_float":
        num_nodes = float(n)
    elif defect == "batch_length":
        kw["batch"] = torch.zeros(n + 1, dtype=torch.long)
    elif defect == "batch_negative":
        kw["batch"] = torch.full((n,), -1, dtype=torch.long)
    elif defect == "graphs_over_nodes":
        kw.update(batch=torch.zeros(n, dtype=torch.long), num_graphs=n + 1)
    elif defect == "graphs_below_ids":
        kw.update(batch=torch.arange(n), num_graphs=max(n - 1, 0))
    elif defect == "norm":
        kw["norm"] = "sym"
    elif defect == "not_tensor":
        ei = ei.tolist()
    graph, err = outcome(lambda: Graph.from_edge_index(ei, num_nodes, edge_weight=w, **kw))
    if EDGE_DEFECTS[defect] is not None:
        assert_refused(err, EDGE_DEFECTS[defect], "Graph", defect)
        return
    assert_ran(err, defect)
    assert graph.num_nodes == n and graph.col.dtype in (torch.int32, torch.int64)
    if case["norm"] == "sum" and not case["loops"]:  # Â is exactly the given adjacency
        ones = torch.ones(e, dtype=torch.float64) if w is None else w
        h = torch.randn(n, 3, generator=g, dtype=torch.float64)
        torch.testing.assert_close(spmm(graph, h), dense_of(ei[0].long(), ei[1].long(), ones,
                                                            n) @ h)
    Graph(num_nodes=graph.num_nodes, rowptr=graph.rowptr, col=graph.col, weight=graph.weight,
          t_rowptr=graph.t_rowptr, t_col=graph.t_col, t_perm=graph.t_perm, batch=graph.batch,
          num_graphs=graph.num_graphs, norm=graph.norm)  # what it built passes the raw checks


@st.composite
def csr_cases(draw, defect):
    low = 2 if defect == "crow_decreasing" else int(defect in ("col_beyond", "col_negative",
                                                              "coo_beyond"))
    return dict(defect=defect, seed=draw(st.integers(0, 2 ** 16)), n=draw(st.integers(low, 7)),
                density=draw(st.floats(0.1, 0.9)))


def run_sparse(case):
    log_case(**case)
    g = torch.Generator().manual_seed(case["seed"])
    n, defect = case["n"], case["defect"]
    a = (torch.rand(n, n, generator=g) < case["density"]) * torch.rand(n, n, generator=g)
    if n:
        a[0, 0] = 0.5  # at least one entry
    csr = a.to_sparse_csr()
    crow, col, values = csr.crow_indices().clone(), csr.col_indices().clone(), csr.values()
    shape = (n, n)
    if defect == "crow_decreasing":
        crow[1] = crow[2] + 1
    elif defect == "crow_end":
        crow[-1] += 1
    elif defect == "crow_length":
        crow = torch.cat([crow, crow[-1:]])
        shape = (n, n)
    elif defect == "col_beyond":
        col[0] = n + 3
    elif defect == "col_negative":
        col[-1] = -2
    elif defect == "not_square":
        shape = (n, n + 1)
    if defect in ("coo", "coo_beyond"):
        idx = a.nonzero().T
        if defect == "coo_beyond":
            idx = torch.cat([idx, torch.tensor([[0], [n + 4]])], 1)
        adj = torch.sparse_coo_tensor(idx, torch.ones(idx.shape[1]), (n, n),
                                      check_invariants=False)
    elif defect == "not_sparse":
        adj = a
    else:
        adj = torch.sparse_csr_tensor(crow, col, values, shape, check_invariants=False)
    graph, err = outcome(lambda: Graph.from_sparse(adj))
    if CSR_DEFECTS[defect] is not None:
        assert_refused(err, CSR_DEFECTS[defect], "Graph", defect)
        return
    assert_ran(err, defect)
    dense = (a != 0).double() if defect == "coo" else a.double()
    h = torch.randn(n, 2, generator=g, dtype=torch.float64)
    torch.testing.assert_close(spmm(graph, h), dense @ h)


@st.composite
def raw_cases(draw, defect):
    return dict(defect=defect, seed=draw(st.integers(0, 2 ** 16)),
                n=draw(st.integers(3, 8)), weighted=draw(st.booleans()))


def run_raw(case):
    log_case(**case)
    g = torch.Generator().manual_seed(case["seed"])
    n, defect = case["n"], case["defect"]
    ei = torch.randint(0, n, (2, 2 * n), generator=g)
    good = Graph.from_edge_index(ei, n, norm="sum", add_self_loops=True,
                                 edge_weight=torch.rand(2 * n, generator=g) if case["weighted"]
                                 else None)
    kw = dict(num_nodes=n, rowptr=good.rowptr.clone(), col=good.col.clone(), weight=good.weight,
              t_rowptr=good.t_rowptr.clone(), t_col=good.t_col.clone(),
              t_perm=good.t_perm.clone(), norm="sum")
    e = kw["col"].numel()
    if defect == "col_beyond":
        kw["col"][0] = n
    elif defect == "col_negative":
        kw["col"][-1] = -1
    elif defect == "rowptr_decreasing":
        kw["rowptr"][1] = kw["rowptr"][2] + 1
    elif defect == "rowptr_end":
        kw["rowptr"][-1] -= 1
    elif defect == "rowptr_length":
        kw["rowptr"] = kw["rowptr"][:-1]
    elif defect == "t_perm_repeat":
        kw["t_perm"][0] = kw["t_perm"][1]
    elif defect == "t_perm_beyond":
        kw["t_perm"][0] = e
    elif defect == "t_col_swapped":
        kw["t_col"] = (kw["t_col"] + 1) % n
    elif defect == "dtypes":
        kw["t_col"] = kw["t_col"].long() if kw["t_col"].dtype == torch.int32 else \
            kw["t_col"].int()
    elif defect == "weight_length":
        kw["weight"] = torch.ones(e + 1)
    elif defect == "weight_integer":
        kw["weight"] = torch.ones(e, dtype=torch.long)
    elif defect == "meta":
        kw["col"] = kw["col"].to("meta")
    elif defect == "num_nodes":
        kw["num_nodes"] = n + 1
    elif defect == "batch_beyond":
        kw.update(batch=torch.full((n,), 2), num_graphs=2)
    elif defect == "norm":
        kw["norm"] = "sym"
    graph, err = outcome(lambda: Graph(**kw))
    if RAW_DEFECTS[defect] is not None:
        assert_refused(err, RAW_DEFECTS[defect], "Graph", defect)
        return
    assert_ran(err, defect)
    h = torch.randn(n, 2, generator=g)
    torch.testing.assert_close(spmm(graph, h), spmm(good, h))


@pytest.mark.parametrize("defect", list(EDGE_DEFECTS), ids=str)
def test_from_edge_index(defect):
    examples(60 if defect is None else 8)(given(edge_cases(defect))(run_edges))()


@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")
@pytest.mark.parametrize("defect", list(CSR_DEFECTS), ids=str)
def test_from_sparse(defect):
    examples(60 if defect is None else 8)(given(csr_cases(defect))(run_sparse))()


@pytest.mark.parametrize("defect", list(RAW_DEFECTS), ids=str)
def test_from_raw_csr(defect):
    examples(40 if defect is None else 8)(given(raw_cases(defect))(run_raw))()
