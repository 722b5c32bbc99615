import os

import torch

# Triton kernels run on CPU tensors through the interpreter when there is no GPU; it must be
# switched on before any kernel is decorated, i.e. before fastpicard.kernels is imported.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
