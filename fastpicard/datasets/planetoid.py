"""Planetoid citation graphs (Cora, CiteSeer, PubMed) from the standard ``ind.<name>.*`` files.

The files are Python-2 pickles of scipy CSR matrices, numpy arrays and a dict of adjacency
lists. They are read with a restricted unpickler that rebuilds those objects from their pickled
state with numpy alone, so neither scipy nor PyG is needed, and a file that names any other
class is refused (a pickle can otherwise run arbitrary code). The public split and the handling
of CiteSeer's isolated test nodes follow the usual convention (Kipf & Welling; PyG's Planetoid).
"""
from __future__ import annotations

import io
import math
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
# Nothing in a file is trusted: the unpickler builds only inert stand-ins (no numpy or scipy
# object is created from file data except by np.frombuffer with a plain numeric dtype), and
# every structural fact is checked afterwards with the file named.
_MAX_FILE_BYTES = 1 << 30  # the largest Planetoid file (PubMed's allx) is ~40 MB
_MAX_DENSE = 1 << 28  # elements of a dense feature matrix (PubMed's allx: 9.4 million)


class _Refused(pickle.UnpicklingError):
    """The file asks for something a Planetoid file never holds."""


class _CSRState:
    """Stands in for ``scipy.sparse.csr_matrix``: receives its pickled ``__dict__``."""

    def __setstate__(self, state):
        if not isinstance(state, dict):
            raise _Refused("a CSR matrix's state must be a dict")
        self.state = state


class _Dtype:
    """Stands in for ``numpy.dtype(spec, align, copy)`` and its pickled state. Only plain
    bool/integer/float dtypes: an object dtype over raw file bytes would hold wild pointers."""

    def __init__(self, spec, align=False, copy=False):
        try:
            dt = np.dtype(spec) if isinstance(spec, str) else None
        except TypeError:
            dt = None
        if dt is None or dt.kind not in "biuf" or dt.fields is not None or dt.subdtype:
            raise _Refused(f"refusing the numpy dtype {spec!r} (only bool, int and float)")
        self.dtype = dt

    def __setstate__(self, state):
        # (version, byte order, subarray, names, fields, element size, alignment, flags, ...)
        if not (isinstance(state, tuple) and len(state) >= 5 and state[1] in ("<", ">", "|", "=")
                and all(v is None for v in state[2:5])):
            raise _Refused("refusing a structured or malformed numpy dtype")
        if state[1] in "<>":
            self.dtype = self.dtype.newbyteorder(state[1])


_NDARRAY = object()  # what "numpy.ndarray" unpickles to: only _reconstruct's subtype argument


class _Array:
    """Stands in for a pickled numpy array: ``_reconstruct(ndarray, (0,), b'b')`` makes it,
    its state ``(version, shape, dtype, fortran_order, raw_bytes)`` fills it."""

    array = None

    def __init__(self, subtype, shape=None, code=None):
        if subtype is not _NDARRAY:
            raise _Refused("only plain numpy arrays are allowed")

    def __setstate__(self, state):
        if not (isinstance(state, tuple) and len(state) == 5):
            raise _Refused("malformed numpy array state")
        _, shape, dtype, fortran, raw = state
        if isinstance(raw, str):  # Python 2 byte strings arrive decoded as latin-1
            raw = raw.encode("latin1")
        if not (isinstance(dtype, _Dtype) and isinstance(raw, bytes) and isinstance(shape, tuple)
                and all(isinstance(s, int) and s >= 0 for s in shape)):
            raise _Refused("refusing a numpy array that is not plain numeric data")
        count = math.prod(shape)
        if count * dtype.dtype.itemsize != len(raw):
            raise ValueError(f"array of shape {shape} ({dtype.dtype}) holds {len(raw)} bytes, "
                             f"expected {count * dtype.dtype.itemsize}")
        self.array = np.frombuffer(raw, dtype.dtype).reshape(shape, order="F" if fortran else "C")


def _latin1(text, encoding="utf-8"):
    # Python 3 writes protocol-2 byte strings as _codecs.encode(str, "latin1")
    if not (isinstance(text, str) and encoding == "latin1"):
        raise _Refused("refusing _codecs.encode other than of a latin-1 string")
    return text.encode("latin1")


_ALLOWED = {
    ("scipy.sparse.csr", "csr_matrix"): _CSRState,
    ("scipy.sparse._csr", "csr_matrix"): _CSRState,
    ("numpy.core.multiarray", "_reconstruct"): _Array,
    ("numpy._core.multiarray", "_reconstruct"): _Array,
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _Dtype,
    ("_codecs", "encode"): _latin1,
    ("collections", "defaultdict"): defaultdict,
    ("__builtin__", "list"): list,
    ("builtins", "list"): list,
}


class _Unpickler(pickle.Unpickler):
    def find_class(self, module, name):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise _Refused(
                f"refusing to load {module}.{name} from a Planetoid file "
                "(only CSR matrices, numpy arrays and adjacency dicts are expected)") from None


