"""Triton kernel of ``fastpicard::picard_control_`` (the solver's per-sample stopping rules;
see csrc/picard_control.cpp): on CUDA one launch per step instead of the ~20 small launches
of the generic at:: version, and no host sync. Runs on CPU tensors under TRITON_INTERPRET=1.

One program walks the samples in blocks (S is the number of samples, small next to x) and
writes the summary counts, so no atomics are needed.
"""
from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

_BLOCK = 1024


@triton.jit
def _control_kernel(res_ptr, norm_ptr, frozen_ptr, conv_ptr, div_ptr, iters_ptr, stats_ptr,
                    trace_ptr, imp_ptr, new_div_ptr, summary_ptr, params_ptr, S,
                    REL: tl.constexpr, BLOCK: tl.constexpr):
    tol = tl.load(params_ptr)         # in the statistics' dtype, as the CPU kernel compares
    factor = tl.load(params_ptr + 1)
    tiny = tl.load(params_ptr + 2)
    # int32 counts (S < 2^31): four int64 accumulators of BLOCK elements cost 64 registers a
    # thread, and ptxas 12.8 (triton 3.6) spilled the fp32 REL variant on sm_80 with them
    n_active = tl.zeros([BLOCK], dtype=tl.int32)
    n_imp = tl.zeros([BLOCK], dtype=tl.int32)
    n_new_div = tl.zeros([BLOCK], dtype=tl.int32)
    n_div = tl.zeros([BLOCK], dtype=tl.int32)
    start = 0
    while start < S:  # not range(): see picard_update._segment_sqrt_sum_kernel
        offs = tl.multiple_of(start, BLOCK) + tl.arange(0, BLOCK)
        m = offs < S
        fz = tl.load(frozen_ptr + offs, mask=m, other=1) != 0
        active = m & (fz == 0)
        a = tl.load(res_ptr + offs, mask=m, other=0.0)
        nrm = tl.load(norm_ptr + offs, mask=m, other=1.0)
        r = a / tl.maximum(nrm, tiny)
        if REL:
            crit = r
        else:
            crit = a
        tl.store(trace_ptr + offs, tl.where(active, crit, float("nan")), mask=m)
        mn = tl.load(stats_ptr + offs, mask=m, other=0.0)
        fa = tl.load(stats_ptr + S + offs, mask=m, other=0.0)
        fr = tl.load(stats_ptr + 2 * S + offs, mask=m, other=0.0)
        finite = (a == a) & (tl.abs(a) < float("inf"))
        bad = (finite == 0) | (a > factor * mn)
        nd = active & bad
        ok = active & (bad == 0)
        nc = ok & (crit < tol)
        if REL:
            best = fr
        else:
            best = fa
        imp = ok & (nc == 0) & (crit < best)
        rec = nd | nc | imp
        it = tl.load(iters_ptr + offs, mask=m, other=0)
        tl.store(iters_ptr + offs, it + active.to(tl.int64), mask=m)
        tl.store(stats_ptr + offs, tl.where(ok, tl.minimum(mn, a), mn), mask=m)
        tl.store(stats_ptr + S + offs, tl.where(rec, a, fa), mask=m)
        tl.store(stats_ptr + 2 * S + offs, tl.where(rec, r, fr), mask=m)
        cv = (tl.load(conv_ptr + offs, mask=m, other=0) != 0) | nc
        dv = (tl.load(div_ptr + offs, mask=m, other=0) != 0) | nd
        tl.store(conv_ptr + offs, cv.to(tl.uint8), mask=m)
        tl.store(div_ptr + offs, dv.to(tl.uint8), mask=m)
        tl.store(frozen_ptr + offs, (fz | nc | nd).to(tl.uint8), mask=m)
        tl.store(imp_ptr + offs, imp.to(tl.uint8), mask=m)
        tl.store(new_div_ptr + offs, nd.to(tl.uint8), mask=m)
        n_active += (active & (nc == 0) & (nd == 0)).to(tl.int32)
        n_imp += imp.to(tl.int32)
        n_new_div += nd.to(tl.int32)
        n_div += (m & dv).to(tl.int32)
        start += BLOCK
    tl.store(summary_ptr, tl.sum(n_active, axis=0).to(tl.int64))
    tl.store(summary_ptr + 1, tl.sum(n_imp, axis=0).to(tl.int64))
    tl.store(summary_ptr + 2, tl.sum(n_new_div, axis=0).to(tl.int64))
    tl.store(summary_ptr + 3, tl.sum(n_div, axis=0).to(tl.int64))


@functools.lru_cache(maxsize=64)
def _params(tol, divergence_factor, dtype, device):
    """(tol, factor, tiny) in the statistics' dtype (Triton float scalars are fp32), made once
    per configuration: a fresh host-to-device copy every step would be a sync."""
    return torch.tensor([tol, divergence_factor, torch.finfo(dtype).tiny], dtype=dtype,
                        device=device)


def picard_control(res, norm, frozen, converged, diverged, iters, stats, trace, improved,
                   new_div, summary, step, tol, rel, divergence_factor):
    """Launch on the solver's state tensors (contiguous, checked by the caller)."""
    S = res.numel()
    params = _params(float(tol), float(divergence_factor), res.dtype, res.device)
    u8 = [t.view(torch.uint8) for t in (frozen, converged, diverged, improved, new_div)]
    _control_kernel[(1,)](res.contiguous(), norm.contiguous(), u8[0], u8[1], u8[2], iters, stats,
                          trace[step], u8[3], u8[4], summary, params, S, REL=rel,
                          BLOCK=min(_BLOCK, triton.next_power_of_2(max(S, 1))))
