"""The compiled build of :meth:`fastpicard.Graph.from_edge_index` (CPU tensors).

The C++ op ``fastpicard::graph_build`` replaces the torch path's two global argsorts by stable
parallel counting sorts and computes the normalised weights in the same float operations and
order as the torch path: the Graph is bit for bit the one the torch path builds (same entry
order within rows, same weights). CUDA tensors, and builds without the compiled extension,
take the torch path.

When ``edge_weight`` requires grad, the op returns only the structure and the position of
each CSR entry in the edge list; the weights are then computed by the torch path and gathered
in torch, so ``graph.weight`` stays a differentiable function of ``edge_weight``.
"""
from __future__ import annotations

import torch

from . import _ext


def applies(edge_index: torch.Tensor) -> bool:
    """Whether from_edge_index builds this graph with the compiled op."""
    return _ext.available and edge_index.device.type == "cpu"


def build(edge_index, num_nodes, edge_weight, norm, add_self_loops, dtype, torch_weights,
          index_limit):
    """Graph fields (num_nodes, rowptr, col, weight, t_rowptr, t_col, t_perm, t_weight) of a
    validated from_edge_index call; ``torch_weights`` is the torch path's
    ``(edge_index, edge_weight, n, norm, add_self_loops, dtype) -> (src, dst, weight)``;
    indices are int32 when the node and entry counts are at most ``index_limit``."""
    op = torch.ops.fastpicard.graph_build
    if edge_weight is not None and edge_weight.requires_grad and torch.is_grad_enabled():
        rowptr, col, _, t_rowptr, t_col, t_perm, _, perm = op(
            edge_index, num_nodes, None, "sum", add_self_loops, True, torch.float32, index_limit)
        weight = torch_weights(edge_index, edge_weight, num_nodes, norm, add_self_loops,
                               dtype)[2][perm.long()]
        t_weight = None  # Graph gathers it from weight
    else:
        rowptr, col, weight, t_rowptr, t_col, t_perm, t_weight, _ = op(
            edge_index, num_nodes, edge_weight, norm, add_self_loops, False,
            dtype or torch.float32, index_limit)
        if edge_weight is None and norm == "sum":
            weight = t_weight = None
    return dict(num_nodes=num_nodes, rowptr=rowptr, col=col, weight=weight, t_rowptr=t_rowptr,
                t_col=t_col, t_perm=t_perm, t_weight=t_weight)
