"""fastpicard.datasets.fashion_mnist / cifar10: the original file layouts, made tiny here, and
the checks that refuse corrupt or hostile files."""
from __future__ import annotations

import gzip
import pickle
import struct

import numpy as np
import pytest
import torch

from fastpicard.datasets import cifar10, fashion_mnist, images


def write_idx(path, array, magic_dims=None, gz=True):
    dims = array.ndim if magic_dims is None else magic_dims
    data = struct.pack(">HBB", 0, 0x08, dims) + struct.pack(f">{array.ndim}I", *array.shape) + \
        array.astype(np.uint8).tobytes()
    (gzip.open if gz else open)(path, "wb").write(data)


def fashion_files(root, n=5, gz=True):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    y = rng.integers(0, 10, n, dtype=np.uint8)
    ext = ".gz" if gz else ""
    for prefix in ("train", "t10k"):
        write_idx(root / f"{prefix}-images-idx3-ubyte{ext}", x, gz=gz)
        write_idx(root / f"{prefix}-labels-idx1-ubyte{ext}", y, gz=gz)
    return x, y


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_layout(tmp_path, gz):
    x, y = fashion_files(tmp_path, gz=gz)
    for split in ("train", "test"):
        imgs, labels = fashion_mnist(tmp_path, split)
        assert imgs.shape == (5, 1, 28, 28) and imgs.dtype == torch.float32
        assert torch.equal(imgs[:, 0], torch.from_numpy(x).float() / 255)
        assert labels.dtype == torch.int64 and labels.tolist() == y.tolist()
    assert torch.equal(images("fashion-mnist", tmp_path)[1], labels)


def test_fashion_mnist_root_from_environment(tmp_path, monkeypatch):
    (tmp_path / "fashion-mnist").mkdir()
    fashion_files(tmp_path / "fashion-mnist", n=2)
    monkeypatch.setenv("FASTPICARD_DATA", str(tmp_path))
    assert fashion_mnist(split="test")[0].shape == (2, 1, 28, 28)
    monkeypatch.delenv("FASTPICARD_DATA")
    with pytest.raises(ValueError, match="root="):
        fashion_mnist()


def test_fashion_mnist_refuses_corrupt_files(tmp_path):
    x, y = fashion_files(tmp_path)
    img = tmp_path / "train-images-idx3-ubyte.gz"
    raw = gzip.decompress(img.read_bytes())
    cases = [(raw[:-10], "holds"), (raw[:6], "truncated"), (raw + b"\0", "more"),
             (b"\x00\x00\x0d\x03" + raw[4:], "magic"),  # float data type
             (struct.pack(">HBB", 0, 8, 3) + struct.pack(">3I", 2**20, 2**20, 28), "implausible")]
    for data, match in cases:
        img.write_bytes(gzip.compress(data))
        with pytest.raises(ValueError, match=match) as e:
            fashion_mnist(tmp_path)
        assert "train-images-idx3-ubyte.gz" in str(e.value)
    img.write_bytes(b"not gzip")
    with pytest.raises(ValueError, match="train-images"):
        fashion_mnist(tmp_path)
    write_idx(img, x)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", y[:3])
    with pytest.raises(ValueError, match="5 images but 3 labels"):
        fashion_mnist(tmp_path)
    with pytest.raises(ValueError, match="split"):
        fashion_mnist(tmp_path, "val")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="t10k-images"):
        fashion_mnist(tmp_path / "empty", "test")
    with pytest.raises(FileNotFoundError, match="not a folder"):
        fashion_mnist(tmp_path / "nowhere")


def cifar_batch(path, n=6, protocol=2, override=None):
    rng = np.random.default_rng(1)
    d = {b"batch_label": b"testing batch 1 of 1",
         b"labels": [int(v) for v in rng.integers(0, 10, n)],
         b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
         b"filenames": [b"img_%d.png" % i for i in range(n)]}
    d.update(override or {})
    path.write_bytes(pickle.dumps(d, protocol=protocol))
    return d


@pytest.mark.parametrize("protocol", [2, 4])
def test_cifar10_layout(tmp_path, protocol):
    d = cifar_batch(tmp_path / "test_batch", protocol=protocol)
    for i in (1, 2):
        cifar_batch(tmp_path / f"data_batch_{i}", protocol=protocol)
    x, y = cifar10(tmp_path, "test")
    assert x.shape == (6, 3, 32, 32) and x.dtype == torch.float32
    # CIFAR rows are 1024 red, then green, then blue values, row-major
    torch.testing.assert_close(x[2, 1, 3, 5], torch.tensor(d[b"data"][2, 1024 + 3 * 32 + 5] / 255.0, dtype=torch.float32))
    assert y.tolist() == d[b"labels"]
    assert cifar10(tmp_path, "train")[0].shape == (12, 3, 32, 32)


class Evil:
    def __reduce__(self):
        import os
        return (os.system, ("echo pwned",))


def test_cifar10_refuses_hostile_and_malformed_pickles(tmp_path):
    p = tmp_path / "test_batch"
    # the object-array exploit (an object dtype over raw bytes) and code execution
    p.write_bytes(b"\x80\x03cnumpy\nndarray\n(K\x01\x85cnumpy\ndtype\nX\x01\x00\x00\x00O\x89\x88"
                  b"\x87RC\x08AAAAAAAAtR.")
    with pytest.raises(ValueError, match="test_batch.*dtype 'O'"):
        cifar10(tmp_path, "test")
    p.write_bytes(pickle.dumps({b"data": Evil()}, protocol=2))
    with pytest.raises(ValueError, match="refusing to load posix.system|refusing to load os"):
        cifar10(tmp_path, "test")
    # a structured dtype with an object field, built through numpy's own pickle
    p.write_bytes(pickle.dumps(np.zeros(2, dtype=[("a", "O")]), protocol=2))
    with pytest.raises(ValueError, match="test_batch"):
        cifar10(tmp_path, "test")
    # an array whose raw bytes do not match its shape
    good = pickle.dumps(np.zeros((2, 3072), np.uint8), protocol=2)
    p.write_bytes(good.replace(b"\x00" * 6144, b"\x00" * 6143 + b"X", 1)[:-20] + b".")
    with pytest.raises(ValueError, match="test_batch"):
        cifar10(tmp_path, "test")
    for override, match in [({b"data": np.zeros((2, 100), np.uint8)}, "uint8 array"),
                            ({b"data": np.zeros((6, 3072), np.float32)}, "uint8 array"),
                            ({b"labels": [1, 2]}, "labels"),
                            ({b"labels": [11] * 6}, "labels")]:
        cifar_batch(p, override=override)
        with pytest.raises(ValueError, match=match) as e:
            cifar10(tmp_path, "test")
        assert "test_batch" in str(e.value)
    p.write_bytes(pickle.dumps([1, 2], protocol=2))
    with pytest.raises(ValueError, match="expected a dict"):
        cifar10(tmp_path, "test")
    p.unlink()
    with pytest.raises(FileNotFoundError, match="test_batch"):
        cifar10(tmp_path, "test")
    with pytest.raises(ValueError, match="name must be"):
        images("mnist", tmp_path)
