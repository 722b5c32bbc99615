"""``fastpicard.ops.spmm_update``: one fused GNN Picard step over a :class:`fastpicard.Graph`,

    z = dropout(act(Â·h + bias)),   x_new = α·x + (1-α)·z,   res = ‖x_new - x‖₂ per sample,

in one pass over the CSR rows. The op ``fastpicard::spmm_update`` is defined in C++ (schema,
CPU kernel, autograd over the transposed CSR); this module adds its CUDA kernel (Triton), its
fake kernel, and the public function that validates arguments, unpacks the Graph, draws the
dropout seed and picks the backend.
"""
from __future__ import annotations

import numbers

import torch

from .. import _ext
from . import _backend
from . import reference as _reference
from .reference.picard_update import stat_dtype
from .spmm import check_features, check_graph, graph_tensors

ACTS = ("relu", "identity", "tanh", "leaky_relu")


def _triton():
    from ..kernels import spmm_update as k  # lazily: triton is optional on CPU

    return k


# ---------------------------------------------------------------- dispatcher registrations
def _fake(rowptr, col, weight, t_rowptr, t_col, t_perm, t_weight, h, x, alpha, bias=None,
          act="relu",
          negative_slope=0.01, dropout=0.0, seed=None, batch=None, num_samples=1, frozen=None,
          return_norm=False, save_act=False):
    sd = stat_dtype(h.dtype)
    return (torch.empty_like(x, memory_format=torch.contiguous_format),
            h.new_empty((num_samples,), dtype=sd),
            h.new_empty((num_samples if return_norm else 0,), dtype=sd),
            h.new_empty(tuple(h.shape) if save_act else (0,)))


def _fake_backward(grad, act_out, rowptr, col, weight, t_rowptr, t_col, t_perm, t_weight, h,
                   alpha, act, negative_slope, dropout, seed, batch, frozen, need_h, need_x,
                   need_weight, need_bias):
    shape = tuple(grad.shape)
    return (grad.new_empty(shape if need_h else (0,)), grad.new_empty(shape if need_x else (0,)),
            grad.new_empty((col.shape[0],) if need_weight else (0,), dtype=stat_dtype(grad.dtype)),
            grad.new_empty((shape[1],) if need_bias else (0,)))


def _bounds_assert(batch, num_samples):
    # Device-side assert: no host sync on CUDA; raises at the next synchronisation.
    if batch is not None and batch.numel():
        ok = ((batch >= 0) & (batch < num_samples)).all()
        torch._assert_async(ok, "spmm_update: batch contains ids outside [0, num_samples)")


def _triton_forward(rowptr, col, weight, t_rowptr, t_col, t_perm, t_weight, h, x, alpha,
                    bias=None, act="relu", negative_slope=0.01, dropout=0.0, seed=None,
                    batch=None, num_samples=1, frozen=None, return_norm=False, save_act=False):
    _bounds_assert(batch, num_samples)
    return _triton().spmm_update(rowptr, col, weight, t_rowptr, t_col, t_perm, t_weight, h, x,
                                 alpha, bias, act, negative_slope, dropout, seed, batch,
                                 num_samples, frozen, return_norm, save_act)


def _triton_backward(*args):
    return _triton().spmm_update_backward(*args)


if _ext.available:
    torch.library.register_fake("fastpicard::spmm_update")(_fake)
    torch.library.register_fake("fastpicard::spmm_update_backward")(_fake_backward)
    if _backend.triton_available():
        torch.library.impl("fastpicard::spmm_update", "CUDA")(_triton_forward)
        torch.library.impl("fastpicard::spmm_update_backward", "CUDA")(_triton_backward)


