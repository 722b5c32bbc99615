"""A long-range node-classification task generated on the fly (a stand-in for LRGB, which
cannot be downloaded here): a node's label is a colour held k hops away.

Each graph is a path ``target = v_0 - v_1 - ... - v_k = source``. The source carries a colour
(one of ``num_colors``); the target's label is that colour. Every path node but the source
also gets, with probability ``decoy_prob``, a leaf carrying a random colour of its own (a
decoy, not flagged as the source), so a model that sees fewer than k hops sees only decoys and
is at chance (1/num_colors). Node features: ``[is_target, is_source, one-hot colour]``. Only the
targets are labelled (``mask``); every other node has label -1.
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass, fields

import torch


@dataclass
class GraphBatch:
    """Many graphs as one disconnected graph (PyG ``Batch`` style).

    ``x`` [N, F] float, ``edge_index`` [2, E] int64 (both directions), ``y`` [N] int64 (-1 where
    a node has no label), ``batch`` [N] graph id per node, ``num_graphs``, ``mask`` [N] bool
    (the nodes to score; None: every node with a label), ``edge_attr`` [E, D] or None.
    """

    x: torch.Tensor
    edge_index: torch.Tensor
    y: torch.Tensor
    batch: torch.Tensor
    num_graphs: int
    mask: torch.Tensor | None = None
    edge_attr: torch.Tensor | None = None

    @property
    def num_nodes(self) -> int:
        return self.x.shape[0]

    @property
    def labelled(self) -> torch.Tensor:
        """Bool [N]: the nodes a loss or a metric looks at."""
        return self.mask if self.mask is not None else self.y >= 0

    def to(self, device) -> "GraphBatch":
        return GraphBatch(**{f.name: (v.to(device) if isinstance(v, torch.Tensor) else v)
                             for f in fields(self) for v in [getattr(self, f.name)]})

    @staticmethod
    def collate(graphs) -> "GraphBatch":
        """Concatenates GraphBatches (node ids offset, graph ids renumbered)."""
        graphs = list(graphs)
        if not graphs:
            raise ValueError("GraphBatch.collate: no graphs")
        offsets = torch.tensor([0] + [g.num_nodes for g in graphs]).cumsum(0)
        goff = torch.tensor([0] + [g.num_graphs for g in graphs]).cumsum(0)
        has_mask = any(g.mask is not None for g in graphs)
        has_attr = [g.edge_attr is not None for g in graphs]
        if any(has_attr) and not all(has_attr):
            raise ValueError("GraphBatch.collate: some graphs have edge_attr and some do not")
        return GraphBatch(
            x=torch.cat([g.x for g in graphs]),
            edge_index=torch.cat([g.edge_index + offsets[i] for i, g in enumerate(graphs)], 1),
            y=torch.cat([g.y for g in graphs]),
            batch=torch.cat([g.batch + goff[i] for i, g in enumerate(graphs)]),
            num_graphs=int(goff[-1]),
            mask=torch.cat([g.labelled for g in graphs]) if has_mask else None,
            edge_attr=torch.cat([g.edge_attr for g in graphs]) if all(has_attr) else None)


def _count(name, v, minimum):
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < minimum:
        raise ValueError(f"long_range_graphs: {name} must be an integer >= {minimum}, got {v!r}")
    return int(v)


def long_range_graphs(k: int, num_graphs: int, *, num_colors: int = 4,
                      decoy_prob: float = 0.5, seed: int = 0) -> GraphBatch:
    """``num_graphs`` graphs of the task with range ``k`` (source k hops from the target),
    drawn from their own generator seeded with ``seed`` (the global RNG is untouched).
    See the module docstring."""
    k = _count("k", k, 1)
    num_graphs = _count("num_graphs", num_graphs, 1)
    num_colors = _count("num_colors", num_colors, 2)
    if isinstance(decoy_prob, bool) or not isinstance(decoy_prob, numbers.Real) or \
            not 0 <= decoy_prob <= 1:
        raise ValueError(f"long_range_graphs: decoy_prob must lie in [0, 1], got {decoy_prob!r}")
    gen = torch.Generator().manual_seed(int(seed))
    G, P = num_graphs, k + 1
    colour = torch.randint(num_colors, (G,), generator=gen)
    has_decoy = torch.rand(G, k, generator=gen) < decoy_prob      # on v_0 .. v_{k-1}
    decoy_colour = torch.randint(num_colors, (G, k), generator=gen)

    # node ids: graph g's path nodes first (v_0..v_k), then its decoys
    n_decoys = has_decoy.sum(1)
    sizes = P + n_decoys
    start = torch.cat([torch.zeros(1, dtype=torch.long), sizes.cumsum(0)[:-1]])
    path = start.unsqueeze(1) + torch.arange(P)                   # [G, P]
    g_idx, pos = has_decoy.nonzero(as_tuple=True)                 # decoy of graph g at v_pos
    rank = has_decoy.long().cumsum(1)[g_idx, pos] - 1             # its index among g's decoys
    decoy = start[g_idx] + P + rank

    src = torch.cat([path[:, :-1].reshape(-1), path[g_idx, pos]])
    dst = torch.cat([path[:, 1:].reshape(-1), decoy])
    edge_index = torch.stack([torch.cat([src, dst]), torch.cat([dst, src])])

    n = int(sizes.sum())
    x = torch.zeros(n, 2 + num_colors)
    x[path[:, 0], 0] = 1.0                                          # is_target
    x[path[:, -1], 1] = 1.0                                         # is_source
    x[path[:, -1], 2 + colour] = 1.0
    x[decoy, 2 + decoy_colour[g_idx, pos]] = 1.0
    y = torch.full((n,), -1, dtype=torch.long)
    y[path[:, 0]] = colour
    mask = torch.zeros(n, dtype=torch.bool)
    mask[path[:, 0]] = True
    batch = torch.repeat_interleave(torch.arange(G), sizes)
    return GraphBatch(x=x, edge_index=edge_index, y=y, batch=batch, num_graphs=G, mask=mask)
