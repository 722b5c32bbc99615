"""``fastpicard.ops.spmm``: sparse aggregation over a :class:`fastpicard.Graph`.

The ops ``fastpicard::spmm`` / ``spmm_backward`` are defined in C++: their only kernel checks
the arguments and calls the internal ``_spmm`` / ``_spmm_backward`` (CPU kernels and autograd
over the transposed CSR in C++). This module registers the internal ops' CUDA kernels (Triton)
and fake kernels, and the public function, which unpacks the Graph and picks the backend.
"""
from __future__ import annotations

import torch

from .. import _ext
from ..graph import Graph
from . import _backend
from . import reference as _reference
from .reference.picard_update import stat_dtype

REDUCES = ("sum", "mean", "max")


def _kernels():
    from ..kernels import checks, spmm  # lazily: triton is optional on CPU

    return checks, spmm


def contiguous(*ts):
    """The Triton launchers read every tensor as contiguous memory."""
    return tuple(None if t is None else t.contiguous() for t in ts)


# ---------------------------------------------------------------- dispatcher registrations
def _fake(rowptr, col, weight, t_rowptr, t_col, t_perm, t_weight, h, reduce="sum"):
    arg_shape = tuple(h.shape) if reduce == "max" else (0,)
    return torch.empty_like(h, memory_format=torch.contiguous_format), \
        h.new_empty(arg_shape, dtype=col.dtype)


def _fake_backward(grad, rowptr, col, weight, t_rowptr, t_col, t_perm, t_weight, h, arg, reduce,
                   need_h, need_weight):
    gh = grad.new_empty(tuple(grad.shape) if need_h else (0,))
    gw = grad.new_empty((col.shape[0],) if need_weight else (0,), dtype=stat_dtype(grad.dtype))
    return gh, gw


def _triton_forward(rowptr, col, weight, t_rowptr, t_col, t_perm, t_weight, h, reduce="sum"):
    checks, k = _kernels()
    rowptr, col, weight = contiguous(rowptr, col, weight)
    checks.check("spmm", csr=(rowptr, col, h.shape[0], None))
    return k.spmm(rowptr, col, weight, t_rowptr, t_col, t_perm, t_weight, h, reduce)


def _triton_backward(grad, rowptr, col, weight, t_rowptr, t_col, t_perm, t_weight, h, arg, reduce,
                     need_h, need_weight):
    checks, k = _kernels()
    rowptr, col, weight, t_rowptr, t_col, t_perm, t_weight = contiguous(
        rowptr, col, weight, t_rowptr, t_col, t_perm, t_weight)
    n = grad.shape[0]
    if need_h:
        checks.check("spmm_backward (transposed graph)", csr=(t_rowptr, t_col, n, t_perm))
    if need_weight:
        checks.check("spmm_backward", csr=(rowptr, col, n, None))
    return k.spmm_backward(grad, rowptr, col, weight, t_rowptr, t_col, t_perm, t_weight, h, arg,
                           reduce, need_h, need_weight)


if _ext.available:
    torch.library.register_fake("fastpicard::_spmm")(_fake)
    torch.library.register_fake("fastpicard::_spmm_backward")(_fake_backward)
    if _backend.triton_available():
        _backend.register_triton("_spmm", _triton_forward)
        _backend.register_triton("_spmm_backward", _triton_backward)


# ---------------------------------------------------------------- arguments
def check_graph(graph, op: str) -> None:
    if not isinstance(graph, Graph):
        raise TypeError(f"{op}: graph must be a fastpicard.Graph, got {type(graph).__name__}")


def graph_tensors(graph: Graph, dtype: torch.dtype):
    """The op arguments of a graph for `dtype` features: (rowptr, col, weight, t_rowptr, t_col,
    t_perm, t_weight), weights in the accumulation dtype (weight differentiably)."""
    w, tw = graph.weight, graph.t_weight
    acc = stat_dtype(dtype)
    if w is not None and w.dtype != acc:
        w, tw = w.to(acc), tw.to(acc)
    return graph.rowptr, graph.col, w, graph.t_rowptr, graph.t_col, graph.t_perm, tw


# ---------------------------------------------------------------- public API
def spmm(graph: Graph, h: torch.Tensor, reduce: str = "sum", *, backend=None) -> torch.Tensor:
    """Aggregate node features over the graph: ``out[i] = reduce_k w_k * h[src_k]`` over the
    edges k into node i (with the graph's normalised weights; "mean" divides the weighted sum
    by the number of entries, "max" takes the largest weighted message, 0 for nodes without
    edges). Differentiable in h and in the graph's weights.

    Args:
        graph: a :class:`fastpicard.Graph`.
        h: node features [num_nodes, F], float32/float16/bfloat16/float64, on the graph's device.
        reduce: "sum", "mean" or "max".
        backend: None (device decides), "cpp", "triton" or "reference".
    """
    check_graph(graph, "spmm")
    h = _backend.tensor("spmm", "h", h)
    if not isinstance(reduce, str):
        raise TypeError(f"spmm: reduce must be one of {REDUCES}, got {type(reduce).__name__}")
    args = graph_tensors(graph, h.dtype) + (h, reduce)
    route = _backend.resolve(backend, h.device, "spmm")
    if route == "dispatch":  # the op checks its arguments
        out, _ = torch.ops.fastpicard.spmm(*args)
    else:
        if _ext.available:  # the same checks as the op's
            torch.ops.fastpicard.spmm_check(*args)
        out, _ = _reference.spmm(*args)
    return out
