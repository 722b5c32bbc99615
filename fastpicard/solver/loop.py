"""The solver's loop state: the C++ ``PicardLoop`` when the extension is built, else the
pure-torch ``PyLoop`` (same methods, same rules)."""
from __future__ import annotations

import torch

from .. import _ext
from ..ops.reference.picard_update import stat_dtype
from .pyloop import PyLoop

# Loop implementation: "cpp" when the extension loaded, else "python" (tests switch it).
IMPL = "cpp" if _ext.available else "python"


def make_loop(x0, alpha, batch, num_samples, leading, tol, rel, max_iter, divergence_factor,
              check_every, reuse_buffers=True):
    """``reuse_buffers``: without autograd the C++ loop writes iterates into reused buffers;
    pass False when past iterates are kept (Anderson's history)."""
    args = (x0, alpha, batch, num_samples, leading, tol, rel, max_iter, divergence_factor,
            check_every, reuse_buffers)
    if IMPL == "cpp":
        return torch.classes.fastpicard.PicardLoop(*args)
    return PyLoop(*args)


def _control_fake(res, norm, frozen, status, iters, stats, trace, step, tol, rel,
                  divergence_factor):
    S = res.shape[0]
    return (res.new_empty((S,), dtype=torch.bool), res.new_empty((S,), dtype=torch.bool),
            res.new_empty((4,), dtype=torch.int64))


if _ext.available:
    for _name in ("picard_control_", "picard_control_generic_"):
        torch.library.register_fake(f"fastpicard::{_name}")(_control_fake)

__all__ = ["make_loop", "PyLoop", "IMPL", "stat_dtype"]
