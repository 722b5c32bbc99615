"""Value checks of the Triton path (the CUDA kernels of ``fastpicard.ops``, and CPU tensors
under the interpreter), run before a kernel reads anything through an index: CSR rows and
columns, edge permutations, sample ids. One launch per index set writes 0 into an ``ok`` flag
when a value is out of range; then

* on CUDA, ``torch._assert_async(ok)`` (no host sync): a bad value is a device-side assert,
  raised at the next synchronisation, and the assert kernel runs before (stream order) the
  op's kernels, which therefore never read out of bounds;
* on CPU tensors (Triton's interpreter, tests) the flag is read at once and a bad value is an
  IndexError.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

_BLOCK = 1024
_OK: dict = {}  # device -> int32 [1] holding 1: written only on a failed check, which is fatal
#                 on CUDA (a device-side assert), so it never has to be reset there


@triton.jit
def _check_kernel(rowptr_ptr, col_ptr, perm_ptr, ids_ptr, ok_ptr, n_rows, nnz, n_cols, n_ids,
                  id_hi, HAS_CSR: tl.constexpr, HAS_PERM: tl.constexpr, HAS_IDS: tl.constexpr,
                  BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    bad = tl.zeros([BLOCK], dtype=tl.int32)
    if HAS_CSR:
        mr = offs < n_rows  # rowptr never decreases, starts at 0, ends at nnz
        lo = tl.load(rowptr_ptr + offs, mask=mr, other=0).to(tl.int64)
        hi = tl.load(rowptr_ptr + offs + 1, mask=mr, other=0).to(tl.int64)
        bad |= (mr & (lo > hi)).to(tl.int32)
        first = offs == 0
        start = tl.load(rowptr_ptr + offs, mask=first, other=0).to(tl.int64)
        end = tl.load(rowptr_ptr + offs + n_rows, mask=first, other=0).to(tl.int64)
        bad |= (first & ((start != 0) | (end != nnz))).to(tl.int32)
        mc = offs < nnz
        c = tl.load(col_ptr + offs, mask=mc, other=0).to(tl.int64)
        bad |= (mc & ((c < 0) | (c >= n_cols))).to(tl.int32)
        if HAS_PERM:
            p = tl.load(perm_ptr + offs, mask=mc, other=0).to(tl.int64)
            bad |= (mc & ((p < 0) | (p >= nnz))).to(tl.int32)
    if HAS_IDS:
        mi = offs < n_ids
        v = tl.load(ids_ptr + offs, mask=mi, other=0)
        bad |= (mi & ((v < 0) | (v >= id_hi))).to(tl.int32)
    zero = tl.zeros([BLOCK], dtype=tl.int32)
    tl.store(ok_ptr + tl.arange(0, BLOCK) * 0, zero, mask=bad != 0)


def _ok_flag(device: torch.device) -> torch.Tensor:
    if device.type != "cuda":
        return torch.ones(1, dtype=torch.int32, device=device)
    flag = _OK.get(device)
    if flag is None:
        flag = _OK[device] = torch.ones(1, dtype=torch.int32, device=device)
    return flag


def check(what: str, *, csr=None, ids=None) -> None:
    """Checks ``csr = (rowptr [R+1], col [E], n_cols, perm [E] or None)`` (rowptr rising from
    0 to E, col in [0, n_cols), perm in [0, E)) and ``ids = (values, hi)`` (values in
    [0, hi)): contiguous 1-D integer tensors on one device, as the ops' checks guarantee."""
    if csr is None and ids is None:
        return
    ref = csr[0] if csr is not None else ids[0]
    ok = _ok_flag(ref.device)
    if csr is not None:
        rowptr, col, n_cols, perm = csr
        n_rows, nnz = rowptr.numel() - 1, col.numel()
    else:
        rowptr = col = perm = None
        n_rows = nnz = n_cols = 0
    id_vals, id_hi = ids if ids is not None else (None, 0)
    n_ids = id_vals.numel() if id_vals is not None else 0
    dummy = ref
    _check_kernel[(triton.cdiv(max(n_rows, nnz, n_ids, 1), _BLOCK),)](
        rowptr if rowptr is not None else dummy, col if col is not None else dummy,
        perm if perm is not None else dummy, id_vals if id_vals is not None else dummy, ok,
        n_rows, nnz, n_cols, n_ids, id_hi, HAS_CSR=csr is not None,
        HAS_PERM=perm is not None, HAS_IDS=ids is not None, BLOCK=_BLOCK)
    if ok.device.type == "cuda":
        torch._assert_async(ok, f"{what}: an index is out of range (graph rows, columns, edges "
                                "or sample ids)")
    elif not bool(ok):
        raise IndexError(_describe(what, csr, ids))


def _describe(what, csr, ids) -> str:
    """Which value is wrong (CPU tensors: reading them costs nothing)."""
    def outside(values, hi, name):
        bad = values[(values < 0) | (values >= hi)]
        return f"{name} contains {int(bad[0])}, outside [0, {hi})" if bad.numel() else None

    if csr is not None:
        rowptr, col, n_cols, perm = csr
        if int(rowptr[0]) != 0 or int(rowptr[-1]) != col.numel():
            return (f"{what}: rowptr must start at 0 and end at the number of entries "
                    f"({col.numel()}), got {int(rowptr[0])} and {int(rowptr[-1])}")
        if rowptr.numel() > 1 and bool((rowptr.diff() < 0).any()):
            return f"{what}: rowptr decreases at row {int(torch.nonzero(rowptr.diff() < 0)[0])}"
        message = outside(col, n_cols, f"{what}: col") or (
            perm is not None and outside(perm, col.numel(), f"{what}: perm"))
        if message:
            return message
    return (ids is not None and outside(ids[0], ids[1], what)) or \
        f"{what}: an index is out of range"
