"""Triton kernels of the graph aggregation ``fastpicard::spmm`` (sum / mean / max) and its
backward; the CUDA backend of the op, also run on CPU tensors under ``TRITON_INTERPRET=1``.

Tiling in the spirit of GE-SpMM: one program per (CSR row, feature block) walks the row's
entries in blocks of BLOCK_E, gathers a [BLOCK_E, BLOCK_F] tile of source rows and reduces it
in fp32 (fp64 for fp64 data). Every output row is written by one program, so the backward
(``Âᵀ·g`` over the transposed CSR, one dot product per edge for the weight gradient) needs no
atomics and is deterministic. Launchers take and return exactly what the ops do.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK_E = 16


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _tl_acc(dtype: torch.dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


def block_f(width: int) -> int:
    return min(triton.next_power_of_2(max(width, 1)), 128)


@triton.jit
def _gather_kernel(rowptr_ptr, col_ptr, w_ptr, perm_ptr, arg_ptr, src_ptr, out_ptr, F,
                   HAS_W: tl.constexpr, HAS_PERM: tl.constexpr, MASKED: tl.constexpr,
                   MEAN: tl.constexpr, ACC: tl.constexpr, BLOCK_E: tl.constexpr,
                   BLOCK_F: tl.constexpr):
    """out[r, f] = sum_k w_k src[col[k], f] (w_k = w[perm[k]] with HAS_PERM). MASKED (max
    backward): entry k only where arg[col[k], f] == perm[k]. MEAN: divided by the degree."""
    row = tl.program_id(0)
    f = tl.program_id(1) * BLOCK_F + tl.arange(0, BLOCK_F)
    fm = f < F
    start = tl.load(rowptr_ptr + row).to(tl.int64)
    end = tl.load(rowptr_ptr + row + 1).to(tl.int64)
    acc = tl.zeros([BLOCK_F], dtype=ACC)
    for e0 in range(start, end, BLOCK_E):
        e = e0 + tl.arange(0, BLOCK_E)
        em = e < end
        c = tl.load(col_ptr + e, mask=em, other=0).to(tl.int64)
        if HAS_PERM:
            pe = tl.load(perm_ptr + e, mask=em, other=0).to(tl.int64)
        else:
            pe = e
        if HAS_W:
            w = tl.load(w_ptr + pe, mask=em, other=0.0).to(ACC)
        else:
            w = em.to(ACC)
        m2 = em[:, None] & fm[None, :]
        offs = c[:, None] * F + f[None, :]
        tile = tl.load(src_ptr + offs, mask=m2, other=0.0).to(ACC)
        if MASKED:
            a = tl.load(arg_ptr + offs, mask=m2, other=-1).to(tl.int64)
            tile = tl.where(a == pe[:, None], tile, 0.0)
        acc += tl.sum(tile * w[:, None], axis=0)
    if MEAN:
        acc = acc / tl.maximum(end - start, 1).to(ACC)
    tl.store(out_ptr + row.to(tl.int64) * F + f, acc.to(out_ptr.dtype.element_ty), mask=fm)


@triton.jit
def _edge_dot_kernel(rowptr_ptr, col_ptr, arg_ptr, g_ptr, h_ptr, gw_ptr, F,
                     MASKED: tl.constexpr, ACC: tl.constexpr, BLOCK_E: tl.constexpr,
                     BLOCK_F: tl.constexpr):
    """gw[k] = sum_f g[r, f] h[col[k], f] for the entries k of row r (MASKED: arg[r, f] == k)."""
    row = tl.program_id(0)
    start = tl.load(rowptr_ptr + row).to(tl.int64)
    end = tl.load(rowptr_ptr + row + 1).to(tl.int64)
    rbase = row.to(tl.int64) * F
    for e0 in range(start, end, BLOCK_E):
        e = e0 + tl.arange(0, BLOCK_E)
        em = e < end
        c = tl.load(col_ptr + e, mask=em, other=0).to(tl.int64)
        dot = tl.zeros([BLOCK_E], dtype=ACC)
        for f0 in range(0, F, BLOCK_F):
            f = f0 + tl.arange(0, BLOCK_F)
            fm = f < F
            g = tl.load(g_ptr + rbase + f, mask=fm, other=0.0).to(ACC)
            m2 = em[:, None] & fm[None, :]
            hv = tl.load(h_ptr + c[:, None] * F + f[None, :], mask=m2, other=0.0).to(ACC)
            prod = hv * g[None, :]
            if MASKED:
                a = tl.load(arg_ptr + rbase + f, mask=fm, other=-1).to(tl.int64)
                prod = tl.where(a[None, :] == e[:, None], prod, 0.0)
            dot += tl.sum(prod, axis=1)
        tl.store(gw_ptr + e, dot.to(gw_ptr.dtype.element_ty), mask=em)


@triton.jit
def _max_kernel(rowptr_ptr, col_ptr, w_ptr, h_ptr, out_ptr, arg_ptr, F, HAS_W: tl.constexpr,
                ACC: tl.constexpr, BLOCK_F: tl.constexpr):
    """out[r, f] = max_k w_k h[col[k], f], arg = the first k attaining it (a NaN wins and
    stays); empty rows: 0 and -1. Entries are visited in order, as on CPU."""
    row = tl.program_id(0)
    f = tl.program_id(1) * BLOCK_F + tl.arange(0, BLOCK_F)
    fm = f < F
    start = tl.load(rowptr_ptr + row).to(tl.int64)
    end = tl.load(rowptr_ptr + row + 1).to(tl.int64)
    best = tl.zeros([BLOCK_F], dtype=ACC)
    arg = tl.full([BLOCK_F], -1, dtype=tl.int64)
    for k in range(start, end):
        c = tl.load(col_ptr + k).to(tl.int64)
        v = tl.load(h_ptr + c * F + f, mask=fm, other=0.0).to(ACC)
        if HAS_W:
            v = v * tl.load(w_ptr + k).to(ACC)
        take = (k == start) | (v > best) | ((v != v) & (best == best))
        best = tl.where(take, v, best)
        arg = tl.where(take, k, arg)
    out_offs = row.to(tl.int64) * F + f
    tl.store(out_ptr + out_offs, best.to(out_ptr.dtype.element_ty), mask=fm)
    tl.store(arg_ptr + out_offs, arg.to(arg_ptr.dtype.element_ty), mask=fm)


def gather(rowptr, col, weight, perm, src, out, arg=None, mean=False):
    """Launch _gather_kernel over all rows of (rowptr, col) into out [rows, F]."""
    rows, width = out.shape
    if rows == 0 or width == 0:
        return out
    bf = block_f(width)
    dummy = src
    _gather_kernel[(rows, triton.cdiv(width, bf))](
        rowptr, col, weight if weight is not None else dummy, perm if perm is not None else col,
        arg if arg is not None else col, src, out, width,
        HAS_W=weight is not None, HAS_PERM=perm is not None, MASKED=arg is not None, MEAN=mean,
        ACC=_tl_acc(out.dtype), BLOCK_E=BLOCK_E, BLOCK_F=bf)
    return out


def edge_dot(rowptr, col, g, h, gw, arg=None):
    rows, width = g.shape
    if gw.numel() == 0:
        return gw
    if width == 0:
        return gw.zero_()
    _edge_dot_kernel[(rows,)](
        rowptr, col, arg if arg is not None else col, g, h, gw, width, MASKED=arg is not None,
        ACC=_tl_acc(g.dtype), BLOCK_E=BLOCK_E, BLOCK_F=block_f(width))
    return gw


def spmm(rowptr, col, weight, t_rowptr, t_col, t_perm, h, reduce="sum"):
    h = h.contiguous()
    rows, width = h.shape
    out = torch.empty((rows, width), dtype=h.dtype, device=h.device)
    if reduce == "max":
        arg = torch.empty((rows, width), dtype=col.dtype, device=h.device)
        if rows and width:
            bf = block_f(width)
            _max_kernel[(rows, triton.cdiv(width, bf))](
                rowptr, col, weight if weight is not None else h, h, out, arg, width,
                HAS_W=weight is not None, ACC=_tl_acc(h.dtype), BLOCK_F=bf)
        return out, arg
    gather(rowptr, col, weight, None, h, out, mean=reduce == "mean")
    return out, col.new_empty(0)


def spmm_backward(grad, rowptr, col, weight, t_rowptr, t_col, t_perm, h, arg, reduce, need_h,
                  need_weight):
    rows, width = grad.shape
    acc = acc_dtype(grad.dtype)
    ga = grad.to(acc).contiguous()
    if reduce == "mean":
        ga = ga / rowptr.diff().clamp_min(1).to(acc).unsqueeze(1)
    masked = arg.contiguous() if reduce == "max" else None
    gh = grad.new_empty(0)
    gw = grad.new_empty(0, dtype=acc)
    if need_h:
        gh = torch.empty((rows, width), dtype=grad.dtype, device=grad.device)
        gather(t_rowptr, t_col, weight, t_perm, ga, gh, arg=masked)
    if need_weight:
        gw = torch.empty(col.numel(), dtype=acc, device=grad.device)
        edge_dot(rowptr, col, ga, h.contiguous(), gw, arg=masked)
    return gh, gw
