"""``fastpicard.ops.spmm``: sparse aggregation over a :class:`fastpicard.Graph`.

The op ``fastpicard::spmm`` is defined in C++ (schema, CPU kernel, autograd over the
transposed CSR); this module adds its CUDA kernel (Triton), its fake kernel, and the public
function that validates arguments, unpacks the Graph and picks the backend.
"""
from __future__ import annotations

import torch

from .. import _ext
from ..graph import Graph
from . import _backend
from . import reference as _reference
from .reference.picard_update import stat_dtype

REDUCES = ("sum", "mean", "max")
_FLOATS = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def _triton():
    from ..kernels import spmm as k  # lazily: triton is optional on CPU

    return k


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
    return _triton().spmm(rowptr, col, weight, t_rowptr, t_col, t_perm, t_weight, h, reduce)


def _triton_backward(grad, rowptr, col, weight, t_rowptr, t_col, t_perm, t_weight, h, arg, reduce,
                     need_h, need_weight):
    return _triton().spmm_backward(grad, rowptr, col, weight, t_rowptr, t_col, t_perm, t_weight,
                                   h, arg, reduce, need_h, need_weight)


if _ext.available:
    torch.library.register_fake("fastpicard::spmm")(_fake)
    torch.library.register_fake("fastpicard::spmm_backward")(_fake_backward)
    if _backend.triton_available():
        torch.library.impl("fastpicard::spmm", "CUDA")(_triton_forward)
        torch.library.impl("fastpicard::spmm_backward", "CUDA")(_triton_backward)


class _TritonDirect(torch.autograd.Function):
    """The Triton kernels on CPU tensors (interpreter), outside the dispatcher."""

    @staticmethod
    def forward(ctx, rowptr, col, weight, t_rowptr, t_col, t_perm, t_weight, h, reduce):
        out, arg = _triton_forward(rowptr, col, weight, t_rowptr, t_col, t_perm, t_weight, h,
                                   reduce)
        need_w = weight is not None and weight.requires_grad
        ctx.reduce = reduce
        ctx.save_for_backward(rowptr, col, weight, t_rowptr, t_col, t_perm, t_weight,
                              h if need_w else None, arg)
        ctx.mark_non_differentiable(arg)
        return out, arg

    @staticmethod
    def backward(ctx, grad, _grad_arg):
        rowptr, col, weight, t_rowptr, t_col, t_perm, t_weight, h, arg = ctx.saved_tensors
        need_h, need_w = ctx.needs_input_grad[7], ctx.needs_input_grad[2]
        gh, gw = _triton_backward(grad, rowptr, col, weight, t_rowptr, t_col, t_perm, t_weight, h,
                                  arg, ctx.reduce, need_h, need_w)
        return (None, None, gw if need_w else None, None, None, None, None,
                gh if need_h else None, None)


# ---------------------------------------------------------------- argument checks
def check_graph(graph, op: str) -> None:
    if not isinstance(graph, Graph):
        raise TypeError(f"{op}: graph must be a fastpicard.Graph, got {type(graph).__name__}")


def check_features(graph: Graph, t, name: str, op: str) -> None:
    """t must be a float tensor [num_nodes, F] on the graph's device."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{op}: {name} must be a Tensor, got {type(t).__name__}")
    if t.dtype not in _FLOATS:
        raise TypeError(f"{op}: {name} must be float32/float16/bfloat16/float64, got {t.dtype}")
    if t.dim() != 2 or t.shape[0] != graph.num_nodes:
        raise ValueError(f"{op}: {name} must have shape [num_nodes={graph.num_nodes}, features], "
                         f"got {tuple(t.shape)}")
    if t.device != graph.device:
        raise ValueError(f"{op}: {name} is on {t.device} but the graph is on {graph.device} "
                         "(use graph.to(device))")


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
        h: node features [num_nodes, F], float32/float16/bfloat16/float64.
        reduce: "sum", "mean" or "max".
        backend: None (device decides), "cpp", "triton" or "reference".
    """
    check_graph(graph, "spmm")
    check_features(graph, h, "h", "spmm")
    if reduce not in REDUCES:
        raise ValueError(f"spmm: reduce must be one of {REDUCES}, got {reduce!r}")
    args = graph_tensors(graph, h.dtype) + (h, reduce)
    route = _backend.resolve(backend, h.device, "spmm")
    if route == "dispatch":
        out, _ = torch.ops.fastpicard.spmm(*args)
    elif route == "triton-direct":
        out, _ = _TritonDirect.apply(*args)
    else:
        out, _ = _reference.spmm(*args)
    return out