def _fail(path: Path, message: str):
    raise ValueError(f"planetoid: {path}: {message}")


def _load(path: Path):
    size = path.stat().st_size
    if size > _MAX_FILE_BYTES:
        _fail(path, f"{size} bytes, far larger than any Planetoid file")
    try:  # from memory: a length field cannot make the reader allocate more than the file
        return _Unpickler(io.BytesIO(path.read_bytes()), encoding="latin1").load()
    except _Refused as e:
        raise pickle.UnpicklingError(f"planetoid: {path}: {e}") from None
    except Exception as e:  # truncated or malformed: EOFError, UnpicklingError, ValueError...
        _fail(path, f"truncated or corrupt ({type(e).__name__}: {e})")


def _numeric(obj, path: Path, what: str, ndim: int) -> np.ndarray:
    if not isinstance(obj, _Array) or obj.array is None:
        _fail(path, f"{what} must be a numpy array, got {type(obj).__name__}")
    a = obj.array
    if a.ndim != ndim:
        _fail(path, f"{what} must be {ndim}-D, got shape {a.shape}")
    return a


def _features(obj, path: Path) -> torch.Tensor:
    """A feature matrix (scipy CSR or dense) as a dense float32 tensor."""
    if not isinstance(obj, _CSRState):
        x = _numeric(obj, path, "the feature matrix", 2)
        if x.size > _MAX_DENSE:
            _fail(path, f"a {x.shape[0]}x{x.shape[1]} feature matrix is implausibly large")
        x = torch.from_numpy(x.astype(np.float32))
    else:
        st = obj.state
        shape = st.get("_shape", st.get("shape"))
        if not (isinstance(shape, tuple) and len(shape) == 2
                and all(isinstance(s, int) and s >= 0 for s in shape)):
            _fail(path, f"the CSR matrix's shape must be two integers >= 0, got {shape!r}")
        rows, cols = shape
        if rows * cols > _MAX_DENSE:
            _fail(path, f"the CSR matrix declares shape {rows}x{cols}, implausibly large for "
                        "Planetoid features (refusing to allocate it)")
        arrays = {}
        for key in ("indptr", "indices", "data"):
            arrays[key] = _numeric(st.get(key), path, f"the CSR matrix's {key}", 1)
        indptr, indices, data = arrays["indptr"], arrays["indices"], arrays["data"]
        if indptr.dtype.kind not in "iu" or indices.dtype.kind not in "iu":
            _fail(path, "the CSR matrix's indptr and indices must be integers")
        indptr, indices = indptr.astype(np.int64), indices.astype(np.int64)
        nnz = indices.size
        if indptr.size != rows + 1 or data.size != nnz:
            _fail(path, f"the CSR matrix has {indptr.size} indptr entries for {rows} rows and "
                        f"{data.size} values for {nnz} column indices")
        if indptr[0] != 0 or indptr[-1] != nnz or (np.diff(indptr) < 0).any():
            _fail(path, f"the CSR matrix's indptr must rise from 0 to the entry count {nnz}")
        if nnz and (indices.min() < 0 or indices.max() >= cols):
            _fail(path, f"the CSR matrix has column indices outside [0, {cols})")
        x = torch.zeros(shape, dtype=torch.float32)
        row = torch.repeat_interleave(torch.arange(rows), torch.from_numpy(np.diff(indptr)))
        x.index_put_((row, torch.from_numpy(indices)),  # duplicates sum, as in scipy
                     torch.from_numpy(data.astype(np.float32)), accumulate=True)
    if not bool(torch.isfinite(x).all()):
        _fail(path, "the feature matrix holds NaN or Inf")
    return x


def _labels(obj, path: Path) -> torch.Tensor:
    y = _numeric(obj, path, "the label matrix", 2)
    if y.dtype.kind not in "biuf":
        _fail(path, f"labels must be numeric, got {y.dtype}")
    return torch.from_numpy(y.astype(np.float32))


def _adjacency(obj, path: Path):
    """(source ids, neighbour ids, node count) of the adjacency dict {node: [neighbours]}, whose
    keys are the nodes 0..N-1."""
    if not isinstance(obj, dict):
        _fail(path, f"the graph must be a dict of adjacency lists, got {type(obj).__name__}")
    n = len(obj)
    rows, cols = [], []
    for key, nbrs in obj.items():
        if not (isinstance(key, int) and 0 <= key < n):
            _fail(path, f"graph node {key!r} is not an integer in [0, {n}) ({n} nodes)")
        if not isinstance(nbrs, list):
            _fail(path, f"the neighbours of node {key} must be a list, got {type(nbrs).__name__}")
        for v in nbrs:
            if not (isinstance(v, int) and 0 <= v < n):
                _fail(path, f"node {key} has neighbour {v!r}, not a node id in [0, {n})")
        rows.extend([key] * len(nbrs))
        cols.extend(nbrs)
    return torch.tensor(rows, dtype=torch.long), torch.tensor(cols, dtype=torch.long), n


