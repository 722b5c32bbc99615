"""How the modules call the solver: every module iterates through ``fastpicard.picard``, so all
of its options (backward mode, Anderson, check_every, divergence handling, ...) apply."""
from __future__ import annotations

import inspect
import numbers


def picard_fn():
    """``fastpicard.picard`` (looked up at call time: the package imports this module first)."""
    import fastpicard

    fn = getattr(fastpicard, "picard", None)
    if fn is None:  # TEMPORARY: until the solver (issue 4) is merged
        from .._picard_standin import picard as fn
    return fn


def check_solver_opts(owner: str, opts: dict, reserved: tuple[str, ...]) -> dict:
    """Validates the ``**solver_opts`` a module forwards to ``picard`` at construction time, so
    a typo fails when the model is built rather than at its first forward."""
    params = inspect.signature(picard_fn()).parameters
    for key in opts:
        if key in reserved:
            raise TypeError(f"{owner}: {key!r} is set by the module's own arguments "
                            f"({', '.join(reserved)}), not through solver options")
        if key not in params or params[key].kind is not inspect.Parameter.KEYWORD_ONLY:
            raise TypeError(f"{owner}: unknown solver option {key!r}")
    return dict(opts)


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
