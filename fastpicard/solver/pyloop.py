"""Loop control in pure torch: the reference for the C++ ``PicardLoop`` (same rules, same
methods) and the fallback when the compiled extension is unavailable.

Rules, per sample s still active at step k (res = ||x_{k+1} - x_k||, rel = res / ||x_{k+1}||,
crit = res or rel per ``stop``):
  * res not finite, or res > divergence_factor * min(previous res)  -> diverged; the sample is
    rolled back to x_k (the last iterate before the bad step) and frozen;
  * else crit < tol                                                  -> converged; x_{k+1} kept
    and the sample frozen (picard_update's ``frozen`` mask), i.e. exact per-sample early exit;
  * else if crit < best crit so far                                 -> x_{k+1} becomes the
    sample's best iterate, returned if it never converges.
A sample that stops or improves records (res, rel) as its result residuals.
"""
from __future__ import annotations

import math

import torch

from ..ops.reference.picard_update import stat_dtype


def reference_picard_update(x, z, alpha, *, batch, num_samples, frozen, return_norm):
    from ..ops import picard_update  # the public op: C++/Triton when built, else pure torch

    return picard_update(x, z, alpha, batch=batch, num_samples=num_samples, frozen=frozen,
                         return_norm=return_norm)


def new_state(S, dtype, device, capacity):
    return {
        "frozen": torch.zeros(S, dtype=torch.bool, device=device),
        "converged": torch.zeros(S, dtype=torch.bool, device=device),
        "diverged": torch.zeros(S, dtype=torch.bool, device=device),
        "iters": torch.zeros(S, dtype=torch.int64, device=device),
        "min_abs": torch.full((S,), math.inf, dtype=dtype, device=device),
        "abs": torch.full((S,), math.inf, dtype=dtype, device=device),
        "rel": torch.full((S,), math.inf, dtype=dtype, device=device),
        "trace": torch.full((capacity, S), math.nan, dtype=dtype, device=device),
    }


def control_update(state: dict, res: torch.Tensor, norm: torch.Tensor, step: int, tol: float,
                   rel: bool, div_factor: float):
    """Applies the rules above to the per-sample state in place; returns (improved,
    newly_diverged) bool [S] masks."""
    active = ~state["frozen"]
    tiny = torch.finfo(res.dtype).tiny
    r_rel = res / norm.clamp_min(tiny)
    crit = r_rel if rel else res
    state["trace"][step] = torch.where(active, crit, torch.full_like(crit, math.nan))
    bad = ~torch.isfinite(res) | (res > div_factor * state["min_abs"])
    new_div = active & bad
    ok = active & ~bad
    new_conv = ok & (crit < tol)
    improved = ok & ~new_conv & (crit < (state["rel"] if rel else state["abs"]))
    record = new_div | new_conv | improved
    state["iters"] += active.to(torch.int64)
    state["min_abs"] = torch.where(ok, torch.minimum(state["min_abs"], res), state["min_abs"])
    state["abs"] = torch.where(record, res, state["abs"])
    state["rel"] = torch.where(record, r_rel, state["rel"])
    state["converged"] = state["converged"] | new_conv
    state["diverged"] = state["diverged"] | new_div
    state["frozen"] = state["frozen"] | new_conv | new_div
    return improved, new_div


class PyLoop:
    """One smoothed-Picard solve's loop state; ``step`` does the update and the bookkeeping.
    (Always allocates fresh iterates; ``reuse_buffers`` is accepted for the C++ signature.)"""

    def __init__(self, x0, alpha, batch, num_samples, leading, tol, rel, max_iter, div_factor,
                 check_every, reuse_buffers=True, update=None):
        self.alpha, self.batch, self.S, self.leading = alpha, batch, num_samples, leading
        self.tol, self.rel, self.max_iter = tol, rel, max_iter
        self.div_factor, self.check_every = div_factor, check_every
        self.update = update or reference_picard_update
        self.state = new_state(num_samples, stat_dtype(x0.dtype), x0.device, min(max_iter, 64))
        self.keep = x0
        self.k = 0
        self._shape = x0.shape

    def rows(self, mask):
        """A per-sample mask broadcast over the rows of x."""
        if self.batch is None:
            return mask.reshape((1,) * len(self._shape))
        return (mask if self.leading else mask[self.batch]).reshape(
            (-1,) + (1,) * (len(self._shape) - 1))

    def active_rows(self):
        return self.rows(~self.state["frozen"])

    def step(self, x, z):
        """x_{k+1} from x_k and z = fn(x_k). Returns (x_new, active, diverged): counts of
        active / diverged samples read on check steps, -1 on others."""
        st = self.state
        if self.k == st["trace"].shape[0]:  # grow the trace geometrically
            more = torch.full_like(st["trace"], math.nan)[: self.max_iter - self.k]
            st["trace"] = torch.cat([st["trace"], more])
        x_new, res, norm = self.update(x, z, self.alpha, batch=self.batch, num_samples=self.S,
                                       frozen=st["frozen"], return_norm=True)
        improved, new_div = control_update(st, res, norm, self.k, self.tol, self.rel,
                                           self.div_factor)
        self.k += 1
        self.keep = torch.where(self.rows(improved), x_new, self.keep)
        x_new = torch.where(self.rows(new_div), x, x_new)
        if self.k % self.check_every == 0 or self.k == self.max_iter:
            return x_new, int((~st["frozen"]).sum()), int(st["diverged"].sum())
        return x_new, -1, -1

    def finish(self, x):
        """(answer, (iterations, abs, rel, converged, diverged, trace)) with the statistics on
        the host: x for stopped samples, the best iterate for those still running."""
        st = self.state
        answer = torch.where(self.active_rows(), self.keep, x)
        return answer, tuple(t.cpu() for t in (st["iters"], st["abs"], st["rel"],
                                               st["converged"], st["diverged"],
                                               st["trace"][: self.k]))
