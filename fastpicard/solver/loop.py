"""The solver's loop state: the C++ ``PicardLoop`` when the extension is built, else the
pure-torch ``PyLoop`` (same methods, same rules)."""
from __future__ import annotations

from .. import _ext
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


__all__ = ["make_loop", "CppLoop", "PyLoop", "IMPL"]
