"""``fastpicard.picard``: the smoothed Picard solver with per-sample early exit."""
from __future__ import annotations

import math
import numbers
import time
import warnings

import torch
from torch.nn.utils import parametrize

from ..ops import _backend
from . import backward as _backward
from .anderson import Anderson
from .loop import make_loop
from .stats import PicardStats

STOPS = ("abs", "rel")
BACKWARDS = ("unroll", "implicit", "phantom")
SOLVERS = ("picard", "anderson")
ON_DIVERGE = ("warn", "raise")


class DivergenceError(RuntimeError):
    """A sample's residual became non-finite or grew past ``divergence_factor`` x its minimum
    (raised with ``on_diverge="raise"``)."""


class _Config:
    """Validated arguments of one solve (shared by the forward and the adjoint solve)."""

    def __init__(self, **kw):
        self.__dict__.update(kw)


def _real(name, v):
    if type(v) is float or type(v) is int:  # fast path (bool is not int's type)
        return float(v)
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise TypeError(f"picard: {name} must be a real number, got {type(v).__name__}")
    return float(v)


def _int(name, v, lo):
    if type(v) is not int and (isinstance(v, bool) or not isinstance(v, numbers.Integral)):
        raise TypeError(f"picard: {name} must be an int, got {type(v).__name__}")
    if v < lo:
        raise ValueError(f"picard: {name} must be >= {lo}, got {v}")
    if v > _backend.INT64_MAX:
        raise ValueError(f"picard: {name} must be <= 2**63 - 1, got {v}")
    return int(v)


def _choice(name, v, options):
    if v not in options:
        raise ValueError(f"picard: {name} must be one of {options}, got {v!r}")
    return v


_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
# Validated scalar options by (values, their types, x0's device type): the solver runs once per
# forward pass with the same options, and between two evaluations of a real fn (cold caches)
# re-validating cost a few microseconds per iteration of a short solve.
_OPTIONS_CACHE: dict = {}


def _options(alpha, tol, max_iter, stop, check_every, backward, phantom_steps, solver,
             anderson_m, anderson_lam, divergence_factor, on_diverge, dist_sync, device_type):
    alpha = _real("alpha", alpha)
    if not 0.0 <= alpha < 1.0:
        raise ValueError(f"picard: alpha must lie in [0, 1), got {alpha}")
    tol = _real("tol", tol)
    if not (tol > 0 and math.isfinite(tol)):
        raise ValueError(f"picard: tol must be a positive finite number, got {tol}")
    max_iter = _int("max_iter", max_iter, 1)
    _choice("stop", stop, STOPS)
    _choice("backward", backward, BACKWARDS)
    _choice("solver", solver, SOLVERS)
    _choice("on_diverge", on_diverge, ON_DIVERGE)
    phantom_steps = _int("phantom_steps", phantom_steps, 1)
    anderson_m = _int("anderson_m", anderson_m, 1)
    anderson_lam = _real("anderson_lam", anderson_lam)
    if not (anderson_lam >= 0 and math.isfinite(anderson_lam)):
        raise ValueError(f"picard: anderson_lam must be a finite number >= 0, got {anderson_lam}")
    divergence_factor = _real("divergence_factor", divergence_factor)
    if not divergence_factor > 1:
        raise ValueError(f"picard: divergence_factor must be > 1 (inf disables the growth "
                         f"rule), got {divergence_factor}")
    if check_every is None:
        check_every = _backend.default_check_every(device_type)
    else:
        check_every = _int("check_every", check_every, 1)
    if not isinstance(dist_sync, bool):
        raise TypeError(f"picard: dist_sync must be a bool, got {type(dist_sync).__name__}")
    return dict(alpha=alpha, tol=tol, max_iter=max_iter, stop=stop, check_every=check_every,
                backward=backward, phantom_steps=phantom_steps, solver=solver,
                anderson_m=anderson_m, anderson_lam=anderson_lam,
                divergence_factor=divergence_factor, on_diverge=on_diverge, dist_sync=dist_sync)


def _cached_options(*args):
    # Types are part of the key: 1 == 1.0 == True, but max_iter=1.0 or alpha=False must fail.
    try:
        key = (args, tuple(map(type, args)))
        opts = _OPTIONS_CACHE.get(key)
    except TypeError:  # an unhashable argument: validate it (and fail) uncached
        return _options(*args)
    if opts is None:
        opts = _options(*args)
        if len(_OPTIONS_CACHE) >= 256:
            _OPTIONS_CACHE.clear()
        _OPTIONS_CACHE[key] = opts
    return opts


