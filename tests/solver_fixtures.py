"""Fixtures shared by the solver tests (imported by the test modules)."""
import pytest

import fastpicard
from fastpicard.solver import loop as _loop

LOOP_IMPLS = ["cpp", "python"] if fastpicard.extension_available() else ["python"]


@pytest.fixture(params=LOOP_IMPLS, autouse=True)
def loop_impl(request, monkeypatch):
    """Runs a test with the C++ PicardLoop and with the pure-torch PyLoop."""
    monkeypatch.setattr(_loop, "IMPL", request.param)
    return request.param
