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
"""
from __future__ import annotations

import math

import torch

from ..ops.reference.picard_update import stat_dtype


def reference_picard_update(x, z, alpha, *, batch, num_samples, frozen, return_norm):
    from ..ops import picard_update  # the public op: C++/Triton when built, else pure torch

    return picard_update(x, z, alpha, batch=batch, num_samples=num_samples, frozen=frozen,
                         return_norm=return_norm)


def control_update(state: dict, res: torch.Tensor, norm: torch.Tensor, step: int, tol: float,
                   rel: bool, div_factor: float):
    """Applies the rules above to the per-sample state in place; returns (improved,
    newly_diverged) bool [S] masks."""
    active = ~(state["converged"] | state["diverged"])
    tiny = torch.finfo(res.dtype).tiny
    r_rel = res / norm.clamp_min(tiny)
    crit = r_rel if rel else res
    state["trace"][step] = torch.where(active, crit, torch.full_like(crit, math.nan))
    bad = ~torch.isfinite(res) | (res > div_factor * state["min_abs"])
    new_div = active & bad
    ok = active & ~bad
    new_conv = ok & (crit < tol)
    best = state["best_rel"] if rel else state["best_abs"]
    improved = ok & ~new_conv & (crit < best)
    state["iters"] += active.to(torch.int64)
    state["last_abs"] = torch.where(active, res, state["last_abs"])
    state["last_rel"] = torch.where(active, r_rel, state["last_rel"])
    state["min_abs"] = torch.where(ok, torch.minimum(state["min_abs"], res), state["min_abs"])
    state["best_abs"] = torch.where(improved, res, state["best_abs"])
    state["best_rel"] = torch.where(improved, r_rel, state["best_rel"])
    state["converged"] |= new_conv
    state["diverged"] |= new_div
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
        dev, sd = x0.device, stat_dtype(x0.dtype)
        S = num_samples
        self.state = {
            "converged": torch.zeros(S, dtype=torch.bool, device=dev),
            "diverged": torch.zeros(S, dtype=torch.bool, device=dev),
            "iters": torch.zeros(S, dtype=torch.int64, device=dev),
            "min_abs": torch.full((S,), math.inf, dtype=sd, device=dev),
            "best_abs": torch.full((S,), math.inf, dtype=sd, device=dev),
            "best_rel": torch.full((S,), math.inf, dtype=sd, device=dev),
            "last_abs": torch.full((S,), math.nan, dtype=sd, device=dev),
            "last_rel": torch.full((S,), math.nan, dtype=sd, device=dev),
            "trace": torch.full((min(max_iter, 64), S), math.nan, dtype=sd, device=dev),
        }
        self.keep = x0
        self.k = 0
        self._shape = x0.shape

    def rows(self, mask):
        """A per-sample mask broadcast over the rows of x."""
        if self.batch is None:
            return mask.reshape((1,) * len(self._shape))
        return (mask if self.leading else mask[self.batch]).reshape((-1,) + (1,) * (len(self._shape) - 1))

    def active(self):
        return ~(self.state["converged"] | self.state["diverged"])

    def step(self, x, z):
        """x_{k+1} from x_k and z = fn(x_k). Returns (x_new, active, diverged): counts of
        active / diverged samples read on check steps, -1 on others."""
        st = self.state
        if self.k == st["trace"].shape[0]:  # grow the trace geometrically
            more = torch.full_like(st["trace"], math.nan)[: self.max_iter - self.k]
            st["trace"] = torch.cat([st["trace"], more])
        frozen = st["converged"] | st["diverged"]
        x_new, res, norm = self.update(x, z, self.alpha, batch=self.batch, num_samples=self.S,
                                       frozen=frozen, return_norm=True)
        improved, new_div = control_update(st, res, norm, self.k, self.tol, self.rel,
                                           self.div_factor)
        self.k += 1
        self.keep = torch.where(self.rows(improved), x_new, self.keep)
        x_new = torch.where(self.rows(new_div), x, x_new)
        if self.k % self.check_every == 0 or self.k == self.max_iter:
            return x_new, int(self.active().sum()), int(st["diverged"].sum())
        return x_new, -1, -1

    def finish(self, x):
        """The answer: x for converged/diverged samples, the best iterate for the others."""
        return torch.where(self.rows(self.active()), self.keep, x)

    def stats(self):
        """Packed like PicardLoop.stats: float64 rows (iterations, abs residual, rel residual,
        status 0/1/2, trace...)."""
        st = self.state
        ex = self.active()
        status = st["converged"].double() + 2 * st["diverged"].double()
        return torch.cat([st["iters"].double()[None],
                          torch.where(ex, st["best_abs"], st["last_abs"]).double()[None],
                          torch.where(ex, st["best_rel"], st["last_rel"]).double()[None],
                          status[None], st["trace"][: self.k].double()]).cpu()