class _TritonDirect(torch.autograd.Function):
    """The Triton kernels on CPU tensors (interpreter), outside the dispatcher; the backward
    runs the Triton backward kernels."""

    @staticmethod
    def forward(ctx, rowptr, col, weight, t_rowptr, t_col, t_perm, t_weight, h, x, alpha, bias,
                act, negative_slope, dropout, seed, batch, num_samples, frozen, return_norm):
        keep_act = act != "identity"
        out, res, norm, y = _triton_forward(rowptr, col, weight, t_rowptr, t_col, t_perm,
                                            t_weight, h, x, alpha, bias, act, negative_slope,
                                            dropout, seed, batch, num_samples, frozen,
                                            return_norm, keep_act)
        need_w = weight is not None and weight.requires_grad
        ctx.params = (alpha, act, negative_slope, dropout)
        ctx.save_for_backward(rowptr, col, weight, t_rowptr, t_col, t_perm, t_weight,
                              h if need_w else None, y if keep_act else None, seed, batch, frozen)
        ctx.mark_non_differentiable(res, norm)
        return out, res, norm

    @staticmethod
    def backward(ctx, grad, _grad_res, _grad_norm):
        (rowptr, col, weight, t_rowptr, t_col, t_perm, t_weight, h, y, seed, batch,
         frozen) = ctx.saved_tensors
        alpha, act, slope, dropout = ctx.params
        need = ctx.needs_input_grad
        gh, gx, gw, gb = _triton_backward(grad, y, rowptr, col, weight, t_rowptr, t_col, t_perm,
                                          t_weight, h, alpha, act, slope, dropout, seed, batch,
                                          frozen, need[7], need[8], need[2], need[10])
        grads = [None] * 19
        grads[2], grads[7], grads[8], grads[10] = (gw if need[2] else None,
                                                   gh if need[7] else None,
                                                   gx if need[8] else None,
                                                   gb if need[10] else None)
        return tuple(grads)


# ---------------------------------------------------------------- public API
def _float_arg(v, name):
    if isinstance(v, torch.Tensor):
        if v.dim() != 0 or v.requires_grad:
            raise TypeError(f"spmm_update: a tensor {name} must be 0-dim and need no grad")
        return float(v)
    if isinstance(v, numbers.Real) and not isinstance(v, bool):
        return float(v)
    raise TypeError(f"spmm_update: {name} must be a float, got {type(v).__name__}")


def draw_seed(generator, device) -> torch.Tensor:
    """The dropout key of one call: int64 [2] (seed, offset) in [0, 2^31), drawn from
    ``generator`` (default: the global generator of ``device``, set by torch.manual_seed)."""
    return torch.randint(0, 2**31, (2,), dtype=torch.int64, device=device, generator=generator)


def _check(graph, h, x, alpha, bias, act, negative_slope, dropout, generator, batch, num_samples,
           frozen):
    op = "spmm_update"
    check_graph(graph, op)
    check_features(graph, h, "h", op)
    check_features(graph, x, "x", op)
    if x.shape != h.shape:
        raise ValueError(f"{op}: x has shape {tuple(x.shape)} but h has shape {tuple(h.shape)}")
    if x.dtype != h.dtype:
        raise TypeError(f"{op}: x has dtype {x.dtype} but h has dtype {h.dtype}")
    if not 0.0 <= alpha < 1.0:
        raise ValueError(f"{op}: alpha must lie in [0, 1), got {alpha}")
    if bias is not None:
        if not isinstance(bias, torch.Tensor):
            raise TypeError(f"{op}: bias must be a Tensor, got {type(bias).__name__}")
        if bias.dtype != h.dtype:
            raise TypeError(f"{op}: bias has dtype {bias.dtype} but h has dtype {h.dtype}")
        if bias.shape != (h.shape[1],):
            raise ValueError(f"{op}: bias must have shape [{h.shape[1]}], got {tuple(bias.shape)}")
        if bias.device != h.device:
            raise ValueError(f"{op}: bias is on {bias.device} but h is on {h.device}")
    if act not in ACTS:
        raise ValueError(f"{op}: act must be one of {ACTS}, got {act!r}")
    if not (negative_slope >= 0.0 and negative_slope < float("inf")):
        raise ValueError(f"{op}: negative_slope must be finite and >= 0, got {negative_slope}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"{op}: dropout must lie in [0, 1), got {dropout}")
    if generator is not None:
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"{op}: generator must be a torch.Generator, got "
                            f"{type(generator).__name__}")
        if generator.device.type != h.device.type:
            raise ValueError(f"{op}: generator is on {generator.device} but h is on {h.device}")
    if batch is not None:
        if not isinstance(batch, torch.Tensor) or batch.dtype != torch.int64:
            raise TypeError(f"{op}: batch must be an int64 Tensor, got "
                            f"{getattr(batch, 'dtype', type(batch).__name__)}")
        if batch.shape != (h.shape[0],):
            raise ValueError(f"{op}: batch must have shape [{h.shape[0]}] (one id per node), got "
                             f"{tuple(batch.shape)}")
        if batch.device != h.device:
            raise ValueError(f"{op}: batch is on {batch.device} but h is on {h.device}")
        if num_samples < 0:
            raise ValueError(f"{op}: num_samples must be >= 0, got {num_samples}")
    elif num_samples != 1:
        raise ValueError(f"{op}: num_samples={num_samples} needs a batch vector")
    if frozen is not None:
        if not isinstance(frozen, torch.Tensor) or frozen.dtype != torch.bool:
            raise TypeError(f"{op}: frozen must be a bool Tensor, got "
                            f"{getattr(frozen, 'dtype', type(frozen).__name__)}")
        if frozen.shape != (num_samples,):
            raise ValueError(f"{op}: frozen must have shape [num_samples={num_samples}], got "
                             f"{tuple(frozen.shape)}")
        if frozen.device != h.device:
            raise ValueError(f"{op}: frozen is on {frozen.device} but h is on {h.device}")


