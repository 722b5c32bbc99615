"""The forward solve under the ambient grad mode, in two modes:

* a tolerance (``opts.tol`` a float): the loop state (``loop.make_loop``) freezes converged
  samples, keeps each sample's lowest-residual iterate and rolls diverged samples back;
* the fixed schedule (``opts.tol is None``, the papers' training loop): exactly ``max_iter``
  smoothed steps, the last iterate returned, no host read until the end (no per-step sync, and
  ``torch.compile`` sees one graph).
"""
from __future__ import annotations

import math
import os
import sys
import time
import warnings

import torch
from torch.nn.utils import parametrize

from ..ops import picard_update
from .anderson import Anderson
from .loop import make_loop
from .stats import PicardStats


class DivergenceError(RuntimeError):
    """A sample's residual became non-finite or grew past ``divergence_factor`` x its minimum
    (raised with ``on_diverge="raise"``)."""


def diverge_message(div, S, steps, total=None):
    """``total``: samples diverged on all ranks (dist_sync), when it differs from this rank's."""
    ids = torch.nonzero(div).flatten()[:8].tolist()
    where = (f" on this rank ({total} on all ranks)" if total is not None
             and total != int(div.sum()) else "")
    return (f"picard: {int(div.sum())} of {S} samples diverged{where} (non-finite residual or "
            f"growth past divergence_factor x its minimum) within {steps} steps; first ids "
            f"{ids}. They return their last iterate before the bad step; see stats.diverged")


def solve(fn, x0, opts):
    """Returns (x_star, stats). Parametrized weights (e.g. :func:`fastpicard.contractive`) are
    computed once for the whole solve."""
    if opts.fixed:
        return fixed(_smoothed(fn, opts), x0, opts)
    with parametrize.cached():
        return _until_tol(fn, x0, opts)


# ---------------------------------------------------------------- the fixed schedule
def _smoothed(fn, opts):
    """The fused smoothed step ``(x, return_norm) -> (x_new, res[, norm])`` of a map fn."""
    def step(x, return_norm):
        return picard_update(x, fn(x), opts.alpha, batch=opts.batch,
                             num_samples=opts.num_samples, return_norm=return_norm)
    return step


def fixed(step, x0, opts):
    """``opts.max_iter`` applications of ``step`` (see :func:`_smoothed`; PIGN passes the
    fused graph step), the last iterate returned."""
    compiling = torch.compiler.is_compiling()
    t0 = None if compiling else time.perf_counter()
    if opts.num_samples == 0:
        return x0, _fixed_stats(torch.zeros(0, 0), torch.zeros(0), opts, 0.0, "cpu")
    cache = parametrize.cached() if not compiling else _NoCache()
    with cache:
        x, trace = x0, []
        for k in range(opts.max_iter):
            if k + 1 < opts.max_iter:
                x, res = step(x, False)
            else:
                x, res, norm = step(x, True)
            trace.append(res)
    trace = torch.stack(trace)
    if compiling:  # no host reads inside a compiled graph: the stats stay on the device
        return x, _fixed_stats(trace, norm, opts, math.nan, x.device)
    stats = _fixed_stats(trace.cpu(), norm.cpu(), opts, time.perf_counter() - t0, "cpu")
    if stats.diverged.any():
        msg = (f"picard (fixed schedule): {int(stats.diverged.sum())} of {opts.num_samples} "
               f"samples produced non-finite values within {opts.max_iter} steps; see "
               "stats.diverged / stats.trace")
        if opts.on_diverge == "raise":
            raise DivergenceError(msg)
        warnings.warn(msg, RuntimeWarning, stacklevel=_caller_level())
    return x, stats


class _NoCache:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _fixed_stats(trace, norm, opts, seconds, device):
    S, n = opts.num_samples, trace.shape[0]
    last = trace[-1] if n else norm
    return PicardStats(iterations=torch.full((S,), n, dtype=torch.int64, device=device),
                       abs_residual=last, rel_residual=last / norm.clamp_min(
                           torch.finfo(norm.dtype).tiny), trace=trace,
                       converged=torch.zeros(S, dtype=torch.bool, device=device),
                       diverged=~torch.isfinite(trace).all(0), time=seconds, steps=n,
                       stop="abs", tol=None, schedule="fixed")


# ---------------------------------------------------------------- until a tolerance
def _all_reduce(counts, device):
    t = torch.tensor(counts, dtype=torch.int64, device=device)
    torch.distributed.all_reduce(t)
    return t.tolist()


