"""Entry point: ``python -m fastpicard.bench <benchmark> [options]``."""
from __future__ import annotations

import argparse
import importlib

# name -> module under fastpicard.bench
BENCHMARKS = {
    "update": "update",
    "solver": "solver",
    "models": "models",
    "graph": "graph",
    "spmm": "spmm",
    "scale": "scale",
    "gat": "gat",
}


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m fastpicard.bench", description=__doc__)
    sub = parser.add_subparsers(dest="bench", required=True)
    modules = {}
    for name, mod in BENCHMARKS.items():
        module = importlib.import_module(f"fastpicard.bench.{mod}")
        modules[name] = module
        p = sub.add_parser(name, help=(module.__doc__ or "").strip().splitlines()[0])
        p.add_argument("--csv", default=f"bench_results/{name}.csv",
                       help="append result rows to this CSV ('' to skip)")
        module.add_arguments(p)
    args = parser.parse_args(argv)
    modules[args.bench].run(args)


if __name__ == "__main__":
    main()
