"""solver: per-iteration cost of fastpicard.picard vs a bare Python loop (with and without an
.item() stopping check) and TorchDEQ's fixed_point_iter (optional peer), same map, same
iteration count; and the GCN loop in C++ (picard_gcn) vs a Python loop calling the same ops
on Cora ("vs_bare" is then relative to that Python loop). ``--check-every 1,2,4,8,16``
instead times whole solves for each check_every with the host syncs of one solve counted by
the profiler, and prints the value with the fastest solve (how the CUDA default is chosen)."""
from __future__ import annotations

import statistics
import time

import torch

from ..graph import Graph
from ..solver import picard
from .data import load_planetoid
from .timing import append_csv, interleaved_samples, print_table


def add_arguments(p):
    p.add_argument("--rows", type=int, default=64)
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--alpha", type=float, default=0.5)
    p.add_argument("--tol", type=float, default=1e-4)
    p.add_argument("--reps", type=int, default=15)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "fp64"])
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    p.add_argument("--hidden", type=int, default=64, help="features of the GCN loop on Cora")
    p.add_argument("--check-every", default="",
                   help="comma-separated check_every values: time whole solves for each (the "
                        "check_every table and the recommended value) instead of the loops")
    p.add_argument("--clock", default="wall", choices=["wall", "thread"],
                   help="wall: perf_counter; thread: this thread's CPU time (with --threads 1, "
                        "steadier on a shared machine: other processes' time is not counted)")


def _gcn_rows(args, device, clock):
    """One PIGN-style GCN fixed point on Cora: the loop in C++ vs a Python loop calling the
    same ops (x @ W, spmm_update, an .item() check) vs the generic solver."""
    from ..ops import spmm_update
    from ..solver import picard_gcn

    cora = load_planetoid("Cora", None)
    graph = Graph.from_edge_index(cora.edge_index, cora.num_nodes, norm="gcn").to(device)
    g = torch.Generator().manual_seed(1)
    F = args.hidden
    W = torch.randn(F, F, generator=g)
    W = (0.9 * W / torch.linalg.matrix_norm(W, 2)).to(device)
    b = (0.1 * torch.randn(F, generator=g)).to(device)
    x0 = torch.randn(graph.num_nodes, F, generator=g).to(device)
    a, tol = args.alpha, args.tol

    def python_loop():
        x = x0
        for _ in range(10_000):
            new, res = spmm_update(graph, x @ W, x, a, bias=b, act="relu")
            done = float(res[0]) < tol
            x = new
            if done:
                break
        return x

    def layer(x):
        return spmm_update(graph, x @ W, x, 0.0, bias=b, act="relu")[0]

    cases = {
        "gcn_cpp_loop": lambda: picard_gcn(graph, x0, W, bias=b, act="relu", alpha=a, tol=tol,
                                           max_iter=10_000),
        "gcn_python_loop": python_loop,
        "gcn_generic_picard": lambda: picard(layer, x0, alpha=a, tol=tol, max_iter=10_000),
    }
    with torch.no_grad():
        steps = picard_gcn(graph, x0, W, bias=b, act="relu", alpha=a, tol=tol,
                           max_iter=10_000)[1].steps
        t = interleaved_stats(cases, device, reps=args.reps, clock=clock)
    base = t["gcn_python_loop"]
    return [{"bench": "solver", "case": name, "mode": "gcn-cora", "clock": args.clock,
             "rows": graph.num_nodes, "dim": F, "dtype": "fp32", "steps": steps,
             "us_per_iter": med / steps * 1e6, "vs_bare": med / base[0],
             "min_us_per_iter": low / steps * 1e6, "min_vs_bare": low / base[1],
             "min_overhead_us": ""}
            for name, (med, low) in t.items()]


def _torchdeq():
    try:
        from torchdeq.solver.fp_iter import fixed_point_iter
    except ImportError:
        return None
    return fixed_point_iter


def interleaved_stats(cases, device, reps, clock=time.perf_counter):
    """(median, min) seconds per call of each case. On a shared machine the minimum is the
    steadier estimate of a loop's own cost; both are reported."""
    samples = interleaved_samples(cases, device, reps, clock=clock)
    return {name: (statistics.median(v), min(v)) for name, v in samples.items()}


def _repeat(fn, x, n):
    for _ in range(n):  # outputs dropped at once, as in the loops
        fn(x)


class Counted:
    """fn with a call counter, so every case is divided by the steps it actually ran."""

    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, x):
        self.calls += 1
        return self.fn(x)


