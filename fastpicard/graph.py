"""``fastpicard.Graph``: a sparse graph prepared once for the graph kernels.

A Graph holds the normalised adjacency ``Â`` as CSR with one row per *target* node (row ``i``
lists the sources ``j`` of the edges ``j -> i`` with their weights, so ``Â·h`` aggregates
incoming messages, PyG's "source_to_target" flow) and the transposed CSR, which the backward
walks to compute ``Âᵀ·g`` without float atomics. Indices are int32 when they fit.

Normalisations (``norm=``), on the graph after self-loop handling:
    "gcn"   D^-1/2 (A+I) D^-1/2 with D the weighted in-degree, exactly PyG's ``gcn_norm``
            (``add_self_loops=True`` follows ``add_remaining_self_loops``: existing self loops
            are replaced by one loop per node, weighted 1 or, with edge weights, by the weight
            of the node's existing self loop (the last one when there are several)).
    "mean"  D^-1 A: each row's weights divided by their sum (weighted in-degree).
    "sum"   A as given (weights, or 1 per edge).
Duplicate edges stay separate entries, so their messages add up, as in PyG.

If ``edge_weight`` requires grad, ``graph.weight`` is a differentiable function of it and the
graph ops return its gradient; build such a graph anew for each backward pass.
"""
from __future__ import annotations

import numbers

import torch

_NORMS = ("gcn", "mean", "sum")
_INT32_MAX = 2**31 - 1


def _version(t):
    """t's version counter (bumped by in-place edits); None for inference tensors, which have
    none (their transposed copy is then never refreshed)."""
    return None if t is None or t.is_inference() else t._version


