"""The solver's loop state: the C++ ``PicardLoop`` when the extension is built, else the
pure-torch ``PyLoop`` (same methods, same rules)."""
from __future__ import annotations

import torch

from .. import _ext
from ..ops import _backend
from ..ops.reference.picard_update import stat_dtype
from .pyloop import PyLoop

# Loop implementation: "cpp" when the extension loaded, else "python" (tests switch it).
IMPL = "cpp" if _ext.available else "python"

# The C++ PicardLoop, bound directly (one pybind call per iteration: ``step``).
CppLoop = _ext._C.PicardLoop if _ext.available else None


def make_loop(x0, alpha, batch, num_samples, leading, tol, rel, max_iter, divergence_factor,
              check_every, reuse_buffers=True):
    """``reuse_buffers``: without autograd the C++ loop writes iterates into reused buffers;
    pass False when past iterates are kept (Anderson's history)."""
    args = (x0, alpha, batch, num_samples, leading, tol, rel, max_iter, divergence_factor,
            check_every, reuse_buffers)
    if IMPL == "cpp":
        return CppLoop(*args)
    return PyLoop(*args)


def _control_fake(res, norm, frozen, converged, diverged, iters, stats, trace, improved,
                  new_div, summary, step, tol, rel, divergence_factor):
    return None


def _control_cuda(*args):
    from ..kernels import picard_control as k  # lazily: triton is optional on CPU

    k.picard_control(*args)


if _ext.available:
    for _name in ("picard_control_", "picard_control_generic_"):
        torch.library.register_fake(f"fastpicard::{_name}")(_control_fake)
    if _backend.triton_available():  # one Triton launch per step on CUDA
        torch.library.impl("fastpicard::picard_control_", "CUDA")(_control_cuda)

__all__ = ["make_loop", "CppLoop", "PyLoop", "IMPL", "stat_dtype"]
