"""How the modules iterate.

* ``tol`` a float: ``fastpicard.picard`` with every option the user passed (backward mode,
  Anderson, check_every, divergence handling, ...) — the fixed-point (DEQ) semantics, including
  per-sample early exit and the lowest-residual iterate for samples that never converge.
* ``tol=None``: the papers' fixed schedule — exactly ``max_iter`` smoothed steps, the last
  iterate returned, backpropagation through every step. ``picard`` has no such mode (it always
  checks a tolerance and returns a sample's lowest-residual iterate when it runs out of
  iterations), so it runs here on the solver's own fused update op ``ops.picard_update``,
  without a host read until the end: no per-step sync, and ``torch.compile`` sees one graph.
  Options that only mean something with a tolerance (implicit/phantom gradients at a fixed
  point, Anderson) need ``tol``.
"""
from __future__ import annotations

import inspect
import math
import numbers
import time
import warnings

import torch

from ..ops import picard_update

_FIXED_OK = {"backward": ("unroll",), "solver": ("picard",)}
# options that only steer an early-exit solve: with tol=None they would be ignored
_TOL_ONLY = ("stop", "check_every", "phantom_steps", "anderson_m", "anderson_lam",
             "divergence_factor")
_RESERVED = ("alpha", "tol", "max_iter", "batch")  # the modules' own arguments


def check_solver_opts(owner: str, opts: dict, tol) -> dict:
    """Validates the ``**solver_opts`` a module forwards to ``picard`` when the module is built,
    so a typo or an impossible combination fails there and not at the first forward."""
    from ..solver import picard

    params = inspect.signature(picard).parameters
    for key, value in opts.items():
        if key in _RESERVED:
            raise TypeError(f"{owner}: {key!r} is set by the module's own arguments, not "
                            "through solver options")
        if key not in params or params[key].kind is not inspect.Parameter.KEYWORD_ONLY:
            raise TypeError(f"{owner}: unknown solver option {key!r}")
        if tol is None and key in _TOL_ONLY:
            raise ValueError(f"{owner}: solver option {key!r} only applies with a tolerance "
                             "(tol=<float>); with tol=None the module runs a fixed number of "
                             "iterations")
        if tol is None and key in _FIXED_OK and value not in _FIXED_OK[key]:
            raise ValueError(f"{owner}: {key}={value!r} needs a tolerance (tol=<float>): with "
                             "tol=None the module runs the fixed schedule of the paper and "
                             "backpropagates through its iterations")
    return dict(opts)


def iterate(fn, x0, *, alpha, tol, max_iter, batch, opts, step=None):
    """Solves ``x = alpha*x + (1-alpha)*fn(x)`` from x0. Returns ``(x, stats)``.

    ``step``, when given, is a fused ``x -> (x_new, res)`` doing the whole smoothed update with
    its per-sample residual (PIGN's GCN path); ``fn`` must then be ``lambda x: step(x)[0]``
    with ``alpha=0`` for the picard route, which is how the caller passes it.
    """
    if tol is not None:
        from ..solver import picard

        return picard(fn, x0, alpha=alpha, tol=tol, max_iter=max_iter, batch=batch, **opts)
    return _fixed_schedule(fn, x0, alpha, max_iter, batch, opts, step)


def _fixed_schedule(fn, x0, alpha, n, batch, opts, step):
    from ..solver import DivergenceError, PicardStats

    compiling = torch.compiler.is_compiling()
    t0 = None if compiling else time.perf_counter()
    if batch is None:
        ids, S = None, 1
    elif isinstance(batch, str):  # "leading"
        ids, S = torch.arange(x0.shape[0], device=x0.device), x0.shape[0]
    else:
        ids, S = batch, (int(batch.max()) + 1 if batch.numel() else 0)
    x, trace = x0, []
    for _ in range(n):
        if step is not None:
            x, res = step(x)
        else:
            x, res = picard_update(x, fn(x), alpha, batch=ids, num_samples=S)
        trace.append(res)
    trace = torch.stack(trace)
    if compiling:  # no host reads inside a compiled graph; stats stay tensors on the device
        norms = _sample_norms(x.detach(), ids, S)
        return x, PicardStats(iterations=torch.full((S,), n), abs_residual=trace[-1],
                              rel_residual=trace[-1] / norms.clamp_min(1e-30),
                              trace=trace, converged=torch.zeros(S, dtype=torch.bool),
                              diverged=~torch.isfinite(trace).all(0), time=math.nan, steps=n,
                              stop="abs", tol=0.0)
    trace = trace.detach().cpu()
    norms = _sample_norms(x.detach(), ids, S).cpu()
    diverged = ~torch.isfinite(trace).all(0)
    stats = PicardStats(iterations=torch.full((S,), n, dtype=torch.int64),
                        abs_residual=trace[-1], rel_residual=trace[-1] / norms.clamp_min(
                            torch.finfo(norms.dtype).tiny), trace=trace,
                        converged=torch.zeros(S, dtype=torch.bool), diverged=diverged,
                        time=time.perf_counter() - t0, steps=n, stop="abs", tol=0.0)
    if diverged.any():
        msg = (f"fixed-schedule Picard iteration: {int(diverged.sum())} of {S} samples produced "
               f"non-finite values within {n} steps; see stats.diverged / stats.trace")
        if opts.get("on_diverge", "warn") == "raise":
            raise DivergenceError(msg)
        warnings.warn(msg, RuntimeWarning, stacklevel=3)
    return x, stats


def _sample_norms(x, ids, S):
    sq = x.float().reshape(x.shape[0] if x.dim() else 1, -1).pow(2).sum(1)
    if ids is None:
        return sq.sum().sqrt().reshape(1)
    return torch.zeros(S, dtype=sq.dtype, device=x.device).index_add_(0, ids, sq).sqrt()


def check_fraction(owner: str, name: str, value, *, closed: bool = False) -> float:
    """A float in [0, 1) (or [0, 1] with ``closed``)."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if not ok or not (0.0 <= value <= 1.0 if closed else 0.0 <= value < 1.0):
        raise ValueError(f"{owner}: {name} must lie in [0, 1{']' if closed else ')'}, "
                         f"got {value!r}")
    return float(value)


def check_count(owner: str, name: str, value, *, minimum: int = 1, optional: bool = False):
    if value is None and optional:
        return None
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{owner}: {name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_tol(owner: str, tol):
    """None (run every iteration, the paper's fixed schedule) or a positive float."""
    if tol is None:
        return None
    if not isinstance(tol, numbers.Real) or isinstance(tol, bool) or not tol > 0:
        raise ValueError(f"{owner}: tol must be None or a float > 0, got {tol!r}")
    return float(tol)