class Graph:
    """CSR (+ transposed CSR) of a normalised adjacency; see the module docstring.

    Attributes:
        num_nodes: N.
        rowptr [N+1], col [E]: CSR rows (targets) and their source nodes; int32 or int64.
        weight [E] float32 (float64 if built from float64 weights), or None: all ones.
        t_rowptr [N+1], t_col [E], t_perm [E]: the transpose; its entry k is CSR entry t_perm[k].
        t_weight [E]: weight[t_perm] (kept in step with weight, without autograd history), so
            the backward reads the transposed weights directly.
        batch: optional int64 [N] graph id of each node (many graphs in one batch).
        num_graphs: number of graphs (1 without batch).
        norm: the normalisation used.
    """

    __slots__ = ("num_nodes", "rowptr", "col", "_weight", "t_rowptr", "t_col", "t_perm",
                 "_t_weight", "_t_version", "batch", "num_graphs", "norm")

    def __init__(self, *, num_nodes, rowptr, col, weight, t_rowptr, t_col, t_perm, batch=None,
                 num_graphs=1, norm="sum"):
        """A Graph from raw CSR tensors (the builders below are the usual way). Every
        structural fact is checked here, once (one host read): index dtypes, devices and
        lengths, rowptr rising from 0 to the entry count, columns in [0, num_nodes), and the
        transpose being exactly the transpose of the CSR. (The kernels check index ranges
        again on every call, so a tensor edited in place later cannot make them read out of
        bounds.)"""
        if isinstance(num_nodes, bool) or not isinstance(num_nodes, numbers.Integral) or \
                num_nodes < 0:
            raise ValueError(f"Graph: num_nodes must be an int >= 0, got {num_nodes!r}")
        if norm not in _NORMS:
            raise ValueError(f"Graph: norm must be one of {_NORMS}, got {norm!r}")
        num_nodes = int(num_nodes)
        _check_structure(num_nodes, rowptr, col, t_rowptr, t_col, t_perm)
        batch, num_graphs = _check_batch(batch, num_graphs, num_nodes, rowptr.device)
        self._assign(num_nodes, rowptr, col, weight, t_rowptr, t_col, t_perm, batch, num_graphs,
                     norm)

    def _assign(self, num_nodes, rowptr, col, weight, t_rowptr, t_col, t_perm, batch, num_graphs,
                norm):
        self.num_nodes = num_nodes
        self.rowptr, self.col = rowptr, col
        self.t_rowptr, self.t_col, self.t_perm = t_rowptr, t_col, t_perm
        self.weight = weight
        self.batch, self.num_graphs, self.norm = batch, num_graphs, norm

    @classmethod
    def _trusted(cls, *args) -> "Graph":
        """A Graph from tensors this module built (valid by construction): no checks."""
        graph = cls.__new__(cls)
        graph._assign(*args)
        return graph

    @property
    def weight(self):
        return self._weight

    @weight.setter
    def weight(self, w):
        if w is not None:
            e = self.col.shape[0]
            if not isinstance(w, torch.Tensor) or not w.dtype.is_floating_point:
                raise TypeError("Graph: weight must be None or a floating-point Tensor, got "
                                f"{getattr(w, 'dtype', type(w).__name__)}")
            if w.shape != (e,) or w.device != self.col.device:
                raise ValueError(f"Graph: weight must have shape [num_edges={e}] on "
                                 f"{self.col.device}, got {tuple(w.shape)} on {w.device}")
        self._weight = w
        self._t_weight = None if w is None else w.detach()[self.t_perm.long()]
        self._t_version = _version(w)

    @property
    def t_weight(self):
        # in step with in-place edits of weight too (an optimizer step on learnable weights)
        # (not while torch.compile traces: it cannot read version counters; refresh by
        # assigning graph.weight again after an in-place edit there)
        w = self._weight
        if w is not None and not torch.compiler.is_compiling() and \
                _version(w) != self._t_version:
            self.weight = w
        return self._t_weight

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_edge_index(cls, edge_index, num_nodes=None, *, edge_weight=None, norm="gcn",
                        add_self_loops=True, batch=None, num_graphs=None,
                        dtype=None) -> "Graph":
        """Graph from a PyG-style ``edge_index`` [2, E] (row 0 sources, row 1 targets).

        Args:
            edge_index: integer tensor [2, E].
            num_nodes: number of nodes (default: largest index + 1).
            edge_weight: optional float tensor [E].
            norm: "gcn", "mean" or "sum" (see the module docstring).
            add_self_loops: replace self loops by one loop per node (PyG's
                ``add_remaining_self_loops``).
            batch: optional int64 [num_nodes] graph id of each node.
            num_graphs: number of graphs in ``batch`` (default: largest id + 1).
            dtype: dtype of the normalised weights: None keeps float32 (float64 when
                edge_weight is float64); pass torch.float64 for float64 models, whose
                kernels would otherwise use weights rounded to float32.
        """
        if dtype not in (None, torch.float32, torch.float64):
            raise TypeError(f"Graph: dtype must be None, torch.float32 or torch.float64, got "
                            f"{dtype}")
        if not isinstance(edge_index, torch.Tensor):
            raise TypeError(f"Graph: edge_index must be a Tensor, got {type(edge_index).__name__}")
        if edge_index.dtype.is_floating_point or edge_index.dtype.is_complex or \
                edge_index.dtype == torch.bool:
            raise TypeError(f"Graph: edge_index must have an integer dtype, got {edge_index.dtype}")
        if edge_index.dim() != 2 or edge_index.shape[0] != 2:
            raise ValueError("Graph: edge_index must have shape [2, num_edges], got "
                             f"{tuple(edge_index.shape)}")
        if norm not in _NORMS:
            raise ValueError(f"Graph: norm must be one of {_NORMS}, got {norm!r}")
        if not isinstance(add_self_loops, bool):
            raise TypeError(f"Graph: add_self_loops must be a bool, got {type(add_self_loops).__name__}")
        edge_index = edge_index.long()
        e = edge_index.shape[1]
        if num_nodes is None:
            num_nodes = int(edge_index.max()) + 1 if e else 0
        elif isinstance(num_nodes, bool) or not isinstance(num_nodes, numbers.Integral):
            raise TypeError(f"Graph: num_nodes must be an int, got {type(num_nodes).__name__}")
        num_nodes = int(num_nodes)
        if num_nodes < 0:
            raise ValueError(f"Graph: num_nodes must be >= 0, got {num_nodes}")
        if e:
            lo, hi = int(edge_index.min()), int(edge_index.max())
            if lo < 0:
                raise IndexError(f"Graph: edge_index contains the negative node index {lo}")
            if hi >= num_nodes:
                raise IndexError(f"Graph: edge_index contains node {hi}, but num_nodes={num_nodes} "
                                 f"(num_nodes is too small)")
        if edge_weight is not None:
            if not isinstance(edge_weight, torch.Tensor):
                raise TypeError("Graph: edge_weight must be a Tensor, got "
                                f"{type(edge_weight).__name__}")
            if not edge_weight.dtype.is_floating_point:
                raise TypeError(f"Graph: edge_weight must be floating point, got {edge_weight.dtype}")
            if edge_weight.shape != (e,):
                raise ValueError(f"Graph: edge_weight must have shape [num_edges={e}], got "
                                 f"{tuple(edge_weight.shape)}")
            if edge_weight.device != edge_index.device:
                raise ValueError(f"Graph: edge_weight is on {edge_weight.device} but edge_index is "
                                 f"on {edge_index.device}")
            if not bool(torch.isfinite(edge_weight).all()):
                raise ValueError("Graph: edge_weight contains NaN or Inf")
            if dtype is not None:
                edge_weight = edge_weight.to(dtype)
            elif edge_weight.dtype != torch.float64:
                edge_weight = edge_weight.float()
        batch, num_graphs = _check_batch(batch, num_graphs, num_nodes, edge_index.device)

        src, dst = edge_index[0], edge_index[1]
        weight = edge_weight
        if add_self_loops:
            src, dst, weight = _add_remaining_self_loops(src, dst, weight, num_nodes)
        if weight is None and norm != "sum":
            weight = torch.ones(src.shape[0], dtype=dtype or torch.float32, device=src.device)
        if norm == "gcn":
            deg = torch.zeros(num_nodes, dtype=weight.dtype, device=weight.device)
            deg = deg.scatter_add(0, dst, weight)
            if e and bool((deg < 0).any()):
                node = int(torch.nonzero(deg < 0)[0])
                raise ValueError(f"Graph: norm='gcn' scales by D^-1/2, but node {node} has the "
                                 f"negative weighted in-degree {float(deg[node]):g} (negative "
                                 "edge weights); use norm='sum' or non-negative weights")
            dis = deg.pow(-0.5)
            dis = dis.masked_fill(dis == float("inf"), 0.0)
            weight = dis[src] * weight * dis[dst]
        elif norm == "mean":
            deg = torch.zeros(num_nodes, dtype=weight.dtype, device=weight.device)
            deg = deg.scatter_add(0, dst, weight)
            inv = deg.reciprocal().masked_fill(deg == 0, 0.0)
            weight = weight * inv[dst]
        return cls._from_coo(src, dst, weight, num_nodes, batch, num_graphs, norm)

    @classmethod
    def from_sparse(cls, adj, *, norm="sum", add_self_loops=False, batch=None,
                    num_graphs=None) -> "Graph":
        """Graph from a square ``torch.sparse_csr`` (or COO) matrix ``adj`` with
        ``adj[i, j]`` = weight of the message j -> i, so that by default
        ``spmm(graph, h) == adj @ h``. ``norm``/``add_self_loops`` as in from_edge_index."""
        if not isinstance(adj, torch.Tensor) or adj.layout not in (torch.sparse_csr,
                                                                   torch.sparse_coo):
            raise TypeError("Graph: adj must be a torch.sparse_csr or sparse_coo tensor, got "
                            f"{getattr(adj, 'layout', type(adj).__name__)}")
        if adj.dim() != 2 or adj.shape[0] != adj.shape[1]:
            raise ValueError(f"Graph: adj must be a square matrix, got shape {tuple(adj.shape)}")
        n = adj.shape[0]
        if adj.layout == torch.sparse_csr:
            crow, colidx = adj.crow_indices().long(), adj.col_indices().long()
            _check_csr(crow, colidx, n, n, "crow_indices", "col_indices")
            rows = torch.repeat_interleave(torch.arange(n, device=crow.device), crow.diff())
            values = adj.values()
        else:
            indices = adj._indices()
            if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= n):
                raise ValueError(f"Graph: adj's indices must lie in [0, {n}), got "
                                 f"[{int(indices.min())}, {int(indices.max())}]")
            adj = adj.coalesce()
            rows, colidx = adj.indices()
            values = adj.values()
        if values.shape != colidx.shape:
            raise ValueError(f"Graph: adj must have one scalar value per entry ({colidx.numel()})"
                             f", got values of shape {tuple(values.shape)}")
        if not values.dtype.is_floating_point:  # a 0/1 (int or bool) adjacency: unit weights
            if values.dtype.is_complex:
                raise TypeError(f"Graph: adj must have real values, got {values.dtype}")
            values = values.float()
        edge_index = torch.stack([colidx, rows])
        return cls.from_edge_index(edge_index, n, edge_weight=values, norm=norm,
                                   add_self_loops=add_self_loops, batch=batch,
                                   num_graphs=num_graphs)

    @classmethod
    def from_sparse_tensor(cls, adj_t, *, norm="gcn", add_self_loops=True, batch=None,
                           num_graphs=None) -> "Graph":
        """Graph from a torch_sparse ``SparseTensor`` ``adj_t`` in PyG's convention (row i lists
        the sources of the edges into node i; its values, if any, are edge weights)."""
        if not all(hasattr(adj_t, a) for a in ("coo", "sparse_sizes")):
            raise TypeError(f"Graph: adj_t must be a torch_sparse SparseTensor, got "
                            f"{type(adj_t).__name__}")
        n, m = adj_t.sparse_sizes()
        if n != m:
            raise ValueError(f"Graph: adj_t must be square, got sparse sizes {(n, m)}")
        row, col, value = adj_t.coo()
        return cls.from_edge_index(torch.stack([col, row]), n, edge_weight=value, norm=norm,
                                   add_self_loops=add_self_loops, batch=batch,
                                   num_graphs=num_graphs)

    @classmethod
    def from_pyg(cls, data, *, norm="gcn", add_self_loops=True) -> "Graph":
        """Graph from a PyG ``Data``/``Batch``: its ``adj_t`` (SparseTensor) or ``edge_index``
        (+ ``edge_weight`` when present), ``num_nodes`` and, for a batch, ``batch``."""
        batch = getattr(data, "batch", None)
        num_graphs = int(data.num_graphs) if batch is not None else None
        adj_t = getattr(data, "adj_t", None)
        if adj_t is not None:
            return cls.from_sparse_tensor(adj_t, norm=norm, add_self_loops=add_self_loops,
                                          batch=batch, num_graphs=num_graphs)
        edge_index = getattr(data, "edge_index", None)
        if edge_index is None:
            raise ValueError("Graph: data has neither edge_index nor adj_t")
        return cls.from_edge_index(torch.as_tensor(edge_index), data.num_nodes,
                                   edge_weight=getattr(data, "edge_weight", None), norm=norm,
                                   add_self_loops=add_self_loops, batch=batch,
                                   num_graphs=num_graphs)

    @classmethod
    def _from_coo(cls, src, dst, weight, num_nodes, batch, num_graphs, norm) -> "Graph":
        n = num_nodes
        device = src.device
        order = torch.argsort(dst * n + src, stable=True)  # rows (targets), sources ascending
        col, rows = src[order], dst[order]
        weight = weight[order] if weight is not None else None
        t_perm = torch.argsort(col * n + rows, stable=True)
        t_col = rows[t_perm]
        rowptr = _rowptr(rows, n, device)
        t_rowptr = _rowptr(col, n, device)
        idx = torch.int32 if max(n, col.numel()) <= _INT32_MAX else torch.int64
        return cls._trusted(n, rowptr.to(idx), col.to(idx), weight, t_rowptr.to(idx),
                            t_col.to(idx), t_perm.to(idx), batch, num_graphs, norm)

    # ------------------------------------------------------------------ utilities
    @property
    def num_edges(self) -> int:
        """Stored entries (edges after self-loop handling)."""
        return self.col.numel()

    @property
    def device(self) -> torch.device:
        return self.rowptr.device

    def to(self, device) -> "Graph":
        """The same graph with every tensor on ``device``."""
        def mv(t):
            return None if t is None else t.to(device)
        return Graph._trusted(self.num_nodes, mv(self.rowptr), mv(self.col), mv(self.weight),
                              mv(self.t_rowptr), mv(self.t_col), mv(self.t_perm), mv(self.batch),
                              self.num_graphs, self.norm)

    def adjacency(self) -> torch.Tensor:
        """Â as a ``torch.sparse_csr`` tensor (int64 indices)."""
        values = self.weight if self.weight is not None else torch.ones(
            self.num_edges, device=self.device)
        return torch.sparse_csr_tensor(self.rowptr.long(), self.col.long(), values,
                                       (self.num_nodes, self.num_nodes),
                                       check_invariants=False)  # valid by construction

    def __repr__(self) -> str:
        return (f"Graph(num_nodes={self.num_nodes}, num_edges={self.num_edges}, norm={self.norm!r}, "
                f"index={str(self.col.dtype).replace('torch.', '')}, "
                f"num_graphs={self.num_graphs}, device={self.device})")