def spmm_update(graph, h, x, alpha, *, bias=None, act="relu", negative_slope=0.01, dropout=0.0,
                generator=None, batch=None, num_samples=None, frozen=None, return_norm=False,
                backend=None):
    """One smoothed Picard step of a GCN-style layer, fused:
    ``x_new = alpha*x + (1-alpha)*dropout(act(Â·h + bias))`` and its residual.

    Args:
        graph: a :class:`fastpicard.Graph` (Â = its normalised adjacency).
        h: transformed features ``x·W`` [num_nodes, F] (the GEMM stays with BLAS/cuBLAS).
        x: current iterate [num_nodes, F], same dtype as h.
        alpha: smoothing in [0, 1).
        bias: optional [F], added after aggregation.
        act: "relu", "identity", "tanh" or "leaky_relu" (slope ``negative_slope`` >= 0).
        dropout: probability of zeroing an element of act(...) (training-mode dropout inside
            the iteration, kept values scaled by 1/(1-p)). The mask is a hash of a key drawn
            from ``generator`` (reproducible under torch.manual_seed), the row and the
            feature; the backward regenerates it. 0 (the default) disables it.
        batch: int64 [num_nodes] sample id per node (default: the graph's batch vector).
        num_samples: number of samples (default: the graph's num_graphs, or batch.max()+1).
        frozen: optional bool [num_samples]; frozen samples keep x (x_new = x, residual 0).
        return_norm: also return ``‖x_new‖₂`` per sample.
        backend: None (device decides), "cpp", "triton" or "reference".

    Returns:
        ``(x_new, res)`` or ``(x_new, res, norm)``; res/norm are float32 (float64 for float64
        data) per sample and carry no gradient. x_new is differentiable in h, x, bias and
        the graph's weights.
    """
    alpha = _float_arg(alpha, "alpha")
    negative_slope = _float_arg(negative_slope, "negative_slope")
    dropout = _float_arg(dropout, "dropout")
    if batch is None:
        batch = getattr(graph, "batch", None)
        if num_samples is None:
            num_samples = getattr(graph, "num_graphs", 1)
    elif num_samples is None:
        num_samples = (int(batch.max()) + 1 if batch.numel() else 0) if isinstance(
            batch, torch.Tensor) and batch.dtype == torch.int64 else 1
    _check(graph, h, x, alpha, bias, act, negative_slope, dropout, generator, batch, num_samples,
           frozen)
    route = _backend.resolve(backend, h.device, "spmm_update")
    if route == "reference" and batch is not None and batch.numel():
        lo, hi = int(batch.min()), int(batch.max())
        if lo < 0 or hi >= num_samples:
            raise IndexError(f"spmm_update: batch contains id {lo if lo < 0 else hi}, outside "
                             f"[0, num_samples={num_samples})")
    seed = draw_seed(generator, h.device) if dropout > 0 else None
    args = graph_tensors(graph, h.dtype) + (h, x, alpha, bias, act, negative_slope, dropout,
                                            seed, batch, num_samples, frozen, return_norm)
    if route == "dispatch":
        x_new, res, norm, _ = torch.ops.fastpicard.spmm_update(*args, False)
    elif route == "triton-direct":
        x_new, res, norm = _TritonDirect.apply(*args)
    else:
        x_new, res, norm, _ = _reference.spmm_update(*args)
    return (x_new, res, norm) if return_norm else (x_new, res)
