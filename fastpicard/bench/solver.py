"""solver: per-iteration cost of fastpicard.picard vs a bare Python loop (with and without an
.item() stopping check) and TorchDEQ's fixed_point_iter (optional peer), same map, same
iteration count."""
from __future__ import annotations

import torch

from ..solver import picard
from .timing import append_csv, interleaved_medians, print_table


def add_arguments(p):
    p.add_argument("--rows", type=int, default=64)
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--alpha", type=float, default=0.5)
    p.add_argument("--tol", type=float, default=1e-4)
    p.add_argument("--reps", type=int, default=15)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "fp64"])


def _torchdeq():
    try:
        from torchdeq.solver.fp_iter import fixed_point_iter
    except ImportError:
        return None
    return fixed_point_iter


class Counted:
    """fn with a call counter, so every case is divided by the steps it actually ran."""

    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, x):
        self.calls += 1
        return self.fn(x)


def run(args):
    device = torch.device(args.device)
    dtype = {"fp32": torch.float32, "fp64": torch.float64}[args.dtype]
    g = torch.Generator().manual_seed(0)
    W = torch.randn(args.dim, args.dim, generator=g) / args.dim ** 0.5
    W = (W / torch.linalg.matrix_norm(W, 2)).to(device, dtype)  # 0.5*tanh(x W^T): Lipschitz 0.5
    b = torch.randn(args.rows, args.dim, generator=g).to(device, dtype)
    x0 = torch.zeros(args.rows, args.dim, device=device, dtype=dtype)
    a, tol = args.alpha, args.tol
    fmap = Counted(lambda x: 0.5 * torch.tanh(x @ W.T) + b)
    fixed_point_iter = _torchdeq()
    rows = []
    for mode in ("one", "per-sample"):
        batch = None if mode == "one" else "leading"

        def norm(d):  # the stopping residual of this mode
            return (torch.linalg.vector_norm(d) if mode == "one"
                    else torch.linalg.vector_norm(d, dim=1).max())

        with torch.no_grad():
            _, st = picard(fmap, x0, alpha=a, tol=tol, max_iter=10_000, batch=batch)
        steps = st.steps

        def bare():
            x = x0
            for _ in range(steps):
                x = a * x + (1 - a) * fmap(x)
            return x

        def bare_item():
            x = x0
            for _ in range(10_000):
                new = a * x + (1 - a) * fmap(x)
                done = norm(new - x).item() < tol
                x = new
                if done:
                    break
            return x

        cases = {
            "fastpicard": lambda: picard(fmap, x0, alpha=a, tol=tol, max_iter=10_000,
                                         batch=batch),
            "bare_loop": bare,
            "bare_loop_item": bare_item,
            "fn_only": lambda: [fmap(x0) for _ in range(steps)],
        }
        if fixed_point_iter is not None:
            shape = (1, -1) if mode == "one" else (args.rows, -1)
            cases["torchdeq"] = lambda: fixed_point_iter(
                lambda v: fmap(v.reshape(x0.shape)).reshape(shape), x0.reshape(shape),
                max_iter=10_000, tol=tol, stop_mode="abs", tau=1 - a)
        calls = {}
        for name, fn in cases.items():  # steps per call, counted once
            fmap.calls = 0
            with torch.no_grad():
                fn()
            calls[name] = fmap.calls
        with torch.no_grad():
            t = interleaved_medians(cases, device, reps=args.reps)
        per = {name: t[name] / calls[name] for name in cases}
        for name in cases:
            rows.append({
                "bench": "solver", "case": name, "mode": mode, "rows": args.rows,
                "dim": args.dim, "dtype": args.dtype, "steps": calls[name],
                "us_per_iter": per[name] * 1e6,
                "vs_bare": per[name] / per["bare_loop"],
                "overhead_us": (per[name] - per["fn_only"]) * 1e6,
            })
    print_table(rows, ["mode", "case", "steps", "us_per_iter", "vs_bare", "overhead_us"])
    append_csv(args.csv, rows)
