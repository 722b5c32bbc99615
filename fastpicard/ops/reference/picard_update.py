from __future__ import annotations

import torch

from ._values import check_ids


def stat_dtype(dtype: torch.dtype) -> torch.dtype:
    """Residuals and norms are float32, or float64 for float64 data."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def per_sample_sq(rows_sq: torch.Tensor, batch: torch.Tensor | None, num_samples: int):
    """Sum per-row values into per-sample totals (one sample when batch is None)."""
    if batch is None:
        return rows_sq.sum().reshape(1)
    out = rows_sq.new_zeros(num_samples)
    return out.index_add(0, batch, rows_sq)


def picard_update(x, z, alpha, batch=None, num_samples=1, frozen=None, return_norm=False):
    check_ids(batch, num_samples, "picard_update: batch")
    acc = stat_dtype(x.dtype)
    xa, za = x.to(acc), z.to(acc)
    new = alpha * xa + (1.0 - alpha) * za
    rows = x.shape[0] if x.dim() else 1
    if frozen is not None:
        row_frozen = frozen[batch] if batch is not None else frozen.expand(rows)
        mask_shape = tuple(x.shape[:1]) + (1,) * max(x.dim() - 1, 0)  # () for a 0-dim x
        new = torch.where(row_frozen.reshape(mask_shape), xa, new)
    x_new = new.to(x.dtype)
    width = x.numel() // rows if rows else 0
    d2 = (new - xa).detach().reshape(rows, width).square().sum(1)
    res = per_sample_sq(d2, batch, num_samples).sqrt()
    if return_norm:
        n2 = new.detach().reshape(rows, width).square().sum(1)
        norm = per_sample_sq(n2, batch, num_samples).sqrt()
    else:
        norm = res.new_empty(0)
    return x_new, res, norm
