"""``fastpicard.picard``: the smoothed Picard solver, with per-sample early exit at a tolerance
or the fixed schedule (``tol=None``)."""
from __future__ import annotations

import torch

from . import backward as _backward
from .options import BACKWARDS, ON_DIVERGE, SOLVERS, STOPS, options
from .solve import DivergenceError, solve

__all__ = ["picard", "DivergenceError", "STOPS", "BACKWARDS", "SOLVERS", "ON_DIVERGE"]


def picard(fn, x0, *, alpha=0.5, tol=1e-4, max_iter=50, stop="abs", batch=None,
           check_every=None, backward="unroll", phantom_steps=5, solver="picard", anderson_m=5,
           anderson_lam=1e-4, divergence_factor=1e3, on_diverge="warn", dist_sync=False):
    """Solves ``x = T(x)`` by ``x_{k+1} = alpha*x_k + (1-alpha)*fn(x_k)`` with per-sample
    early exit.

    Args:
        fn: ``fn(x) -> T(x)``, same shape/dtype/device as x (put ``+ f`` inside fn). Without
            autograd the solver reuses iterate buffers: fn must copy its input if it keeps it
            beyond the call.
        x0: starting iterate (float32/float64/float16/bfloat16, any shape).
        alpha: smoothing in [0, 1).
        tol: stop a sample once its residual ``||x_{k+1} - x_k||`` (``stop="abs"``) or that
            divided by ``||x_{k+1}||`` (``stop="rel"``) is below tol. ``None``: the fixed
            schedule of the papers, exactly ``max_iter`` steps, the last iterate returned
            (no host read until the end; ``backward="unroll"`` and ``solver="picard"`` only;
            the early-exit options are unused and ``stats.schedule`` is "fixed").
        max_iter: at most this many steps; a sample that has not converged returns its
            lowest-residual iterate (a warning, once per call site, when its residual had
            stopped shrinking: a map that is not contractive).
        batch: None (x0 is one sample), ``"leading"`` (x0 is [B, ...], one sample per leading
            index) or an int64 [rows] sample id per row of x0 (PyG batch vector).
            Converged samples are frozen, so each sample gets exactly its own early-exit answer.
        check_every: the host reads the convergence flags every this many steps (default 1 on
            CPU, where it is free; more on GPUs, where each read is a device sync). Samples are
            frozen on the device in between, so the answer does not depend on it.
        backward: "unroll" (backprop through every step), "implicit" (solve the adjoint fixed
            point ``g = J^T g + grad`` with VJPs; memory independent of the iteration count) or
            "phantom" (``phantom_steps`` damped steps from the detached fixed point).
        solver: "picard" or "anderson" (type-II, history ``anderson_m``, Tikhonov
            ``anderson_lam``, falls back to a Picard step where the least squares is singular).
        divergence_factor: a residual that is non-finite or grows past this many times the
            sample's minimum stops the sample (flagged as diverged; it returns its last iterate
            before the bad step); ``on_diverge`` "warn" (one warning) or "raise"
            (:class:`DivergenceError`).
        dist_sync: all-reduce the active-sample count so every rank runs the same number of
            steps (needs an initialised ``torch.distributed`` group).

    Returns:
        ``(x_star, stats)`` with :class:`PicardStats`. ``x_star`` has the same value in every
        backward mode.
    """
    if not callable(fn):
        raise TypeError(f"picard: fn must be callable, got {type(fn).__name__}")
    opts = options(x0, alpha=alpha, tol=tol, max_iter=max_iter, stop=stop, batch=batch,
                   check_every=check_every, backward=backward, phantom_steps=phantom_steps,
                   solver=solver, anderson_m=anderson_m, anderson_lam=anderson_lam,
                   divergence_factor=divergence_factor, on_diverge=on_diverge,
                   dist_sync=dist_sync)
    return run(fn, x0, opts)


def run(fn, x0, opts):
    """The solve with validated options, differentiable per ``opts.backward``."""
    if opts.backward == "unroll" or not torch.is_grad_enabled():
        return solve(fn, x0, opts)
    with torch.no_grad():
        x_star, stats = solve(fn, x0, opts)
    return _backward.attach(fn, x_star, opts, stats), stats
