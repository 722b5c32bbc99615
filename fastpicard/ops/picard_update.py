"""``fastpicard.ops.picard_update``: the fused smoothed Picard update with its residual.

The op ``fastpicard::picard_update`` is defined in C++ (schema, CPU kernel, autograd); this
module adds its CUDA kernel (Triton) and its fake kernel (for torch.compile), and the public
function that validates arguments and picks the backend.
"""
from __future__ import annotations

import numbers

import torch

from .. import _ext
from . import _backend
from . import reference as _reference
from .reference.picard_update import stat_dtype

_OP = "picard_update"


# ---------------------------------------------------------------- dispatcher registrations
def _triton_launcher():
    from ..kernels import picard_update as k  # imported lazily: triton is optional on CPU

    return k


def _bounds_assert(batch, num_samples):
    # Device-side assert: no host sync on CUDA; raises at the next synchronisation.
    if batch is not None and batch.numel():
        ok = ((batch >= 0) & (batch < num_samples)).all()
        torch._assert_async(ok, "picard_update: batch contains ids outside [0, num_samples)")


def _triton_functional(x, z, alpha, batch=None, num_samples=1, frozen=None, return_norm=False):
    _bounds_assert(batch, num_samples)
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    res, norm = _triton_launcher().picard_update_into(x, z, alpha, batch, num_samples, frozen,
                                                      return_norm, out)
    sd = stat_dtype(x.dtype)
    return out, res.to(sd), norm.to(sd)


def _triton_out(x, z, alpha, batch, num_samples, frozen, return_norm, out):
    _bounds_assert(batch, num_samples)
    res, norm = _triton_launcher().picard_update_into(x, z, alpha, batch, num_samples, frozen,
                                                      return_norm, out)
    sd = stat_dtype(x.dtype)
    return res.to(sd), norm.to(sd)


def _fake(x, z, alpha, batch=None, num_samples=1, frozen=None, return_norm=False):
    sd = stat_dtype(x.dtype)
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    return (out, x.new_empty((num_samples,), dtype=sd),
            x.new_empty((num_samples if return_norm else 0,), dtype=sd))


def _fake_out(x, z, alpha, batch, num_samples, frozen, return_norm, out):
    sd = stat_dtype(x.dtype)
    return (x.new_empty((num_samples,), dtype=sd),
            x.new_empty((num_samples if return_norm else 0,), dtype=sd))


def _grads(grad, alpha, batch, frozen):
    """d x_new / d x = alpha, d x_new / d z = 1 - alpha; frozen rows pass x through.
    (The same formula as the C++ autograd kernel, for the Triton-on-CPU test path.)"""
    if grad is None:
        return None, None
    gx, gz = grad * alpha, grad * (1.0 - alpha)
    if frozen is not None:
        rows = grad.shape[0] if grad.dim() else 1
        row_frozen = frozen[batch] if batch is not None else frozen.expand(rows)
        row_frozen = row_frozen.reshape((rows,) + (1,) * max(grad.dim() - 1, 0))
        gx = torch.where(row_frozen, grad, gx)
        gz = torch.where(row_frozen, torch.zeros_like(gz), gz)
    return gx, gz


def _setup_context(ctx, inputs, output):
    x, z, alpha, batch, num_samples, frozen, return_norm = inputs
    ctx.alpha = alpha
    ctx.save_for_backward(batch, frozen)
    ctx.mark_non_differentiable(output[1], output[2])


def _backward(ctx, grad, _grad_res, _grad_norm):
    batch, frozen = ctx.saved_tensors
    gx, gz = _grads(grad, ctx.alpha, batch, frozen)
    return gx, gz, None, None, None, None, None


if _ext.available:
    torch.library.register_fake(f"fastpicard::{_OP}")(_fake)
    torch.library.register_fake(f"fastpicard::{_OP}_out")(_fake_out)
    if _backend.triton_available():
        torch.library.impl(f"fastpicard::{_OP}", "CUDA")(_triton_functional)
        torch.library.impl(f"fastpicard::{_OP}_out", "CUDA")(_triton_out)


