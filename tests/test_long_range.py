"""fastpicard.datasets.long_range_graphs and GraphBatch."""
from __future__ import annotations

import pytest
import torch

from fastpicard.datasets import GraphBatch, long_range_graphs


def hops_from(batch: GraphBatch, start: int) -> dict:
    """Breadth-first distances from one node."""
    src, dst = batch.edge_index.tolist()
    nbrs: dict = {}
    for a, b in zip(src, dst):
        nbrs.setdefault(a, []).append(b)
    dist, frontier = {start: 0}, [start]
    while frontier:
        nxt = []
        for u in frontier:
            for v in nbrs.get(u, []):
                if v not in dist:
                    dist[v] = dist[u] + 1
                    nxt.append(v)
        frontier = nxt
    return dist


def flagged_by_distance(batch: GraphBatch, target: int) -> dict:
    """{distance from the target: [flagged nodes]} within the target's graph."""
    dist = hops_from(batch, target)
    out: dict = {}
    for v, d in dist.items():
        if float(batch.x[v, 1]) == 1.0:
            out.setdefault(d, []).append(v)
    return out


@pytest.mark.parametrize("k", [1, 2, 5])
def test_label_is_the_colour_of_the_unique_nearest_flagged_node_k_hops_away(k):
    b = long_range_graphs(k, 12, num_colors=4, seed=4)
    assert b.x.shape == (b.num_nodes, 6) and b.num_graphs == 12
    assert b.batch.shape == (b.num_nodes,) and int(b.batch.max()) == 11
    targets = b.mask.nonzero().flatten().tolist()
    assert len(targets) == 12 and bool((b.y[~b.mask] == -1).all())
    assert torch.equal(b.x[:, 0] == 1, b.mask)
    # flagged nodes carry exactly one colour, every other node none; flagged nodes are leaves
    flagged = b.x[:, 1] == 1
    assert bool((b.x[flagged, 2:].sum(1) == 1).all()) and bool((b.x[~flagged, 2:] == 0).all())
    degree = torch.bincount(b.edge_index[0], minlength=b.num_nodes)
    assert bool((degree[flagged] == 1).all())
    for t in targets:
        dist = hops_from(b, t)
        assert all(int(b.batch[v]) == int(b.batch[t]) for v in dist)  # graphs are separate
        assert len(dist) == int((b.batch == b.batch[t]).sum())       # and connected
        by_d = flagged_by_distance(b, t)
        assert sorted(by_d) == [k, k + 1] and len(by_d[k + 1]) == 3  # the decoys: farther
        (source,) = by_d[k]                                          # unique, at distance k
        assert int(b.x[source, 2:].argmax()) == int(b.y[t])
        # every colour once among the flagged nodes: their multiset never tells the label
        colours = b.x[by_d[k] + by_d[k + 1], 2:].argmax(1)
        assert sorted(colours.tolist()) == [0, 1, 2, 3]
    assert len(set(b.y[b.mask].tolist())) > 1
    again = long_range_graphs(k, 12, num_colors=4, seed=4)
    assert torch.equal(b.edge_index, again.edge_index) and torch.equal(b.x, again.x)


def node_states(batch: GraphBatch, steps: int) -> torch.Tensor:
    """A random message-passing network (float64) run ``steps`` times: each node's state is a
    function of its ``steps``-hop ball."""
    g = torch.Generator().manual_seed(0)
    w_in = torch.randn(batch.x.shape[1], 16, generator=g, dtype=torch.float64)
    w_nbr = torch.randn(16, 16, generator=g, dtype=torch.float64)
    src, dst = batch.edge_index
    h = torch.tanh(batch.x.double() @ w_in)
    for _ in range(steps):
        h = torch.tanh(h + torch.zeros_like(h).index_add(0, dst, h[src]) @ w_nbr)
    return h


def readouts(batch: GraphBatch, steps: int) -> torch.Tensor:
    """Per graph: max and sum pools of the node states (a graph-level readout like IterGNN's
    stopping confidence) beside the target's own state."""
    h = node_states(batch, steps)
    index = batch.batch.unsqueeze(1).expand_as(h)
    mx = h.new_full((batch.num_graphs, h.shape[1]), -2.0).scatter_reduce(0, index, h, "amax")
    sm = h.new_zeros(batch.num_graphs, h.shape[1]).index_add(0, batch.batch, h)
    return torch.cat([mx, sm, h[batch.mask]], 1)


@pytest.mark.parametrize("k", [4, 7])
def test_no_readout_tells_the_label_in_fewer_steps_than_the_module_says(k):
    """Below k steps the target's state, and below k/2 steps any pool of node states, is the
    same in every graph (so at chance); from ceil(k/2) on the pools differ, from k on the
    target's state does (the bounds are tight, so this test can fail)."""
    b = long_range_graphs(k, 24, num_colors=3, seed=1)
    y = b.y[b.mask]
    assert len(set(y.tolist())) == 3
    for r in range(k + 1):
        h = node_states(b, r)[b.mask]
        spread = (h - h[:1]).abs().amax()
        assert (spread < 1e-12) if r < k else (spread > 1e-6)
        pooled = readouts(b, r)
        spread = (pooled - pooled[:1]).abs().amax()
        assert (spread < 1e-9) if 2 * r < k else (spread > 1e-6)


def test_collate_offsets_and_to():
    a = long_range_graphs(2, 3, seed=0)
    b = long_range_graphs(3, 2, seed=1)
    c = GraphBatch.collate([a, b])
    assert c.num_graphs == 5 and c.num_nodes == a.num_nodes + b.num_nodes
    assert torch.equal(c.edge_index[:, a.edge_index.shape[1]:], b.edge_index + a.num_nodes)
    assert torch.equal(c.batch[a.num_nodes:], b.batch + 3)
    assert torch.equal(c.labelled, torch.cat([a.mask, b.mask]))
    assert c.to("cpu").x.shape == c.x.shape


@pytest.mark.parametrize("kw", [dict(k=0), dict(num_graphs=0), dict(num_colors=1),
                                dict(k=2.5)])
def test_bad_arguments(kw):
    args = dict(k=2, num_graphs=3) | kw
    with pytest.raises(ValueError):
        long_range_graphs(args.pop("k"), args.pop("num_graphs"), **args)
