import contextlib
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


@pytest.fixture
def triton_cpu():
    """The Triton kernels as the ops' CPU kernels for the whole test (forward and backward):
    CPU tensors take the CUDA path through Triton's interpreter."""
    from fastpicard.ops import _backend
    with _backend.triton_cpu_kernels():
        yield


@pytest.fixture(autouse=True)
def _triton_backend_param(request):
    """A test parametrized with backend="triton" runs inside the switch of ``triton_cpu``
    (without a GPU, where its tensors are CPU tensors)."""
    params = getattr(getattr(request.node, "callspec", None), "params", {})
    if params.get("backend") == "triton" and not torch.cuda.is_available():
        from fastpicard.ops import _backend
        context = _backend.triton_cpu_kernels()
    else:
        context = contextlib.nullcontext()
    with context:
        yield
