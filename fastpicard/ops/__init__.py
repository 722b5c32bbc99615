"""Fused ops. Each is one ``torch.ops.fastpicard`` operator (C++ CPU kernel, Triton CUDA
kernel, fake kernel, autograd) behind a validating Python function."""
from . import reference
from .picard_update import picard_update

__all__ = ["picard_update", "reference"]
from .spmm import spmm
from .spmm_update import spmm_update

__all__ += ["spmm", "spmm_update"]
