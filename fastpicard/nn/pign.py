"""PIGN: Picard-iterative graph network (seed paper, Algorithm 2; authors' iterativeGCN).

encoder Linear -> act -> dropout -> Picard iteration of ONE shared message-passing layer,
``new = dropout(act(conv(x)))``, ``x = α·x + (1-α)·new`` -> decoder Linear.

With a GCN layer (PyG ``GCNConv`` with its default normalisation, or fastpicard's ``GCNLayer``)
each step runs as ``h = x·Wᵀ`` (BLAS) plus ONE fused pass ``fastpicard.ops.spmm_update``
(aggregation, bias, activation, dropout, smoothing and residual) on a cached
``fastpicard.Graph`` with PyG's ``gcn_norm`` weights.

``lipschitz=L`` (0 < L < 1) makes the iteration provably convergent: see :class:`PIGN`.
"""
from __future__ import annotations

import contextlib
import numbers

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from ..graph import Graph
from .gat import OPTIONS as GAT_OPTIONS, GATLayer
from ._solve import (check_count, check_fraction, check_solver_opts, check_tol, iterate,
                     iterate_gcn)

ACTS = {
    "relu": F.relu,
    "identity": lambda x: x,
    "tanh": torch.tanh,
    "leaky_relu": F.leaky_relu,
}
CONVS = ("gcn", "gat", "sage")


def _pyg(what: str):
    try:
        import torch_geometric.nn as pyg_nn
    except ImportError as e:
        raise ImportError(f"PIGN: conv={what!r} needs torch_geometric "
                          "(pip install torch_geometric)") from e
    return pyg_nn


def _make_conv(conv: str, hidden: int, dropout: float, kwargs: dict) -> nn.Module:
    name = conv.lower()
    if name == "gcn":
        try:
            from torch_geometric.nn import GCNConv
        except ImportError:  # same parameters and maths, no PyG needed
            from .gcn import GCNLayer as GCNConv
        return GCNConv(hidden, hidden, **kwargs)
    if name == "gat":  # the authors' iterativeGAT: 8 heads averaged, attention dropout
        kw = {"heads": 8, "concat": False, "dropout": dropout, **kwargs}
        if set(kw) <= set(GAT_OPTIONS):  # PyG's GATConv, aggregated on fastpicard's spmm
            return GATLayer(hidden, hidden, **kw)
        return _pyg(conv).GATConv(hidden, hidden, **kw)  # edge_dim, residual, ...
    if name == "sage":
        return _pyg(conv).SAGEConv(hidden, hidden, **kwargs)
    raise ValueError(f"PIGN: conv must be one of {CONVS} or a message-passing module, "
                     f"got {conv!r}")


def fusable_gcn(conv: nn.Module) -> bool:
    """Whether conv's step is exactly ``act(Â·(x Wᵀ) + b)`` with PyG's gcn_norm Â."""
    from .gcn import GCNLayer

    if isinstance(conv, GCNLayer):
        return True
    try:
        from torch_geometric.nn import GCNConv
    except ImportError:
        return False
    return (type(conv) is GCNConv and conv.normalize and not conv.improved
            and conv.add_self_loops and getattr(conv.lin, "bias", None) is None
            and conv.flow == "source_to_target" and conv.aggr == "add"
            and not isinstance(conv.lin.weight, nn.parameter.UninitializedParameter))


def _widths(conv: nn.Module):
    """(in, out) feature widths a PyG-style conv declares, None where it does not say."""
    cin = getattr(conv, "in_channels", None)
    cout = getattr(conv, "out_channels", None)
    if isinstance(cin, (tuple, list)):
        cin = cin[0] if cin[0] == cin[-1] else -2  # bipartite widths: never a PIGN layer
    if isinstance(cout, int) and getattr(conv, "concat", False) and hasattr(conv, "heads"):
        cout = cout * conv.heads
    return (cin if isinstance(cin, int) and cin != -1 else None,
            cout if isinstance(cout, int) else None)


