"""Triton kernels of ``fastpicard::spmm_update`` (one fused GNN Picard step) and its backward;
the CUDA backend of the op, also run on CPU tensors under ``TRITON_INTERPRET=1``.

Forward: a program owns BLOCK_R CSR rows and walks the features in blocks; for each block it
gathers the rows' incoming messages ([rows, entries, features] tiles as in kernels.spmm,
fp32/fp64 accumulation), adds the
bias, applies the activation and the dropout mask (a hash of seed, row and feature, the same
function as the C++ kernel and the reference), writes x_new = alpha*x + (1-alpha)*z and
accumulates the row's squared residual. Rows fold into samples in a fixed order.
Backward: a row pass computes gp = d loss / d (A.h + bias) with the regenerated mask; grad_h
is A^T gp over the transposed CSR (kernels.spmm), grad_weight one dot product per edge.
"""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from .picard_update import _segment_sqrt_sum_kernel, segments
from .spmm import (_tl_acc, acc_dtype, block_f, edge_dot, gather, num_warps, row_blocks,
                   transposed_weights)

ACTS = {"identity": 0, "relu": 1, "leaky_relu": 2, "tanh": 3}
_SEG_BLOCK = 256


@triton.jit
def _mix32(v):
    v = v ^ (v >> 16)
    v = v * 0x7FEB352D
    v = v ^ (v >> 15)
    v = v * 0x5BD1E995
    v = v ^ (v >> 16)
    return v


@triton.jit
def _row_key(seed_ptr, row):
    s0 = tl.load(seed_ptr).to(tl.uint32)
    s1 = tl.load(seed_ptr + 1).to(tl.uint32)
    key = _mix32(_mix32(s0) ^ s1)
    return _mix32(row.to(tl.uint32) ^ key)


@triton.jit
def _keep_scale(rk, f, thr, scale):
    hv = _mix32(rk ^ f.to(tl.uint32))
    return tl.where((hv >> 8).to(tl.int32) >= thr, scale, 0.0 * scale)


@triton.jit
def _tanh(p):
    return 1.0 - 2.0 / (tl.exp(2.0 * p) + 1.0)


