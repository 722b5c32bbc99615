"""picard_update: fused smoothed update + residual vs eager, lerp, torch.compile and a copy."""
from __future__ import annotations

import torch

from ..ops import picard_update
from .timing import append_csv, interleaved_medians, print_table

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def add_arguments(p):
    p.add_argument("--sizes", default="1e6", help="comma-separated element counts, e.g. 1e5,1e6,1e7")
    p.add_argument("--dtypes", default="fp32,bf16", help="comma-separated: fp32,bf16,fp16")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--reps", type=int, default=15)
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile peer")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")


def naive(x, z, a):
    x_new = a * x + (1 - a) * z
    return x_new, torch.linalg.vector_norm((x_new - x).float())


def lerp(x, z, a):
    x_new = torch.lerp(z, x, a)
    return x_new, torch.linalg.vector_norm((x_new - x).float())


def run(args):
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    compiled = None if args.no_compile else torch.compile(naive)
    rows = []
    for dname in args.dtypes.split(","):
        dtype = DTYPES[dname]
        for n in (int(float(s)) for s in args.sizes.split(",")):
            x = torch.randn(n, device=device, dtype=dtype)
            z = torch.randn(n, device=device, dtype=dtype)
            buf = torch.empty_like(x)
            a = 0.5
            cases = {
                "fused": lambda: picard_update(x, z, a),
                "fused_out": lambda: picard_update(x, z, a, out=buf),
                "eager": lambda: naive(x, z, a),
                "lerp_norm": lambda: lerp(x, z, a),
                "copy_into": lambda: buf.copy_(x),
            }
            if compiled is not None:
                cases["compile"] = lambda: compiled(x, z, a)
            with torch.no_grad():
                t = interleaved_medians(cases, device, reps=args.reps, min_time=2e-3)
            es = x.element_size()
            for name, sec in t.items():
                nbytes = (2 if name == "copy_into" else 3) * n * es
                rows.append({
                    "bench": "update", "case": name, "dtype": dname, "n": n,
                    "ms": sec * 1e3, "GB/s": nbytes / sec / 1e9,
                    "x_eager": t["eager"] / sec,
                    "x_compile": t["compile"] / sec if "compile" in t else "",
                    "pct_copy_bw": 100 * (nbytes / sec) / (2 * n * es / t["copy_into"]),
                })
    print_table(rows, ["case", "dtype", "n", "ms", "GB/s", "x_eager", "x_compile", "pct_copy_bw"])
    append_csv(args.csv, rows)
