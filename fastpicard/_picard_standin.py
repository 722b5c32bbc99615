"""TEMPORARY stand-in for ``fastpicard.picard`` (issue 4, branch ``solver``) so the modules of
issue 5 can be written and tested before the real solver lands on main. Implements only the
documented call signature with plain torch; DELETE this file after ``git merge main`` brings
the real solver (``fastpicard.nn._solve`` prefers the real one whenever it exists)."""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch


@dataclass
class StandinStats:
    iterations: torch.Tensor
    abs_residual: torch.Tensor
    rel_residual: torch.Tensor
    trace: torch.Tensor
    converged: torch.Tensor
    diverged: torch.Tensor
    time: float


def _per_sample(d, batch, n):
    flat = d.reshape(d.shape[0], -1) if batch is not None else d.reshape(1, -1)
    sq = flat.double().pow(2).sum(1)
    if batch is None:
        return sq.sqrt()
    if isinstance(batch, str):
        return sq.sqrt()
    return torch.zeros(n, dtype=sq.dtype).index_add_(0, batch, sq).sqrt()


def picard(fn, x0, *, alpha=0.5, tol=1e-4, max_iter=50, stop="abs", batch=None,
           check_every=None, backward="unroll", phantom_steps=5, solver="picard",
           anderson_m=5, anderson_lam=1e-4, divergence_factor=1e3, on_diverge="warn",
           dist_sync=False):
    if not 0.0 <= alpha < 1.0:
        raise ValueError(f"picard: alpha must lie in [0, 1), got {alpha}")
    if max_iter < 1:
        raise ValueError(f"picard: max_iter must be >= 1, got {max_iter}")
    if tol is not None and tol <= 0:
        raise ValueError(f"picard: tol must be > 0, got {tol}")
    if backward not in ("unroll", "implicit", "phantom"):
        raise ValueError(f"picard: unknown backward {backward!r}")
    if solver not in ("picard", "anderson"):
        raise ValueError(f"picard: unknown solver {solver!r}")
    n = (x0.shape[0] if batch == "leading" else int(batch.max()) + 1) if batch is not None else 1
    t0 = time.perf_counter()

    def step(x):
        return alpha * x + (1 - alpha) * fn(x)

    trace, its, res = [], torch.zeros(n, dtype=torch.long), None
    done = torch.zeros(n, dtype=torch.bool)
    x = x0
    grad_ctx = torch.enable_grad() if backward == "unroll" else torch.no_grad()
    with grad_ctx:
        for k in range(max_iter):
            x_new = step(x)
            res = _per_sample((x_new - x).detach(), batch, n)
            trace.append(res)
            its = its + (~done).long()
            x = x_new
            if tol is not None:
                done = done | (res < tol)
                if bool(done.all()):
                    break
    if backward == "implicit":
        x_star = x.detach().requires_grad_()
        y = step(x_star)

        def hook(g_out):
            g = g_out
            for _ in range(max_iter):
                g = torch.autograd.grad(y, x_star, g, retain_graph=True)[0] + g_out
            return g

        if y.requires_grad:
            y.register_hook(hook)
        x = y
    elif backward == "phantom":
        x = x.detach()
        for _ in range(phantom_steps):
            x = step(x)
    nrm = _per_sample(x.detach(), batch, n)
    stats = StandinStats(iterations=its, abs_residual=res, rel_residual=res / nrm.clamp_min(1e-30),
                         trace=torch.stack(trace, 1), converged=done.clone(),
                         diverged=~torch.isfinite(res), time=time.perf_counter() - t0)
    return x, stats
