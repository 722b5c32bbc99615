"""Loop control in pure torch: the reference for the C++ ``PicardLoop`` (same rules, same
methods, same state layout) and the fallback when the compiled extension is unavailable.

Each step: the fused update (``ops.picard_update`` with the frozen mask), the stopping rules
(the reference ``picard_control_``, see ``ops/reference/picard_control.py``), then
  * a newly diverged sample is rolled back to x_k (the last iterate before the bad step);
  * a converged one keeps x_{k+1} and stays frozen: exact per-sample early exit;
  * an improved one makes x_{k+1} its best iterate, returned if it never converges.
"""
from __future__ import annotations

import math

import torch

from ..ops.reference import picard_control_
from ..ops.reference.picard_update import stat_dtype


def check_fn_output(z, x):
    """fn's value must be shaped like x (the same rule, the same words as PicardLoop.step)."""
    if not isinstance(z, torch.Tensor):
        raise TypeError(f"picard: fn must return a Tensor, got {type(z).__name__}")
    if z.shape != x.shape or z.dtype != x.dtype or z.device != x.device:
        raise ValueError(f"picard: fn(x) must match x (shape {list(x.shape)}, dtype {x.dtype}, "
                         f"device {x.device}), got shape {list(z.shape)}, dtype {z.dtype}, "
                         f"device {z.device}")


def _picard_update(x, z, alpha, *, batch, num_samples, frozen, return_norm):
    from ..ops import picard_update  # the public op: C++/Triton when built, else pure torch

    return picard_update(x, z, alpha, batch=batch, num_samples=num_samples, frozen=frozen,
                         return_norm=return_norm)


class PyLoop:
    """One smoothed-Picard solve's loop state; ``step`` does the update and the bookkeeping.
    (Always allocates fresh iterates; ``reuse_buffers`` is accepted for the C++ signature.)"""

    def __init__(self, x0, alpha, batch, num_samples, leading, tol, rel, max_iter, div_factor,
                 check_every, reuse_buffers=True):
        self.alpha, self.batch, self.S, self.leading = alpha, batch, num_samples, leading
        self.tol, self.rel, self.max_iter = tol, rel, max_iter
        self.div_factor, self.check_every = div_factor, check_every
        S, dev, dt = num_samples, x0.device, stat_dtype(x0.dtype)
        flags = torch.zeros(5, S, dtype=torch.bool, device=dev)
        self.frozen, self.converged, self.diverged, self.improved, self.new_div = flags
        self.iters = torch.zeros(S, dtype=torch.int64, device=dev)
        self.summary = torch.zeros(4, dtype=torch.int64, device=dev)
        self.stats = torch.full((3, S), math.inf, dtype=dt, device=dev)
        self.trace = torch.full((min(max_iter, 64), S), math.nan, dtype=dt, device=dev)
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
        return self.rows(~self.frozen)

    def step(self, x, z):
        """x_{k+1} from x_k and z = fn(x_k). Returns (x_new, active, diverged): counts of
        active / diverged samples read on check steps, -1 on others."""
        check_fn_output(z, x)
        if self.k == self.trace.shape[0]:  # grow the trace geometrically
            more = torch.full_like(self.trace, math.nan)[: self.max_iter - self.k]
            self.trace = torch.cat([self.trace, more])
        x_new, res, norm = _picard_update(x, z, self.alpha, batch=self.batch, num_samples=self.S,
                                          frozen=self.frozen.clone(), return_norm=True)
        picard_control_(res, norm, self.frozen, self.converged, self.diverged, self.iters,
                        self.stats, self.trace, self.improved, self.new_div, self.summary,
                        self.k, self.tol, self.rel, self.div_factor)
        self.k += 1
        self.keep = torch.where(self.rows(self.improved.clone()), x_new, self.keep)
        x_new = torch.where(self.rows(self.new_div.clone()), x, x_new)
        if self.k % self.check_every == 0 or self.k == self.max_iter:
            return x_new, int(self.summary[0]), int(self.summary[3])
        return x_new, -1, -1

    def finish(self, x):
        """(answer, (iterations, abs, rel, converged, diverged, trace)) with the statistics on
        the host: x for stopped samples, the best iterate for those still running."""
        answer = torch.where(self.active_rows(), self.keep, x)
        return answer, tuple(t.cpu() for t in (self.iters, self.stats[1], self.stats[2],
                                               self.converged, self.diverged,
                                               self.trace[: self.k]))
