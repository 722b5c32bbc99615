"""The validated options of one solve: one frozen, keyword-only type shared by
``fastpicard.picard``, ``fastpicard.picard_gcn``, the loop and the backward modes."""
from __future__ import annotations

import dataclasses
import math
import numbers

import torch

from ..ops import _backend

STOPS = ("abs", "rel")
BACKWARDS = ("unroll", "implicit", "phantom")
SOLVERS = ("picard", "anderson")
ON_DIVERGE = ("warn", "raise")
_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Options:
    """Validated solver options (the defaults are ``fastpicard.picard``'s) and the resolved
    sample layout. ``tol=None`` is the fixed schedule: exactly ``max_iter`` steps, the last
    iterate returned, no host read until the end."""

    alpha: float = 0.5
    tol: float | None = 1e-4
    max_iter: int = 50
    stop: str = "abs"
    check_every: int | None = None  # None: the device's default (resolved by `options`)
    backward: str = "unroll"
    phantom_steps: int = 5
    solver: str = "picard"
    anderson_m: int = 5
    anderson_lam: float = 1e-4
    divergence_factor: float = 1e3
    on_diverge: str = "warn"
    dist_sync: bool = False
    # the samples, resolved from `batch` and x0
    batch: torch.Tensor | None = None  # int64 sample id per row (an arange for "leading")
    leading: bool = False  # one sample per leading index of x0
    num_samples: int = 1

    @property
    def fixed(self) -> bool:
        """The fixed schedule (no tolerance)."""
        return self.tol is None


DEFAULTS = {f.name: f.default for f in dataclasses.fields(Options)}


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


def _choice(name, v, choices):
    if v not in choices:
        raise ValueError(f"picard: {name} must be one of {choices}, got {v!r}")
    return v


def _validate(device_type, alpha, tol, max_iter, stop, check_every, backward, phantom_steps,
              solver, anderson_m, anderson_lam, divergence_factor, on_diverge, dist_sync):
    alpha = _real("alpha", alpha)
    if not 0.0 <= alpha < 1.0:
        raise ValueError(f"picard: alpha must lie in [0, 1), got {alpha}")
    if tol is not None:
        tol = _real("tol", tol)
        if not (tol > 0 and math.isfinite(tol)):
            raise ValueError(f"picard: tol must be None (the fixed schedule) or a positive "
                             f"finite number, got {tol}")
    max_iter = _int("max_iter", max_iter, 1)
    _choice("stop", stop, STOPS)
    _choice("backward", backward, BACKWARDS)
    _choice("solver", solver, SOLVERS)
    _choice("on_diverge", on_diverge, ON_DIVERGE)
    if tol is None and (backward != "unroll" or solver != "picard"):
        raise ValueError(f"picard: backward={backward!r}, solver={solver!r} need a tolerance: "
                         "tol=None runs the fixed schedule (max_iter plain Picard steps, "
                         "backpropagated through every step)")
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
    return Options(alpha=alpha, tol=tol, max_iter=max_iter, stop=stop, check_every=check_every,
                   backward=backward, phantom_steps=phantom_steps, solver=solver,
                   anderson_m=anderson_m, anderson_lam=anderson_lam,
                   divergence_factor=divergence_factor, on_diverge=on_diverge,
                   dist_sync=dist_sync)


# Validated scalar options by (values, their types, x0's device type): the solver runs once per
# forward pass with the same options, and between two evaluations of a real fn (cold caches)
# re-validating cost a few microseconds per iteration of a short solve.
_CACHE: dict = {}
_NAMES = ("alpha", "tol", "max_iter", "stop", "check_every", "backward", "phantom_steps",
          "solver", "anderson_m", "anderson_lam", "divergence_factor", "on_diverge", "dist_sync")


def _cached(device_type, values):
    # Types are part of the key: 1 == 1.0 == True, but max_iter=1.0 or alpha=False must fail.
    try:
        key = (device_type, values, tuple(map(type, values)))
        opts = _CACHE.get(key)
    except TypeError:  # an unhashable argument: validate it (and fail) uncached
        return _validate(device_type, *values)
    if opts is None:
        opts = _validate(device_type, *values)
        if len(_CACHE) >= 256:
            _CACHE.clear()
        _CACHE[key] = opts
    return opts


def options(x0, *, batch=None, **kw) -> Options:
    """Validates the options of a solve from x0 (keywords as ``fastpicard.picard``'s; missing
    ones take the defaults) and resolves ``batch`` into the sample layout."""
    if not isinstance(x0, torch.Tensor):
        raise TypeError(f"picard: x0 must be a Tensor, got {type(x0).__name__}")
    if x0.dtype not in _DTYPES:
        raise TypeError(f"picard: x0 must be float32/float64/float16/bfloat16, got {x0.dtype}")
    unknown = kw.keys() - DEFAULTS.keys() or kw.keys() & {"batch", "leading", "num_samples"}
    if unknown:
        raise TypeError(f"picard: unknown option {sorted(unknown)[0]!r}")
    opts = _cached(x0.device.type, tuple(kw.get(n, DEFAULTS[n]) for n in _NAMES))
    if opts.dist_sync and not (torch.distributed.is_available()
                               and torch.distributed.is_initialized()):
        raise RuntimeError("picard: dist_sync=True needs an initialised torch.distributed "
                           "process group")
    if batch is None:
        return opts
    leading = False
    if isinstance(batch, str):
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
        num_samples = sample_count(batch)
    else:
        raise TypeError(f"picard: batch must be None, 'leading' or an int64 Tensor, got "
                        f"{type(batch).__name__}")
    return dataclasses.replace(opts, batch=batch, leading=leading, num_samples=num_samples)


def sample_count(batch) -> int:
    """S from a batch vector numbered 0..S-1 without gaps (one host read)."""
    if not batch.numel():
        return 0
    lo, hi = torch.stack(torch.aminmax(batch)).tolist()
    if lo < 0:
        raise IndexError(f"picard: batch contains negative id {lo}")
    if hi + 1 > batch.numel():
        raise ValueError(f"picard: batch ids reach {hi} with only {batch.numel()} rows: number "
                         "the samples 0..S-1 without gaps (e.g. torch.unique(batch, "
                         "return_inverse=True)[1])")
    return hi + 1
