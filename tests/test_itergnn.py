"""fastpicard.nn.IterGNN: adaptive iterations with a learned stopping confidence."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import fastpicard
from fastpicard.nn import IterGNN
from test_pign import toy_graph, train_losses

pyg_nn = pytest.importorskip("torch_geometric.nn")


class Constant(nn.Module):
    """A 'conv' whose output ignores the graph: every iterate is the same."""

    def forward(self, h, edge_index):
        return torch.ones_like(h)


@pytest.mark.parametrize("conv", ["gcn", "gat", "sage"])
def test_loss_decreases(conv):
    x, ei, y = toy_graph()
    torch.manual_seed(0)
    model = IterGNN(6, 16, 3, conv=conv, max_iter=6, dropout=0.1)
    losses = train_losses(model, x, ei, y)
    assert losses[-1] < 0.7 * losses[0]
    assert 1 <= int(model.last_iterations.max()) <= 6


def test_fused_graph_matches_edge_index():
    x, ei, _ = toy_graph()
    torch.manual_seed(0)
    model = IterGNN(6, 16, 3, max_iter=5)
    graph = fastpicard.Graph.from_edge_index(ei, x.shape[0])
    for train in (False, True):
        model.train(train)
        torch.manual_seed(1)
        a = model(x, graph)
        torch.manual_seed(1)
        b = model(x, ei)
        if not train:  # dropout draws differ between the fused kernel and F.dropout
            assert torch.allclose(a, b, atol=1e-5)
        assert a.shape == b.shape == (x.shape[0], 3)


def test_stopping_weights_sum_to_one_per_graph():
    """With identical iterates the output is decoder(h) whatever the stopping weights."""
    torch.manual_seed(0)
    x = torch.randn(10, 4)
    batch = torch.tensor([0] * 4 + [1] * 6)
    model = IterGNN(4, 8, 2, conv=Constant(), max_iter=7, dropout=0.0).eval()
    with torch.no_grad():
        model.confidence.bias.fill_(-3.0)  # low confidence: most mass left at max_iter
        out = model(x, torch.empty(2, 0, dtype=torch.long), batch)
        ref = model.decoder(torch.ones(10, 8))
    assert torch.allclose(out, ref, atol=1e-6)
    assert model.last_iterations.tolist() == [7, 7]


def test_graphs_stop_on_their_own():
    torch.manual_seed(0)
    x = torch.randn(6, 4)
    batch = torch.tensor([0, 0, 0, 1, 1, 1])
    model = IterGNN(4, 8, 2, conv=Constant(), max_iter=20, eps=0.01).eval()
    with torch.no_grad():
        model.confidence.weight.zero_()
        model.confidence.bias.fill_(2.0)  # c = 0.88 per step: stops after 3 steps
        model(x, torch.empty(2, 0, dtype=torch.long), batch)
    assert model.last_iterations.tolist() == [3, 3]


def test_bad_arguments():
    with pytest.raises(ValueError, match="eps"):
        IterGNN(4, 8, 2, eps=1.0)
    with pytest.raises(ValueError, match="max_iter"):
        IterGNN(4, 8, 2, max_iter=0)
    with pytest.raises(ValueError, match="act"):
        IterGNN(4, 8, 2, act="gelu")
    with pytest.raises(TypeError, match="conv"):
        IterGNN(4, 8, 2, conv=3)
    x, ei, _ = toy_graph()
    graph = fastpicard.Graph.from_edge_index(ei, x.shape[0])
    with pytest.raises(TypeError, match="GCN"):
        IterGNN(6, 8, 2, conv="gat")(x, graph)
    with pytest.raises(ValueError, match="batch"):
        IterGNN(6, 8, 2)(x, ei, torch.zeros(3, dtype=torch.long))
