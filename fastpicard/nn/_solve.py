"""What the modules need to call the solver: checks of their arguments at construction, and
the call itself.

``tol`` a float runs ``fastpicard.picard`` to that tolerance with every option the user passed
(backward mode, Anderson, check_every, divergence handling, ...); ``tol=None`` runs its fixed
schedule (exactly ``max_iter`` steps, the last iterate returned, backpropagated through every
step: the papers' training loop). PIGN's GCN layer runs on the fused graph solve
(``fastpicard.picard_gcn``'s, the loop in C++ with a tolerance).
"""
from __future__ import annotations

import inspect
import numbers

import torch.nn.functional as F

from ..solver import picard
from ..solver.gcn import layer_options, solve_layer

_FIXED_OK = {"backward": ("unroll",), "solver": ("picard",)}
# options that only steer an early-exit solve: with tol=None they would be ignored
_TOL_ONLY = ("stop", "check_every", "phantom_steps", "anderson_m", "anderson_lam",
             "divergence_factor")
_RESERVED = ("alpha", "tol", "max_iter", "batch")  # the modules' own arguments


def check_solver_opts(owner: str, opts: dict, tol) -> dict:
    """Validates the ``**solver_opts`` a module forwards to ``picard`` when the module is built,
    so a typo or an impossible combination fails there and not at the first forward."""
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


def iterate(fn, x0, *, alpha, tol, max_iter, batch, opts):
    """Solves ``x = alpha*x + (1-alpha)*fn(x)`` from x0. Returns ``(x, stats)``."""
    return picard(fn, x0, alpha=alpha, tol=tol, max_iter=max_iter, batch=batch, **opts)


def iterate_gcn(graph, x0, conv, *, act, dropout, alpha, tol, max_iter, batch, opts,
                inject=None):
    """:func:`iterate` for ``fn(x) = dropout(act(conv(x + inject)))`` with a GCN ``conv``
    (PyG's GCNConv or GCNLayer: ``x W^T``, then Â, then bias) on ``graph``: the fused graph
    solve. ``inject`` (input injection) enters as ``inject·Wᵀ``, formed once."""
    opts = layer_options(graph, x0, batch, dict(opts, alpha=alpha, tol=tol, max_iter=max_iter))
    weight = conv.lin.weight  # a capped (parametrized) weight: read once per solve
    base = None if inject is None else F.linear(inject, weight)
    return solve_layer(graph, x0, weight.t(), conv.bias, act, 0.01, dropout, opts, base)


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
