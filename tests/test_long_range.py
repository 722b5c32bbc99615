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


@pytest.mark.parametrize("k", [1, 2, 5])
def test_label_is_the_colour_k_hops_away(k):
    b = long_range_graphs(k, 6, num_colors=3, decoy_prob=0.7, seed=4)
    assert b.x.shape == (b.num_nodes, 5) and b.num_graphs == 6
    assert b.batch.shape == (b.num_nodes,) and int(b.batch.max()) == 5
    targets = b.mask.nonzero().flatten().tolist()
    assert len(targets) == 6 and bool((b.y[~b.mask] == -1).all())
    sources = (b.x[:, 1] == 1).nonzero().flatten().tolist()
    for t in targets:
        dist = hops_from(b, t)
        assert all(int(b.batch[v]) == int(b.batch[t]) for v in dist)  # graphs are separate
        (source,) = [s for s in sources if s in dist]
        assert dist[source] == k
        assert int(b.x[source, 2:].argmax()) == int(b.y[t])
        # every other coloured node (a decoy) is closer than the source, and not flagged
        decoys = [v for v in dist if v != source and float(b.x[v, 2:].sum()) == 1.0]
        assert all(dist[v] <= k and float(b.x[v, 1]) == 0.0 for v in decoys)
    assert torch.equal(b.edge_index, long_range_graphs(k, 6, num_colors=3, decoy_prob=0.7,
                                                       seed=4).edge_index)


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
                                dict(decoy_prob=1.5), dict(k=2.5)])
def test_bad_arguments(kw):
    args = dict(k=2, num_graphs=3) | kw
    with pytest.raises(ValueError):
        long_range_graphs(args.pop("k"), args.pop("num_graphs"), **args)
