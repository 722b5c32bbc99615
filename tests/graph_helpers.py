"""Graph test cases shared by test_graph.py, test_spmm.py and test_spmm_update.py."""
from __future__ import annotations

import contextlib

import pytest
import torch

from fastpicard import Graph
from fastpicard.ops import _backend


def triton_on_cpu():
    """Decorator of tests that run the Triton kernels on CPU tensors (TRITON_INTERPRET=1, set
    by conftest when there is no GPU): inside them the Triton kernels are the ops' CPU kernels
    (``backend="cpp"`` is refused there; compare with the reference). The CUDA path is tested
    in test_graph_cuda.py."""
    skip = pytest.mark.skipif(
        not (_backend.triton_available() and _backend.triton_interpreting()),
        reason="Triton interpreter (TRITON_INTERPRET=1) not active")
    use = pytest.mark.usefixtures("triton_cpu")
    return lambda test: skip(use(test))


def random_edges(n: int, e: int, *, gen: torch.Generator, self_loops=True, duplicates=True,
                 hub: int | None = None, isolated: int = 0) -> torch.Tensor:
    """edge_index [2, e] on nodes [0, n - isolated) (the last `isolated` nodes get no edge);
    `hub`: most edges point into that node (degree >> others)."""
    m = n - isolated
    if m <= 0 or e == 0:
        return torch.empty(2, 0, dtype=torch.int64)
    ei = torch.randint(0, m, (2, e), generator=gen)
    if hub is not None:
        into_hub = torch.rand(e, generator=gen) < 0.6
        ei[1, into_hub] = hub
    if not self_loops:
        loop = ei[0] == ei[1]
        ei[1, loop] = (ei[0, loop] + 1) % m
        if m == 1:
            return torch.empty(2, 0, dtype=torch.int64)
    if duplicates and e >= 4:
        ei[:, : e // 4] = ei[:, e // 4: 2 * (e // 4)]  # a quarter of the edges appear twice
    return ei


def batched_edges(sizes, e_per_node: int, *, gen):
    """Several graphs in one: (block-diagonal edge_index, num_nodes, batch vector)."""
    parts, batch, off = [], [], 0
    for g, n in enumerate(sizes):
        parts.append(random_edges(n, e_per_node * n, gen=gen) + off)
        batch.append(torch.full((n,), g, dtype=torch.int64))
        off += n
    return torch.cat(parts, 1), off, torch.cat(batch)


# name -> builder(gen) -> (edge_index, num_nodes, batch or None)
CASES = {
    "empty": lambda gen: (torch.empty(2, 0, dtype=torch.int64), 0, None),
    "single": lambda gen: (torch.empty(2, 0, dtype=torch.int64), 1, None),
    "single_loop": lambda gen: (torch.tensor([[0, 0], [0, 0]]), 1, None),
    "isolated": lambda gen: (random_edges(23, 40, gen=gen, isolated=6), 23, None),
    "loops_dups": lambda gen: (random_edges(37, 160, gen=gen), 37, None),
    "hub": lambda gen: (random_edges(61, 400, gen=gen, hub=5), 61, None),
    "batched": lambda gen: batched_edges([7, 1, 20, 12], 3, gen=gen),
}


def make_graph(case: str, seed: int = 0, norm: str = "gcn", weighted: bool = False) -> Graph:
    gen = torch.Generator().manual_seed(seed)
    ei, n, batch = CASES[case](gen)
    ew = torch.rand(ei.shape[1], generator=gen) + 0.1 if weighted else None
    return Graph.from_edge_index(ei, n, edge_weight=ew, norm=norm, batch=batch)


def dense(graph: Graph) -> torch.Tensor:
    """The graph's Â as a dense float64 matrix (duplicates summed)."""
    n = graph.num_nodes
    rows = torch.repeat_interleave(torch.arange(n), graph.rowptr.long().diff())
    w = graph.weight.double() if graph.weight is not None else torch.ones(graph.num_edges,
                                                                        dtype=torch.float64)
    return torch.zeros(n, n, dtype=torch.float64).index_put_((rows, graph.col.long()), w,
                                                             accumulate=True)


@contextlib.contextmanager
def poisoned_empty():
    """Every torch.empty / at::empty in the block returns NaN-filled memory (deterministic
    mode's uninitialised-memory fill), so an output element a kernel forgets to write shows."""
    old_det = torch.are_deterministic_algorithms_enabled()
    old_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    old_fill = torch.utils.deterministic.fill_uninitialized_memory
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory = True
    try:
        yield
    finally:
        torch.utils.deterministic.fill_uninitialized_memory = old_fill
        torch.use_deterministic_algorithms(old_det, warn_only=old_warn)