class PIGN(nn.Module):
    """``PIGN(in_channels, hidden_channels, out_channels, *, conv="gcn", alpha=0.5, max_iter=8,
    tol=None, eval_max_iter=None, dropout=0.5, act="relu", conv_kwargs=None, fused=None,
    lipschitz=None, **solver_opts)``.

    Args:
        conv: "gcn", "gat", "sage", or any message-passing layer instance mapping
            ``hidden_channels`` to ``hidden_channels`` (PyG GCNConv, GATConv, SAGEConv, ...),
            called as ``conv(x, edge_index)`` and used as is.
        alpha: smoothing α in [0, 1): ``x = α·x + (1-α)·new``.
        max_iter: iterations in training (and evaluation unless ``eval_max_iter``).
        tol: None runs exactly ``max_iter`` iterations (the paper's fixed schedule); a float
            stops early once the residual ``‖x_{k+1} - x_k‖`` falls below it (per graph when a
            ``batch`` vector is given).
        eval_max_iter: iterations in eval mode (evaluation may iterate longer than training).
        dropout: dropout after the encoder and inside every iteration (training only).
        act: "relu", "identity", "tanh", "leaky_relu" or a callable.
        conv_kwargs: extra constructor arguments for a string ``conv``.
        fused: None (default) runs GCN layers on the fused ``spmm_update`` path whenever it
            applies (string act, fused kernels built); False never; True requires it.
        lipschitz: None (the paper's PIGN) or a float in (0, 1): the contractive PIGN. The
            iterated map becomes ``T(x) = act(conv(x + f))`` with ``f`` the encoder output
            (input injection: the fixed point depends on the input, not on where the
            iteration starts), without dropout inside the iteration (dropout is applied to
            ``f``; a dropout mask rescales by ``1/(1-p)`` and would break the bound in
            training), and every linear weight of ``conv`` is capped in spectral norm by
            :func:`fastpicard.contractive`. With a GCN conv (``‖Â‖₂ ≤ 1``) and a 1-Lipschitz
            act, ``Lip(T) ≤ lipschitz``, so the smoothed step contracts by
            ``alpha + (1-alpha)·lipschitz < 1``: the iteration converges to a unique fixed
            point from any start (Banach), ``tol`` exits early and ``backward="implicit"``
            differentiates that fixed point. GAT and SAGE convs get the same weight cap, but
            attention and mean aggregation are not 1-Lipschitz in general: there the bound is
            not guaranteed (measure it with :func:`fastpicard.lipschitz_estimate`). The GCN
            conv stays on the fused path (the injection rides in the GEMM:
            ``h = f·Wᵀ + x·Wᵀ`` as one ``addmm``).
        **solver_opts: passed to ``fastpicard.picard`` (``backward``, ``solver``,
            ``check_every``, ...).

    ``forward(x, edge_index, batch=None)`` returns the decoder's output per node; on the fused
    path ``edge_index`` may also be a prebuilt ``fastpicard.Graph``, used as is (the explicit
    way to reuse one: no per-call comparison or host read; needed under ``torch.compile``,
    where building one reads the graph's size from the device), also a reordered one
    (``Graph.reorder``): features are permuted in and outputs back, so results come in the
    caller's node order. For an edge_index tensor the Graph is rebuilt whenever its values
    change (compared with a copy every call). ``last_stats`` holds the solver statistics of
    the latest call.
    """

    def __init__(self, in_channels: int, hidden_channels: int, out_channels: int, *,
                 conv="gcn", alpha: float = 0.5, max_iter: int = 8, tol=None,
                 eval_max_iter: int | None = None, dropout: float = 0.5, act="relu",
                 conv_kwargs: dict | None = None, fused: bool | None = None,
                 lipschitz: float | None = None, **solver_opts):
        super().__init__()
        for name, v in (("in_channels", in_channels), ("hidden_channels", hidden_channels),
                        ("out_channels", out_channels)):
            check_count("PIGN", name, v)
        self.alpha = check_fraction("PIGN", "alpha", alpha)
        self.max_iter = check_count("PIGN", "max_iter", max_iter)
        self.eval_max_iter = check_count("PIGN", "eval_max_iter", eval_max_iter, optional=True)
        self.tol = check_tol("PIGN", tol)
        self.dropout = check_fraction("PIGN", "dropout", dropout)
        if isinstance(act, str):
            if act not in ACTS:
                raise ValueError(f"PIGN: act must be one of {tuple(ACTS)} or a callable, "
                                 f"got {act!r}")
        elif not callable(act):
            raise TypeError(f"PIGN: act must be a string or a callable, got {type(act).__name__}")
        self.act = act
        self.solver_opts = check_solver_opts("PIGN", solver_opts, self.tol)

        if isinstance(conv, str):
            conv = _make_conv(conv, hidden_channels, self.dropout, dict(conv_kwargs or {}))
        elif isinstance(conv, nn.Module):
            if conv_kwargs:
                raise TypeError("PIGN: conv_kwargs only applies to a string conv")
            cin, cout = _widths(conv)
            if (cin is not None and cin != hidden_channels) or (
                    cout is not None and cout != hidden_channels):
                raise ValueError(f"PIGN: conv maps {cin} -> {cout} features, but the iterated "
                                 f"layer must map hidden_channels={hidden_channels} to itself")
        else:
            raise TypeError(f"PIGN: conv must be one of {CONVS} or an nn.Module, got "
                            f"{type(conv).__name__}")
        self.hidden_channels = hidden_channels
        self.encoder = nn.Linear(in_channels, hidden_channels)
        self.conv = conv
        self.decoder = nn.Linear(hidden_channels, out_channels)
        if fused not in (None, True, False):
            raise TypeError(f"PIGN: fused must be None, True or False, got {fused!r}")
        if fused and not self._can_fuse():
            raise ValueError("PIGN: fused=True needs a GCN conv (GCNConv with default "
                             "normalisation, or GCNLayer), a string act, and fastpicard's fused "
                             "graph kernels (fastpicard.Graph / ops.spmm_update)")
        self.fused = fused
        self.lipschitz = _check_lipschitz(lipschitz)
        if self.lipschitz is not None:
            from ..contraction import contractive

            contractive(self.conv, self.lipschitz)
        self.last_stats = None
        self._graph_cache = None  # (a copy of the last edge_index, its Graph)

    def _can_fuse(self) -> bool:
        return isinstance(self.act, str) and fusable_gcn(self.conv)

    @property
    def uses_fused_path(self) -> bool:
        return self.fused is not False and self._can_fuse()

    def _graph(self, edge_index, num_nodes: int, dtype: torch.dtype):
        """The fastpicard.Graph to iterate on. A Graph passed in is used as is: build one once
        to reuse it explicitly (no check per call, no host read; needed under torch.compile).
        For an edge_index tensor the previous call's Graph is reused only while edge_index
        holds the same values, compared with a private copy (one pass over the indices, and a
        host read): edits through .data, numpy or inference mode, which bump no version
        counter, are seen too. Weights in float64 for float64 features."""
        if isinstance(edge_index, Graph):
            if edge_index.num_nodes != num_nodes:
                raise ValueError(f"PIGN: the Graph has {edge_index.num_nodes} nodes but x has "
                                 f"{num_nodes} rows")
            return edge_index
        wdtype = torch.float64 if dtype == torch.float64 else torch.float32
        if self._graph_cache is not None and isinstance(edge_index, torch.Tensor):
            seen, graph = self._graph_cache
            if graph.num_nodes == num_nodes and graph.weight.dtype == wdtype and \
                    seen.shape == edge_index.shape and seen.dtype == edge_index.dtype and \
                    seen.device == edge_index.device and torch.equal(seen, edge_index):
                return graph
        # outside inference mode: a Graph first built under torch.inference_mode() would hold
        # inference tensors, which a later training step cannot save for backward
        with torch.inference_mode(False):
            graph = Graph.from_edge_index(edge_index, num_nodes, norm="gcn", dtype=wdtype)
            self._graph_cache = (edge_index.detach().clone(), graph)
        return graph

    def _act(self, x):
        return ACTS[self.act](x) if isinstance(self.act, str) else self.act(x)

    def step(self, x: torch.Tensor, edge_index, inject: torch.Tensor | None = None):
        """T(x) = dropout(act(conv(x))): one application of the shared layer; with
        ``lipschitz``, T(x) = act(conv(x + inject)) (no dropout inside the iteration)."""
        new = self.conv(x if inject is None else x + inject, edge_index)
        if new.shape != x.shape:
            raise ValueError(f"PIGN: conv returned shape {tuple(new.shape)} for input "
                             f"{tuple(x.shape)}; the iterated layer must keep the width")
        if self.lipschitz is not None:
            return self._act(new)
        return F.dropout(self._act(new), self.dropout, self.training)

    def forward(self, x: torch.Tensor, edge_index, batch: torch.Tensor | None = None):
        h = F.dropout(self._act(self.encoder(x)), self.dropout, self.training)
        n_iter = self.max_iter if self.training or self.eval_max_iter is None \
            else self.eval_max_iter
        if self.uses_fused_path:
            graph = self._graph(edge_index, x.shape[0], h.dtype)
            order = graph.node_order  # a reordered Graph: iterate in its node order
            if order is not None:
                h = h[order]
                batch = None if batch is None else batch[order]
            # the contractive form: input injection, no dropout inside the iteration (the
            # capped weight is read once per solve by iterate_gcn)
            inject = None if self.lipschitz is None else h
            h, self.last_stats = iterate_gcn(
                graph, h, self.conv, act=self.act,
                dropout=self.dropout if self.training and inject is None else 0.0,
                alpha=self.alpha, tol=self.tol, max_iter=n_iter, batch=batch,
                opts=self.solver_opts, inject=inject)
            if order is not None:  # back to the caller's node order
                h = torch.empty_like(h).index_copy(0, order, h)
        else:
            if isinstance(edge_index, Graph):
                raise TypeError(f"PIGN: a fastpicard.Graph input needs the fused GCN path; "
                                f"{type(self.conv).__name__} takes edge_index")
            f = h if self.lipschitz is not None else None
            # capped weights: one SVD per forward, not one per step
            with parametrize.cached() if f is not None else contextlib.nullcontext():
                h, self.last_stats = iterate(
                    lambda z: self.step(z, edge_index, f), h, alpha=self.alpha, tol=self.tol,
                    max_iter=n_iter, batch=batch, opts=self.solver_opts)
        return self.decoder(h)


def _check_lipschitz(value):
    """None or a float in (0, 1): the smoothed step contracts by alpha + (1-alpha)*value, which
    is below 1 exactly when value is."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value < 1:
        raise ValueError(f"PIGN: lipschitz must be None or a number in (0, 1), got {value!r}")
    return float(value)