class _TritonDirect(torch.autograd.Function):
    """The Triton kernel on CPU tensors (interpreter), outside the dispatcher."""

    @staticmethod
    def forward(ctx, x, z, alpha, batch, num_samples, frozen, return_norm):
        out = _triton_functional(x, z, alpha, batch, num_samples, frozen, return_norm)
        _setup_context(ctx, (x, z, alpha, batch, num_samples, frozen, return_norm), out)
        return out

    @staticmethod
    def backward(ctx, grad, grad_res, grad_norm):
        return _backward(ctx, grad, grad_res, grad_norm)


# ---------------------------------------------------------------- public API
def _extent(t):
    """[first, last] byte addresses t's elements occupy (None when empty; torch strides are
    never negative)."""
    if t.numel() == 0:
        return None
    span = sum((n - 1) * st for n, st in zip(t.shape, t.stride()))
    return t.data_ptr(), t.data_ptr() + (span + 1) * t.element_size() - 1


def _partial_overlap(out, t):
    """out and t share memory without being the same view (conservatively: their address
    ranges intersect)."""
    if t.device != out.device or (t.data_ptr() == out.data_ptr() and t.shape == out.shape
                                  and t.stride() == out.stride()):
        return False
    a, b = _extent(out), _extent(t)
    return a is not None and b is not None and a[0] <= b[1] and b[0] <= a[1]


def _check(x, z, alpha, batch, num_samples, frozen, out):
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"picard_update: x must be a Tensor, got {type(x).__name__}")
    if not isinstance(z, torch.Tensor):
        raise TypeError(f"picard_update: z must be a Tensor, got {type(z).__name__}")
    if x.dtype not in (torch.float32, torch.float16, torch.bfloat16, torch.float64):
        raise TypeError(f"picard_update: x must be float32/float16/bfloat16/float64, got {x.dtype}")
    if z.dtype != x.dtype:
        raise TypeError(f"picard_update: z has dtype {z.dtype} but x has dtype {x.dtype}")
    if z.shape != x.shape:
        raise ValueError(f"picard_update: z has shape {tuple(z.shape)} but x has shape "
                         f"{tuple(x.shape)}")
    if z.device != x.device:
        raise ValueError(f"picard_update: z is on {z.device} but x is on {x.device}")
    if not 0.0 <= alpha < 1.0:
        raise ValueError(f"picard_update: alpha must lie in [0, 1), got {alpha}")
    if batch is not None:
        if not isinstance(batch, torch.Tensor) or batch.dtype != torch.int64:
            raise TypeError("picard_update: batch must be an int64 Tensor, got "
                            f"{getattr(batch, 'dtype', type(batch).__name__)}")
        if x.dim() == 0 or batch.shape != (x.shape[0],):
            raise ValueError(f"picard_update: batch must have shape [{x.shape[0] if x.dim() else 1}]"
                             f" (one id per row of x), got {tuple(batch.shape)}")
        if batch.device != x.device:
            raise ValueError(f"picard_update: batch is on {batch.device} but x is on {x.device}")
        if num_samples < 0:
            raise ValueError(f"picard_update: num_samples must be >= 0, got {num_samples}")
    elif num_samples != 1:
        raise ValueError(f"picard_update: num_samples={num_samples} needs a batch vector")
    if frozen is not None:
        if not isinstance(frozen, torch.Tensor) or frozen.dtype != torch.bool:
            raise TypeError("picard_update: frozen must be a bool Tensor, got "
                            f"{getattr(frozen, 'dtype', type(frozen).__name__)}")
        if frozen.shape != (num_samples,):
            raise ValueError(f"picard_update: frozen must have shape [num_samples={num_samples}], "
                             f"got {tuple(frozen.shape)}")
        if frozen.device != x.device:
            raise ValueError(f"picard_update: frozen is on {frozen.device} but x is on {x.device}")
    if out is not None:
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"picard_update: out must be a Tensor, got {type(out).__name__}")
        if out.shape != x.shape or out.dtype != x.dtype or out.device != x.device:
            raise ValueError(f"picard_update: out must match x (shape {tuple(x.shape)}, dtype "
                             f"{x.dtype}, device {x.device}), got shape {tuple(out.shape)}, "
                             f"dtype {out.dtype}, device {out.device}")
        if not out.is_contiguous():
            raise ValueError("picard_update: out must be contiguous")
        if torch.is_grad_enabled() and (x.requires_grad or z.requires_grad or out.requires_grad):
            raise RuntimeError("picard_update: out= writes in place and is not differentiable; "
                               "call it under torch.no_grad() or drop out=")
        for name, t in (("x", x), ("z", z)):
            if _partial_overlap(out, t):
                raise ValueError(f"picard_update: out overlaps {name} partly; it may be {name} "
                                 "itself (in place) or memory of its own")


