"""Planetoid loader (embedded Cora/CiteSeer, PubMed from shared data) and drop-in noise."""
from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch

from fastpicard.datasets import GraphData, dropin_noise, planetoid, row_normalize

# name: nodes, directed edges, features, classes, train, val, test (the standard numbers)
STANDARD = {
    "Cora": (2708, 10556, 1433, 7, 140, 500, 1000),
    "CiteSeer": (3327, 9104, 3703, 6, 120, 500, 1000),
    "PubMed": (19717, 88648, 500, 3, 60, 500, 1000),
}


def shared_planetoid() -> Path | None:
    """../shared/data/planetoid beside the checkout (CI), or FASTPICARD_DATA/planetoid."""
    here = Path(__file__).resolve().parents[1]
    cands = [Path(os.environ["FASTPICARD_DATA"]) / "planetoid"] if "FASTPICARD_DATA" in os.environ \
        else []
    cands += [here.parent / "shared/data/planetoid", here.parent.parent / "shared/data/planetoid"]
    return next((c for c in cands if (c / "PubMed/raw/ind.pubmed.graph").is_file()), None)


PUBMED_MISSING = ("PubMed's raw files not found: set FASTPICARD_DATA to a folder holding "
                  "planetoid/PubMed/raw/ind.pubmed.*")


def check_counts(d: GraphData, name: str):
    n, e, f, c, tr, va, te = STANDARD[name]
    assert (d.num_nodes, d.num_edges, d.num_features, d.num_classes) == (n, e, f, c)
    assert (int(d.train_mask.sum()), int(d.val_mask.sum()), int(d.test_mask.sum())) == (tr, va, te)
    assert d.x.shape == (n, f) and d.x.dtype == torch.float32
    assert d.y.shape == (n,) and d.y.dtype == torch.int64
    assert d.edge_index.dtype == torch.int64 and int(d.edge_index.min()) >= 0
    # splits are disjoint; every edge has its reverse; no self loops
    assert not (d.train_mask & d.val_mask).any() and not (d.val_mask & d.test_mask).any()
    assert not (d.train_mask & d.test_mask).any()
    row, col = d.edge_index
    assert not (row == col).any()
    fwd = torch.sort(row * n + col)[0]
    assert torch.equal(fwd, torch.sort(col * n + row)[0])
    assert torch.unique(fwd).numel() == e


@pytest.mark.parametrize("name", ["Cora", "CiteSeer"])
def test_embedded_counts(name):
    d = planetoid(name)
    check_counts(d, name)
    assert d.name == name
    assert planetoid(name.upper()).num_edges == d.num_edges  # case-insensitive


def test_citeseer_isolated_test_nodes():
    d = planetoid("CiteSeer")
    empty = d.x.sum(1) == 0
    # 15 test ids of CiteSeer have no features/labels: zero rows, label 0, not in the test mask
    from fastpicard.datasets.planetoid import _DATA_DIR
    index_file = _DATA_DIR / "CiteSeer" / "ind.citeseer.test.index"
    test_ids = torch.tensor([int(s) for s in index_file.read_text().split()])
    lo, hi = int(test_ids.min()), int(test_ids.max())
    missing = torch.tensor(sorted(set(range(lo, hi + 1)) - set(test_ids.tolist())))
    assert missing.numel() == 15
    assert empty[missing].all() and (d.y[missing] == 0).all() and not d.test_mask[missing].any()
    assert d.test_mask.sum() == 1000 and d.test_mask[test_ids].all()


def test_pubmed_from_shared_data():
    root = shared_planetoid()
    if root is None:
        pytest.skip(PUBMED_MISSING)
    check_counts(planetoid("PubMed", root=root), "PubMed")
    check_counts(planetoid("pubmed", root=root / "PubMed" / "raw"), "PubMed")


@pytest.mark.parametrize("name", ["Cora", "CiteSeer", "PubMed"])
def test_matches_pyg_reader(name):
    """Bit-equal to PyG's own reader (which needs scipy) on the same raw files."""
    pytest.importorskip("scipy")
    io = pytest.importorskip("torch_geometric.io")
    from fastpicard.datasets.planetoid import _DATA_DIR
    if name == "PubMed":
        root = shared_planetoid()
        if root is None:
            pytest.skip(PUBMED_MISSING)
        raw = root / "PubMed" / "raw"
    else:
        raw = _DATA_DIR / name
    ours = planetoid(name, root=raw)
    ref = io.read_planetoid_data(str(raw), name.lower())
    for key in GraphData._TENSORS:
        assert torch.equal(getattr(ours, key), getattr(ref, key)), key


