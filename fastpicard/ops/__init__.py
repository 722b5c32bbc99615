"""Fused ops. Each is one ``torch.ops.fastpicard`` operator (argument checks and C++ CPU
kernel, Triton CUDA kernel, fake kernel, autograd) behind a Python function that converts the
arguments and picks the backend."""
from . import reference
from ._backend import higher_order_grads
from .picard_control import picard_control_
from .picard_update import picard_update
from .spmm import spmm
from .spmm_update import spmm_update

__all__ = ["picard_update", "spmm", "spmm_update", "picard_control_", "reference",
           "higher_order_grads"]
