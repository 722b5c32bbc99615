"""Planetoid citation graphs (Cora, CiteSeer, PubMed) from the standard ``ind.<name>.*`` files.

The files are Python-2 pickles of scipy CSR matrices, numpy arrays and a dict of adjacency
lists. They are read with a restricted unpickler that rebuilds those objects from their pickled
state with numpy alone, so neither scipy nor PyG is needed, and a file that names any other
class is refused (a pickle can otherwise run arbitrary code). The public split and the handling
of CiteSeer's isolated test nodes follow the usual convention (Kipf & Welling; PyG's Planetoid).
"""
from __future__ import annotations

import pickle
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

NAMES = {"cora": "Cora", "citeseer": "CiteSeer", "pubmed": "PubMed"}
EMBEDDED = ("cora", "citeseer")  # shipped in fastpicard/datasets/data (MIT, tiny)
_PARTS = ("x", "tx", "allx", "y", "ty", "ally", "graph", "test.index")
_DATA_DIR = Path(__file__).with_name("data")


class GraphData:
    """A PyG ``Data``-like record: ``x``, ``edge_index``, ``y`` and the split masks.

    Attribute access matches ``torch_geometric.data.Data`` for the fields used in training
    loops; ``to_pyg()`` converts to a real ``Data`` when PyG is installed.
    """

    _TENSORS = ("x", "edge_index", "y", "train_mask", "val_mask", "test_mask")

    def __init__(self, x, edge_index, y, train_mask, val_mask, test_mask, name=""):
        self.x, self.edge_index, self.y = x, edge_index, y
        self.train_mask, self.val_mask, self.test_mask = train_mask, val_mask, test_mask
        self.name = name

    @property
    def num_nodes(self) -> int:
        return self.x.shape[0]

    @property
    def num_edges(self) -> int:
        return self.edge_index.shape[1]

    @property
    def num_features(self) -> int:
        return self.x.shape[1]

    num_node_features = num_features

    @property
    def num_classes(self) -> int:
        return int(self.y.max()) + 1 if self.y.numel() else 0

    def to(self, device, non_blocking: bool = False) -> "GraphData":
        """A copy with every tensor moved to ``device`` (like ``Data.to``)."""
        moved = {k: getattr(self, k).to(device, non_blocking=non_blocking) for k in self._TENSORS}
        return GraphData(**moved, name=self.name)

    def clone(self) -> "GraphData":
        return GraphData(**{k: getattr(self, k).clone() for k in self._TENSORS}, name=self.name)

    def to_pyg(self):
        """The same graph as a ``torch_geometric.data.Data`` (needs torch_geometric)."""
        try:
            from torch_geometric.data import Data
        except ImportError as e:
            raise ImportError("GraphData.to_pyg() needs torch_geometric "
                              "(pip install torch_geometric)") from e
        return Data(**{k: getattr(self, k) for k in self._TENSORS})

    def __repr__(self) -> str:
        return (f"GraphData(name={self.name!r}, num_nodes={self.num_nodes}, "
                f"num_edges={self.num_edges}, num_features={self.num_features}, "
                f"num_classes={self.num_classes}, train/val/test="
                f"{int(self.train_mask.sum())}/{int(self.val_mask.sum())}/"
                f"{int(self.test_mask.sum())})")


# ---------------------------------------------------------------- restricted unpickling
class _CSRState:
    """Stands in for ``scipy.sparse.csr_matrix``: receives its pickled ``__dict__``."""

    def __setstate__(self, state):
        self.__dict__.update(state)

    def to_dense(self) -> torch.Tensor:
        shape = tuple(int(s) for s in self.__dict__.get("_shape", self.__dict__.get("shape")))
        indptr = torch.from_numpy(np.asarray(self.indptr, dtype=np.int64))
        indices = torch.from_numpy(np.asarray(self.indices, dtype=np.int64))
        data = torch.from_numpy(np.asarray(self.data, dtype=np.float32))
        if indptr.numel() != shape[0] + 1 or indices.numel() != data.numel():
            raise ValueError("planetoid: corrupt CSR matrix in feature file")
        rows = torch.repeat_interleave(torch.arange(shape[0]), indptr.diff())
        dense = torch.zeros(shape, dtype=torch.float32)
        dense.index_put_((rows, indices), data, accumulate=True)  # duplicates sum, as in scipy
        return dense


def _ndarray(subtype, shape, dtype):
    # numpy's pickled arrays call multiarray._reconstruct(ndarray, (0,), b'b') then restore state
    if subtype is not np.ndarray:
        raise pickle.UnpicklingError("planetoid: only plain numpy arrays are allowed")
    return np.ndarray.__new__(subtype, shape, dtype)


_ALLOWED = {
    ("scipy.sparse.csr", "csr_matrix"): _CSRState,
    ("scipy.sparse._csr", "csr_matrix"): _CSRState,
    ("numpy.core.multiarray", "_reconstruct"): _ndarray,
    ("numpy._core.multiarray", "_reconstruct"): _ndarray,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("collections", "defaultdict"): defaultdict,
    ("__builtin__", "list"): list,
    ("builtins", "list"): list,
}


class _Unpickler(pickle.Unpickler):
    def find_class(self, module, name):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"planetoid: refusing to load {module}.{name} from a Planetoid file "
                "(only CSR matrices, numpy arrays and adjacency dicts are expected)") from None


def _load(path: Path):
    with open(path, "rb") as f:
        return _Unpickler(f, encoding="latin1").load()


