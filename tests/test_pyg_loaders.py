"""fastpicard's data in a PyG mini-batch pipeline: ``GraphData.to_pyg()`` feeds PyG's loaders
unchanged, and PIGN runs each sampled subgraph (a new edge_index per batch) on the fused path."""
import pytest
import torch
import torch.nn.functional as F

from fastpicard.datasets import planetoid
from fastpicard.nn import PIGN

loader_mod = pytest.importorskip("torch_geometric.loader")
pyg_typing = pytest.importorskip("torch_geometric.typing")


def _pair(seed=0):
    """A fused PIGN and an unfused copy with the same weights (PyG's GCNConv, eval mode)."""
    torch.manual_seed(seed)
    fused = PIGN(1433, 16, 7, max_iter=3, dropout=0.5).eval()
    plain = PIGN(1433, 16, 7, max_iter=3, dropout=0.5, fused=False).eval()
    plain.load_state_dict(fused.state_dict())
    assert fused.uses_fused_path and not plain.uses_fused_path
    return fused, plain


def test_random_node_loader_batches_on_the_fused_path():
    data = planetoid("Cora", normalize=True).to_pyg()
    loader = loader_mod.RandomNodeLoader(data, num_parts=4, shuffle=True)
    fused, plain = _pair()
    seen = 0
    for batch in loader:  # each batch: an induced subgraph with its own, relabelled edge_index
        assert batch.num_nodes < data.num_nodes and batch.edge_index.max() < batch.num_nodes
        out = fused(batch.x, batch.edge_index)
        torch.testing.assert_close(out, plain(batch.x, batch.edge_index), rtol=1e-5, atol=1e-5)
        seen += batch.num_nodes
    assert seen == data.num_nodes


def test_training_on_sampled_batches_reaches_every_parameter():
    data = planetoid("Cora", normalize=True).to_pyg()
    loader = loader_mod.RandomNodeLoader(data, num_parts=3, shuffle=True)
    torch.manual_seed(0)
    model = PIGN(1433, 16, 7, max_iter=2)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for batch in loader:
        model.train()
        loss = F.cross_entropy(model(batch.x, batch.edge_index)[batch.train_mask],
                               batch.y[batch.train_mask])
        opt.zero_grad()
        loss.backward()
        opt.step()
        assert torch.isfinite(loss)
    assert all(not torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_neighbor_loader_batches_on_the_fused_path():
    if not (pyg_typing.WITH_PYG_LIB or pyg_typing.WITH_TORCH_SPARSE):
        pytest.skip("NeighborLoader needs pyg-lib or torch-sparse, which have no wheels for "
                    "this torch: pip install --no-build-isolation torch-sparse builds one")
    data = planetoid("Cora", normalize=True).to_pyg()
    loader = loader_mod.NeighborLoader(data, num_neighbors=[10, 5], batch_size=64,
                                       input_nodes=data.train_mask, shuffle=True)
    fused, plain = _pair()
    for i, batch in enumerate(loader):
        out = fused(batch.x, batch.edge_index)[:batch.batch_size]  # the seed nodes come first
        torch.testing.assert_close(out, plain(batch.x, batch.edge_index)[:batch.batch_size],
                                   rtol=1e-5, atol=1e-5)
        if i == 2:
            break
