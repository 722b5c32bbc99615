"""Fused ops. Each is one ``torch.ops.fastpicard`` operator (C++ CPU kernel, Triton CUDA
kernel, fake kernel, autograd) behind a validating Python function."""
from . import reference
from ._backend import higher_order_grads
from .picard_update import picard_update

__all__ = ["picard_update", "reference", "higher_order_grads"]
from .spmm import spmm
from .spmm_update import spmm_update

__all__ += ["spmm", "spmm_update"]