@triton.jit
def _update_fwd_kernel(rowptr_ptr, col_ptr, w_ptr, h_ptr, x_ptr, bias_ptr, out_ptr, y_ptr,
                       rowsq_ptr, seed_ptr, batch_ptr, frozen_ptr, N, F, alpha: tl.float64,
                       slope: tl.float64, p_drop: tl.float64, keep_scale: tl.float64,
                       thr, HAS_W: tl.constexpr,
                       HAS_BIAS: tl.constexpr, ACT: tl.constexpr, DROP: tl.constexpr,
                       SAVE_Y: tl.constexpr, HAS_BATCH: tl.constexpr, HAS_FROZEN: tl.constexpr,
                       WANT_NORM: tl.constexpr, ACC: tl.constexpr, BLOCK_R: tl.constexpr,
                       BLOCK_E: tl.constexpr, BLOCK_F: tl.constexpr):
    r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    rm = r < N
    start = tl.load(rowptr_ptr + r, mask=rm, other=0).to(tl.int64)
    end = tl.load(rowptr_ptr + r + 1, mask=rm, other=0).to(tl.int64)
    max_deg = tl.max(end - start, axis=0)
    rbase = r.to(tl.int64) * F
    zero = tl.zeros([BLOCK_R, BLOCK_F], dtype=ACC)
    # Float arguments are declared fp64 (Triton passes a Python float as fp32, which would
    # round them for fp64 data) and converted once; `zero + alpha` keeps the interpreter exact
    # (a jit helper would not: the interpreter rounds float arguments of nested calls).
    if ACC == tl.float64:
        a = zero + alpha
        slope_v = zero + slope
        scale = 1.0 / (1.0 - (zero + p_drop))  # a tile of keep_scale spilled (sm_80)
    else:
        a = zero + tl.cast(alpha, ACC)
        slope_v = zero + tl.cast(slope, ACC)
        scale = zero + tl.cast(keep_scale, ACC)
    b = 1.0 - a  # derived scalars are formed in ACC, as on CPU
    if DROP:
        rk = _row_key(seed_ptr, r)
    if HAS_FROZEN:
        if HAS_BATCH:
            sid = tl.load(batch_ptr + r, mask=rm, other=0)
        else:
            sid = tl.zeros([BLOCK_R], dtype=tl.int64)
        fz = (tl.load(frozen_ptr + sid, mask=rm, other=0) != 0)[:, None]
    r_acc = tl.zeros([BLOCK_R, BLOCK_F], dtype=ACC)
    n_acc = tl.zeros([BLOCK_R, BLOCK_F], dtype=ACC)
    f0 = 0
    while f0 < F:  # not range(): see picard_update._segment_sqrt_sum_kernel
        f = tl.multiple_of(f0, BLOCK_F) + tl.arange(0, BLOCK_F)
        fm = f < F
        m2 = rm[:, None] & fm[None, :]
        offs = rbase[:, None] + f[None, :]
        acc3 = tl.zeros([BLOCK_R, BLOCK_E, BLOCK_F], dtype=ACC)
        j = 0
        while j < max_deg:
            k = start[:, None] + j + tl.arange(0, BLOCK_E)[None, :]  # [R, E]
            km = k < end[:, None]
            c = tl.load(col_ptr + k, mask=km, other=0).to(tl.int64)
            if HAS_W:
                w = tl.load(w_ptr + k, mask=km, other=0.0).to(ACC)
            else:
                w = km.to(ACC)
            tile = tl.load(h_ptr + c[:, :, None] * F + f[None, None, :],
                           mask=km[:, :, None] & fm[None, None, :], other=0.0).to(ACC)
            acc3 += tile * w[:, :, None]
            j += BLOCK_E
        acc = tl.sum(acc3, axis=1)
        if HAS_BIAS:
            acc += tl.load(bias_ptr + f, mask=fm, other=0.0).to(ACC)[None, :]
        if ACT == 1:
            acc = tl.where(acc < 0.0, 0.0, acc)
        elif ACT == 2:
            acc = tl.where(acc < 0.0, acc * slope_v, acc)
        elif ACT == 3:
            acc = _tanh(acc)
        if SAVE_Y:
            tl.store(y_ptr + offs, acc.to(y_ptr.dtype.element_ty), mask=m2)
        z = acc
        if DROP:
            z = z * _keep_scale(rk[:, None], f[None, :], thr, scale)
        xv = tl.load(x_ptr + offs, mask=m2, other=0.0).to(ACC)
        nv = a * xv + b * z
        if HAS_FROZEN:
            nv = tl.where(fz, xv, nv)
        tl.store(out_ptr + offs, nv.to(out_ptr.dtype.element_ty), mask=m2)
        d = tl.where(m2, nv - xv, 0.0)
        r_acc += d * d
        if WANT_NORM:
            nn = tl.where(m2, nv, 0.0)
            n_acc += nn * nn
        f0 += BLOCK_F
    tl.store(rowsq_ptr + r, tl.sum(r_acc, axis=1), mask=rm)
    if WANT_NORM:
        tl.store(rowsq_ptr + N + r, tl.sum(n_acc, axis=1), mask=rm)


