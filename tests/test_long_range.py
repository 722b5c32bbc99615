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


@pytest.mark.parametrize("k", [2, 3, 6])
def test_label_is_the_colour_of_the_unique_flagged_node_k_hops_away(k):
    b = long_range_graphs(k, 12, num_colors=3, decoy_prob=0.7, seed=4)
    assert b.x.shape == (b.num_nodes, 5) and b.num_graphs == 12
    assert b.batch.shape == (b.num_nodes,) and int(b.batch.max()) == 11
    targets = b.mask.nonzero().flatten().tolist()
    assert len(targets) == 12 and bool((b.y[~b.mask] == -1).all())
    assert torch.equal(b.x[:, 0] == 1, b.mask)
    # flagged nodes carry exactly one colour, every other node none; flagged nodes are leaves
    flagged = b.x[:, 1] == 1
    assert bool((b.x[flagged, 2:].sum(1) == 1).all()) and bool((b.x[~flagged, 2:] == 0).all())
    degree = torch.bincount(b.edge_index[0], minlength=b.num_nodes)
    assert bool((degree[flagged] == 1).all())
    extra = 0
    for t in targets:
        dist = hops_from(b, t)
        assert all(int(b.batch[v]) == int(b.batch[t]) for v in dist)  # graphs are separate
        assert len(dist) == int((b.batch == b.batch[t]).sum())       # and connected
        by_d = flagged_by_distance(b, t)
        (source,) = by_d[k]                                          # unique, at distance k
        assert max(by_d) == k and k - 1 in by_d                      # the twin at k - 1
        assert int(b.x[source, 2:].argmax()) == int(b.y[t])
        decoys = [v for d, vs in by_d.items() if d < k for v in vs]
        assert 1 <= len(decoys) <= 2
        extra += len(decoys) - 1
    assert 0 < extra < len(targets)                                  # decoy_prob 0.7 of 12
    again = long_range_graphs(k, 12, num_colors=3, decoy_prob=0.7, seed=4)
    assert torch.equal(b.edge_index, again.edge_index) and torch.equal(b.x, again.x)


def pooled_states(batch: GraphBatch, steps: int) -> tuple:
    """A random message-passing network run ``steps`` times, then pooled per graph (max, sum)
    as a graph-level readout like IterGNN's stopping confidence; also the targets' states."""
    g = torch.Generator().manual_seed(0)
    w_in = torch.randn(batch.x.shape[1], 16, generator=g, dtype=torch.float64)
    w_nbr = torch.randn(16, 16, generator=g, dtype=torch.float64)
    src, dst = batch.edge_index
    h = torch.tanh(batch.x.double() @ w_in)
    for _ in range(steps):
        h = torch.tanh(h + torch.zeros_like(h).index_add(0, dst, h[src]) @ w_nbr)
    index = batch.batch.unsqueeze(1).expand_as(h)
    mx = h.new_full((batch.num_graphs, 16), -2.0).scatter_reduce(0, index, h, "amax")
    sm = h.new_zeros(batch.num_graphs, 16).index_add(0, batch.batch, h)
    return mx, sm, h[batch.mask]


def test_pooled_features_cannot_tell_the_source_from_its_twin():
    """Swapping the source's and the twin's colours changes every label whose two colours
    differ, yet leaves any pool of r-step node states the same while 2r < k - 1 (the module's
    argument); with k steps the target itself tells them apart."""
    k = 9
    b = long_range_graphs(k, 40, num_colors=4, seed=1)
    swapped = b.x.clone()
    differ = []
    for i, t in enumerate(b.mask.nonzero().flatten().tolist()):
        by_d = flagged_by_distance(b, t)
        (source,), twin = by_d[k], by_d[k - 1][0]
        swapped[[source, twin]] = b.x[[twin, source]]
        differ.append(not torch.equal(b.x[source], b.x[twin]))
    differ = torch.tensor(differ)
    assert differ.sum() > 20                        # the labels change on these graphs
    other = GraphBatch(x=swapped, edge_index=b.edge_index, y=b.y, batch=b.batch,
                       num_graphs=b.num_graphs, mask=b.mask)
    # radius 0: the multiset of flagged colours per graph is the same, the labels are not
    for r in range(k // 2):                         # every r with 2r < k - 1
        for p, q in zip(pooled_states(b, r), pooled_states(other, r)):
            torch.testing.assert_close(p, q, rtol=0, atol=1e-12)
    targets_k = pooled_states(b, k)[2], pooled_states(other, k)[2]
    gap = (targets_k[0] - targets_k[1]).abs().amax(1)
    assert bool((gap[differ] > 1e-9).all()) and bool((gap[~differ] == 0).all())


def test_collate_offsets_and_to():
    a = long_range_graphs(2, 3, seed=0)
    b = long_range_graphs(3, 2, seed=1)
    c = GraphBatch.collate([a, b])
    assert c.num_graphs == 5 and c.num_nodes == a.num_nodes + b.num_nodes
    assert torch.equal(c.edge_index[:, a.edge_index.shape[1]:], b.edge_index + a.num_nodes)
    assert torch.equal(c.batch[a.num_nodes:], b.batch + 3)
    assert torch.equal(c.labelled, torch.cat([a.mask, b.mask]))
    assert c.to("cpu").x.shape == c.x.shape


@pytest.mark.parametrize("kw", [dict(k=0), dict(k=1), dict(num_graphs=0), dict(num_colors=1),
                                dict(decoy_prob=1.5), dict(k=2.5)])
def test_bad_arguments(kw):
    args = dict(k=2, num_graphs=3) | kw
    with pytest.raises(ValueError):
        long_range_graphs(args.pop("k"), args.pop("num_graphs"), **args)
