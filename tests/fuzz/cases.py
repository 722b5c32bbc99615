"""What every fuzz property checks: a case either runs and matches the reference, or is
refused with a clear error — a Python exception of an expected type naming the op — never a
crash. The case being run is written to $FASTPICARD_FUZZ_LOG first, so that a crash (which
kills the process before hypothesis can report) still names its input."""
from __future__ import annotations

import os

import torch
from hypothesis import HealthCheck, currently_in_test_context, event, settings

# derandomized (the same examples on every run), no example database, no deadline
settings.register_profile("fuzz", derandomize=True, database=None, deadline=None,
                          print_blob=False, suppress_health_check=list(HealthCheck))
settings.load_profile("fuzz")
SCALE = float(os.environ.get("FASTPICARD_FUZZ_EXAMPLES_SCALE", "1"))
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
# tolerances against a float64 reference of the same (rounded) inputs
TOL = {torch.float64: 1e-9, torch.float32: 1e-4, torch.float16: 2e-2, torch.bfloat16: 1e-1}


def examples(n: int):
    """settings(max_examples=n), scaled by $FASTPICARD_FUZZ_EXAMPLES_SCALE."""
    return settings(max_examples=max(1, int(n * SCALE)))


def log_case(**case) -> None:
    if currently_in_test_context():  # --hypothesis-show-statistics counts the defects
        event(f"defect={case.get('defect')}")
    path = os.environ.get("FASTPICARD_FUZZ_LOG")
    if path:
        with open(path, "w") as f:
            f.write(repr(case))


def outcome(fn):
    """(result, None) or (None, the exception) for a call."""
    try:
        return fn(), None
    except Exception as e:  # noqa: BLE001 - which exception it is, is what gets checked
        return None, e


def assert_refused(err, kinds, name: str, defect) -> None:
    """A defective case was refused with an exception of `kinds` whose message names `name`."""
    assert err is not None, f"defect {defect!r} was accepted"
    assert isinstance(err, kinds), f"defect {defect!r} raised {type(err).__name__}: {err}"
    assert name in str(err), f"defect {defect!r}: the message does not name {name}: {err}"


def assert_ran(err, defect=None) -> None:
    assert err is None, f"a valid case ({defect!r}) was refused: {type(err).__name__}: {err}"


def close(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype, what: str) -> None:
    tol = TOL[dtype]
    torch.testing.assert_close(actual.double(), expected.double(), rtol=tol, atol=tol,
                               equal_nan=True, msg=lambda m: f"{what}: {m}")


def layout(t: torch.Tensor, kind: str) -> torch.Tensor:
    """The same values in another memory layout: contiguous, a transposed view, every other
    element of a larger buffer, or (for a tensor whose rows are equal) a broadcast view."""
    if kind == "transposed" and t.dim() >= 2:
        return t.transpose(0, 1).contiguous().transpose(0, 1)
    if kind == "strided" and t.dim() >= 1:
        big = torch.empty(t.shape[:-1] + (2 * t.shape[-1],), dtype=t.dtype)
        big[..., ::2] = t
        return big[..., ::2]
    if kind == "broadcast" and t.dim() >= 1 and t.shape[0] > 0:
        return t[:1].expand(t.shape)
    return t


LAYOUTS = ["contiguous", "transposed", "strided", "broadcast"]
