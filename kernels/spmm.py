"""Triton kernels of the graph aggregation ``fastpicard::spmm`` (sum / mean / max) and its
backward; the CUDA backend of the op, also run on CPU tensors under ``TRITON_INTERPRET=1``.

Tiling in the spirit of GE-SpMM: a program owns BLOCK_R consecutive CSR rows and one block of
BLOCK_F features; it walks the rows' entries BLOCK_E at a time, gathering a
[BLOCK_R, BLOCK_E, BLOCK_F] tile of source rows (contiguous along features) and reducing it in
fp32 (fp64 for fp64 data). BLOCK_R * BLOCK_E follows the average degree, so low-degree
graphs do not leave most lanes idle. Every output row is written by one program, so the
backward (``Âᵀ·g`` over the transposed CSR, one dot product per edge for the weight gradient)
needs no atomics and is deterministic. Launchers take and return exactly what the ops do.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

_TILE_EDGES = 32  # BLOCK_R * BLOCK_E


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _tl_acc(dtype: torch.dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


def block_f(width: int) -> int:
    return min(triton.next_power_of_2(max(width, 1)), 64)


def num_warps(block_f: int) -> int:
    """Warps of the gather kernels: 8 for full 64-wide feature blocks (on 4 warps, fp64 and
    spmm_update with every option on spilled registers on sm_80: python -m
    fastpicard.kernels.aot), else 4."""
    return 8 if block_f >= 64 else 4


def row_blocks(rows: int, nnz: int):
    """(BLOCK_R, BLOCK_E) for a CSR: BLOCK_E near the average degree, BLOCK_R fills the tile."""
    avg = nnz / max(rows, 1)
    block_e = min(max(triton.next_power_of_2(max(int(avg), 1)), 2), _TILE_EDGES)
    return max(_TILE_EDGES // block_e, 1), block_e


@triton.jit
def _gather_kernel(rowptr_ptr, col_ptr, w_ptr, perm_ptr, arg_ptr, src_ptr, out_ptr, R, F,
                   HAS_W: tl.constexpr, HAS_PERM: tl.constexpr, MASKED: tl.constexpr,
                   MEAN: tl.constexpr, ACC: tl.constexpr, BLOCK_R: tl.constexpr,
                   BLOCK_E: tl.constexpr, BLOCK_F: tl.constexpr):
    """out[r, f] = sum_k w_k src[col[k], f] (w_k = w[perm[k]] with HAS_PERM). MASKED (max
    backward): entry k counts only where arg[col[k], f] == perm[k]. MEAN: / degree."""
    r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    rm = r < R
    f = tl.program_id(1) * BLOCK_F + tl.arange(0, BLOCK_F)
    fm = f < F
    start = tl.load(rowptr_ptr + r, mask=rm, other=0).to(tl.int64)
    end = tl.load(rowptr_ptr + r + 1, mask=rm, other=0).to(tl.int64)
    deg = end - start
    acc = tl.zeros([BLOCK_R, BLOCK_E, BLOCK_F], dtype=ACC)
    for j in range(0, tl.max(deg, axis=0), BLOCK_E):
        k = start[:, None] + j + tl.arange(0, BLOCK_E)[None, :]  # [R, E]
        km = k < end[:, None]
        c = tl.load(col_ptr + k, mask=km, other=0).to(tl.int64)
        if HAS_PERM:
            pe = tl.load(perm_ptr + k, mask=km, other=0).to(tl.int64)
        else:
            pe = k
        if HAS_W:
            w = tl.load(w_ptr + pe, mask=km, other=0.0).to(ACC)
        else:
            w = km.to(ACC)
        m3 = km[:, :, None] & fm[None, None, :]
        offs = c[:, :, None] * F + f[None, None, :]
        tile = tl.load(src_ptr + offs, mask=m3, other=0.0).to(ACC)
        if MASKED:
            a = tl.load(arg_ptr + offs, mask=m3, other=-1).to(tl.int64)
            tile = tl.where(a == pe[:, :, None], tile, 0.0)
        acc += tile * w[:, :, None]
    out = tl.sum(acc, axis=1)
    if MEAN:
        out = out / tl.maximum(deg, 1).to(ACC)[:, None]
    o = r.to(tl.int64)[:, None] * F + f[None, :]
    tl.store(out_ptr + o, out.to(out_ptr.dtype.element_ty), mask=rm[:, None] & fm[None, :])


@triton.jit
def _edge_dot_kernel(rowptr_ptr, col_ptr, arg_ptr, g_ptr, h_ptr, gw_ptr, R, F,
                     MASKED: tl.constexpr, ACC: tl.constexpr, BLOCK_R: tl.constexpr,
                     BLOCK_E: tl.constexpr, BLOCK_F: tl.constexpr):
    """gw[k] = sum_f g[r, f] h[col[k], f] for the entries k of row r (MASKED: arg[r, f] == k)."""
    r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    rm = r < R
    start = tl.load(rowptr_ptr + r, mask=rm, other=0).to(tl.int64)
    end = tl.load(rowptr_ptr + r + 1, mask=rm, other=0).to(tl.int64)
    rbase = r.to(tl.int64) * F
    for j in range(0, tl.max(end - start, axis=0), BLOCK_E):
        k = start[:, None] + j + tl.arange(0, BLOCK_E)[None, :]
        km = k < end[:, None]
        c = tl.load(col_ptr + k, mask=km, other=0).to(tl.int64)
        dot = tl.zeros([BLOCK_R, BLOCK_E, BLOCK_F], dtype=ACC)
        for f0 in range(0, F, BLOCK_F):
            f = f0 + tl.arange(0, BLOCK_F)
            fm = f < F
            gm = rm[:, None] & fm[None, :]
            g = tl.load(g_ptr + rbase[:, None] + f[None, :], mask=gm, other=0.0).to(ACC)
            m3 = km[:, :, None] & fm[None, None, :]
            hv = tl.load(h_ptr + c[:, :, None] * F + f[None, None, :], mask=m3,
                         other=0.0).to(ACC)
            prod = hv * g[:, None, :]
            if MASKED:
                a = tl.load(arg_ptr + rbase[:, None] + f[None, :], mask=gm, other=-1)
                prod = tl.where(a.to(tl.int64)[:, None, :] == k[:, :, None], prod, 0.0)
            dot += prod
        tl.store(gw_ptr + k, tl.sum(dot, axis=2).to(gw_ptr.dtype.element_ty), mask=km)


@triton.jit
def _max_kernel(rowptr_ptr, col_ptr, w_ptr, h_ptr, out_ptr, arg_ptr, R, F, HAS_W: tl.constexpr,
                ACC: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_F: tl.constexpr):
    """out[r, f] = max_k w_k h[col[k], f], arg = the first k attaining it (a NaN wins and
    stays); empty rows: 0 and -1. Each row's entries are visited in order, as on CPU."""
    r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    rm = r < R
    f = tl.program_id(1) * BLOCK_F + tl.arange(0, BLOCK_F)
    fm = f < F
    start = tl.load(rowptr_ptr + r, mask=rm, other=0).to(tl.int64)
    end = tl.load(rowptr_ptr + r + 1, mask=rm, other=0).to(tl.int64)
    best = tl.zeros([BLOCK_R, BLOCK_F], dtype=ACC)
    arg = tl.full([BLOCK_R, BLOCK_F], -1, dtype=tl.int64)
    for j in range(0, tl.max(end - start, axis=0)):
        k = start + j
        km = k < end
        c = tl.load(col_ptr + k, mask=km, other=0).to(tl.int64)
        m2 = km[:, None] & fm[None, :]
        v = tl.load(h_ptr + c[:, None] * F + f[None, :], mask=m2, other=0.0).to(ACC)
        if HAS_W:
            v = v * tl.load(w_ptr + k, mask=km, other=0.0).to(ACC)[:, None]
        take = (v > best) | ((v != v) & (best == best)) | (j == 0)
        take = take & m2
        best = tl.where(take, v, best)
        arg = tl.where(take, k[:, None], arg)
    o = r.to(tl.int64)[:, None] * F + f[None, :]
    om = rm[:, None] & fm[None, :]
    tl.store(out_ptr + o, best.to(out_ptr.dtype.element_ty), mask=om)
    tl.store(arg_ptr + o, arg.to(arg_ptr.dtype.element_ty), mask=om)


