"""Pure-torch reference of ``fastpicard::spmm`` (same arguments and outputs as the op)."""
from __future__ import annotations

import torch

from ._values import check_csr
from .picard_update import stat_dtype


def csr_rows(rowptr: torch.Tensor) -> torch.Tensor:
    """Row (target node) of every CSR entry, int64."""
    n = rowptr.numel() - 1
    return torch.repeat_interleave(torch.arange(n, device=rowptr.device), rowptr.diff().long())


def messages(rowptr, col, weight, h):
    """Per-entry messages weight[k] * h[col[k]] in the accumulation dtype, and entry rows."""
    acc = stat_dtype(h.dtype)
    msg = h.to(acc)[col.long()]
    if weight is not None:
        msg = msg * weight.to(acc).unsqueeze(1)
    return msg, csr_rows(rowptr)


def segment_max(msg, rows, n):
    """Per-row max of msg with the first entry attaining it (NaN wins); empty rows: 0 and -1.
    Differentiable in msg (the gradient goes to the arg entry only)."""
    e, f = msg.shape
    idx = rows.unsqueeze(1).expand(e, f)
    with torch.no_grad():
        nan = torch.isnan(msg)
        key = torch.where(nan, torch.full_like(msg, float("inf")), msg)
        best = torch.full((n, f), float("-inf"), dtype=msg.dtype, device=msg.device)
        best = best.scatter_reduce(0, idx, key, reduce="amax")
        row_nan = torch.zeros((n, f), dtype=torch.bool, device=msg.device)
        row_nan = row_nan.scatter_reduce(0, idx, nan, reduce="amax")
        # candidates: a NaN entry in a row with NaN, else an entry equal to the row max
        cand = torch.where(row_nan[rows], nan, (key == best[rows]) & ~nan)
        pos = torch.arange(e, device=msg.device).unsqueeze(1).expand(e, f)
        big = torch.full((n, f), e, dtype=torch.int64, device=msg.device)
        arg = big.scatter_reduce(0, idx, torch.where(cand, pos, e), reduce="amin")
        empty = arg == e
        arg = arg.masked_fill(empty, -1)
    if e == 0:
        return msg.new_zeros((n, f)), arg
    out = msg.gather(0, arg.clamp_min(0))
    return out.masked_fill(empty, 0.0), arg


def spmm(rowptr, col, weight, t_rowptr, t_col, t_perm, t_weight, h, reduce="sum"):
    n, f = h.shape
    check_csr(rowptr, col, n, "spmm")
    msg, rows = messages(rowptr, col, weight, h)
    if reduce == "max":
        out, arg = segment_max(msg, rows, n)
        return out.to(h.dtype), arg.to(col.dtype)
    out = torch.zeros((n, f), dtype=msg.dtype, device=h.device).index_add(0, rows, msg)
    if reduce == "mean":
        out = out / rowptr.diff().clamp_min(1).to(msg.dtype).unsqueeze(1)
    elif reduce != "sum":
        raise ValueError(f"spmm: reduce must be 'sum', 'mean' or 'max', got {reduce!r}")
    return out.to(h.dtype), col.new_empty(0)
