"""fastpicard.datasets.pascalvoc_sp on tiny files written in PyG's raw LRGB layout."""
from __future__ import annotations

import os
import pickle

import pytest
import torch

from fastpicard.datasets import GraphBatch, pascalvoc_sp


def graph(n=5, e=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 14, generator=g), torch.rand(e, 2, generator=g),
            torch.randint(0, n, (2, e), generator=g), torch.randint(0, 21, (n,), generator=g))


def write_split(root, split, graphs):
    raw = root / "pascalvoc-sp" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    with open(raw / f"{split}.pickle", "wb") as f:
        pickle.dump(graphs, f)
    return raw / f"{split}.pickle"


def test_reads_pyg_layout(tmp_path):
    graphs = [graph(seed=i) for i in range(3)]
    write_split(tmp_path, "val", graphs)
    out = pascalvoc_sp(tmp_path, "val")
    assert len(out) == 3
    for (x, ea, ei, y), g in zip(graphs, out):
        assert torch.equal(g.x, x) and torch.equal(g.edge_attr, ea)
        assert torch.equal(g.edge_index, ei) and torch.equal(g.y, y)
        assert g.num_graphs == 1 and g.mask is None
    batch = GraphBatch.collate(out)
    assert batch.num_nodes == 15 and batch.edge_attr.shape == (18, 2)
    # y as a plain list (PyG converts it with torch.LongTensor)
    x, ea, ei, y = graph()
    write_split(tmp_path, "test", [(x, ea, ei, y.tolist())])
    assert torch.equal(pascalvoc_sp(tmp_path, "test")[0].y, y)


def test_refuses_code_in_the_pickle(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    path = write_split(tmp_path, "train", [Evil()])
    with pytest.raises(ValueError, match="refusing to load") as e:
        pascalvoc_sp(tmp_path, "train")
    assert str(path) in str(e.value)


@pytest.mark.parametrize("bad, match", [
    (lambda g: (g[0][:, :3], *g[1:]), "14 features"),
    (lambda g: (g[0], g[1], g[2] + 10, g[3]), "outside"),
    (lambda g: (g[0], g[1], g[2], g[3] + 30), "labels"),
    (lambda g: (g[0], g[1][:2], g[2], g[3]), "edge_attr"),
    (lambda g: (g[0], g[1], g[2].float(), g[3]), "edge_index"),
    (lambda g: (g[0], g[1], g[2], g[3][:2]), "labels for"),
    (lambda g: g[:3], "tuple"),
    (lambda g: (g[0] * float("nan"), *g[1:]), "non-finite"),
])
def test_validation_names_file_and_graph(tmp_path, bad, match):
    path = write_split(tmp_path, "train", [graph(), bad(graph(seed=1))])
    with pytest.raises(ValueError, match=match) as e:
        pascalvoc_sp(tmp_path, "train")
    assert str(path) in str(e.value) and "graph 1" in str(e.value)


def test_missing_and_truncated_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="train.pickle"):
        pascalvoc_sp(tmp_path, "train")
    with pytest.raises(ValueError, match="split"):
        pascalvoc_sp(tmp_path, "dev")
    path = write_split(tmp_path, "train", [graph()])
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(ValueError, match="cannot read"):
        pascalvoc_sp(tmp_path, "train")
