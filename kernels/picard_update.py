"""Triton kernels for the fused smoothed Picard update (the CUDA backend of
``fastpicard::picard_update``; also runs on CPU tensors under ``TRITON_INTERPRET=1``).

Every program loads x and z once, upcasts to fp32 (fp64 for fp64 data), writes
x_new = alpha*x + (1-alpha)*z and stores its partial sums of (x_new - x)^2 and x_new^2.
Partials are combined in a fixed order (a torch sum, or a per-sample segment kernel), so the
default path uses no float atomics and is deterministic.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

_FLAT_BLOCK = 4096
_FLAT_WARPS = 8  # 4 warps (32 elements a thread) spilled 4 B for bf16 on sm_90 under triton 3.6
# Batched kernel: elements per program and warps. 4096 elements on 4 warps spilled registers
# (fp64, or with frozen + norm); 2048 on 8 warps needs <= 128 (python -m fastpicard.kernels.aot).
_ROW_ELEMS = 2048
_ROW_WARPS = 8
_SEG_BLOCK = 256


@triton.jit
def _flat_block(x_ptr, z_ptr, out_ptr, offs, n, a, b, frozen_ptr, HAS_FROZEN: tl.constexpr,
                ACC: tl.constexpr, MASKED: tl.constexpr):
    """One block of the flat update: (sum of (x_new - x)^2, sum of x_new^2)."""
    if MASKED:
        m = offs < n
        x = tl.load(x_ptr + offs, mask=m, other=0.0).to(ACC)
        z = tl.load(z_ptr + offs, mask=m, other=0.0).to(ACC)
    else:
        x = tl.load(x_ptr + offs).to(ACC)
        z = tl.load(z_ptr + offs).to(ACC)
    new = a * x + b * z
    if HAS_FROZEN:
        fz = tl.load(frozen_ptr) != 0
        new = tl.where(fz, x, new)
    if MASKED:
        tl.store(out_ptr + offs, new.to(out_ptr.dtype.element_ty), mask=m)
    else:
        tl.store(out_ptr + offs, new.to(out_ptr.dtype.element_ty))
    d = new - x
    return tl.sum(d * d, axis=0), tl.sum(new * new, axis=0)


@triton.jit
def _update_flat_kernel(x_ptr, z_ptr, out_ptr, part_ptr, n, n_prog, alpha: tl.float64,
                        beta: tl.float64, frozen_ptr, HAS_FROZEN: tl.constexpr,
                        WANT_NORM: tl.constexpr, ACC: tl.constexpr, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    start = pid.to(tl.int64) * BLOCK
    offs = start + tl.arange(0, BLOCK)
    # Float arguments are declared fp64 (Triton passes a Python float as fp32, which would
    # round alpha for fp64 data) and converted once; `zero + alpha` keeps the interpreter exact.
    zero = tl.zeros([BLOCK], dtype=ACC)
    if ACC == tl.float64:
        a = zero + alpha
        b = zero + beta
    else:
        a = zero + tl.cast(alpha, ACC)
        b = zero + tl.cast(beta, ACC)
    # Full blocks go without a mask: `offs < n` hides the alignment of the block from Triton
    # unless n % 16 == 0, and every access of the block would then be scalar.
    if start + BLOCK <= n:
        sq, nsq = _flat_block(x_ptr, z_ptr, out_ptr, offs, n, a, b, frozen_ptr, HAS_FROZEN, ACC,
                              False)
    else:
        sq, nsq = _flat_block(x_ptr, z_ptr, out_ptr, offs, n, a, b, frozen_ptr, HAS_FROZEN, ACC,
                              True)
    tl.store(part_ptr + pid, sq)
    if WANT_NORM:
        tl.store(part_ptr + n_prog + pid, nsq)


@triton.jit
def _update_rows_kernel(x_ptr, z_ptr, out_ptr, rowsq_ptr, rows, width, alpha: tl.float64,
                        beta: tl.float64, batch_ptr,
                        frozen_ptr, num_samples, HAS_FROZEN: tl.constexpr,
                        WANT_NORM: tl.constexpr, ACC: tl.constexpr, BLOCK_R: tl.constexpr,
                        BLOCK_D: tl.constexpr, EVEN_D: tl.constexpr):
    pid = tl.program_id(0)
    r = pid.to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)
    rm = r < rows
    zero = tl.zeros([BLOCK_R, BLOCK_D], dtype=ACC)
    if ACC == tl.float64:  # fp64 float arguments, as in _update_flat_kernel
        a = zero + alpha
        b = zero + beta
    else:
        a = zero + tl.cast(alpha, ACC)
        b = zero + tl.cast(beta, ACC)
    if HAS_FROZEN:
        sid = tl.load(batch_ptr + r, mask=rm, other=0)
        ok = rm & (sid >= 0) & (sid < num_samples)  # bad ids: reported by the caller's assert
        fz = tl.load(frozen_ptr + sid, mask=ok, other=0) != 0
    acc_r = tl.zeros([BLOCK_R], dtype=ACC)
    acc_n = tl.zeros([BLOCK_R], dtype=ACC)
    d0 = 0
    while d0 < width:  # not range(): see _segment_sqrt_sum_kernel
        c = tl.multiple_of(d0, BLOCK_D) + tl.arange(0, BLOCK_D)
        # width % BLOCK_D == 0: no column mask (its predicates and the frozen flags outgrew
        # the predicate registers, and fp64 + frozen spilled on sm_80 under triton 3.6)
        if EVEN_D:
            m = rm[:, None]
        else:
            m = rm[:, None] & (c < width)[None, :]
        offs = r[:, None] * width + c[None, :]
        x = tl.load(x_ptr + offs, mask=m, other=0.0).to(ACC)
        z = tl.load(z_ptr + offs, mask=m, other=0.0).to(ACC)
        new = a * x + b * z
        if HAS_FROZEN:
            new = tl.where(fz[:, None], x, new)
        tl.store(out_ptr + offs, new.to(out_ptr.dtype.element_ty), mask=m)
        d = new - x
        acc_r += tl.sum(d * d, axis=1)
        if WANT_NORM:
            acc_n += tl.sum(new * new, axis=1)
        d0 += BLOCK_D
    tl.store(rowsq_ptr + r, acc_r, mask=rm)
    if WANT_NORM:
        tl.store(rowsq_ptr + rows + r, acc_n, mask=rm)


@triton.jit
def _segment_sqrt_sum_kernel(val_ptr, order_ptr, seg_ptr, out_ptr, BLOCK: tl.constexpr):
    """out[s] = sqrt(sum of val[order[i]] for i in [seg[s], seg[s+1])), in a fixed order."""
    s = tl.program_id(0)
    start = tl.load(seg_ptr + s)
    end = tl.load(seg_ptr + s + 1)
    acc = tl.zeros([BLOCK], dtype=val_ptr.dtype.element_ty)
    # A while loop, not range(): triton 3.6's interpreter turns range() bounds that are tensors
    # (arguments, loaded values) into ints with int() of a 1-element array, an error since numpy
    # 2.4. Compiled, the loads/stores are the same (PTX compared on triton 3.9, BENCHMARKS.md).
    i = start
    while i < end:
        idx = i + tl.arange(0, BLOCK)
        m = idx < end
        row = tl.load(order_ptr + idx, mask=m, other=0)
        acc += tl.load(val_ptr + row, mask=m, other=0.0)
        i += BLOCK
    tl.store(out_ptr + s, tl.sqrt(tl.sum(acc, axis=0)))


def segments(batch: torch.Tensor, num_samples: int):
    """Rows grouped by sample without a host sync: (stable order, segment offsets [S+1])."""
    sorted_ids, order = torch.sort(batch, stable=True)
    bounds = torch.arange(num_samples + 1, device=batch.device, dtype=batch.dtype)
    seg = torch.searchsorted(sorted_ids, bounds)
    return order, seg


def picard_update_into(x, z, alpha, batch, num_samples, frozen, return_norm, out):
    """Launch the update writing into ``out`` (contiguous, shaped like x). Returns (res, norm)."""
    x = x.contiguous()
    z = z.contiguous()
    acc_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    acc = tl.float64 if x.dtype == torch.float64 else tl.float32
    n = x.numel()
    beta = 1.0 - alpha
    norm_len = num_samples if return_norm else 0
    frozen_u8 = frozen.contiguous().view(torch.uint8) if frozen is not None else x  # dummy ptr
    if batch is None:
        n_prog = triton.cdiv(n, _FLAT_BLOCK)
        part = torch.empty((2 if return_norm else 1) * max(n_prog, 1), dtype=acc_dtype,
                           device=x.device)
        if n_prog == 0:
            part.zero_()
        else:
            _update_flat_kernel[(n_prog,)](
                x, z, out, part, n, n_prog, alpha, beta, frozen_u8,
                HAS_FROZEN=frozen is not None, WANT_NORM=return_norm, ACC=acc, BLOCK=_FLAT_BLOCK,
                num_warps=_FLAT_WARPS)
        k = max(n_prog, 1)
        res = part[:k].sum().sqrt().reshape(1)
        norm = part[k:2 * k].sum().sqrt().reshape(1) if return_norm else part.new_empty(0)
        return res, norm

    rows = x.shape[0]
    width = n // rows if rows else 0
    block_d = min(triton.next_power_of_2(max(width, 1)), 1024)
    block_r = max(1, _ROW_ELEMS // block_d)
    rowsq = torch.empty(2 * rows if return_norm else rows, dtype=acc_dtype, device=x.device)
    if rows:
        _update_rows_kernel[(triton.cdiv(rows, block_r),)](
            x, z, out, rowsq, rows, width, alpha, beta, batch, frozen_u8, num_samples,
            HAS_FROZEN=frozen is not None, WANT_NORM=return_norm, ACC=acc,
            BLOCK_R=block_r, BLOCK_D=block_d, EVEN_D=width % block_d == 0,
            num_warps=_ROW_WARPS)
    res = torch.empty(num_samples, dtype=acc_dtype, device=x.device)
    norm = torch.empty(norm_len, dtype=acc_dtype, device=x.device)
    if num_samples:
        order, seg = segments(batch, num_samples)
        _segment_sqrt_sum_kernel[(num_samples,)](rowsq, order, seg, res, BLOCK=_SEG_BLOCK)
        if return_norm:
            _segment_sqrt_sum_kernel[(num_samples,)](rowsq[rows:], order, seg, norm,
                                                     BLOCK=_SEG_BLOCK)
    return res, norm
