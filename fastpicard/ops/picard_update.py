"""``fastpicard.ops.picard_update``: the fused smoothed Picard update with its residual.

The ops ``fastpicard::picard_update`` / ``picard_update_out`` are defined in C++: their only
kernel checks the arguments and calls the internal ``_picard_update[_out]`` (CPU kernel and
autograd in C++). This module registers the internal ops' CUDA kernel (Triton) and fake
kernel (torch.compile), and the public function, which converts Python arguments and picks
the backend.
"""
from __future__ import annotations

import torch

from .. import _ext
from . import _backend
from . import reference as _reference
from .reference.picard_update import stat_dtype

_OP = "picard_update"


# ---------------------------------------------------------------- dispatcher registrations
def _kernels():
    from ..kernels import checks, picard_update  # lazily: triton is optional on CPU

    return checks, picard_update


def _contiguous(t):
    return None if t is None else t.contiguous()


def _triton_out(x, z, alpha, batch, num_samples, frozen, return_norm, out):
    """The Triton kernel of _picard_update_out (arguments checked by picard_update_out)."""
    checks, k = _kernels()
    batch, frozen = _contiguous(batch), _contiguous(frozen)
    if batch is not None:
        checks.check("picard_update: batch", ids=(batch, num_samples))  # before any write
    res, norm = k.picard_update_into(x, z, alpha, batch, num_samples, frozen, return_norm, out)
    sd = stat_dtype(x.dtype)
    return res.to(sd), norm.to(sd)


def _triton(x, z, alpha, batch=None, num_samples=1, frozen=None, return_norm=False):
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    return (out,) + _triton_out(x, z, alpha, batch, num_samples, frozen, return_norm, out)


def _fake(x, z, alpha, batch=None, num_samples=1, frozen=None, return_norm=False):
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    return (out,) + _fake_out(x, z, alpha, batch, num_samples, frozen, return_norm, out)


def _fake_out(x, z, alpha, batch, num_samples, frozen, return_norm, out):
    sd = stat_dtype(x.dtype)
    return (x.new_empty((num_samples,), dtype=sd),
            x.new_empty((num_samples if return_norm else 0,), dtype=sd))


if _ext.available:
    torch.library.register_fake(f"fastpicard::_{_OP}")(_fake)
    torch.library.register_fake(f"fastpicard::_{_OP}_out")(_fake_out)
    if _backend.triton_available():
        _backend.register_triton(f"_{_OP}", _triton)
        _backend.register_triton(f"_{_OP}_out", _triton_out)


# ---------------------------------------------------------------- public API
def picard_update(x, z, alpha, *, batch=None, num_samples=None, frozen=None, return_norm=False,
                  out=None, backend=None):
    """Smoothed Picard step ``x_new = alpha*x + (1-alpha)*z`` fused with its residual.

    Args:
        x, z: tensors of one shape (rows along dim 0); float32/float16/bfloat16 (float64 too).
        alpha: smoothing in [0, 1) (a float, or a 0-dim tensor that needs no grad).
        batch: optional int64 [rows] sample id of each row (PyG convention, any order).
        num_samples: number of samples (default ``batch.max()+1``, which reads the device), at
            most the number of rows.
        frozen: optional bool [num_samples]; frozen samples are copied unchanged (x_new = x)
            and get residual 0 — a solver keeps iterating a batch while giving exactly the
            early-exit answer.
        return_norm: also return ``||x_new||_2`` per sample (for relative stopping).
        out: preallocated output (may be ``x`` itself for an in-place update, only when no
            gradient is needed; no other overlap with the inputs).
        backend: None (device decides), "cpp", "triton" or "reference".

    Returns:
        ``(x_new, res)`` or ``(x_new, res, norm)``. ``res = ||x_new - x||_2`` per sample, shape
        [num_samples] (accumulated in float32; float64 for float64 data). For float16/bfloat16
        data ``res`` and ``norm`` use the update before it is rounded to the storage dtype, so
        an update that rounds back to x still reports its (sub-resolution) step: a tolerance
        below the dtype's resolution is then not reached. ``res`` and ``norm``
        are for loop control and carry no gradient; ``x_new`` is differentiable in x and z.
        Non-finite inputs give a non-finite residual, never a hidden one.
    """
    op = _OP
    x, z = _backend.tensor(op, "x", x), _backend.tensor(op, "z", z)
    batch = _backend.tensor(op, "batch", batch, optional=True)
    frozen = _backend.tensor(op, "frozen", frozen, optional=True)
    out = _backend.tensor(op, "out", out, optional=True)
    alpha = _backend.real(op, "alpha", alpha)
    if num_samples is None:
        num_samples = (int(batch.max()) + 1 if batch.numel() else 0) if (
            batch is not None and batch.dtype == torch.int64) else 1
    num_samples = _backend.integer(op, "num_samples", num_samples)
    route = _backend.resolve(backend, x.device, op)
    args = (x, z, alpha, batch, num_samples, frozen, return_norm)
    if route == "dispatch":  # the op checks its arguments
        if out is None:
            x_new, res, norm = torch.ops.fastpicard.picard_update(*args)
        else:
            x_new = out
            res, norm = torch.ops.fastpicard.picard_update_out(*args, out)
    else:
        if _ext.available:  # the same checks as the op's
            if out is None:
                torch.ops.fastpicard.picard_update_check(*args)
            else:
                torch.ops.fastpicard.picard_update_out_check(*args, out)
        x_new, res, norm = _reference.picard_update(*args)
        if out is not None:
            x_new = out.copy_(x_new)
    return (x_new, res, norm) if return_norm else (x_new, res)
