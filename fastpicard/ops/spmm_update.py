"""``fastpicard.ops.spmm_update``: one fused GNN Picard step over a :class:`fastpicard.Graph`,

    z = dropout(act(Â·h + bias)),   x_new = α·x + (1-α)·z,   res = ‖x_new - x‖₂ per sample,

in one pass over the CSR rows. The ops ``fastpicard::spmm_update`` / ``spmm_update_backward``
are defined in C++: their only kernel checks the arguments and calls the internal
``_spmm_update`` / ``_spmm_update_backward`` (CPU kernels and autograd over the transposed CSR
in C++). This module registers the internal ops' CUDA kernels (Triton) and fake kernels, and
the public function, which unpacks the Graph, draws the dropout seed and picks the backend.
"""
from __future__ import annotations

import torch

from .. import _ext
from . import _backend
from . import reference as _reference
from .reference.picard_update import stat_dtype
from .spmm import check_graph, contiguous, graph_tensors

ACTS = ("relu", "identity", "tanh", "leaky_relu")


def _kernels():
    from ..kernels import checks, spmm_update  # lazily: triton is optional on CPU

    return checks, spmm_update


# ---------------------------------------------------------------- dispatcher registrations
def _fake(rowptr, col, weight, t_rowptr, t_col, t_perm, t_weight, h, x, alpha, bias=None,
          act="relu", negative_slope=0.01, dropout=0.0, seed=None, batch=None, num_samples=1,
          frozen=None, return_norm=False, save_act=False):
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


def _check_seed(checks, seed, dropout, what):
    if dropout > 0:  # the kernels hash the seed's two words as 31-bit values
        checks.check(what, ids=(seed, 2 ** 31))


def _triton_forward(rowptr, col, weight, t_rowptr, t_col, t_perm, t_weight, h, x, alpha,
                    bias=None, act="relu", negative_slope=0.01, dropout=0.0, seed=None,
                    batch=None, num_samples=1, frozen=None, return_norm=False, save_act=False):
    checks, k = _kernels()
    rowptr, col, weight, bias, seed, batch, frozen = contiguous(
        rowptr, col, weight, bias, seed, batch, frozen)
    checks.check("spmm_update", csr=(rowptr, col, h.shape[0], None),
                 ids=None if batch is None else (batch, num_samples))
    _check_seed(checks, seed, dropout, "spmm_update: seed")
    return k.spmm_update(rowptr, col, weight, t_rowptr, t_col, t_perm, t_weight, h, x, alpha,
                         bias, act, negative_slope, dropout, seed, batch, num_samples, frozen,
                         return_norm, save_act)


def _triton_backward(grad, act_out, rowptr, col, weight, t_rowptr, t_col, t_perm, t_weight, h,
                     alpha, act, negative_slope, dropout, seed, batch, frozen, need_h, need_x,
                     need_weight, need_bias):
    checks, k = _kernels()
    (rowptr, col, weight, t_rowptr, t_col, t_perm, t_weight, seed, batch,
     frozen) = contiguous(rowptr, col, weight, t_rowptr, t_col, t_perm, t_weight, seed, batch,
                          frozen)
    n, what = grad.shape[0], "spmm_update_backward"
    ids = (batch, frozen.shape[0]) if batch is not None and frozen is not None else None
    checks.check(what, csr=(t_rowptr, t_col, n, t_perm) if need_h else None, ids=ids)
    if need_weight:
        checks.check(what, csr=(rowptr, col, n, None))
    _check_seed(checks, seed, dropout, f"{what}: seed")
    return k.spmm_update_backward(grad, act_out, rowptr, col, weight, t_rowptr, t_col, t_perm,
                                  t_weight, h, alpha, act, negative_slope, dropout, seed, batch,
                                  frozen, need_h, need_x, need_weight, need_bias)


if _ext.available:
    torch.library.register_fake("fastpicard::_spmm_update")(_fake)
    torch.library.register_fake("fastpicard::_spmm_update_backward")(_fake_backward)
    if _backend.triton_available():
        _backend.register_triton("_spmm_update", _triton_forward)
        _backend.register_triton("_spmm_update_backward", _triton_backward)


# ---------------------------------------------------------------- public API
def draw_seed(generator, device) -> torch.Tensor:
    """The dropout key of one call: int64 [2] (seed, offset) in [0, 2^31), drawn from
    ``generator`` (default: the global generator of ``device``, set by torch.manual_seed)."""
    return torch.randint(0, 2**31, (2,), dtype=torch.int64, device=device, generator=generator)


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
        num_samples: number of samples (default: the graph's num_graphs, or batch.max()+1), at
            most the number of nodes.
        frozen: optional bool [num_samples]; frozen samples keep x (x_new = x, residual 0).
        return_norm: also return ``‖x_new‖₂`` per sample.
        backend: None (device decides), "cpp", "triton" or "reference".

    Returns:
        ``(x_new, res)`` or ``(x_new, res, norm)``; res/norm are float32 (float64 for float64
        data) per sample and carry no gradient. x_new is differentiable in h, x, bias and
        the graph's weights.
    """
    op = "spmm_update"
    check_graph(graph, op)
    h, x = _backend.tensor(op, "h", h), _backend.tensor(op, "x", x)
    bias = _backend.tensor(op, "bias", bias, optional=True)
    batch = _backend.tensor(op, "batch", batch, optional=True)
    frozen = _backend.tensor(op, "frozen", frozen, optional=True)
    alpha = _backend.real(op, "alpha", alpha)
    negative_slope = _backend.real(op, "negative_slope", negative_slope)
    dropout = _backend.real(op, "dropout", dropout)
    if not isinstance(act, str):
        raise TypeError(f"{op}: act must be one of {ACTS}, got {type(act).__name__}")
    if generator is not None:
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"{op}: generator must be a torch.Generator, got "
                            f"{type(generator).__name__}")
        if generator.device.type != h.device.type:
            raise ValueError(f"{op}: generator is on {generator.device} but h is on {h.device}")
    if batch is None:
        batch = graph.batch
        if num_samples is None:
            num_samples = graph.num_graphs
    elif num_samples is None:
        num_samples = (int(batch.max()) + 1 if batch.numel() else 0) if (
            batch.dtype == torch.int64) else 1
    num_samples = _backend.integer(op, "num_samples", num_samples)
    route = _backend.resolve(backend, h.device, op)
    seed = draw_seed(generator, h.device) if 0 < dropout < 1 else None
    args = graph_tensors(graph, h.dtype) + (h, x, alpha, bias, act, negative_slope, dropout,
                                            seed, batch, num_samples, frozen, return_norm)
    if route == "dispatch":  # the op checks its arguments
        x_new, res, norm, _ = torch.ops.fastpicard.spmm_update(*args, False)
    else:
        if _ext.available:  # the same checks as the op's
            torch.ops.fastpicard.spmm_update_check(*args, False)
        x_new, res, norm, _ = _reference.spmm_update(*args)
    return (x_new, res, norm) if return_norm else (x_new, res)