def gather(rowptr, col, weight, perm, src, out, arg=None, mean=False):
    """Launch _gather_kernel over all rows of (rowptr, col) into out [rows, F]."""
    rows, width = out.shape
    if rows == 0 or width == 0:
        return out
    bf = block_f(width)
    br, be = row_blocks(rows, col.numel())
    _gather_kernel[(triton.cdiv(rows, br), triton.cdiv(width, bf))](
        rowptr, col, weight if weight is not None else src, perm if perm is not None else col,
        arg if arg is not None else col, src, out, rows, width,
        HAS_W=weight is not None, HAS_PERM=perm is not None, MASKED=arg is not None, MEAN=mean,
        ACC=_tl_acc(out.dtype), BLOCK_R=br, BLOCK_E=be, BLOCK_F=bf, num_warps=num_warps(bf))
    return out


def edge_dot(rowptr, col, g, h, gw, arg=None):
    """gw[k] = <g[row of k], h[col[k]]> (masked by arg for max) for every entry k."""
    rows, width = g.shape
    if gw.numel() == 0:
        return gw
    if width == 0:
        return gw.zero_()
    br, be = row_blocks(rows, col.numel())
    _edge_dot_kernel[(triton.cdiv(rows, br),)](
        rowptr, col, arg if arg is not None else col, g, h, gw, rows, width,
        MASKED=arg is not None, ACC=_tl_acc(g.dtype), BLOCK_R=br, BLOCK_E=be,
        BLOCK_F=block_f(width))
    return gw


