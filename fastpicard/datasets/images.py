"""Image data sets from their original files, no download: Fashion-MNIST (IDX, optionally
gzipped) and CIFAR-10 (the python-pickle batches of ``cifar-10-batches-py``).

Images come back as float32 [N, C, H, W] in [0, 1], labels as int64 [N]. The folder is
``root``, or ``$FASTPICARD_DATA/<fashion-mnist|cifar-10-batches-py>``. CIFAR's pickles are read
with a restricted unpickler that builds plain numeric numpy arrays, dicts and lists only, and
refuses every other class and any object dtype (a pickle can otherwise run code, and an object
array over raw bytes can crash the interpreter).
"""
from __future__ import annotations

import gzip
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import torch

FOLDERS = {"fashion-mnist": "fashion-mnist", "cifar10": "cifar-10-batches-py"}


def _folder(name: str, root) -> Path:
    if root is None:
        if not os.environ.get("FASTPICARD_DATA"):
            raise ValueError(f"{name}: pass root= (the folder with the {name} files) or set "
                             "FASTPICARD_DATA to a folder holding "
                             f"{FOLDERS[name]}/")
        root = Path(os.environ["FASTPICARD_DATA"]) / FOLDERS[name]
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{name}: root={str(root)!r} is not a folder")
    return root


# ---------------------------------------------------------------- Fashion-MNIST (IDX)
def _read_idx(path: Path, ndim: int) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            head = f.read(4 + 4 * ndim)
            if len(head) < 4 + 4 * ndim:
                raise ValueError("truncated header")
            zero, dtype, dims = struct.unpack(">HBB", head[:4])
            if zero != 0 or dtype != 0x08 or dims != ndim:  # 0x08: unsigned bytes
                raise ValueError(f"not an IDX file of {ndim}-d unsigned bytes "
                                 f"(magic {head[:4].hex()})")
            shape = struct.unpack(f">{ndim}I", head[4:])
            count = int(np.prod(shape, dtype=np.int64))
            if count > 2 ** 31:
                raise ValueError(f"implausible shape {shape}")
            data = f.read(count + 1)
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise ValueError(f"fashion_mnist: cannot read {path}: {e}") from e
    except ValueError as e:
        raise ValueError(f"fashion_mnist: {path}: {e}") from e
    if len(data) != count:
        raise ValueError(f"fashion_mnist: {path}: header says {count} values of shape {shape}, "
                         f"the file holds {'more' if len(data) > count else len(data)}")
    return np.frombuffer(data, dtype=np.uint8).reshape(shape)


def _find(root: Path, stem: str) -> Path:
    for name in (stem + ".gz", stem):
        if (root / name).is_file():
            return root / name
    raise FileNotFoundError(f"fashion_mnist: no {stem}[.gz] in {root}")


def fashion_mnist(root=None, split: str = "train"):
    """Fashion-MNIST ``split`` ("train": 60k, "test": 10k) -> (images [N,1,28,28], labels [N])."""
    if split not in ("train", "test"):
        raise ValueError(f"fashion_mnist: split must be 'train' or 'test', got {split!r}")
    root = _folder("fashion-mnist", root)
    prefix = "train" if split == "train" else "t10k"
    images = _read_idx(_find(root, f"{prefix}-images-idx3-ubyte"), 3)
    labels = _read_idx(_find(root, f"{prefix}-labels-idx1-ubyte"), 1)
    if labels.shape[0] != images.shape[0]:
        raise ValueError(f"fashion_mnist: {root}: {images.shape[0]} images but "
                         f"{labels.shape[0]} labels")
    x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
    return x, torch.from_numpy(labels.astype(np.int64))


# ---------------------------------------------------------------- CIFAR-10 (pickles)
_NUMERIC = {"u1", "i1", "u2", "i2", "u4", "i4", "u8", "i8", "f4", "f8", "b1"}


def _dtype(name, align=False, copy=False):
    if not isinstance(name, str) or name.lstrip("<>|=") not in _NUMERIC:
        raise pickle.UnpicklingError(f"refusing dtype {name!r} (only numeric arrays)")
    return np.dtype(name)


def _reconstruct(subtype, shape, dtype):
    if subtype is not np.ndarray:
        raise pickle.UnpicklingError("only plain numpy arrays are allowed")
    return np.ndarray.__new__(subtype, shape, np.uint8)


