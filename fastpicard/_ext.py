"""Loads the compiled extension. If it cannot load (not built, or built against another torch),
fastpicard keeps working on its pure-torch reference ops and says why, once."""
from __future__ import annotations

import warnings

import torch  # noqa: F401  (libtorch must be loaded before the extension)

try:
    from . import _C  # registers torch.ops.fastpicard.*

    _built, _running = _C.built_with_torch, torch.__version__.split("+")[0]
    if _built.split(".")[:2] != _running.split(".")[:2]:
        raise ImportError(f"extension built against torch {_built}, running torch {_running}")
    available = True
    load_error: str | None = None
except ImportError as exc:  # missing build, ABI mismatch, missing symbol
    available = False
    load_error = f"{type(exc).__name__}: {exc}"
    warnings.warn(
        "fastpicard: compiled extension could not be loaded; ops fall back to the pure-torch "
        f"reference implementation (slower). Reason: {load_error}",
        RuntimeWarning,
        stacklevel=2,
    )
