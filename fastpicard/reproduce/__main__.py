"""Entry point: ``python -m fastpicard.reproduce <table> [--quick] [--seeds N] [--out DIR]``."""
from __future__ import annotations

import argparse
import importlib
import sys

# table -> (module under fastpicard.reproduce, one-line description). Modules are imported only
# when their table runs, so one table's optional dependencies never block another.
TABLES = {
    "table1": ("table1", "long-range graph stand-in for LRGB PascalVOC-SP (PIGN vs stacked vs IterGNN)"),
    "table2": ("table2", "iterative ViTs on Navier-Stokes (MSE vs N_iter)"),
    "table3": ("table3", "masked-pixel reconstruction with an iterative ViT (MSE vs N_iter)"),
    "table4": ("table4", "ANIE on Navier-Stokes (MSE vs solver iterations)"),
    "table5": ("table5", "Planetoid node classification, clean and drop-in noise"),
}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(prog="python -m fastpicard.reproduce", description=__doc__)
    sub = parser.add_subparsers(dest="table", required=True, metavar="{" + ",".join(TABLES) + "}")
    for name, (_, help_) in TABLES.items():
        sub.add_parser(name, help=help_, add_help=False)
    if not argv or argv[0] not in TABLES:
        parser.parse_args(argv)  # prints usage / the error and exits
        return
    module = importlib.import_module(f"fastpicard.reproduce.{TABLES[argv[0]][0]}")
    p = argparse.ArgumentParser(prog=f"python -m fastpicard.reproduce {argv[0]}",
                                description=module.__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    module.add_arguments(p)
    module.run(p.parse_args(argv[1:]))


if __name__ == "__main__":
    main()