def _encode(text, encoding="latin1"):  # how Python 3 pickles bytes at protocol 2
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("refusing _codecs.encode with these arguments")
    return text.encode("latin1")


_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _dtype,
    ("_codecs", "encode"): _encode,
}


class _Unpickler(pickle._Unpickler):  # the pure-Python one: its BUILD step can be checked
    dispatch = dict(pickle._Unpickler.dispatch)

    def find_class(self, module, name):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} (a CIFAR batch "
                                         "holds only arrays, lists and strings)") from None

    def _build(self):
        # BUILD sets an object's state: allowed only for a plain dtype's byte order and for a
        # numeric array's (shape, dtype, raw bytes) whose size matches its shape
        state = self.stack.pop()
        inst = self.stack[-1]
        if isinstance(inst, np.dtype):
            if not (isinstance(state, tuple) and len(state) >= 5 and state[1] in ("<", ">", "|", "=")
                    and state[2:5] == (None, None, None)):
                raise pickle.UnpicklingError("refusing a structured or sub-array dtype")
            self.stack[-1] = inst.newbyteorder(state[1]) if state[1] in "<>" else inst
            return
        if isinstance(inst, np.ndarray) and isinstance(state, tuple) and len(state) == 5:
            _, shape, dtype, _, raw = state
            if isinstance(dtype, np.dtype) and dtype.kind in "biuf" and not dtype.hasobject and \
                    isinstance(raw, bytes) and isinstance(shape, tuple) and \
                    all(isinstance(n, int) and n >= 0 for n in shape) and \
                    len(raw) == int(np.prod(shape, dtype=np.int64)) * dtype.itemsize:
                inst.__setstate__(state)
                return
        raise pickle.UnpicklingError(f"refusing to set the state of a {type(inst).__name__}")

    dispatch[pickle.BUILD[0]] = _build


def _cifar_batch(path: Path):
    try:
        with open(path, "rb") as f:
            d = _Unpickler(f, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
            IndexError, KeyError, OverflowError, MemoryError) as e:
        raise ValueError(f"cifar10: cannot read {path}: {e}") from e
    if not isinstance(d, dict):
        raise ValueError(f"cifar10: {path}: expected a dict, got {type(d).__name__}")
    d = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in d.items()}
    data, labels = d.get("data"), d.get("labels")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or \
            data.shape[1] != 3072:
        raise ValueError(f"cifar10: {path}: 'data' must be a uint8 array [N, 3072], got "
                         f"{getattr(data, 'dtype', type(data).__name__)} "
                         f"{getattr(data, 'shape', '')}")
    if not isinstance(labels, (list, np.ndarray)) or len(labels) != data.shape[0] or not all(
            isinstance(v, (int, np.integer)) and 0 <= v < 10 for v in labels):
        raise ValueError(f"cifar10: {path}: 'labels' must hold {data.shape[0]} integers in "
                         "[0, 10)")
    return data, np.asarray(labels, dtype=np.int64)


def cifar10(root=None, split: str = "train"):
    """CIFAR-10 ``split`` ("train": data_batch_1..5, "test": test_batch) from the python
    version's folder -> (images [N,3,32,32], labels [N])."""
    if split not in ("train", "test"):
        raise ValueError(f"cifar10: split must be 'train' or 'test', got {split!r}")
    root = _folder("cifar10", root)
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    files = [root / n for n in names if (root / n).is_file()]
    if not files:
        raise FileNotFoundError(f"cifar10: no {names[0]} in {root}")
    parts = [_cifar_batch(p) for p in files]
    data = np.concatenate([p[0] for p in parts])
    x = torch.from_numpy(data.reshape(-1, 3, 32, 32).astype(np.float32) / 255.0)
    return x, torch.from_numpy(np.concatenate([p[1] for p in parts]))


def images(name: str, root=None, split: str = "train"):
    """``images("fashion-mnist" | "cifar10", root, split)``."""
    readers = {"fashion-mnist": fashion_mnist, "cifar10": cifar10}
    if name not in readers:
        raise ValueError(f"images: name must be one of {tuple(readers)}, got {name!r}")
    return readers[name](root, split)
