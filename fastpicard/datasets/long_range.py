"""A long-range node-classification task generated on the fly (a stand-in for LRGB, which
cannot be downloaded here): a node's label is a colour held k hops away, and only the distance
tells which colour.

Each graph is a *spider*: ``num_colors`` paths ("arms") meet at the target. Every arm ends in
a flagged node that carries a colour; the colours of the arm ends are a random permutation of
all ``num_colors`` colours, and flagged nodes differ in nothing else. One arm, of length
``k``, ends in the source; the other ``num_colors - 1`` arms, of length ``k + 1``, end in
decoys. Rule: the target's label is the colour of the *nearest* flagged node, the source (the
only flagged node at distance ``k``; every decoy is at ``k + 1``). Node features:
``[is_target, is_flagged, one-hot colour]`` (arm interiors are all zero). Only the targets are
labelled (``mask``); every other node has label -1. The graph is the same for every sample of
a given ``k``: only the colours move.

Why this rule. The first version flagged only the source, so a graph-level readout saw its
colour after one step (IterGNN's pooled stopping confidence carried it to the target). Flagging
decoys that sit *closer* than the source, with colours drawn independently of the source's,
still leaks: the source's colour is always among the flagged colours, so their multiset
predicts it above chance (no rule can avoid it: the target must not learn the source's colour
from the decoys within its (k-1)-hop ball, and the multiset must not depend on it); IterGNN
reached 47-61 % on 4 colours at k = 16 with 3-6 iterations that way. Here the multiset is the
same in every graph, and:

* *Solvable with k message-passing steps*: after k steps the target has seen exactly one
  flagged node, the source; its colour is the label.
* *Not solvable with fewer by message passing*: after r < k steps the target's state is a
  function of its r-hop ball, which holds no flagged node and is the same in every graph:
  chance (1 / ``num_colors``).
* *Not solvable with fewer than about k/2 steps by any graph-level readout* (a max/sum pool of
  node states, like IterGNN's stopping confidence): while 2r < k no r-hop ball holds the target
  and a flagged node, or two flagged nodes, and the ball around any node within r hops of a
  flagged end is the same bare path whichever arm it is on. So the multiset of r-hop balls
  (every node state and any pool of them) is the same for every graph: chance again. From
  r = ceil(k/2) on, the source arm's midpoint sees both the target and the source.
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


def long_range_graphs(k: int, num_graphs: int, *, num_colors: int = 3,
                      seed: int = 0) -> GraphBatch:
    """``num_graphs`` graphs of the task with range ``k`` (source k hops from the target,
    ``num_colors - 1`` decoys k + 1 hops away), their colours drawn from their own generator
    seeded with ``seed`` (the global RNG is untouched). See the module docstring."""
    k = _count("k", k, 1)
    num_graphs = _count("num_graphs", num_graphs, 1)
    C = _count("num_colors", num_colors, 2)
    gen = torch.Generator().manual_seed(int(seed))
    G = num_graphs
    colour = torch.rand(G, C, generator=gen).argsort(1)     # arm a's end colour; arm 0: source

    # one graph's node ids: the target 0, then arm a's nodes, nearest the target first
    lengths = torch.tensor([k] + [k + 1] * (C - 1))
    arm_start = 1 + lengths.cumsum(0) - lengths
    size = 1 + int(lengths.sum())
    pos = torch.cat([torch.arange(int(n)) for n in lengths])  # 0 = next to the target
    node = torch.arange(1, size)
    prev = torch.where(pos == 0, 0, node - 1)
    ends = arm_start + lengths - 1

    offset = (size * torch.arange(G)).unsqueeze(1)           # [G, 1]
    src, dst = (prev + offset).flatten(), (node + offset).flatten()
    edge_index = torch.stack([torch.cat([src, dst]), torch.cat([dst, src])])
    x = torch.zeros(G, size, 2 + C)
    x[:, 0, 0] = 1.0                                          # is_target
    x[:, ends, 1] = 1.0                                       # is_flagged
    x[torch.arange(G).unsqueeze(1), ends, 2 + colour] = 1.0
    targets = offset.squeeze(1)
    y = torch.full((G * size,), -1, dtype=torch.long)
    y[targets] = colour[:, 0]
    mask = torch.zeros(G * size, dtype=torch.bool)
    mask[targets] = True
    batch = torch.arange(G).repeat_interleave(size)
    return GraphBatch(x=x.reshape(G * size, 2 + C), edge_index=edge_index, y=y, batch=batch,
                      num_graphs=G, mask=mask)
