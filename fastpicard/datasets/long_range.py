"""A long-range node-classification task generated on the fly (a stand-in for LRGB, which
cannot be downloaded here): a node's label is a colour held k hops away, and only the distance
tells which colour.

Each graph is a *spider*: paths ("arms") that meet at the target. Every arm ends in a flagged
node carrying a colour (one of ``num_colors``, drawn independently and uniformly), and all
flagged nodes have the same features, ``[is_target=0, is_flagged=1, one-hot colour]``:

* the source arm, length ``k``: its end is the source;
* the twin arm, length ``k - 1`` (always present);
* with probability ``decoy_prob``, one more decoy arm of length uniform in ``1 .. k-1``.

Rule: the target's label is the colour of the farthest flagged node, which is the source, the
only flagged node at distance exactly ``k`` (every decoy is at distance ≤ ``k - 1``). Node
features: ``[is_target, is_flagged, one-hot colour]`` (arm interiors are all zero). Only the
targets are labelled (``mask``); every other node has label -1.

Why this rule (an earlier version flagged only the source, so a graph-level readout saw its
colour after one step: IterGNN's pooled stopping confidence carried it to the target):

* *Solvable with k message-passing steps*: after k steps the target has seen every flagged
  node and the hop at which each colour first arrived; the one arriving at hop k is the label.
* *Not solvable with fewer by node-local message passing*: after r < k steps the target's
  state is a function of its r-hop ball, which holds only decoys, and their colours and arm
  lengths are drawn independently of the source's colour: chance (1 / ``num_colors``).
* *No local or pooled feature singles out the source*: a flagged node's own features, and
  its ball of radius r < its arm length (a bare path, no target), are the same for the source
  and every decoy; only reaching the target tells an arm's length. A graph-level readout (a
  max/sum pool of node states, like IterGNN's stopping confidence) can do better than local
  message passing, but not below about k/2 steps: while 2r < k - 1 no r-hop ball holds both
  the target and the source or twin end, so swapping the source's and the twin's colours
  leaves the multiset of r-hop balls (every node state and any pool of them) unchanged; such a
  model cannot tell the two colours apart and is right at most (1 + 1/C)/2 of the time
  (62.5 % with 4 colours). The midpoint of the source arm sees both ends from r = ⌈k/2⌉ on.
  The multiset of flagged colours alone (radius 0) holds the source's colour with those of
  the decoys, in any order.
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
    """``num_graphs`` graphs of the task with range ``k`` >= 2 (source k hops from the target),
    drawn from their own generator seeded with ``seed`` (the global RNG is untouched).
    See the module docstring."""
    k = _count("k", k, 2)
    num_graphs = _count("num_graphs", num_graphs, 1)
    num_colors = _count("num_colors", num_colors, 2)
    if isinstance(decoy_prob, bool) or not isinstance(decoy_prob, numbers.Real) or \
            not 0 <= decoy_prob <= 1:
        raise ValueError(f"long_range_graphs: decoy_prob must lie in [0, 1], got {decoy_prob!r}")
    gen = torch.Generator().manual_seed(int(seed))
    G = num_graphs
    # arm lengths [G, 3]: source k, twin k - 1, the optional decoy 1 .. k-1 (0: absent)
    extra = torch.randint(1, k, (G,), generator=gen)
    extra = torch.where(torch.rand(G, generator=gen) < decoy_prob, extra, 0)
    lengths = torch.stack([torch.full((G,), k), torch.full((G,), k - 1), extra], 1)
    colour = torch.randint(num_colors, (G, 3), generator=gen)    # of each arm's end

    # node ids: graph g's target first, then its arms' nodes, nearest the target first
    sizes = 1 + lengths.sum(1)
    start = torch.cat([torch.zeros(1, dtype=torch.long), sizes.cumsum(0)[:-1]])
    arm_start = start.unsqueeze(1) + 1 + lengths.cumsum(1) - lengths            # [G, 3]
    g_arm, a_arm = lengths.nonzero(as_tuple=True)                                 # arms present
    arm_len = lengths[g_arm, a_arm]
    arm_of = torch.repeat_interleave(torch.arange(arm_len.numel()), arm_len)      # per arm node
    first = torch.cat([torch.zeros(1, dtype=torch.long), arm_len.cumsum(0)[:-1]])
    pos = torch.arange(int(arm_len.sum())) - first[arm_of]                        # 0 = next to target
    node = arm_start[g_arm, a_arm][arm_of] + pos
    prev = torch.where(pos == 0, start[g_arm][arm_of], node - 1)
    edge_index = torch.stack([torch.cat([prev, node]), torch.cat([node, prev])])

    n = int(sizes.sum())
    ends = arm_start[g_arm, a_arm] + arm_len - 1
    x = torch.zeros(n, 2 + num_colors)
    x[start, 0] = 1.0                                               # is_target
    x[ends, 1] = 1.0                                                # is_flagged
    x[ends, 2 + colour[g_arm, a_arm]] = 1.0
    y = torch.full((n,), -1, dtype=torch.long)
    y[start] = colour[:, 0]
    mask = torch.zeros(n, dtype=torch.bool)
    mask[start] = True
    batch = torch.repeat_interleave(torch.arange(G), sizes)
    return GraphBatch(x=x, edge_index=edge_index, y=y, batch=batch, num_graphs=G, mask=mask)
