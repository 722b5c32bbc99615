"""IterGNN (Tang et al., NeurIPS 2020, "Towards Scale-Invariant Graph-related Problem Solving
by Iterative Homogeneous GNNs"): one shared message-passing layer applied an adaptive number of
times, with a learned stopping confidence.

    h_0 = dropout(act(encoder(x)))
    h_k = dropout(act(conv(h_{k-1})))                       k = 1, 2, ...
    c_k = sigmoid(confidence(max-pool over the graph of h_k))   one per graph
    out = sum_k c_k · prod_{j<k}(1 - c_j) · h_k              the expected iterate under the
                                                             stopping distribution

A graph stops once its probability of continuing, ``prod_{j<=k}(1 - c_j)``, falls to ``eps``
(or at ``max_iter``); what probability is left then goes to its last iterate, so the weights
of every graph sum to 1. Everything is differentiable (the weights are the paper's
"differentiable stopping criterion"); only the number of iterations is not. The paper's
homogeneous-network prior (bias-free layers, for scale invariance on graph algorithms) is not
used here: for node classification the plain conv is the backbone the PIGN paper compares.

With a GCN layer and a :class:`fastpicard.Graph` as ``edge_index``, each step runs as a GEMM
plus one fused ``spmm_update`` pass (aggregation, bias, activation, dropout), like PIGN.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import ops
from ..graph import Graph
from ._solve import check_count, check_fraction
from .pign import ACTS, CONVS, _make_conv, fusable_gcn


class IterGNN(nn.Module):
    """``IterGNN(in_channels, hidden_channels, out_channels, *, conv="gcn", max_iter=10,
    eps=1e-3, dropout=0.5, act="relu", conv_kwargs=None)``.

    Args:
        conv: "gcn", "gat" (8 heads averaged, attention dropout), "sage", or a message-passing
            layer instance mapping ``hidden_channels`` to itself.
        max_iter: most iterations (training and evaluation).
        eps: a graph stops once its probability of continuing is at most eps.
        dropout: after the encoder and inside every iteration (training only).
        act: "relu", "identity", "tanh" or "leaky_relu".

    ``forward(x, edge_index, batch=None)`` returns the decoder's output per node (``batch``:
    graph id per node, each graph stops on its own). ``edge_index`` may be a prebuilt
    ``fastpicard.Graph`` (GCN only): then the steps run fused. ``last_iterations`` holds the
    iterations each graph used in the latest call.
    """

    def __init__(self, in_channels: int, hidden_channels: int, out_channels: int, *,
                 conv="gcn", max_iter: int = 10, eps: float = 1e-3, dropout: float = 0.5,
                 act: str = "relu", conv_kwargs: dict | None = None):
        super().__init__()
        for name, v in (("in_channels", in_channels), ("hidden_channels", hidden_channels),
                        ("out_channels", out_channels)):
            check_count("IterGNN", name, v)
        self.max_iter = check_count("IterGNN", "max_iter", max_iter)
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 < eps < 1:
            raise ValueError(f"IterGNN: eps must be a number in (0, 1), got {eps!r}")
        self.eps = float(eps)
        self.dropout = check_fraction("IterGNN", "dropout", dropout)
        if act not in ACTS:
            raise ValueError(f"IterGNN: act must be one of {tuple(ACTS)}, got {act!r}")
        self.act = act
        if isinstance(conv, str):
            conv = _make_conv(conv, hidden_channels, self.dropout, dict(conv_kwargs or {}))
        elif not isinstance(conv, nn.Module):
            raise TypeError(f"IterGNN: conv must be one of {CONVS} or an nn.Module, got "
                            f"{type(conv).__name__}")
        elif conv_kwargs:
            raise TypeError("IterGNN: conv_kwargs only applies to a string conv")
        self.encoder = nn.Linear(in_channels, hidden_channels)
        self.conv = conv
        self.confidence = nn.Linear(hidden_channels, 1)
        self.decoder = nn.Linear(hidden_channels, out_channels)
        self.last_iterations = None

    def _step_fn(self, edge_index):
        """h -> dropout(act(conv(h))), fused when edge_index is a fastpicard.Graph."""
        if isinstance(edge_index, Graph):
            if not fusable_gcn(self.conv):
                raise TypeError(f"IterGNN: a fastpicard.Graph input needs a GCN conv; "
                                f"{type(self.conv).__name__} takes edge_index")
            graph, spmm_update = edge_index, ops.spmm_update
            weight, bias = self.conv.lin.weight, self.conv.bias
            p = self.dropout if self.training else 0.0
            # alpha=0: x_new = dropout(act(Â·h + b)); the residual output is not used
            return lambda h: spmm_update(graph, F.linear(h, weight), h, 0.0, bias=bias,
                                         act=self.act, dropout=p)[0]

        def step(h):
            new = self.conv(h, edge_index)
            if new.shape != h.shape:
                raise ValueError(f"IterGNN: conv returned shape {tuple(new.shape)} for input "
                                 f"{tuple(h.shape)}; the iterated layer must keep the width")
            return F.dropout(ACTS[self.act](new), self.dropout, self.training)
        return step

    def forward(self, x: torch.Tensor, edge_index, batch: torch.Tensor | None = None):
        h = F.dropout(ACTS[self.act](self.encoder(x)), self.dropout, self.training)
        n = h.shape[0]
        if batch is None:
            batch = torch.zeros(n, dtype=torch.long, device=h.device)
        elif not isinstance(batch, torch.Tensor) or batch.dtype != torch.int64 or \
                batch.shape != (n,):
            raise ValueError(f"IterGNN: batch must be an int64 tensor of shape [{n}]")
        S = int(batch.max()) + 1 if n else 0
        step = self._step_fn(edge_index)
        index = batch.unsqueeze(-1).expand(n, h.shape[1])
        remain = h.new_ones(S)                     # probability of not having stopped yet
        active = torch.ones(S, dtype=torch.bool, device=h.device)
        used = torch.zeros(S, dtype=torch.long, device=h.device)
        out = torch.zeros_like(h)
        for k in range(1, self.max_iter + 1):
            h = step(h)
            pooled = h.new_full((S, h.shape[1]), float("-inf")).scatter_reduce(
                0, index, h, "amax", include_self=False)
            c = torch.sigmoid(self.confidence(pooled)).squeeze(-1)
            left = remain * (1 - c)
            stop = active & ((left <= self.eps) | (k == self.max_iter))
            weight = torch.where(active, remain * c + torch.where(stop, left, 0.0), 0.0)
            out = out + weight[batch].unsqueeze(-1) * h
            remain = torch.where(active, left, remain)
            used += active
            active = active & ~stop
            if not bool(active.any()):
                break
        self.last_iterations = used
        return self.decoder(out)
