"""The Planetoid reader on damaged copies of the embedded Cora files — bytes flipped,
inserted, deleted or cut anywhere in one file, and test.index text edited — and on pickles
of foreign objects: a consistent dataset or a clear error naming the file, never a crash, a
hang or a huge allocation."""
from __future__ import annotations

import pickle
import shutil
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from cases import assert_ran, examples, log_case, outcome
from fastpicard.datasets import planetoid
from fastpicard.datasets.planetoid import _DATA_DIR

PARTS = ("x", "tx", "allx", "y", "ty", "ally", "graph", "test.index")
ROOT = Path(tempfile.mkdtemp(prefix="fuzz_planetoid_")) / "cora"
shutil.copytree(_DATA_DIR / "Cora", ROOT)
ORIGINAL = {p: (ROOT / f"ind.cora.{p}").read_bytes() for p in PARTS}


def damage(data: bytes, kind: str, at: int, span: int, byte: int) -> bytes:
    at %= max(len(data), 1)
    if kind == "flip":
        return data[:at] + bytes([data[at] ^ (byte or 1)]) + data[at + 1:]
    if kind == "insert":
        return data[:at] + bytes([byte]) * span + data[at:]
    if kind == "delete":
        return data[:at] + data[at + span:]
    return data[:at]  # cut


@st.composite
def cases(draw):
    return dict(part=draw(st.sampled_from(PARTS)),
                kind=draw(st.sampled_from(["flip", "insert", "delete", "cut"])),
                at=draw(st.integers(0, 2 ** 20)), span=draw(st.integers(1, 64)),
                byte=draw(st.integers(0, 255)), repeat=draw(st.integers(1, 4)))


def load_damaged(case, data: bytes):
    path = ROOT / f"ind.cora.{case['part']}"
    path.write_bytes(data)
    try:
        return outcome(lambda: planetoid("Cora", root=ROOT))
    finally:
        path.write_bytes(ORIGINAL[case["part"]])


def check(case, data):
    d, err = load_damaged(case, data)
    if err is not None:  # refused: the expected kinds, naming the damaged file
        assert isinstance(err, (ValueError, pickle.UnpicklingError)), \
            f"{type(err).__name__}: {err}"
        assert f"ind.cora.{case['part']}" in str(err), str(err)
        return
    n = d.num_nodes  # accepted: a consistent dataset
    assert d.x.shape[0] == d.y.shape[0] == d.train_mask.shape[0] == n
    assert d.edge_index.dtype == torch.int64
    if d.num_edges:
        assert 0 <= int(d.edge_index.min()) and int(d.edge_index.max()) < n
    assert torch.isfinite(d.x).all()


@examples(120)
@given(cases())
def test_damaged_files(case):
    log_case(**case)
    data = ORIGINAL[case["part"]]
    for i in range(case["repeat"]):
        data = damage(data, case["kind"], case["at"] * (i + 1), case["span"], case["byte"])
    check(case, data)


class _Foreign:
    def __init__(self, payload):
        self.payload = payload


FOREIGN = [
    lambda: pickle.dumps(_Foreign(1)), lambda: pickle.dumps(print),
    lambda: pickle.dumps(torch.zeros(2)), lambda: pickle.dumps({"a": [1, "b"]}),
    lambda: pickle.dumps([[1, 2], [3]]), lambda: pickle.dumps(3.5),
    lambda: pickle.dumps({0: [1, 2], 1: [-5]}), lambda: pickle.dumps({0: [10 ** 30]}),
    lambda: pickle.dumps({0: "x"}), lambda: pickle.dumps(None),
]


@pytest.mark.parametrize("which", range(len(FOREIGN)))
@pytest.mark.parametrize("part", ["x", "y", "graph"])
def test_foreign_pickles(which, part):
    case = dict(part=part, which=which)
    log_case(**case)
    check(case, FOREIGN[which]())


def test_files_load_when_undamaged():
    d, err = outcome(lambda: planetoid("Cora", root=ROOT))
    assert_ran(err)
    assert d.num_nodes == 2708