def _check_ids(batch, num_samples, route):
    """Range check of batch ids for the backends that do not check inside their kernel."""
    if route != "dispatch" and batch is not None and batch.numel():
        lo, hi = int(batch.min()), int(batch.max())
        if lo < 0 or hi >= num_samples:
            raise IndexError(f"picard_update: batch contains id {lo if lo < 0 else hi}, outside "
                             f"[0, num_samples={num_samples})")


def picard_update(x, z, alpha, *, batch=None, num_samples=None, frozen=None, return_norm=False,
                  out=None, backend=None):
    """Smoothed Picard step ``x_new = alpha*x + (1-alpha)*z`` fused with its residual.

    Args:
        x, z: tensors of one shape (rows along dim 0); float32/float16/bfloat16 (float64 too).
        alpha: smoothing in [0, 1) (a float, or a 0-dim tensor that needs no grad).
        batch: optional int64 [rows] sample id of each row (PyG convention, any order).
        num_samples: number of samples (default ``batch.max()+1``, which reads the device).
        frozen: optional bool [num_samples]; frozen samples are copied unchanged (x_new = x)
            and get residual 0 — a solver keeps iterating a batch while giving exactly the
            early-exit answer.
        return_norm: also return ``||x_new||_2`` per sample (for relative stopping).
        out: preallocated output (may be ``x`` itself for an in-place update, only when no
            gradient is needed).
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
    if isinstance(alpha, torch.Tensor):
        if alpha.dim() != 0 or alpha.requires_grad:
            raise TypeError("picard_update: a tensor alpha must be 0-dim and need no grad")
        alpha = float(alpha)
    elif isinstance(alpha, numbers.Real) and not isinstance(alpha, bool):
        alpha = float(alpha)
    else:
        raise TypeError(f"picard_update: alpha must be a float, got {type(alpha).__name__}")
    if num_samples is None:
        num_samples = (int(batch.max()) + 1 if batch.numel() else 0) if isinstance(
            batch, torch.Tensor) and batch.dtype == torch.int64 else 1
    _check(x, z, alpha, batch, num_samples, frozen, out)
    route = _backend.resolve(backend, x.device, "picard_update")
    _check_ids(batch, num_samples, route)

    if out is None:
        if route == "dispatch":
            x_new, res, norm = torch.ops.fastpicard.picard_update(
                x, z, alpha, batch, num_samples, frozen, return_norm)
        elif route == "triton-direct":
            x_new, res, norm = _TritonDirect.apply(x, z, alpha, batch, num_samples, frozen,
                                                   return_norm)
        else:
            x_new, res, norm = _reference.picard_update(x, z, alpha, batch, num_samples, frozen,
                                                        return_norm)
    else:
        x_new = out
        if route == "dispatch":
            res, norm = torch.ops.fastpicard.picard_update_out(
                x, z, alpha, batch, num_samples, frozen, return_norm, out)
        elif route == "triton-direct":
            res, norm = _triton_out(x, z, alpha, batch, num_samples, frozen, return_norm, out)
        else:
            new, res, norm = _reference.picard_update(x, z, alpha, batch, num_samples, frozen,
                                                      return_norm)
            out.copy_(new)
    return (x_new, res, norm) if return_norm else (x_new, res)