def test_root_layouts(tmp_path):
    from fastpicard.datasets.planetoid import _DATA_DIR
    flat = tmp_path / "flat"
    pyg = tmp_path / "pyg" / "Cora" / "raw"
    shutil.copytree(_DATA_DIR / "Cora", flat)
    shutil.copytree(_DATA_DIR / "Cora", pyg)
    a, b = planetoid("Cora"), planetoid("Cora", root=flat)
    c = planetoid("cora", root=tmp_path / "pyg")
    for key in GraphData._TENSORS:
        assert torch.equal(getattr(a, key), getattr(b, key))
        assert torch.equal(getattr(a, key), getattr(c, key))


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="name"):
        planetoid("Coraa")
    with pytest.raises(TypeError, match="name"):
        planetoid(3)
    with pytest.raises(ValueError, match="root"):
        planetoid("PubMed")  # not embedded
    with pytest.raises(FileNotFoundError, match="root"):
        planetoid("Cora", root=tmp_path)
    from fastpicard.datasets.planetoid import _DATA_DIR
    part = tmp_path / "part"
    shutil.copytree(_DATA_DIR / "Cora", part)
    (part / "ind.cora.ty").unlink()
    with pytest.raises(FileNotFoundError, match="ty"):
        planetoid("Cora", root=part)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_refuses_foreign_pickles(tmp_path):
    from fastpicard.datasets.planetoid import _DATA_DIR
    bad = tmp_path / "bad"
    shutil.copytree(_DATA_DIR / "Cora", bad)
    (bad / "ind.cora.x").write_bytes(pickle.dumps(_Evil(), protocol=2))
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        planetoid("Cora", root=bad)


def test_to_and_pyg():
    d = planetoid("Cora")
    m = d.to("meta")
    assert all(getattr(m, k).device.type == "meta" for k in GraphData._TENSORS)
    assert d.x.device.type == "cpu"  # the original is untouched
    assert "num_nodes=2708" in repr(d)
    pyg = pytest.importorskip("torch_geometric.data")
    p = d.to_pyg()
    assert isinstance(p, pyg.Data) and p.num_nodes == 2708 and torch.equal(p.edge_index,
                                                                          d.edge_index)


def test_row_normalize():
    d = planetoid("CiteSeer", normalize=True)
    s = d.x.sum(1)
    nonzero = s > 0
    torch.testing.assert_close(s[nonzero], torch.ones_like(s[nonzero]))
    assert (d.x[~nonzero] == 0).all()
    x = torch.tensor([[0.0, 0.0], [1.0, 3.0]])
    assert torch.equal(row_normalize(x), torch.tensor([[0.0, 0.0], [0.25, 0.75]]))


def test_dropin_noise():
    x = planetoid("Cora").x
    before = x.clone()
    g_state = torch.random.get_rng_state()
    a = dropin_noise(x, 0.1, seed=1)
    assert torch.equal(torch.random.get_rng_state(), g_state)  # global RNG untouched
    assert torch.equal(x, before)  # input untouched
    diff = a - row_normalize(x)
    k = int(0.1 * x.numel())
    assert int((diff != 0).sum()) == k
    torch.testing.assert_close(diff[diff != 0], torch.ones(k))
    assert torch.equal(a, dropin_noise(x, 0.1, seed=1))
    assert not torch.equal(a, dropin_noise(x, 0.1, seed=2))
    assert torch.equal(dropin_noise(x, 0.0, seed=1), row_normalize(x))
    raw = dropin_noise(x, 0.5, seed=0, normalize=False)
    assert int((raw - x != 0).sum()) == int(0.5 * x.numel())
    nc = torch.rand(6, 10).t()  # non-contiguous input
    assert int((dropin_noise(nc, 0.3, seed=0, normalize=False) - nc != 0).sum()) == 18
    for p in (-0.1, 1.5, True):
        with pytest.raises(ValueError, match="p"):
            dropin_noise(x, p, seed=0)
    with pytest.raises(TypeError, match="x"):
        dropin_noise(torch.ones(2, 2, dtype=torch.long), 0.1)
    with pytest.raises(TypeError, match="seed"):
        dropin_noise(x, 0.1, seed=1.5)


# ------------------------------------------------------------------ crafted and corrupt files
def _cora_copy(tmp_path) -> Path:
    from fastpicard.datasets.planetoid import _DATA_DIR
    root = tmp_path / "cora"
    shutil.copytree(_DATA_DIR / "Cora", root)
    return root


