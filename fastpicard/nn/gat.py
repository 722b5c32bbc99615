"""A graph attention layer with PyG ``GATConv``'s parameters (``lin.weight``, ``att_src``,
``att_dst``, ``bias``), initialisation and maths, whose aggregation runs on fastpicard's CSR
``spmm`` kernel instead of materialising one [E, heads, C] message tensor per call.

The attention scores, softmax and attention dropout are [E, heads] tensors (small); the
weighted sum over neighbours, the heavy part, is one ``spmm`` over the *head-expanded* graph:
node i of head h is row i*heads + h, so ``lin(x).view(N*heads, C)`` is its feature matrix as is,
and the edge j -> i of head h carries that head's attention weight. That graph's index tensors
are built once per edge_index and cached; per call only the [E*heads] weights are gathered into
its CSR order. ``spmm`` is differentiable in its weights, so gradients reach the scores.

Same numbers as PyG: the edges keep the caller's order for the softmax and the dropout (the
same ``F.dropout`` call on the same [E, heads] tensor, hence the same mask under the same RNG
state), self loops are replaced by one per node appended at the end, as ``GATConv`` does."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..graph import Graph
from ..ops.spmm import spmm

# the GATConv options this layer implements; PIGN(conv="gat") uses PyG's GATConv for others
OPTIONS = ("heads", "concat", "negative_slope", "dropout", "add_self_loops", "bias")


def _glorot(w: torch.Tensor) -> None:
    a = math.sqrt(6.0 / (w.size(-2) + w.size(-1)))  # PyG's glorot (same draws)
    with torch.no_grad():
        w.uniform_(-a, a)


def with_self_loops(edge_index: torch.Tensor, num_nodes: int) -> torch.Tensor:
    """edge_index without its self loops, plus one per node appended (what ``GATConv`` builds
    on every call with ``add_self_loops=True``; build it once and pass ``add_self_loops=False``
    to skip that work)."""
    keep = edge_index[0] != edge_index[1]
    loops = torch.arange(num_nodes, device=edge_index.device, dtype=edge_index.dtype)
    return torch.cat([edge_index[:, keep], loops.expand(2, num_nodes)], 1)


def _check_edge_index(edge_index, num_nodes: int) -> None:
    if not isinstance(edge_index, torch.Tensor):
        raise TypeError(f"GATLayer: edge_index must be a [2, E] integer Tensor, got "
                        f"{type(edge_index).__name__}")
    if edge_index.dtype not in (torch.int32, torch.int64) or edge_index.dim() != 2 or \
            edge_index.shape[0] != 2:
        raise ValueError(f"GATLayer: edge_index must be a [2, E] int32/int64 Tensor, got "
                         f"{edge_index.dtype} of shape {tuple(edge_index.shape)}")
    if edge_index.numel():
        lo, hi = (int(v) for v in torch.aminmax(edge_index))  # one host read
        if lo < 0 or hi >= num_nodes:
            raise ValueError(f"GATLayer: edge_index has node ids outside [0, {num_nodes}) "
                             f"(x has {num_nodes} rows): min {lo}, max {hi}")


def _csr_positions(target: torch.Tensor, n: int, heads: int):
    """(rowptr [n*heads+1], pos [E, heads]) of the head-expanded CSR of edges grouped by
    ``target`` (in their order within a row): pos[e, h] is edge e's entry, in row
    target[e]*heads + h."""
    e = target.numel()
    order = torch.argsort(target, stable=True)
    counts = torch.bincount(target, minlength=n)
    start = torch.zeros(n + 1, dtype=torch.long, device=target.device)
    torch.cumsum(counts, 0, out=start[1:])
    rank = torch.empty_like(order)
    rank[order] = torch.arange(e, device=target.device)  # each edge's place in the sorted list
    t = target
    hs = torch.arange(heads, device=target.device)
    pos = heads * start[t, None] + hs * counts[t, None] + (rank - start[t])[:, None]
    rowptr = torch.zeros(n * heads + 1, dtype=torch.long, device=target.device)
    torch.cumsum(counts.repeat_interleave(heads), 0, out=rowptr[1:])
    return rowptr, pos


def head_graph(src: torch.Tensor, dst: torch.Tensor, num_nodes: int, heads: int):
    """(Graph over num_nodes*heads nodes without weights, gather [E*heads], t_gather
    [E*heads]): the head-expanded CSR of the edges src -> dst, and for each of its entries (and
    of its transpose's) the index of its weight in an [E, heads] tensor (edge order) flattened."""
    e, n = src.numel(), num_nodes
    dev = src.device
    hs = torch.arange(heads, device=dev)
    rowptr, pos = _csr_positions(dst, n, heads)
    t_rowptr, t_pos = _csr_positions(src, n, heads)
    flat = pos.reshape(-1)
    col = torch.empty(e * heads, dtype=torch.long, device=dev)
    col[flat] = (src[:, None] * heads + hs).reshape(-1)
    gather = torch.empty(e * heads, dtype=torch.long, device=dev)
    gather[flat] = torch.arange(e * heads, device=dev)
    t_flat = t_pos.reshape(-1)
    t_col = torch.empty_like(col)
    t_col[t_flat] = (dst[:, None] * heads + hs).reshape(-1)
    t_perm = torch.empty_like(col)
    t_perm[t_flat] = flat  # transposed entry -> CSR entry of the same (edge, head)
    idx = torch.int32 if max(n * heads, e * heads) < 2**31 - 1 else torch.long
    graph = Graph._trusted(n * heads, rowptr.to(idx), col.to(idx), None, t_rowptr.to(idx),
                           t_col.to(idx), t_perm.to(idx), None, 1, "sum")
    return graph, gather.to(idx), gather[t_perm].to(idx)


def segment_softmax(s: torch.Tensor, index: torch.Tensor, n: int) -> torch.Tensor:
    """Softmax of s [E, H] over the edges sharing ``index`` (PyG's ``softmax``: shift by the
    detached maximum, +1e-16 in the denominator)."""
    idx = index[:, None].expand_as(s)
    top = torch.full((n, s.shape[1]), -math.inf, dtype=s.dtype, device=s.device)
    top = top.scatter_reduce(0, idx, s.detach(), "amax")
    e = (s - top[index]).exp()
    den = e.new_zeros(top.shape).index_add_(0, index, e) + 1e-16  # e's dtype (autocast: fp32)
    return e / den[index]


class GATLayer(nn.Module):
    """Graph attention (Veličković et al.) with PyG ``GATConv``'s parameters, initialisation
    and results: its state_dict loads into ``GATConv`` and back, and under the same RNG state
    both draw the same weights and the same attention-dropout masks.

    Args: as ``GATConv`` (``heads``, ``concat``, ``negative_slope``, ``dropout`` on the
    attention coefficients, ``add_self_loops``, ``bias``). ``forward(x, edge_index)`` takes
    x [N, in_channels] and edge_index [2, E] (edges j -> i as columns (j, i)); the graph built
    from edge_index is cached and reused while edge_index holds the same values.
    """

    def __init__(self, in_channels: int, out_channels: int, heads: int = 1, concat: bool = True,
                 negative_slope: float = 0.2, dropout: float = 0.0, add_self_loops: bool = True,
                 bias: bool = True):
        super().__init__()
        for name, v in (("in_channels", in_channels), ("out_channels", out_channels),
                        ("heads", heads)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"GATLayer: {name} must be an int >= 1, got {v!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"GATLayer: dropout must be in [0, 1), got {dropout!r}")
        self.in_channels, self.out_channels, self.heads = in_channels, out_channels, heads
        self.concat, self.negative_slope, self.dropout = concat, negative_slope, dropout
        self.add_self_loops = add_self_loops
        self.lin = nn.Linear(in_channels, heads * out_channels, bias=False)
        self.att_src = nn.Parameter(torch.empty(1, heads, out_channels))
        self.att_dst = nn.Parameter(torch.empty(1, heads, out_channels))
        width = heads * out_channels if concat else out_channels
        self.bias = nn.Parameter(torch.empty(width)) if bias else None
        self._cache = None  # (copy of edge_index, num_nodes, self loops?, src, dst, graph, ...)
        self.reset_parameters()

    def reset_parameters(self):
        _glorot(self.lin.weight)
        _glorot(self.att_src)
        _glorot(self.att_dst)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def _graph(self, edge_index, n: int):
        """(src, dst, head graph, gather, t_gather) for edge_index, rebuilt when its values, n
        or add_self_loops change. Built outside inference mode, so that a graph first seen
        under torch.inference_mode() still serves training later; from a private copy of
        edge_index, so that the caller reusing its buffer cannot change a cached graph."""
        c = self._cache
        if c is not None and c[1] == n and c[2] == self.add_self_loops and \
                c[0].shape == edge_index.shape and c[0].dtype == edge_index.dtype and \
                c[0].device == edge_index.device and torch.equal(c[0], edge_index):
            return c[3:]
        _check_edge_index(edge_index, n)
        with torch.inference_mode(False), torch.no_grad():
            key = edge_index.clone()
            edges = with_self_loops(key, n) if self.add_self_loops else key
            src, dst = edges[0].long(), edges[1].long()
            graph, gather, t_gather = head_graph(src, dst, n, self.heads)
        self._cache = (key, n, self.add_self_loops, src, dst, graph, gather, t_gather)
        return self._cache[3:]

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.shape[1] != self.in_channels:
            raise ValueError(f"GATLayer: x must be [num_nodes, {self.in_channels}], got "
                             f"{tuple(getattr(x, 'shape', ()))}")
        n, heads, c = x.shape[0], self.heads, self.out_channels
        src, dst, graph, gather, t_gather = self._graph(edge_index, n)
        h = self.lin(x).reshape(n, heads, c)
        # both scores of every head in one product: [N, H*C] @ block-diagonal [H*C, 2H]
        att = torch.cat([self.att_src, self.att_dst]).permute(1, 2, 0)  # [H, C, 2]
        a = (h.reshape(n, heads * c) @ torch.block_diag(*att)).view(n, heads, 2)
        a_src, a_dst = a[..., 0], a[..., 1]
        score = F.leaky_relu(a_src[src] + a_dst[dst], self.negative_slope)
        alpha = F.dropout(segment_softmax(score, dst, n), self.dropout, self.training)
        flat = alpha.reshape(-1)
        weight = flat[gather]  # spmm casts it to its accumulation dtype
        g = Graph._trusted(graph.num_nodes, graph.rowptr, graph.col, weight, graph.t_rowptr,
                           graph.t_col, graph.t_perm, None, 1, "sum",
                           t_weight=flat.detach()[t_gather])
        out = spmm(g, h.reshape(n * heads, c)).view(n, heads, c)
        out = out.reshape(n, heads * c) if self.concat else out.mean(1)
        return out if self.bias is None else out + self.bias

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, heads={self.heads}, "
                f"concat={self.concat}, dropout={self.dropout}")
