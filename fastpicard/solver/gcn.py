"""``fastpicard.picard_gcn``: the Picard iteration of a GCN-style layer with the whole loop in
C++ (at::mm + the fused ``spmm_update`` per step, no Python per iteration)."""
from __future__ import annotations

import dataclasses
import time

import torch

from .. import _ext
from ..graph import Graph
from ..ops import _backend
from ..ops.spmm import check_graph, graph_tensors
from ..ops.spmm_update import ACTS, spmm_update
from . import backward as _backward
from .options import _real, options
from .picard import run
from .solve import fixed, report
from .stats import PicardStats


def _check(graph, x0, weight, bias, act, inject=None):
    """What the ops cannot see (the tensors' shapes, dtypes and devices are checked by
    picard_gcn_loop and spmm_update themselves)."""
    op = "picard_gcn"
    check_graph(graph, op)
    _backend.tensor(op, "x0", x0)
    _backend.tensor(op, "weight", weight)
    _backend.tensor(op, "bias", bias, optional=True)
    _backend.tensor(op, "inject", inject, optional=True)
    if act not in ACTS:
        raise ValueError(f"{op}: act must be one of {ACTS}, got {act!r}")


def picard_gcn(graph: Graph, x0, weight, *, bias=None, act="relu", negative_slope=0.01,
               dropout=0.0, batch=None, inject=None, **solver_opts):
    """Solves ``x = dropout(act(Â (x W + inject) + b))`` by ``x_{k+1} = alpha*x_k + (1-alpha)*T(x_k)``
    with the loop in C++ (one BLAS GEMM and one fused graph kernel per step).

    Args:
        graph: a :class:`fastpicard.Graph`; with a ``batch`` vector every graph is a sample
            (per-graph early exit, as ``fastpicard.picard(..., batch=graph.batch)``).
        x0: [num_nodes, F] starting iterate (e.g. the encoder's output).
        weight: [F, F], applied as ``x @ weight``; bias: optional [F].
        act, negative_slope, dropout: as in :func:`fastpicard.ops.spmm_update` (dropout inside
            every step, training mode; needs ``backward="unroll"``).
        batch: int64 [num_nodes] sample ids, default the graph's own.
        inject: optional [num_nodes, F] constant term added to ``x @ weight`` every step (one
            ``addmm``): input injection ``(x + f) W = x W + f W`` with ``inject = f W``, as
            the contractive PIGN iterates it. Gradients flow into it.
        **solver_opts: ``alpha``, ``tol``, ``max_iter``, ... as in :func:`fastpicard.picard`
            (same defaults); ``tol=None`` is the fixed schedule. ``solver="anderson"`` and
            ``dist_sync`` run the generic solver loop on the same fused step.

    Returns:
        ``(x_star, stats)`` like :func:`fastpicard.picard`.
    """
    negative_slope, dropout = _real("negative_slope", negative_slope), _real("dropout", dropout)
    _check(graph, x0, weight, bias, act, inject)
    opts = layer_options(graph, x0, batch, solver_opts)
    if dropout > 0 and opts.backward != "unroll":
        raise ValueError(f"picard_gcn: dropout > 0 makes the layer random, so it has no fixed "
                         f"point to differentiate implicitly: use backward='unroll', got "
                         f"{opts.backward!r}")
    return solve_layer(graph, x0, weight, bias, act, negative_slope, dropout, opts, inject)


def layer_options(graph, x0, batch, solver_opts):
    """The validated options of a graph layer's solve; the samples default to the graph's
    (its num_graphs: no device read)."""
    if batch is None or batch is graph.batch:
        opts = options(x0, **solver_opts)
        if graph.batch is not None:
            opts = dataclasses.replace(opts, batch=graph.batch, num_samples=graph.num_graphs)
        return opts
    return options(x0, batch=batch, **solver_opts)


def solve_layer(graph, x0, weight, bias, act, negative_slope, dropout, opts, inject=None):
    """The solve of ``T(x) = dropout(act(Â (x @ weight + inject) + bias))`` with validated
    options: every step one GEMM and one fused ``spmm_update`` pass (smoothing, residual and
    norm included); the loop in C++ wherever it supports the options."""
    kw = dict(bias=bias, act=act, negative_slope=negative_slope, dropout=dropout,
              batch=opts.batch, num_samples=opts.num_samples)

    def lin(x):
        return x @ weight if inject is None else torch.addmm(inject, x, weight)

    if opts.fixed:
        return fixed(lambda x, norm: spmm_update(graph, lin(x), x, opts.alpha, **kw,
                                                 return_norm=norm), x0, opts)

    def fn(x):  # T(x) by the same fused kernel (alpha = 0 returns z itself)
        return spmm_update(graph, lin(x), x, 0.0, **kw)[0]

    # The generic loop on the same T where the C++ loop does not apply: no extension,
    # higher_order_grads() (its graph kernels are first-order only), Anderson, dist_sync.
    if (not _ext.available or _backend.higher_order_enabled() or opts.solver != "picard"
            or opts.dist_sync):
        return run(fn, x0, opts)
    args = graph_tensors(graph, x0.dtype) + (
        x0, weight, inject, bias, act, negative_slope, dropout, opts.alpha, opts.batch,
        opts.num_samples, opts.tol, opts.stop == "rel", opts.max_iter, opts.divergence_factor,
        opts.check_every, opts.on_diverge == "raise")
    if opts.backward == "unroll" or not torch.is_grad_enabled():
        return _run(args, opts)
    with torch.no_grad():
        x_star, stats = _run(args, opts)
    return _backward.attach(fn, x_star, opts, stats), stats


def _run(args, opts):
    t0 = time.perf_counter()
    x, iters, abs_r, rel_r, conv, div, trace, steps = torch.ops.fastpicard.picard_gcn_loop(*args)
    stats = PicardStats(iterations=iters, abs_residual=abs_r, rel_residual=rel_r, trace=trace,
                        converged=conv, diverged=div, time=time.perf_counter() - t0, steps=steps,
                        stop=opts.stop, tol=opts.tol)
    report(stats, opts, int(div.sum()))
    return x, stats