def test_crafted_object_array_is_refused(tmp_path):
    """numpy.ndarray + numpy.dtype('O') over raw file bytes made an object array of wild
    pointers: a segfault while converting it. Run apart, so a crash fails only this test."""
    from helpers import run_isolated
    root = _cora_copy(tmp_path)
    (root / "ind.cora.x").write_bytes(
        b"\x80\x03cnumpy\nndarray\n(K\x01\x85cnumpy\ndtype\nX\x01\x00\x00\x00O\x89\x88\x87RC"
        b"\x08AAAAAAAAtR.")
    r = run_isolated(f"""
        import pickle
        from fastpicard.datasets import planetoid
        try:
            planetoid("Cora", root={str(root)!r})
        except (ValueError, pickle.UnpicklingError) as e:
            print("refused:", e)
    """)
    assert r.returncode == 0, r.stderr
    assert "refused:" in r.stdout and "ind.cora.x" in r.stdout


class _FakeCSR:
    """Pickles like scipy's csr_matrix (the class, then its __dict__)."""


_FakeCSR.__module__, _FakeCSR.__qualname__ = "scipy.sparse.csr", "csr_matrix"


def _write_csr(monkeypatch, path, shape, indptr, indices, data):
    import sys
    import types

    import numpy as np
    mod = types.ModuleType("scipy.sparse.csr")
    mod.csr_matrix = _FakeCSR
    monkeypatch.setitem(sys.modules, "scipy.sparse.csr", mod)
    m = _FakeCSR()
    m.__dict__.update(_shape=shape, indptr=np.asarray(indptr, dtype=np.int32),
                      indices=np.asarray(indices, dtype=np.int32),
                      data=np.asarray(data, dtype=np.float32), format="csr")
    path.write_bytes(pickle.dumps(m, protocol=2))  # as Python 2 wrote them


def _corrupt(kind, root, monkeypatch):
    """Writes one structural defect into a copy of Cora; returns the file it is in."""
    import numpy as np
    if kind == "negative_neighbour":
        with open(root / "ind.cora.graph", "rb") as f:
            graph = pickle.load(f, encoding="latin1")
        graph[5] = list(graph[5]) + [-1]
        (root / "ind.cora.graph").write_bytes(pickle.dumps(graph, protocol=2))
        return "ind.cora.graph"
    if kind == "negative_test_index":
        p = root / "ind.cora.test.index"
        ids = p.read_text().split()
        ids[3] = "-5"
        p.write_text("\n".join(ids))
        return "ind.cora.test.index"
    if kind == "truncated":
        p = root / "ind.cora.allx"
        p.write_bytes(p.read_bytes()[:5000])
        return "ind.cora.allx"
    # feature files: x is 140 x 1433
    shape, rows = (140, 1433), np.arange(140)
    indptr, indices, data = np.arange(141), rows % 1433, np.ones(140)
    if kind == "negative_column":
        indices = indices.copy()
        indices[7] = -3
    elif kind == "indptr_end":
        indptr = indptr.copy()
        indptr[-1] = 139
    elif kind == "indptr_decreasing":
        indptr = indptr.copy()
        indptr[50] = 60
    elif kind == "huge_shape":
        shape = (140, 2 ** 34)
    else:
        raise AssertionError(kind)
    _write_csr(monkeypatch, root / "ind.cora.x", shape, indptr, indices, data)
    return "ind.cora.x"


CORRUPTIONS = ["negative_neighbour", "negative_test_index", "truncated", "negative_column",
               "indptr_end", "indptr_decreasing", "huge_shape"]


@pytest.mark.parametrize("kind", CORRUPTIONS)
def test_corrupt_files_are_refused_naming_the_file(kind, tmp_path, monkeypatch):
    root = _cora_copy(tmp_path)
    name = _corrupt(kind, root, monkeypatch)
    with pytest.raises(ValueError, match=name.replace(".", r"\.")):
        planetoid("Cora", root=root)


def test_well_formed_feature_file_written_here_loads(tmp_path, monkeypatch):
    """The corruption helper writes files the reader accepts when nothing is wrong."""
    import numpy as np
    root = _cora_copy(tmp_path)
    _write_csr(monkeypatch, root / "ind.cora.x", (140, 1433), np.arange(141),
               np.arange(140) % 1433, np.ones(140))
    check_counts(planetoid("Cora", root=root), "Cora")  # x only fixes the training count
