"""Pure-torch reference of ``fastpicard::spmm_update`` (same arguments and outputs as the op),
including the counter-based dropout hash shared bit for bit with the C++ and Triton kernels."""
from __future__ import annotations

import torch

from ._values import check_csr, check_ids
from .picard_update import per_sample_sq, stat_dtype
from .spmm import messages

_M32 = 0xFFFFFFFF


def mix32(v: torch.Tensor) -> torch.Tensor:
    """The 32-bit mixer of the dropout hash on int64 tensors holding values in [0, 2^32)
    (multipliers are < 2^31, so products stay below 2^63)."""
    v = v ^ (v >> 16)
    v = (v * 0x7FEB352D) & _M32
    v = v ^ (v >> 15)
    v = (v * 0x5BD1E995) & _M32
    return v ^ (v >> 16)


def dropout_threshold(p: float) -> int:
    """Elements whose 24-bit hash is below this are dropped (p * 2^24, rounded)."""
    import math
    return int(math.floor(p * 16777216.0 + 0.5))


def dropout_keep(seed: torch.Tensor, rows: int, width: int, p: float, row0: int = 0):
    """Bool [rows, width] keep-mask of rows row0.. for dropout probability p and a seed tensor
    [2] (seed, offset): element (i, f) is kept iff mix(mix(i ^ key) ^ f) >> 8 >= threshold with
    key = mix(mix(seed) ^ offset)."""
    s = seed.long()
    key = mix32(mix32(s[0]) ^ s[1])
    i = torch.arange(row0, row0 + rows, device=seed.device, dtype=torch.int64) & _M32
    rk = mix32(i ^ key)
    f = torch.arange(width, device=seed.device, dtype=torch.int64)
    hv = mix32(rk.unsqueeze(1) ^ f.unsqueeze(0))
    return (hv >> 8) >= dropout_threshold(p)


def activation(p, act, negative_slope):
    if act == "relu":
        return torch.relu(p)
    if act == "leaky_relu":
        return torch.nn.functional.leaky_relu(p, negative_slope)
    if act == "tanh":
        return torch.tanh(p)
    if act == "identity":
        return p
    raise ValueError(f"spmm_update: act must be 'relu', 'identity', 'tanh' or 'leaky_relu', "
                     f"got {act!r}")


def spmm_update(rowptr, col, weight, t_rowptr, t_col, t_perm, t_weight, h, x, alpha, bias=None,
                act="relu", negative_slope=0.01, dropout=0.0, seed=None, batch=None,
                num_samples=1, frozen=None, return_norm=False, save_act=False):
    n, f = h.shape
    check_csr(rowptr, col, n, "spmm_update")
    check_ids(batch, num_samples, "spmm_update: batch")
    if dropout > 0:
        check_ids(seed, 2 ** 31, "spmm_update: seed")  # the kernels hash 31-bit words
    acc = stat_dtype(h.dtype)
    msg, rows = messages(rowptr, col, weight, h)
    pre = torch.zeros((n, f), dtype=acc, device=h.device).index_add(0, rows, msg)
    if bias is not None:
        pre = pre + bias.to(acc)
    y = activation(pre, act, negative_slope)
    z = y
    if dropout > 0:
        keep = dropout_keep(seed, n, f, dropout)
        z = y * (keep.to(acc) * (1.0 / (1.0 - dropout)))
    xa = x.to(acc)
    new = alpha * xa + (1.0 - alpha) * z
    if frozen is not None:
        row_frozen = frozen[batch] if batch is not None else frozen.expand(n)
        new = torch.where(row_frozen.unsqueeze(1), xa, new)
    x_new = new.to(x.dtype)
    d2 = (new - xa).detach().square().sum(1)
    res = per_sample_sq(d2, batch, num_samples).sqrt()
    if return_norm:
        norm = per_sample_sq(new.detach().square().sum(1), batch, num_samples).sqrt()
    else:
        norm = res.new_empty(0)
    act_out = y.detach().to(h.dtype) if save_act else h.new_empty(0)
    return x_new, res, norm, act_out
