"""Node orders for cache locality: :meth:`fastpicard.Graph.reorder`.

The graph kernels gather the feature rows ``h[col]`` of every row's sources; in an arbitrary
node numbering these gathers miss the caches (and the TLB) once ``h`` outgrows them. A node
order that numbers neighbours closely keeps them in cache. Methods (C++,
csrc/cpu/graph_order_kernel.cpp):

    "rcm"      reverse Cuthill-McKee (BFS by ascending degree, reversed)
    "degree"   descending degree: the most gathered rows (hubs) packed together
    "cluster"  one level of Louvain modularity communities, each contiguous, in BFS order

A reordered Graph is the same graph relabelled: row i is node ``node_order[i]`` of the
caller's numbering. Its rows keep their entries in their old sequence (so each row sums the
same terms in the same order); the ops take features in the new order and PIGN permutes in
and out itself. BENCHMARKS.md ("Large graphs") measures which method helps on which graph
("cluster" on graphs with communities). On CPU an order helps fully only with the features on
2 MiB pages (THP_MEM_ALLOC_ENABLE=1): on 4 KiB pages the gathers of a large ``h`` miss the TLB.
"""
from __future__ import annotations

import torch

from . import _ext

METHODS = ("rcm", "degree", "cluster")


def node_order(graph, method: str = "rcm") -> torch.Tensor:
    """int64 [N] on the graph's device: the old id of the node placed at each new position."""
    if method not in METHODS:
        raise ValueError(f"Graph.reorder: method must be one of {METHODS}, got {method!r}")
    _need_extension()
    order = torch.ops.fastpicard.graph_order(graph.rowptr.cpu(), graph.col.cpu(),
                                             graph.t_rowptr.cpu(), graph.t_col.cpu(), method)
    return order.to(graph.device)


def reorder(graph, order):
    """The Graph relabelled by ``order`` (a method name or an int64 order [N])."""
    if isinstance(order, str):
        order = node_order(graph, order)
    elif isinstance(order, torch.Tensor):
        if order.dtype.is_floating_point or order.dtype.is_complex or order.dtype == torch.bool:
            raise TypeError(f"Graph.reorder: order must be an integer tensor, got {order.dtype}")
        if order.shape != (graph.num_nodes,):
            raise ValueError(f"Graph.reorder: order must have shape [num_nodes={graph.num_nodes}]"
                             f", got {tuple(order.shape)}")
        order = order.long()
    else:
        raise TypeError(f"Graph.reorder: order must be one of {METHODS} or a Tensor, got "
                        f"{type(order).__name__}")
    _need_extension()
    device = graph.device
    rowptr, col, t_rowptr, t_col, t_perm, entry_perm = torch.ops.fastpicard.graph_permute(
        graph.rowptr.cpu(), graph.col.cpu(), graph.t_rowptr.cpu(), graph.t_col.cpu(),
        graph.t_perm.cpu(), order.cpu())
    order = order.to(device)
    weight = None if graph.weight is None else graph.weight[entry_perm.to(device)]
    return type(graph)._trusted(  # a validated Graph relabelled by a checked permutation
        num_nodes=graph.num_nodes, rowptr=rowptr.to(device), col=col.to(device), weight=weight,
        t_rowptr=t_rowptr.to(device), t_col=t_col.to(device), t_perm=t_perm.to(device),
        batch=None if graph.batch is None else graph.batch[order],
        num_graphs=graph.num_graphs, norm=graph.norm,
        node_order=order if graph.node_order is None else graph.node_order[order])


def _need_extension():
    if not _ext.available:
        raise RuntimeError("Graph.reorder needs fastpicard's compiled extension, which failed "
                           f"to load: {_ext.load_error}")