def transposed_weights(weight, t_perm, t_weight, masked):
    """(weights, perm) for a gather over the transposed CSR: t_weight read directly when given,
    else weight through t_perm; max (masked) always keeps t_perm for the edge ids."""
    if masked or t_weight is None:
        return weight, t_perm if (weight is not None or masked) else None
    return t_weight, None


def spmm(rowptr, col, weight, t_rowptr, t_col, t_perm, t_weight, h, reduce="sum"):
    h = h.contiguous()
    rows, width = h.shape
    out = torch.empty((rows, width), dtype=h.dtype, device=h.device)
    if reduce == "max":
        arg = torch.empty((rows, width), dtype=col.dtype, device=h.device)
        if rows and width:
            bf = block_f(width)
            br = 16
            _max_kernel[(triton.cdiv(rows, br), triton.cdiv(width, bf))](
                rowptr, col, weight if weight is not None else h, h, out, arg, rows, width,
                HAS_W=weight is not None, ACC=_tl_acc(h.dtype), BLOCK_R=br, BLOCK_F=bf)
        return out, arg
    gather(rowptr, col, weight, None, h, out, mean=reduce == "mean")
    return out, col.new_empty(0)


def spmm_backward(grad, rowptr, col, weight, t_rowptr, t_col, t_perm, t_weight, h, arg, reduce,
                  need_h, need_weight):
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
        tw, perm = transposed_weights(weight, t_perm, t_weight, masked is not None)
        gather(t_rowptr, t_col, tw, perm, ga, gh, arg=masked)
    if need_weight:
        gw = torch.empty(col.numel(), dtype=acc, device=grad.device)
        edge_dot(rowptr, col, ga, h.contiguous(), gw, arg=masked)
    return gh, gw