def _test_index(path: Path) -> torch.Tensor:
    try:
        ids = [int(s) for s in path.read_text(encoding="ascii").split()]
    except (UnicodeDecodeError, ValueError) as e:
        _fail(path, f"must list one integer node id per line ({e})")
    if not ids:
        _fail(path, "lists no test nodes")
    return torch.tensor(ids, dtype=torch.long)


# ---------------------------------------------------------------- the split and the graph
def _edge_index(row: torch.Tensor, col: torch.Tensor, num_nodes: int) -> torch.Tensor:
    """Directed edges of the adjacency lists without self loops and duplicates — the standard
    Planetoid edge set (e.g. 10556 for Cora) — sorted by (target, source) as PyG orders them."""
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
    files = {p: raw / f"ind.{key}.{p}" for p in _PARTS}
    obj = {p: _load(files[p]) for p in _PARTS if p != "test.index"}
    x, tx, allx = (_features(obj[p], files[p]) for p in ("x", "tx", "allx"))
    y, ty, ally = (_labels(obj[p], files[p]) for p in ("y", "ty", "ally"))
    row, col, n = _adjacency(obj["graph"], files["graph"])
    test_index = _test_index(files["test.index"])

    # every structural fact the split relies on, naming the files that disagree
    def agree(ok, parts, what):
        if not ok:
            names = ", ".join(f"ind.{key}.{p}" for p in parts)
            raise ValueError(f"planetoid: {raw}: {names} disagree: {what}")

    agree(x.shape[1] == tx.shape[1] == allx.shape[1], ("x", "tx", "allx"),
          f"feature widths {x.shape[1]}, {tx.shape[1]}, {allx.shape[1]}")
    agree(y.shape[1] == ty.shape[1] == ally.shape[1] >= 1, ("y", "ty", "ally"),
          f"label widths {y.shape[1]}, {ty.shape[1]}, {ally.shape[1]}")
    agree(len(x) == len(y) and len(tx) == len(ty) == len(test_index) and len(allx) == len(ally),
          ("x", "y", "tx", "ty", "allx", "ally", "test.index"),
          f"row counts x {len(x)}, y {len(y)}, tx {len(tx)}, ty {len(ty)}, test.index "
          f"{len(test_index)}, allx {len(allx)}, ally {len(ally)}")
    sorted_test, _ = torch.sort(test_index)
    lo, hi = int(sorted_test[0]), int(sorted_test[-1])
    agree(lo >= len(allx) and hi < n and bool((sorted_test.diff() > 0).all()),
          ("test.index", "allx", "graph"),
          f"test ids must be distinct nodes after the {len(allx)} rows of allx and below the "
          f"graph's {n} nodes, got ids in [{lo}, {hi}]")
    if key == "citeseer":
        # Some CiteSeer test ids have no features/labels (isolated nodes absent from tx/ty).
        # Convention: give them zero feature rows and an all-zero label row (class 0), so that
        # node ids stay contiguous; they are not in the test mask.
        tx_full = tx.new_zeros(hi - lo + 1, tx.shape[1])
        ty_full = ty.new_zeros(hi - lo + 1, ty.shape[1])
        tx_full[sorted_test - lo] = tx
        ty_full[sorted_test - lo] = ty
        tx, ty = tx_full, ty_full
    agree(len(allx) + len(tx) == n, ("allx", "tx", "graph"),
          f"{len(allx)} + {len(tx)} feature rows for a graph of {n} nodes")
    agree(len(y) <= len(allx) and len(y) + 500 <= n, ("y", "allx", "graph"),
          f"{len(y)} training nodes, {len(allx)} rows of allx, {n} nodes (the split takes the "
          "first len(y) nodes for training and the next 500 for validation)")

    feats = torch.cat([allx, tx])
    labels = torch.cat([ally, ty]).argmax(dim=1)
    # tx/ty rows are stored in sorted test-id order; put each row at its node id.
    feats[test_index] = feats[sorted_test].clone()
    labels[test_index] = labels[sorted_test].clone()

    def mask(idx):
        m = torch.zeros(n, dtype=torch.bool)
        m[idx] = True
        return m

    n_train = y.shape[0]
    data = GraphData(
        x=feats, edge_index=_edge_index(row, col, n), y=labels,
        train_mask=mask(torch.arange(n_train)),
        val_mask=mask(torch.arange(n_train, n_train + 500)),
        test_mask=mask(test_index), name=NAMES[key])
    if normalize:
        data.x = row_normalize(data.x)
    return data


def row_normalize(x: torch.Tensor) -> torch.Tensor:
    """PyG's ``NormalizeFeatures``: shift so the minimum is 0, then divide each row by its sum
    (clamped to >= 1, so all-zero rows stay zero)."""
    x = x - x.min() if x.numel() else x
    return x / x.sum(dim=-1, keepdim=True).clamp(min=1)