def _until_tol(fn, x0, opts):
    t0 = time.perf_counter()
    S = opts.num_samples
    loop = make_loop(x0, opts.alpha, opts.batch, S, opts.leading, opts.tol, opts.stop == "rel",
                     opts.max_iter, opts.divergence_factor, opts.check_every,
                     reuse_buffers=opts.solver == "picard")
    acc = (Anderson(opts.anderson_m, opts.anderson_lam, opts.batch, S, opts.leading)
           if opts.solver == "anderson" else None)
    x, steps, n_div = x0, 0, 0
    step, max_iter, dist_sync = loop.step, opts.max_iter, opts.dist_sync
    raise_on_div = opts.on_diverge == "raise"
    if S > 0:
        z = fn(x)
        while True:  # step() checks each z against x
            x_new, active, n_div_read = step(x, z)
            if acc is not None:
                x_new = acc.mix(x, x_new, loop.active_rows())
            x = x_new
            steps += 1
            if active >= 0:  # a check step: the flags were read from the device
                n_div = n_div_read
                if dist_sync:  # every rank continues while any rank has a running sample
                    active, n_div_read = _all_reduce([active, n_div_read], x.device)
                if n_div_read and raise_on_div:
                    _, stats = _finish(loop, x, t0, steps, opts)
                    raise DivergenceError(diverge_message(stats.diverged, S, steps, n_div_read))
                if active == 0 or steps == max_iter:
                    break
            z = fn(x)
    x, stats = _finish(loop, x, t0, steps, opts)
    report(stats, opts, n_div)
    return x, stats


def _finish(loop, x, t0, steps, opts):
    x, (iters, abs_r, rel_r, conv, div, trace) = loop.finish(x)
    return x, PicardStats(iterations=iters, abs_residual=abs_r, rel_residual=rel_r, trace=trace,
                          converged=conv, diverged=div, time=time.perf_counter() - t0,
                          steps=steps, stop=opts.stop, tol=opts.tol)


def report(stats, opts, n_div):
    """After a tolerance solve: diverged samples (warn or raise, every time) and a tolerance
    the map never approached (warn once per call site)."""
    if n_div:
        message = diverge_message(stats.diverged, opts.num_samples, stats.steps)
        if opts.on_diverge == "raise":
            raise DivergenceError(message)
        warnings.warn(message, RuntimeWarning, stacklevel=_caller_level())
    if stats.steps >= opts.max_iter:  # (a solve that stopped earlier met its tolerance)
        _warn_if_not_contracting(stats)


# ---------------------------------------------------------------- tolerance never met
# A residual that shrinks by less than this per step over the last steps of a solve that ran
# out of iterations: at that rate a tolerance is out of reach, the map is not contracting.
STALL_RATIO = 0.95
_WARNED_SITES: set = set()


def stall_ratio(stats) -> float | None:
    """The worst per-step residual ratio over the last half of the trace (at most 8 steps)
    among the samples that ran out of iterations; None when every sample stopped."""
    stuck = ~(stats.converged | stats.diverged)
    n = stats.trace.shape[0]
    if not bool(stuck.any()) or n < 2:
        return None
    k = min(max(n // 2, 1), 8)
    tail = stats.trace[-k - 1:, stuck].double()
    first, last = tail[0], tail[-1]
    ok = torch.isfinite(first) & torch.isfinite(last) & (first > 0)
    if not bool(ok.any()):
        return None
    return float(((last[ok] / first[ok]) ** (1.0 / k)).max())


def _warn_if_not_contracting(stats):
    q = stall_ratio(stats)
    if q is None or q < STALL_RATIO:
        return
    level = _caller_level()
    frame = sys._getframe(level - 1)
    site = (frame.f_code.co_filename, frame.f_lineno)
    if site in _WARNED_SITES:
        return
    _WARNED_SITES.add(site)
    stuck = ~(stats.converged | stats.diverged)
    res = stats.rel_residual if stats.stop == "rel" else stats.abs_residual
    worst = float(res[stuck].max())
    if q >= 1:
        why = (f"the residual is not shrinking (x{q:.2f} per step at the end): the map is not "
               "contractive here, and more iterations will not reach the tolerance")
    else:
        more = math.log(stats.tol / worst) / math.log(q) if worst > stats.tol else 0.0
        why = (f"the residual shrinks by only x{q:.2f} per step (about {more:.0f} more steps "
               "to the tolerance): the map is barely contractive")
    warnings.warn(
        f"picard: tol={stats.tol:g} not met by {int(stuck.sum())} of {stats.num_samples} "
        f"samples in {stats.steps} steps ({stats.stop} residual {worst:.3g}); {why}. Make it "
        "contractive (fastpicard.contractive(layer, lipschitz=0.9), or a module's lipschitz= "
        "option) or use tol=None for a fixed number of steps. (Shown once per call site.)",
        RuntimeWarning, stacklevel=level)


_INTERNAL = (os.path.dirname(os.path.abspath(__file__)) + os.sep,
             os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                          "nn", "_solve.py"))


def _caller_level() -> int:
    """The ``stacklevel`` (for the caller of this function) of the first frame outside the
    solver: warnings point at the line that called the solver."""
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_code.co_filename.startswith(_INTERNAL):
        frame, level = frame.f_back, level + 1
    return level
