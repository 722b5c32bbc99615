"""``fastpicard.picard_gcn``: the Picard iteration of a GCN-style layer with the whole loop in
C++ (at::mm + the fused ``spmm_update`` per step, no Python per iteration)."""
from __future__ import annotations

import time
import warnings

import torch

from .. import _ext
from ..graph import Graph
from ..ops import _backend
from ..ops.spmm import check_graph, graph_tensors
from ..ops.spmm_update import ACTS, spmm_update
from . import backward as _backward
from .picard import DivergenceError, _config, _diverge_message, _real, picard
from .stats import PicardStats


def _check(graph, x0, weight, bias, act, dropout, backward):
    """What the ops cannot see (the tensors' shapes, dtypes and devices are checked by
    picard_gcn_loop and spmm_update themselves)."""
    op = "picard_gcn"
    check_graph(graph, op)
    _backend.tensor(op, "x0", x0)
    _backend.tensor(op, "weight", weight)
    _backend.tensor(op, "bias", bias, optional=True)
    if act not in ACTS:
        raise ValueError(f"{op}: act must be one of {ACTS}, got {act!r}")
    if dropout > 0 and backward != "unroll":
        raise ValueError(f"{op}: dropout > 0 makes the layer random, so it has no fixed point "
                         f"to differentiate implicitly: use backward='unroll', got {backward!r}")


def picard_gcn(graph: Graph, x0, weight, *, bias=None, act="relu", negative_slope=0.01,
               dropout=0.0, alpha=0.5, tol=1e-4, max_iter=50, stop="abs", check_every=None,
               backward="unroll", phantom_steps=5, divergence_factor=1e3, on_diverge="warn"):
    """Solves ``x = dropout(act(Â (x W) + b))`` by ``x_{k+1} = alpha*x_k + (1-alpha)*T(x_k)``
    with the loop in C++ (one BLAS GEMM and one fused graph kernel per step).

    Args:
        graph: a :class:`fastpicard.Graph`; with a ``batch`` vector every graph is a sample
            (per-graph early exit, as ``fastpicard.picard(..., batch=graph.batch)``).
        x0: [num_nodes, F] starting iterate (e.g. the encoder's output).
        weight: [F, F], applied as ``x @ weight``; bias: optional [F].
        act, negative_slope, dropout: as in :func:`fastpicard.ops.spmm_update` (dropout inside
            every step, training mode; needs ``backward="unroll"``).
        alpha, tol, max_iter, stop, check_every, backward, phantom_steps, divergence_factor,
        on_diverge: as in :func:`fastpicard.picard`.

    Returns:
        ``(x_star, stats)`` like :func:`fastpicard.picard`.
    """
    negative_slope, dropout = _real("negative_slope", negative_slope), _real("dropout", dropout)
    _check(graph, x0, weight, bias, act, dropout, backward)

    def fn(x):  # T(x) by the same fused kernel (alpha = 0 returns z itself)
        return spmm_update(graph, x @ weight, x, 0.0, bias=bias, act=act,
                           negative_slope=negative_slope, dropout=dropout)[0]

    # pure-torch fallback (no extension, or higher_order_grads(): the C++ loop's graph kernels
    # are first-order only): the generic solver on the same T
    if not _ext.available or _backend.higher_order_enabled():
        return picard(fn, x0, alpha=alpha, tol=tol, max_iter=max_iter, stop=stop,
                      batch=graph.batch, check_every=check_every, backward=backward,
                      phantom_steps=phantom_steps, divergence_factor=divergence_factor,
                      on_diverge=on_diverge)
    cfg = _config(fn, x0, alpha, tol, max_iter, stop, None, check_every, backward, phantom_steps,
                  "picard", 5, 1e-4, divergence_factor, on_diverge, False)
    if graph.batch is not None:
        cfg.batch, cfg.num_samples = graph.batch, graph.num_graphs
    args = graph_tensors(graph, x0.dtype) + (
        x0, weight, bias, act, negative_slope, dropout, cfg.alpha, cfg.batch, cfg.num_samples,
        cfg.tol, cfg.stop == "rel", cfg.max_iter, cfg.divergence_factor, cfg.check_every,
        cfg.on_diverge == "raise")

    if cfg.backward == "unroll" or not torch.is_grad_enabled():
        x_star, stats = _run(args, cfg)
    else:
        with torch.no_grad():
            x_star, stats = _run(args, cfg)
        x_star = (_backward.implicit(fn, x_star, cfg, stats) if cfg.backward == "implicit"
                  else _backward.phantom(fn, x_star, cfg, stats))
    return x_star, stats


def _run(args, cfg):
    t0 = time.perf_counter()
    x, iters, abs_r, rel_r, conv, div, trace, steps = torch.ops.fastpicard.picard_gcn_loop(*args)
    stats = PicardStats(iterations=iters, abs_residual=abs_r, rel_residual=rel_r, trace=trace,
                        converged=conv, diverged=div, time=time.perf_counter() - t0, steps=steps,
                        stop=cfg.stop, tol=cfg.tol)
    if div.any():
        message = _diverge_message(div, cfg.num_samples, steps)
        if cfg.on_diverge == "raise":
            raise DivergenceError(message)
        warnings.warn(message, RuntimeWarning, stacklevel=3)
    return x, stats
