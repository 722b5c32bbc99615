"""Backend choice. By default the torch dispatcher picks the kernel from the tensors' device
(C++ on CPU, Triton on CUDA); ``backend=`` overrides it for tests and benchmarks."""
from __future__ import annotations

import contextlib
import os
import threading

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


def resolve(backend: str | None, device: torch.device, op: str) -> str:
    """Returns "dispatch" (call torch.ops and let the dispatcher choose), "triton-direct"
    (launch the Triton kernel on CPU tensors through the interpreter) or "reference"."""
    if backend is None:
        if op in FIRST_ORDER_OPS and higher_order_enabled():
            return "reference"
        return "dispatch" if _ext.available else "reference"
    if backend not in BACKENDS:
        raise ValueError(f"{op}: backend must be one of {BACKENDS} or None, got {backend!r}")
    if backend == "reference":
        return "reference"
    if not _ext.available and backend == "cpp":
        raise RuntimeError(f"{op}: backend='cpp' needs the compiled extension, which failed to "
                           f"load: {_ext.load_error}")
    if backend == "cpp":
        if device.type != "cpu":
            raise ValueError(f"{op}: backend='cpp' runs on CPU tensors, got device {device}")
        return "dispatch"
    # triton
    if not triton_available():
        raise RuntimeError(f"{op}: backend='triton' needs the triton package")
    if device.type == "cuda":
        return "dispatch" if _ext.available else "triton-direct"
    if device.type == "cpu":
        if not triton_interpreting():
            raise RuntimeError(f"{op}: backend='triton' on CPU tensors needs TRITON_INTERPRET=1 "
                               "set before fastpicard is imported (Triton's CPU interpreter)")
        return "triton-direct"
    raise ValueError(f"{op}: backend='triton' does not support device {device}")


def default_check_every(device_type: str) -> int:
    """Steps between host reads of a solver's convergence flags: every step on CPU (the flags
    already live in host memory), every 8 on accelerators (each read is a device sync; the
    solver freezes converged samples on the device in between, so answers do not change)."""
    return 1 if device_type == "cpu" else 8