def _rowptr(rows: torch.Tensor, n: int, device) -> torch.Tensor:
    ptr = torch.zeros(n + 1, dtype=torch.int64, device=device)
    if rows.numel():
        ptr[1:] = torch.bincount(rows, minlength=n).cumsum(0)
    return ptr


def _add_remaining_self_loops(src, dst, weight, n):
    """Drop self loops, then add one loop per node: weight 1, or the weight of the node's last
    existing self loop (PyG's ``add_remaining_self_loops`` with fill_value=1)."""
    is_loop = src == dst
    keep = ~is_loop
    loop = torch.arange(n, device=src.device)
    if weight is not None:
        loop_w = torch.ones(n, dtype=weight.dtype, device=weight.device)
        pos = torch.nonzero(is_loop).flatten()
        if pos.numel():
            node = src[pos]
            last = torch.full((n,), -1, dtype=torch.int64, device=src.device)
            last = last.scatter_reduce(0, node, pos, reduce="amax")
            loop_w = torch.where(last >= 0, weight[last.clamp_min(0)], loop_w)
        weight = torch.cat([weight[keep], loop_w])
    return torch.cat([src[keep], loop]), torch.cat([dst[keep], loop]), weight


def _check_batch(batch, num_graphs, num_nodes, device):
    if batch is None:
        if num_graphs not in (None, 1):
            raise ValueError(f"Graph: num_graphs={num_graphs} needs a batch vector")
        return None, 1
    if not isinstance(batch, torch.Tensor) or batch.dtype.is_floating_point or \
            batch.dtype == torch.bool:
        raise TypeError("Graph: batch must be an integer Tensor, got "
                        f"{getattr(batch, 'dtype', type(batch).__name__)}")
    if batch.shape != (num_nodes,):
        raise ValueError(f"Graph: batch must have shape [num_nodes={num_nodes}], got "
                         f"{tuple(batch.shape)}")
    if batch.device != device:
        raise ValueError(f"Graph: batch is on {batch.device} but edge_index is on {device}")
    batch = batch.long()
    top = int(batch.max()) + 1 if num_nodes else 0
    if num_nodes and int(batch.min()) < 0:
        raise IndexError(f"Graph: batch contains the negative graph id {int(batch.min())}")
    if num_graphs is None:
        num_graphs = top
    elif isinstance(num_graphs, bool) or not isinstance(num_graphs, numbers.Integral):
        raise TypeError(f"Graph: num_graphs must be an int, got {type(num_graphs).__name__}")
    elif num_graphs < top:
        raise IndexError(f"Graph: batch contains graph id {top - 1}, but num_graphs={num_graphs}")
    if num_graphs > num_nodes:
        raise ValueError(f"Graph: num_graphs={num_graphs} exceeds num_nodes={num_nodes}: a batch "
                         "of N nodes holds at most N graphs (number the graphs 0..num_graphs-1)")
    return batch, int(num_graphs)


