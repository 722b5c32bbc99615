"""Pure-torch reference of ``fastpicard::picard_control_`` (same arguments, same in-place
writes): the solver's per-sample stopping rules, as csrc/picard_control.cpp states them.

Per sample s still active (frozen[s] false), with a = res[s], r = a / ||x_{k+1}||,
crit = r if rel else a:
  * trace[step, s] = crit (NaN for frozen samples), iters[s] += 1;
  * a not finite, or a > divergence_factor * (min a so far)  -> diverged, frozen;
  * else crit < tol                                           -> converged, frozen;
  * else crit < the best crit so far                          -> improved;
a sample that stops or improves records (a, r) as its result residuals (stats rows 1, 2;
row 0 is the smallest residual so far). improved / new_div get this step's masks, summary
the counts (active after the step, improved, newly diverged, diverged in total).
"""
from __future__ import annotations

import math

import torch

MIN_ABS, ABS, REL = 0, 1, 2  # rows of stats


def picard_control_(res, norm, frozen, converged, diverged, iters, stats, trace, improved, new_div,
                    summary, step, tol, rel, divergence_factor):
    active = ~frozen
    r_rel = res / norm.clamp_min(torch.finfo(res.dtype).tiny)
    crit = r_rel if rel else res
    trace[step] = torch.where(active, crit, torch.full_like(crit, math.nan))
    bad = ~torch.isfinite(res) | (res > divergence_factor * stats[MIN_ABS])
    nd = active & bad
    ok = active & ~bad
    nc = ok & (crit < tol)
    imp = ok & ~nc & (crit < stats[REL if rel else ABS])
    record = nd | nc | imp
    iters += active.to(torch.int64)
    stats[MIN_ABS] = torch.where(ok, torch.minimum(stats[MIN_ABS], res), stats[MIN_ABS])
    stats[ABS] = torch.where(record, res, stats[ABS])
    stats[REL] = torch.where(record, r_rel, stats[REL])
    converged |= nc
    diverged |= nd
    frozen |= nc | nd
    improved.copy_(imp)
    new_div.copy_(nd)
    summary.copy_(torch.stack([(~frozen).sum(), imp.sum(), nd.sum(), diverged.sum()]))