# CUDA runtime calls that block the host until the device catches up (a synchronous
# cudaMemcpy, or the stream synchronize that follows the async copy of .item())
SYNC_CALLS = {"cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize",
              "cudaMemcpy"}


def host_syncs(fn) -> int:
    """Host-device synchronisations during fn(), counted from the CUDA runtime calls the
    profiler records (every .item(), host copy or explicit synchronize is one)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        fn()
    return sum(e.count for e in prof.key_averages() if e.key in SYNC_CALLS)


def check_every_rows(args, device, fmap, x0, clock):
    """Whole solves (one sample and per sample) for each check_every: ms per solve, steps run,
    µs per step, host syncs per solve; the fastest check_every is recommended."""
    values = [int(v) for v in args.check_every.split(",")]
    rows = []
    best_total = {}
    for mode, batch in (("one", None), ("per-sample", "leading")):
        def solve(c):
            return picard(fmap, x0, alpha=args.alpha, tol=args.tol, max_iter=10_000,
                          batch=batch, check_every=c)
        with torch.no_grad():
            steps = {c: solve(c)[1].steps for c in values}
            syncs = {c: host_syncs(lambda: solve(c)) for c in values}
            t = interleaved_stats({c: (lambda c=c: solve(c)) for c in values}, device,
                                  reps=args.reps, clock=clock)
        for c in values:
            med = t[c][0]
            best_total.setdefault(c, 0.0)
            best_total[c] += med
            rows.append({"bench": "solver", "case": f"check_every={c}", "mode": mode,
                         "clock": args.clock, "rows": args.rows, "dim": args.dim,
                         "dtype": args.dtype, "steps": steps[c], "ms_per_solve": med * 1e3,
                         "us_per_iter": med / steps[c] * 1e6, "syncs_per_solve": syncs[c]})
    fastest = min(best_total.values())
    # the smallest value within 2% of the fastest: fewer wasted steps past convergence
    rec = min(c for c in values if best_total[c] <= 1.02 * fastest)
    print_table(rows, ["mode", "case", "steps", "ms_per_solve", "us_per_iter",
                       "syncs_per_solve"])
    print(f"recommended check_every on {device.type}: {rec} (fastest summed solve time over "
          f"both modes, ties within 2% to the smaller value)")
    for r in rows:
        r["recommended"] = rec
    return rows


def run(args):
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.clock == "thread" and (torch.get_num_threads() != 1 or args.device != "cpu"):
        raise SystemExit("--clock thread measures this thread only: use it with --threads 1 on "
                         "CPU")
    clock = time.thread_time if args.clock == "thread" else time.perf_counter
    device = torch.device(args.device)
    dtype = {"fp32": torch.float32, "fp64": torch.float64}[args.dtype]
    g = torch.Generator().manual_seed(0)
    W = torch.randn(args.dim, args.dim, generator=g) / args.dim ** 0.5
    W = (W / torch.linalg.matrix_norm(W, 2)).to(device, dtype)  # 0.5*tanh(x W^T): Lipschitz 0.5
    b = torch.randn(args.rows, args.dim, generator=g).to(device, dtype)
    x0 = torch.zeros(args.rows, args.dim, device=device, dtype=dtype)
    a, tol = args.alpha, args.tol
    fmap = Counted(lambda x: 0.5 * torch.tanh(x @ W.T) + b)
    if args.check_every:
        append_csv(args.csv, check_every_rows(args, device, fmap, x0, clock))
        return
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
            "fn_only": lambda: _repeat(fmap, x0, steps),
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
            t = interleaved_stats(cases, device, reps=args.reps, clock=clock)
        med = {name: t[name][0] / calls[name] for name in cases}
        low = {name: t[name][1] / calls[name] for name in cases}
        for name in cases:
            rows.append({
                "bench": "solver", "case": name, "mode": mode, "clock": args.clock,
                "rows": args.rows,
                "dim": args.dim, "dtype": args.dtype, "steps": calls[name],
                "us_per_iter": med[name] * 1e6, "vs_bare": med[name] / med["bare_loop"],
                "min_us_per_iter": low[name] * 1e6,
                "min_vs_bare": low[name] / low["bare_loop"],
                "min_overhead_us": (low[name] - low["fn_only"]) * 1e6,
            })
    rows += _gcn_rows(args, device, clock)
    print_table(rows, ["mode", "case", "steps", "us_per_iter", "vs_bare", "min_us_per_iter",
                       "min_vs_bare", "min_overhead_us"])
    append_csv(args.csv, rows)