def _features(obj) -> torch.Tensor:
    if isinstance(obj, _CSRState):
        return obj.to_dense()
    return torch.from_numpy(np.asarray(obj, dtype=np.float32))


# ---------------------------------------------------------------- the split and the graph
def _edge_index(adj: dict, num_nodes: int) -> torch.Tensor:
    """Directed edges of the adjacency lists without self loops and duplicates — the standard
    Planetoid edge set (e.g. 10556 for Cora) — sorted by (target, source) as PyG orders them."""
    rows = [int(k) for k, nbrs in adj.items() for _ in nbrs]
    cols = [int(v) for nbrs in adj.values() for v in nbrs]
    row, col = torch.tensor(rows, dtype=torch.long), torch.tensor(cols, dtype=torch.long)
    keep = row != col
    key = torch.unique(col[keep] * num_nodes + row[keep])  # sorted, deduplicated
    return torch.stack([key % num_nodes, key // num_nodes])


def _find_raw(name: str, root) -> Path:
    key = name.lower()
    if root is None:
        if key not in EMBEDDED:
            raise ValueError(f"planetoid: {NAMES.get(key, name)} is not shipped with fastpicard; "
                             f"pass root= (a folder holding ind.{key}.* files)")
        return _DATA_DIR / NAMES[key]
    root = Path(root)
    title = NAMES[key]
    for d in (root, root / title / "raw", root / title, root / key / "raw", root / key):
        if (d / f"ind.{key}.graph").is_file():
            return d
    raise FileNotFoundError(f"planetoid: no ind.{key}.* files under root={str(root)!r} "
                            f"(looked in ., {title}/raw, {title})")


def planetoid(name: str, root=None, *, normalize: bool = False) -> GraphData:
    """Loads a Planetoid dataset with its standard public split.

    Args:
        name: "Cora", "CiteSeer" or "PubMed" (case-insensitive).
        root: folder with the raw ``ind.<name>.*`` files (the folder itself, or a PyG-style
            ``root/<Name>/raw``). ``None`` uses the copies shipped inside fastpicard (Cora and
            CiteSeer only) — no download, no network.
        normalize: row-normalise the features to sum 1 (PyG's ``NormalizeFeatures``).

    Returns:
        :class:`GraphData` with ``x`` float32 [N, F], ``edge_index`` int64 [2, E] (both
        directions, no self loops, sorted by target), ``y`` int64 [N] and bool train/val/test masks
        (the first ``len(y)`` nodes / the next 500 / the 1000 listed test nodes).
    """
    if not isinstance(name, str):
        raise TypeError(f"planetoid: name must be a string, got {type(name).__name__}")
    key = name.lower()
    if key not in NAMES:
        raise ValueError(f"planetoid: name must be one of {list(NAMES.values())}, got {name!r}")
    raw = _find_raw(name, root)
    missing = [p for p in _PARTS if not (raw / f"ind.{key}.{p}").is_file()]
    if missing:
        raise FileNotFoundError(f"planetoid: {raw} lacks ind.{key}.{{{','.join(missing)}}}")
    obj = {p: _load(raw / f"ind.{key}.{p}") for p in _PARTS if p != "test.index"}
    test_index = torch.tensor([int(s) for s in (raw / f"ind.{key}.test.index").read_text().split()],
                              dtype=torch.long)

    x, tx, allx = (_features(obj[p]) for p in ("x", "tx", "allx"))
    y, ty, ally = (torch.from_numpy(np.asarray(obj[p], dtype=np.float32)) for p in
                   ("y", "ty", "ally"))
    sorted_test, _ = torch.sort(test_index)
    lo, hi = int(sorted_test[0]), int(sorted_test[-1])
    if key == "citeseer":
        # Some CiteSeer test ids have no features/labels (isolated nodes absent from tx/ty).
        # Convention: give them zero feature rows and an all-zero label row (class 0), so that
        # node ids stay contiguous; they are not in the test mask.
        tx_full = tx.new_zeros(hi - lo + 1, tx.shape[1])
        ty_full = ty.new_zeros(hi - lo + 1, ty.shape[1])
        tx_full[sorted_test - lo] = tx
        ty_full[sorted_test - lo] = ty
        tx, ty = tx_full, ty_full

    feats = torch.cat([allx, tx])
    labels = torch.cat([ally, ty]).argmax(dim=1)
    # tx/ty rows are stored in sorted test-id order; put each row at its node id.
    feats[test_index] = feats[sorted_test].clone()
    labels[test_index] = labels[sorted_test].clone()
    n = feats.shape[0]

    def mask(idx):
        m = torch.zeros(n, dtype=torch.bool)
        m[idx] = True
        return m

    n_train = y.shape[0]
    data = GraphData(
        x=feats, edge_index=_edge_index(obj["graph"], n), y=labels,
        train_mask=mask(torch.arange(n_train)),
        val_mask=mask(torch.arange(n_train, n_train + 500)),
        test_mask=mask(test_index), name=NAMES[key])
    if int(data.edge_index.max()) >= n:
        raise ValueError(f"planetoid: {raw} has edges to nodes >= {n}")
    if normalize:
        data.x = row_normalize(data.x)
    return data


def row_normalize(x: torch.Tensor) -> torch.Tensor:
    """PyG's ``NormalizeFeatures``: shift so the minimum is 0, then divide each row by its sum
    (clamped to >= 1, so all-zero rows stay zero)."""
    x = x - x.min() if x.numel() else x
    return x / x.sum(dim=-1, keepdim=True).clamp(min=1)