def _config(fn, x0, alpha, tol, max_iter, stop, batch, check_every, backward, phantom_steps,
            solver, anderson_m, anderson_lam, divergence_factor, on_diverge, dist_sync):
    if not callable(fn):
        raise TypeError(f"picard: fn must be callable, got {type(fn).__name__}")
    if not isinstance(x0, torch.Tensor):
        raise TypeError(f"picard: x0 must be a Tensor, got {type(x0).__name__}")
    if x0.dtype not in _DTYPES:
        raise TypeError(f"picard: x0 must be float32/float64/float16/bfloat16, got {x0.dtype}")
    cfg = _Config(**_cached_options(alpha, tol, max_iter, stop, check_every, backward,
                                    phantom_steps, solver, anderson_m, anderson_lam,
                                    divergence_factor, on_diverge, dist_sync, x0.device.type))
    if dist_sync and not (torch.distributed.is_available()
                          and torch.distributed.is_initialized()):
        raise RuntimeError("picard: dist_sync=True needs an initialised torch.distributed "
                           "process group")

    leading = False
    if batch is None:
        num_samples = 1
    elif isinstance(batch, str):
        if batch != "leading":
            raise ValueError(f"picard: batch must be None, 'leading' or an int64 Tensor, got "
                             f"{batch!r}")
        if x0.dim() == 0:
            raise ValueError("picard: batch='leading' needs x0 with a leading batch dimension")
        num_samples, leading = x0.shape[0], True
        batch = torch.arange(num_samples, device=x0.device)
    elif isinstance(batch, torch.Tensor):
        if batch.dtype != torch.int64:
            raise TypeError(f"picard: batch must be an int64 Tensor, got {batch.dtype}")
        if x0.dim() == 0 or batch.shape != (x0.shape[0],):
            raise ValueError(f"picard: batch must have shape [{x0.shape[0] if x0.dim() else 1}] "
                             f"(one sample id per row of x0), got {tuple(batch.shape)}")
        if batch.device != x0.device:
            raise ValueError(f"picard: batch is on {batch.device} but x0 is on {x0.device}")
        if batch.numel() and int(batch.min()) < 0:  # one read at the start, not per step
            raise IndexError(f"picard: batch contains negative id {int(batch.min())}")
        num_samples = int(batch.max()) + 1 if batch.numel() else 0
        if num_samples > batch.numel():
            raise ValueError(f"picard: batch ids reach {num_samples - 1} with only "
                             f"{batch.numel()} rows: number the samples 0..S-1 without gaps "
                             "(e.g. torch.unique(batch, return_inverse=True)[1])")
    else:
        raise TypeError(f"picard: batch must be None, 'leading' or an int64 Tensor, got "
                        f"{type(batch).__name__}")
    cfg.batch, cfg.leading, cfg.num_samples = batch, leading, num_samples
    return cfg


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
            divided by ``||x_{k+1}||`` (``stop="rel"``) is below tol.
        max_iter: at most this many steps; a sample that has not converged returns its
            lowest-residual iterate.
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
    cfg = _config(fn, x0, alpha, tol, max_iter, stop, batch, check_every, backward,
                  phantom_steps, solver, anderson_m, anderson_lam, divergence_factor,
                  on_diverge, dist_sync)
    if cfg.backward == "unroll" or not torch.is_grad_enabled():
        return solve(fn, x0, cfg)
    with torch.no_grad():
        x_star, stats = solve(fn, x0, cfg)
    if cfg.backward == "implicit":
        return _backward.implicit(fn, x_star, cfg, stats), stats
    return _backward.phantom(fn, x_star, cfg, stats), stats


# ---------------------------------------------------------------- the loop
def _all_reduce(counts, device):
    t = torch.tensor(counts, dtype=torch.int64, device=device)
    torch.distributed.all_reduce(t)
    return t.tolist()


def _diverge_message(div, S, steps, total=None):
    """``total``: samples diverged on all ranks (dist_sync), when it differs from this rank's."""
    ids = torch.nonzero(div).flatten()[:8].tolist()
    where = (f" on this rank ({total} on all ranks)" if total is not None
             and total != int(div.sum()) else "")
    return (f"picard: {int(div.sum())} of {S} samples diverged{where} (non-finite residual or "
            f"growth past divergence_factor x its minimum) within {steps} steps; first ids "
            f"{ids}. They return their last iterate before the bad step; see stats.diverged")


def solve(fn, x0, cfg):
    """Forward solve under the ambient grad mode. Returns (x_star, stats). Parametrized
    weights (e.g. :func:`fastpicard.contractive`) are computed once for the whole solve."""
    with parametrize.cached():
        return _solve(fn, x0, cfg)


def _solve(fn, x0, cfg):
    t0 = time.perf_counter()
    S = cfg.num_samples
    loop = make_loop(x0, cfg.alpha, cfg.batch, cfg.num_samples, cfg.leading, cfg.tol,
                     cfg.stop == "rel", cfg.max_iter, cfg.divergence_factor, cfg.check_every,
                     reuse_buffers=cfg.solver == "picard")
    acc = (Anderson(cfg.anderson_m, cfg.anderson_lam, cfg.batch, S, cfg.leading)
           if cfg.solver == "anderson" else None)
    x, steps, n_div = x0, 0, 0
    step, max_iter, dist_sync = loop.step, cfg.max_iter, cfg.dist_sync
    raise_on_div = cfg.on_diverge == "raise"
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
                    _, stats = _finish(loop, x, t0, steps, cfg)
                    raise DivergenceError(_diverge_message(stats.diverged, S, steps, n_div_read))
                if active == 0 or steps == max_iter:
                    break
            z = fn(x)
    x, stats = _finish(loop, x, t0, steps, cfg)
    if n_div and cfg.on_diverge == "warn":
        warnings.warn(_diverge_message(stats.diverged, S, steps), RuntimeWarning, stacklevel=4)
    return x, stats


def _finish(loop, x, t0, steps, cfg):
    x, (iters, abs_r, rel_r, conv, div, trace) = loop.finish(x)
    return x, PicardStats(iterations=iters, abs_residual=abs_r, rel_residual=rel_r, trace=trace,
                          converged=conv, diverged=div, time=time.perf_counter() - t0,
                          steps=steps, stop=cfg.stop, tol=cfg.tol)