@triton.jit
def _update_bwd_rows_kernel(g_ptr, y_ptr, gp_ptr, gx_ptr, seed_ptr, batch_ptr, frozen_ptr, N, F,
                            alpha: tl.float64, slope: tl.float64, p_drop: tl.float64,
                            keep_scale: tl.float64, thr,
                            ACT: tl.constexpr,
                            DROP: tl.constexpr, NEED_X: tl.constexpr, HAS_BATCH: tl.constexpr,
                            HAS_FROZEN: tl.constexpr, ACC: tl.constexpr, BLOCK_R: tl.constexpr,
                            BLOCK_F: tl.constexpr):
    r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    rm = r < N
    f = tl.program_id(1) * BLOCK_F + tl.arange(0, BLOCK_F)
    m2 = rm[:, None] & (f < F)[None, :]
    offs = r.to(tl.int64)[:, None] * F + f[None, :]
    g = tl.load(g_ptr + offs, mask=m2, other=0.0).to(ACC)
    zero = tl.zeros([BLOCK_R, BLOCK_F], dtype=ACC)
    if ACC == tl.float64:  # fp64 float arguments, as in _update_fwd_kernel
        a = zero + alpha
        slope_v = zero + slope
        scale = 1.0 / (1.0 - (zero + p_drop))  # a tile of keep_scale spilled (sm_80)
    else:
        a = zero + tl.cast(alpha, ACC)
        slope_v = zero + tl.cast(slope, ACC)
        scale = zero + tl.cast(keep_scale, ACC)
    d = (1.0 - a) * g
    if DROP:
        d = d * _keep_scale(_row_key(seed_ptr, r)[:, None], f[None, :], thr, scale)
    if ACT == 1:
        y = tl.load(y_ptr + offs, mask=m2, other=0.0).to(ACC)
        d = tl.where(y <= 0.0, 0.0, d)
    elif ACT == 2:
        y = tl.load(y_ptr + offs, mask=m2, other=0.0).to(ACC)
        d = tl.where(y > 0.0, d, d * slope_v)
    elif ACT == 3:
        y = tl.load(y_ptr + offs, mask=m2, other=0.0).to(ACC)
        d = d * (1.0 - y * y)
    gx = a * g
    if HAS_FROZEN:
        if HAS_BATCH:
            sid = tl.load(batch_ptr + r, mask=rm, other=0)
        else:
            sid = tl.zeros([BLOCK_R], dtype=tl.int64)
        fz = (tl.load(frozen_ptr + sid, mask=rm, other=0) != 0)[:, None]
        d = tl.where(fz, 0.0, d)
        gx = tl.where(fz, g, gx)
    tl.store(gp_ptr + offs, d.to(gp_ptr.dtype.element_ty), mask=m2)
    if NEED_X:
        tl.store(gx_ptr + offs, gx.to(gx_ptr.dtype.element_ty), mask=m2)


def _keep_scale_arg(dropout):
    """1 / (1 - p), formed in fp64 on the host as the CPU kernel does (graph_isa.cpp), then
    rounded to the accumulation type in the kernel: for fp32 accumulation no division per
    element (under triton 3.6 it spilled on sm_80). fp64 still divides in the kernel: a tile of
    this value spilled there (sm_80, triton 3.9)."""
    return 1.0 / (1.0 - dropout) if dropout > 0 else 1.0


def _threshold(dropout):
    """Elements whose 24-bit hash is below this are dropped (p * 2^24, rounded)."""
    return int(math.floor(dropout * 16777216.0 + 0.5))


