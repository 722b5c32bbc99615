"""Shared test utilities: backends to sweep, tolerances, poisoning, device list."""
from __future__ import annotations

import pytest
import torch

from fastpicard.ops import _backend

DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]

# Relative tolerances against a float64 reference, by dtype.
TOL = {
    torch.float64: dict(rtol=1e-10, atol=1e-10),
    torch.float32: dict(rtol=1e-5, atol=1e-5),
    torch.float16: dict(rtol=2e-3, atol=2e-3),
    torch.bfloat16: dict(rtol=1.6e-2, atol=1.6e-2),
}


def devices():
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def backends(device="cpu"):
    """Backends that can run on this machine for tensors on `device`."""
    out = ["reference"]
    if device == "cpu":
        out.append("cpp")
    if _backend.triton_available() and (device == "cuda" or _backend.triton_interpreting()):
        out.append("triton")
    return out


def on_backend(backend: str):
    """The context a backend runs in on CPU tensors: the Triton kernels need the interpreter
    switch around forward and backward (see conftest's ``triton_cpu``)."""
    import contextlib
    if backend == "triton" and not torch.cuda.is_available():
        return _backend.triton_cpu_kernels()
    return contextlib.nullcontext()


def needs_triton():
    return pytest.mark.skipif(
        not (_backend.triton_available() and (torch.cuda.is_available()
                                              or _backend.triton_interpreting())),
        reason="triton (GPU or TRITON_INTERPRET=1) not available")


def poisoned_like(t: torch.Tensor) -> torch.Tensor:
    """A buffer shaped like t filled with NaN, so any element a kernel fails to write shows."""
    return torch.full_like(t, float("nan"), memory_format=torch.contiguous_format)


def noncontiguous(t: torch.Tensor) -> torch.Tensor:
    """Same values, non-contiguous layout (every other element of a doubled buffer)."""
    big = torch.empty((*t.shape[:-1], t.shape[-1] * 2) if t.dim() else (2,), dtype=t.dtype,
                      device=t.device)
    view = big[..., ::2] if t.dim() else big[0]
    view.copy_(t)
    return view


def assert_close(actual, expected, dtype=None, **kw):
    tol = dict(TOL[dtype or actual.dtype])
    tol.update(kw)
    torch.testing.assert_close(actual.to(expected.dtype), expected, **tol, equal_nan=True)


def adam_losses(model, loss_fn, steps, lr=3e-3, after_backward=None):
    """Trains model for ``steps`` Adam steps on ``loss_fn()``; returns the losses.
    ``after_backward()``, when given, runs between backward and the optimizer step."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        loss = loss_fn()
        opt.zero_grad()
        loss.backward()
        if after_backward is not None:
            after_backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses


def run_isolated(code: str, *, timeout: float = 300, env: dict | None = None):
    """Runs ``code`` in a fresh Python process, so that a crash (a segfault is exit code -11)
    fails the calling test instead of the whole run. Returns the CompletedProcess; faulthandler
    prints the Python stack of a crash into its stderr."""
    import os
    import subprocess
    import sys
    import textwrap

    full_env = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-X", "faulthandler", "-c", textwrap.dedent(code)],
                          env=full_env, capture_output=True, text=True, timeout=timeout,
                          cwd=os.path.dirname(os.path.abspath(__file__)))
