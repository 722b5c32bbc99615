"""LRGB PascalVOC-SP (Dwivedi et al. 2022) from the raw files PyG's ``LRGBDataset`` downloads.

Layout (``torch_geometric/datasets/lrgb.py``): ``<root>/pascalvoc-sp/raw/{train,val,test}.pickle``
(or those files directly in ``root``), each a pickled list of per-graph tuples
``(x [n, 14] float, edge_attr [E, 2] float, edge_index [2, E] int, y [n] int)`` of torch
tensors (``y`` may also be a list of ints: PyG converts it with ``torch.LongTensor``); 21 node
classes (superpixel labels).

The files are read with a restricted unpickler: only the three globals a pickled torch tensor
needs are resolved (``torch._utils._rebuild_tensor_v2``, ``collections.OrderedDict`` and
``torch.storage._load_from_bytes``, the last replaced by ``torch.load(weights_only=True)`` of
the storage bytes), so a crafted file cannot run code. Every graph is then checked (shapes,
dtypes, edge indices within the node count, labels within the classes), and errors name the
file and the graph.
"""
from __future__ import annotations

import collections
import io
import pickle
from pathlib import Path

import torch
import torch._utils

from .long_range import GraphBatch

NUM_FEATURES, NUM_EDGE_FEATURES, NUM_CLASSES = 14, 2, 21
SPLITS = ("train", "val", "test")


def _load_storage(data: bytes):
    return torch.load(io.BytesIO(data), weights_only=True)


_ALLOWED = {
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch.storage", "_load_from_bytes"): _load_storage,
    ("collections", "OrderedDict"): collections.OrderedDict,
}


class _Unpickler(pickle.Unpickler):
    def find_class(self, module, name):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to load {module}.{name} (only torch tensors are expected)") from None


def find_split(root, split: str) -> Path:
    """The raw pickle of ``split`` under root (``root/pascalvoc-sp/raw``, ``root/raw`` or
    ``root`` itself)."""
    if split not in SPLITS:
        raise ValueError(f"pascalvoc_sp: split must be one of {SPLITS}, got {split!r}")
    root = Path(root)
    for d in (root / "pascalvoc-sp" / "raw", root / "raw", root):
        if (d / f"{split}.pickle").is_file():
            return d / f"{split}.pickle"
    raise FileNotFoundError(f"pascalvoc_sp: no {split}.pickle under root={str(root)!r} "
                            "(looked in pascalvoc-sp/raw, raw and the folder itself)")


def _tensor(obj, what, where, dims, floating):
    if not isinstance(obj, torch.Tensor) or obj.dim() != dims or \
            obj.dtype.is_floating_point != floating or obj.is_complex():
        kind = "floating-point" if floating else "integer"
        raise ValueError(f"{where}: {what} must be a {dims}-D {kind} tensor, got "
                         f"{getattr(obj, 'dtype', type(obj).__name__)} "
                         f"{tuple(getattr(obj, 'shape', ()))}")
    return obj


def _graph(item, where) -> GraphBatch:
    if not isinstance(item, tuple) or len(item) != 4:
        raise ValueError(f"{where}: expected a tuple (x, edge_attr, edge_index, y)")
    x = _tensor(item[0], "x", where, 2, True)
    edge_attr = _tensor(item[1], "edge_attr", where, 2, True)
    edge_index = _tensor(item[2], "edge_index", where, 2, False)
    y = item[3]
    if isinstance(y, list) and all(type(v) is int for v in y):  # PyG accepts a plain list
        y = torch.tensor(y, dtype=torch.long)
    y = _tensor(y, "y", where, 1, False)
    n = x.shape[0]
    if x.shape[1] != NUM_FEATURES:
        raise ValueError(f"{where}: x must have {NUM_FEATURES} features, got {x.shape[1]}")
    if edge_index.shape[0] != 2:
        raise ValueError(f"{where}: edge_index must have shape [2, E], got "
                         f"{tuple(edge_index.shape)}")
    if edge_attr.shape != (edge_index.shape[1], NUM_EDGE_FEATURES):
        raise ValueError(f"{where}: edge_attr must have shape [{edge_index.shape[1]}, "
                         f"{NUM_EDGE_FEATURES}], got {tuple(edge_attr.shape)}")
    if y.shape[0] != n:
        raise ValueError(f"{where}: y has {y.shape[0]} labels for {n} nodes")
    if edge_index.numel() and (int(edge_index.min()) < 0 or int(edge_index.max()) >= n):
        raise ValueError(f"{where}: edge_index refers to nodes outside [0, {n})")
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= NUM_CLASSES):
        raise ValueError(f"{where}: labels must lie in [0, {NUM_CLASSES})")
    if not bool(torch.isfinite(x).all()) or not bool(torch.isfinite(edge_attr).all()):
        raise ValueError(f"{where}: x or edge_attr holds non-finite values")
    return GraphBatch(x=x.float().contiguous(), edge_index=edge_index.long().contiguous(),
                      y=y.long().contiguous(), batch=torch.zeros(n, dtype=torch.long),
                      num_graphs=1, edge_attr=edge_attr.float().contiguous())


def pascalvoc_sp(root, split: str = "train") -> list[GraphBatch]:
    """The graphs of one split of PascalVOC-SP, validated; ``GraphBatch.collate`` batches them.

    Args:
        root: folder holding the raw files (see :func:`find_split`).
        split: "train", "val" or "test".
    """
    path = find_split(root, split)
    try:
        with open(path, "rb") as f:
            graphs = _Unpickler(f).load()
    except Exception as e:  # a crafted or truncated file: any failure names the file
        raise ValueError(f"pascalvoc_sp: cannot read {path}: {e}") from e
    if not isinstance(graphs, list):
        raise ValueError(f"pascalvoc_sp: {path} must hold a list of graphs, got "
                         f"{type(graphs).__name__}")
    return [_graph(item, f"pascalvoc_sp: {path}, graph {i}") for i, item in enumerate(graphs)]
