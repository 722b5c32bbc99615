"""``fastpicard.ops.picard_control_``: the Picard solver's per-sample stopping rules, applied
on the device after each update step (see ``reference/picard_control.py`` for the rules).

The op ``fastpicard::picard_control_`` is defined in C++: its only kernel checks the
arguments and calls the internal ``_picard_control_`` (CPU kernel in C++). This module
registers the internal op's CUDA kernel (Triton; one launch per step instead of ~20 small
ones, no host sync) and fake kernel, and the public function. The solver's C++ PicardLoop
calls the internal op directly on buffers of its own; the pure-torch PyLoop uses the
reference.
"""
from __future__ import annotations

import torch

from .. import _ext
from . import _backend
from . import reference as _reference

def _fake(res, norm, frozen, converged, diverged, iters, stats, trace, improved, new_div,
          summary, step, tol, rel, divergence_factor):
    return None


def _triton(res, norm, frozen, converged, diverged, iters, stats, trace, improved, new_div,
            summary, step, tol, rel, divergence_factor):
    from ..kernels import picard_control as k  # lazily: triton is optional on CPU

    k.picard_control(res, norm, frozen, converged, diverged, iters, stats, trace, improved,
                     new_div, summary, step, tol, rel, divergence_factor)


if _ext.available:
    torch.library.register_fake("fastpicard::_picard_control_")(_fake)
    if _backend.triton_available():
        _backend.register_triton("_picard_control_", _triton)


def picard_control_(res, norm, frozen, converged, diverged, iters, stats, trace, improved,
                    new_div, summary, step, tol, rel, divergence_factor, *, backend=None):
    """Applies one step's stopping rules in place. ``res``/``norm`` [S] (float32/float64) are
    the step's residuals and iterate norms; the state tensors (contiguous, on res's device):
    ``frozen``, ``converged``, ``diverged`` bool [S], ``iters`` int64 [S], ``stats`` [3, S]
    (smallest, result absolute and result relative residual), ``trace`` [capacity, S] (row
    ``step`` is written), and the outputs ``improved``, ``new_div`` bool [S], ``summary``
    int64 [4]. ``backend``: None (device decides), "cpp", "triton" or "reference"."""
    op = "picard_control_"
    tensors = dict(res=res, norm=norm, frozen=frozen, converged=converged, diverged=diverged,
                   iters=iters, stats=stats, trace=trace, improved=improved, new_div=new_div,
                   summary=summary)
    for name, t in tensors.items():
        _backend.tensor(op, name, t)
    args = (res, norm, frozen, converged, diverged, iters, stats, trace, improved, new_div,
            summary, _backend.integer(op, "step", step), _backend.real(op, "tol", tol),
            bool(rel), _backend.real(op, "divergence_factor", divergence_factor))
    if _backend.resolve(backend, res.device, op) == "dispatch":
        torch.ops.fastpicard.picard_control_(*args)
    else:
        if _ext.available:  # the same checks as the op's
            torch.ops.fastpicard.picard_control_check(*args)
        _reference.picard_control_(*args)