def spmm_update(rowptr, col, weight, t_rowptr, t_col, t_perm, t_weight, h, x, alpha, bias=None,
                act="relu", negative_slope=0.01, dropout=0.0, seed=None, batch=None,
                num_samples=1, frozen=None, return_norm=False, save_act=False):
    h = h.contiguous()
    x = x.contiguous()
    n, width = h.shape
    acc = acc_dtype(h.dtype)
    out = torch.empty((n, width), dtype=h.dtype, device=h.device)
    y = torch.empty((n, width) if save_act else (0,), dtype=h.dtype, device=h.device)
    rowsq = torch.empty(2 * n if return_norm else n, dtype=acc, device=h.device)
    thr = _threshold(dropout)
    frozen_u8 = frozen.contiguous().view(torch.uint8) if frozen is not None else None
    if n:
        br, be = row_blocks(n, col.numel())
        # fp64 with every option on spilled on sm_80 with 64 features a block, on 4 or 8 warps
        bf = min(block_f(width), 32) if h.dtype == torch.float64 else block_f(width)
        _update_fwd_kernel[(triton.cdiv(n, br),)](
            rowptr, col, weight if weight is not None else h, h, x,
            bias.contiguous() if bias is not None else h, out, y if save_act else h, rowsq,
            seed if seed is not None else rowptr, batch if batch is not None else rowptr,
            frozen_u8 if frozen is not None else rowptr, n, width, alpha, negative_slope,
            dropout, _keep_scale_arg(dropout), thr, HAS_W=weight is not None,
            HAS_BIAS=bias is not None,
            ACT=ACTS[act], DROP=dropout > 0, SAVE_Y=save_act, HAS_BATCH=batch is not None,
            HAS_FROZEN=frozen is not None, WANT_NORM=return_norm, ACC=_tl_acc(h.dtype),
            BLOCK_R=br, BLOCK_E=be, BLOCK_F=bf, num_warps=num_warps(bf))
    if batch is None:
        res = rowsq[:n].sum().sqrt().reshape(1)
        norm = rowsq[n:].sum().sqrt().reshape(1) if return_norm else rowsq.new_empty(0)
        return out, res, norm, y
    res = torch.zeros(num_samples, dtype=acc, device=h.device)
    norm = torch.zeros(num_samples if return_norm else 0, dtype=acc, device=h.device)
    if num_samples and n:
        order, seg = segments(batch, num_samples)
        _segment_sqrt_sum_kernel[(num_samples,)](rowsq, order, seg, res, BLOCK=_SEG_BLOCK)
        if return_norm:
            _segment_sqrt_sum_kernel[(num_samples,)](rowsq[n:], order, seg, norm,
                                                     BLOCK=_SEG_BLOCK)
    return out, res, norm, y


def spmm_update_backward(grad, act_out, rowptr, col, weight, t_rowptr, t_col, t_perm, t_weight,
                         h, alpha, act, negative_slope, dropout, seed, batch, frozen, need_h,
                         need_x, need_weight, need_bias):
    g = grad.contiguous()
    n, width = g.shape
    acc = acc_dtype(g.dtype)
    a = ACTS[act]
    gp = torch.empty((n, width), dtype=acc, device=g.device)
    gx = torch.empty((n, width) if need_x else (0,), dtype=g.dtype, device=g.device)
    thr = _threshold(dropout)
    if n and width:
        bf = block_f(width)
        br = max(1, 2048 // bf)
        y = act_out.contiguous() if a != 0 else g
        _update_bwd_rows_kernel[(triton.cdiv(n, br), triton.cdiv(width, bf))](
            g, y, gp, gx if need_x else g, seed if seed is not None else rowptr,
            batch if batch is not None else rowptr,
            frozen.contiguous().view(torch.uint8) if frozen is not None else rowptr, n, width,
            alpha, negative_slope, dropout, _keep_scale_arg(dropout), thr, ACT=a, DROP=dropout > 0,
            NEED_X=need_x, HAS_BATCH=batch is not None, HAS_FROZEN=frozen is not None,
            ACC=_tl_acc(g.dtype), BLOCK_R=br, BLOCK_F=bf)
    gh = g.new_empty(0)
    gw = g.new_empty(0, dtype=acc)
    gb = g.new_empty(0)
    if need_h:
        gh = torch.empty((n, width), dtype=g.dtype, device=g.device)
        tw, perm = transposed_weights(weight, t_perm, t_weight, False)
        gather(t_rowptr, t_col, tw, perm, gp, gh)
    if need_weight:
        gw = torch.empty(col.numel(), dtype=acc, device=g.device)
        edge_dot(rowptr, col, gp, h.contiguous(), gw)
    if need_bias:
        gb = gp.sum(0).to(g.dtype)
    return gh, gx, gw, gb
