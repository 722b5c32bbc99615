"""Index value checks of the pure-torch references (the C++ and Triton kernels check the same
values in their own way): negative ids would silently wrap in torch indexing. On CPU the
values are read at once and a bad one is an IndexError naming it; on other devices
``torch._assert_async`` checks them without a host sync."""
from __future__ import annotations

import torch


def _fail(ok: torch.Tensor, message: str) -> None:
    if ok.device.type == "cpu":
        if not bool(ok):
            raise IndexError(message)
    else:
        torch._assert_async(ok, message)


def check_ids(ids: torch.Tensor | None, hi: int, what: str) -> None:
    """ids lie in [0, hi)."""
    if ids is None or ids.numel() == 0:
        return
    if ids.device.type == "cpu":
        lo, top = int(ids.min()), int(ids.max())
        if lo < 0 or top >= hi:
            raise IndexError(f"{what} contains id {lo if lo < 0 else top}, outside [0, {hi})")
        return
    _fail(((ids >= 0) & (ids < hi)).all(), f"{what} contains ids outside [0, {hi})")


def check_csr(rowptr: torch.Tensor, col: torch.Tensor, n_cols: int, what: str) -> None:
    """rowptr rises from 0 to the entry count; col lies in [0, n_cols)."""
    ok = (rowptr[0] == 0) & (rowptr[-1] == col.numel())
    if rowptr.numel() > 1:
        ok = ok & (rowptr.diff() >= 0).all()
    _fail(ok, f"{what}: rowptr must rise from 0 to the number of entries ({col.numel()})")
    check_ids(col, n_cols, f"{what}: col")