def _check_csr(rowptr, col, rows, cols, rowptr_name="rowptr", col_name="col"):
    """rowptr [rows+1] rises from 0 to the entry count; col entries lie in [0, cols)."""
    e = col.shape[0]
    if rowptr.shape != (rows + 1,):
        raise ValueError(f"Graph: {rowptr_name} must have {rows + 1} entries (rows + 1), got "
                         f"shape {tuple(rowptr.shape)}")
    if int(rowptr[0]) != 0 or int(rowptr[-1]) != e:
        raise ValueError(f"Graph: {rowptr_name} must start at 0 and end at the number of entries "
                         f"({e}), got {int(rowptr[0])} and {int(rowptr[-1])}")
    if rows and bool((rowptr.diff() < 0).any()):
        row = int(torch.nonzero(rowptr.diff() < 0)[0])
        raise ValueError(f"Graph: {rowptr_name} decreases at row {row}")
    if e and (int(col.min()) < 0 or int(col.max()) >= cols):
        bad = int(col.min()) if int(col.min()) < 0 else int(col.max())
        raise IndexError(f"Graph: {col_name} contains {bad}, outside [0, num_nodes={cols})")


def _check_structure(n, rowptr, col, t_rowptr, t_col, t_perm):
    """The CSR and its transpose, as Graph.__init__ documents."""
    named = {"rowptr": rowptr, "col": col, "t_rowptr": t_rowptr, "t_col": t_col, "t_perm": t_perm}
    for name, t in named.items():
        if not isinstance(t, torch.Tensor) or t.dtype not in (torch.int32, torch.int64):
            raise TypeError(f"Graph: {name} must be an int32 or int64 Tensor, got "
                            f"{getattr(t, 'dtype', type(t).__name__)}")
        if t.dtype != col.dtype or t.device != col.device or t.dim() != 1:
            raise TypeError(f"Graph: {name} must be 1-D like col (dtype {col.dtype}, device "
                            f"{col.device}), got dtype {t.dtype}, device {t.device}, shape "
                            f"{tuple(t.shape)}")
    e = col.shape[0]
    for name in ("t_col", "t_perm"):
        if named[name].shape != (e,):
            raise ValueError(f"Graph: {name} must have one entry per edge ({e}), got "
                             f"{tuple(named[name].shape)}")
    _check_csr(rowptr.long(), col.long(), n, n)
    _check_csr(t_rowptr.long(), t_col.long(), n, n, "t_rowptr", "t_col")
    perm = t_perm.long()
    if e and (int(perm.min()) < 0 or int(perm.max()) >= e or
              not bool((torch.bincount(perm, minlength=e) == 1).all())):
        raise ValueError(f"Graph: t_perm must be a permutation of the {e} edges")
    # entry k of the transpose is CSR entry t_perm[k]: the same edge, rows and columns swapped
    rows = torch.repeat_interleave(torch.arange(n, device=col.device), rowptr.long().diff())
    t_rows = torch.repeat_interleave(torch.arange(n, device=col.device), t_rowptr.long().diff())
    if not (torch.equal(t_col.long(), rows[perm]) and torch.equal(t_rows, col.long()[perm])):
        raise ValueError("Graph: (t_rowptr, t_col, t_perm) is not the transpose of "
                         "(rowptr, col): entry k of the transpose must be CSR entry t_perm[k] "
                         "with its row and column swapped")
