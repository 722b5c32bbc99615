"""Backend choice. By default the torch dispatcher picks the kernel from the tensors' device
(C++ on CPU, Triton on CUDA); ``backend=`` overrides it for tests and benchmarks."""
from __future__ import annotations

import contextlib
import numbers
import os
import threading
import warnings

import torch

from .. import _ext

BACKENDS = ("cpp", "triton", "reference")


def triton_interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


# Ops whose compiled backward is first-order only (a dedicated backward kernel): inside
# higher_order_grads() they run on their pure-torch reference, differentiable to any order.
FIRST_ORDER_OPS = ("spmm", "spmm_update")
_state = threading.local()


def higher_order_enabled() -> bool:
    return getattr(_state, "higher_order", False)


@contextlib.contextmanager
def higher_order_grads(enabled: bool = True):
    """Within this context (this thread), the graph ops ``spmm`` and ``spmm_update`` (and
    ``picard_gcn``) run on their pure-torch references, so gradients through them can be
    differentiated again (``create_graph=True``: Jacobian penalties, Hessian-vector products,
    double-VJP JVPs). Their compiled backward kernels are first-order only and refuse to build
    a graph. :func:`fastpicard.jacobian_penalty` and :func:`fastpicard.lipschitz_estimate`
    enter it themselves. An explicit ``backend=`` argument still wins."""
    before = higher_order_enabled()
    _state.higher_order = bool(enabled)
    try:
        yield
    finally:
        _state.higher_order = before


# ---------------------------------------------------------------- Triton kernels
_TRITON_KERNELS: dict = {}  # internal op name -> its Triton kernel (a Python function)
_triton_cpu = {"depth": 0, "lib": None}


def register_triton(op: str, kernel) -> None:
    """Registers ``kernel`` as the CUDA kernel of the internal op ``fastpicard::<op>`` (and
    remembers it for :func:`triton_cpu_kernels`)."""
    _TRITON_KERNELS[op] = kernel
    torch.library.impl(f"fastpicard::{op}", "CUDA")(kernel)


@contextlib.contextmanager
def triton_cpu_kernels():
    """Test switch (process-wide, re-entrant): while active, every op's Triton kernel is also
    its CPU kernel, run by Triton's interpreter (``TRITON_INTERPRET=1`` set before fastpicard
    is imported). CPU tensors then take exactly the CUDA path — the dispatcher, the ops'
    argument checks, the Triton kernels' own value checks and the C++ autograd — so the Triton
    kernels are tested without a GPU; forward and backward must both run inside. Use
    ``backend="triton"`` (or None) here; ``backend="cpp"`` is refused."""
    if not (_ext.available and triton_available() and triton_interpreting()):
        raise RuntimeError("triton_cpu_kernels() needs the compiled extension, triton, and "
                           "TRITON_INTERPRET=1 set before fastpicard is imported")
    if _triton_cpu["depth"] == 0:
        lib = torch.library.Library("fastpicard", "IMPL")
        with warnings.catch_warnings():  # overriding the C++ CPU kernels is the point
            warnings.filterwarnings("ignore", message=".*[Oo]verrid")
            for op, kernel in _TRITON_KERNELS.items():
                lib.impl(op, kernel, "CPU")
        _triton_cpu["lib"] = lib
    _triton_cpu["depth"] += 1
    try:
        yield
    finally:
        _triton_cpu["depth"] -= 1
        if _triton_cpu["depth"] == 0:
            _triton_cpu["lib"]._destroy()  # the C++ CPU kernels are back
            _triton_cpu["lib"] = None


def triton_on_cpu() -> bool:
    """Whether :func:`triton_cpu_kernels` is active."""
    return _triton_cpu["depth"] > 0


def resolve(backend: str | None, device: torch.device, op: str) -> str:
    """Returns "dispatch" (call the op through the dispatcher, which picks the kernel from the
    device) or "reference" (the pure-torch reference)."""
    if backend is None:
        if op in FIRST_ORDER_OPS and higher_order_enabled():
            return "reference"
        return "dispatch" if _ext.available else "reference"
    if backend not in BACKENDS:
        raise ValueError(f"{op}: backend must be one of {BACKENDS} or None, got {backend!r}")
    if backend == "reference":
        return "reference"
    if not _ext.available:
        raise RuntimeError(f"{op}: backend={backend!r} needs the compiled extension, which failed "
                           f"to load: {_ext.load_error}")
    if backend == "cpp":
        if device.type != "cpu":
            raise ValueError(f"{op}: backend='cpp' runs on CPU tensors, got device {device}")
        if triton_on_cpu():
            raise RuntimeError(f"{op}: backend='cpp' inside triton_cpu_kernels(), where the CPU "
                               "kernels are the Triton ones")
        return "dispatch"
    if not triton_available():
        raise RuntimeError(f"{op}: backend='triton' needs the triton package")
    if device.type == "cuda":
        return "dispatch"
    if device.type == "cpu":
        if not triton_on_cpu():
            raise RuntimeError(f"{op}: backend='triton' on CPU tensors runs Triton's interpreter "
                               "(a test path): inside fastpicard.ops._backend.triton_cpu_kernels(),"
                               " with TRITON_INTERPRET=1 set before fastpicard is imported")
        return "dispatch"
    raise ValueError(f"{op}: backend='triton' does not support device {device}")


def default_check_every(device_type: str) -> int:
    """Steps between host reads of a solver's convergence flags: every step on CPU (the flags
    already live in host memory), every 8 on accelerators (each read is a device sync; the
    solver freezes converged samples on the device in between, so answers do not change)."""
    return 1 if device_type == "cpu" else 8


# ---------------------------------------------------------------- Python-level arguments
INT64_MAX = 2 ** 63 - 1


def real(op: str, name: str, v) -> float:
    """A float argument: a real number, or a 0-dim real tensor that needs no grad."""
    if type(v) is float or type(v) is int:  # fast path (bool is not int's type)
        return float(v)
    if isinstance(v, torch.Tensor):
        if v.dim() != 0 or v.requires_grad or v.is_complex():
            raise TypeError(f"{op}: a tensor {name} must be real, 0-dim and need no grad")
        return float(v)
    if isinstance(v, numbers.Real) and not isinstance(v, bool):
        return float(v)
    raise TypeError(f"{op}: {name} must be a float, got {type(v).__name__}")


def integer(op: str, name: str, v) -> int:
    """An int argument in int64's range (what the op schemas take)."""
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        raise TypeError(f"{op}: {name} must be an int, got {type(v).__name__}")
    v = int(v)
    if not -INT64_MAX - 1 <= v <= INT64_MAX:
        raise ValueError(f"{op}: {name}={v} is outside int64's range")
    return v


def tensor(op: str, name: str, v, optional: bool = False):
    """A Tensor argument (or None when optional), named when it is something else."""
    if isinstance(v, torch.Tensor) or (optional and v is None):
        return v
    kind = "a Tensor or None" if optional else "a Tensor"
    raise TypeError(f"{op}: {name} must be {kind}, got {type(v).__name__}")
