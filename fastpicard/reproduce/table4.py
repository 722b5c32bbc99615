"""Table 4: ANIE on 2-D Navier–Stokes (ν = 1e-3), test MSE for 1, 2, 4, 6, 8 solver iterations.

ANIE solves y = f + T(y) on the time grid with f the vorticity at t = 10 lifted over the grid,
T a Galerkin transformer over space-time patch tokens; it predicts the frames t = 11…10+t_out
(every ``--t-stride``-th). Four sizes (heads H, blocks B): 1H1B, 4H1B, 2H2B, 4H4B; each trained
separately for every iteration count (equal parameters across counts). ``--formulation`` picks
the authors' operator (residual inside T, answer f + T(y_n), post-norm ReLU blocks, no K/V norm)
or fastpicard's; the table uses the authors' by default. Same data as Table 2.
"""
from __future__ import annotations

import torch

from ..nn import ANIE
from . import _vit_common as C
from .report import Report, progress
from .table2 import config, load_fields

PAPER = {  # Table 4 of the paper, MSE for 1, 2, 4, 6, 8 iterations (only endpoints for some)
    "1H1B": {1: 0.0564, 2: 0.0474, 4: 0.0448, 6: 0.0446, 8: 0.0442},
    "4H1B": {1: 0.0610, 8: 0.0478},
    "2H2B": {1: 0.0476, 8: 0.0439},
    "4H4B": {1: 0.0458, 8: 0.0445},
}
MODELS = tuple(PAPER)
# sizes for a shared 2-core CPU (docs/RESULTS.md): Table 2's 32² data subsampled to 16²
FULL = dict(n_train=600, n_test=100, grid=32, resolution=16, width=32, patch=4, epochs=6,
            batch=20, lr=2e-3)
QUICK = dict(n_train=8, n_test=4, grid=16, resolution=16, width=8, patch=4, epochs=1, batch=4,
             lr=2e-3)


def add_arguments(parser) -> None:
    C.add_common(parser, out="results/table4", seeds=2)
    parser.add_argument("--data", default=None, help="FNO file instead of generated data")
    parser.add_argument("--models", default=",".join(MODELS),
                        help="comma-separated subset of %(default)s")
    parser.add_argument("--iters", default="1,2,4,6,8", help="solver iterations")
    parser.add_argument("--formulation", default="authors", choices=("authors", "fastpicard"))
    parser.add_argument("--t-out", type=int, default=10, help="frames after t=10 to cover")
    parser.add_argument("--t-stride", type=int, default=2, help="predict every k-th frame")
    parser.add_argument("--n-train", type=int, default=None)
    parser.add_argument("--n-test", type=int, default=None)
    parser.add_argument("--resolution", type=int, default=None)
    parser.add_argument("--cache-dir", default=None)


def build(name, cfg, n_iter, formulation, tol):
    heads, depth = int(name[0]), int(name[2])
    return ANIE(1, width=cfg["width"], heads=heads, depth=depth, attention="galerkin",
                patch_size=cfg["patch"], alpha=0.5, max_iter=n_iter, formulation=formulation,
                **C.solver_options(tol))


def run(args) -> None:
    import argparse

    C.check_common(argparse.ArgumentParser(prog="table4"), args)
    rank, _ = C.distributed()
    cfg = config(args, FULL, QUICK)
    models = [m for m in args.models.split(",") if m]
    bad = [m for m in models if m not in MODELS]
    if bad:
        raise SystemExit(f"table4: unknown --models {bad}; choose from {MODELS}")
    iters = C.int_list(args.iters)
    args.t_in = 10
    x, y = load_fields(args, cfg, cfg["n_train"] + cfg["n_test"])
    frames = list(range(args.t_stride - 1, args.t_out, args.t_stride))
    x0 = x[:, -1:]  # [N, 1, S, S]: the vorticity at t = 10
    target = y[:, frames].unsqueeze(2)  # [N, T, 1, S, S]
    t_grid = torch.tensor([(f + 1) / args.t_out for f in frames])
    n = cfg["n_train"]
    scale = float(x0[:n].std())
    train, test = (x0[:n], target[:n]), (x0[n:], target[n:])

    def predict(model, a):
        return model(a / scale, t_grid.to(a.device)) * scale

    report = Report("table4", args.out, args) if rank == 0 else None
    runs = []
    cells = [(m, k, s) for m in models for k in iters for s in range(args.seeds)]
    for m, k, seed in progress(cells, desc="table4", disable=rank != 0):
        torch.manual_seed(seed)
        model = build(m, cfg, k, args.formulation, args.tol)
        res = C.train_eval(model, predict, train, test, epochs=cfg["epochs"],
                           batch_size=cfg["batch"], lr=cfg["lr"], seed=seed,
                           desc=f"ANIE {m} iters={k} seed={seed}")
        rec = dict(model=m, iterations=k, seed=seed, formulation=args.formulation, **res)
        runs.append(rec)
        if report:
            report.add_run(rec)
        if m == models[0] and k == iters[-1] and seed == 0:  # every rank: solves may sync
            with torch.no_grad():
                model.eval()
                pred = predict(model, test[0][:1])[0, :, 0]
        if report and m == models[0] and k == iters[-1] and seed == 0:
            show = [0, len(frames) // 2, len(frames) - 1]
            C.plot_fields(report, "prediction.png",
                          [("truth", [test[1][0, f, 0] for f in show]),
                           (f"ANIE {m}, {k} iters", [pred[f] for f in show]),
                           ("error", [pred[f] - test[1][0, f, 0] for f in show])],
                          "vorticity at t = " + ", ".join(str(11 + frames[f]) for f in show)
                          + " (test sample 0)")
    C.close_distributed()
    if report is None:
        return
    trend = C.trend(runs, models, iters)
    body = [f"# Table 4: ANIE on Navier–Stokes (ν=1e-3), formulation={args.formulation}\n",
            f"Test MSE (mean ± std over {args.seeds} seeds; vorticity, raw units), paper's "
            "value in brackets.\n",
            C.iteration_table(runs, models, iters, paper=PAPER), "",
            "Relative L2 error:\n", C.iteration_table(runs, models, iters, key="rel_l2"), "",
            "Parameters: " + ", ".join(
                f"{m} {next(r['parameters'] for r in runs if r['model'] == m):,}"
                for m in models), "",
            "Error falls from the fewest to the most iterations: " + ", ".join(
                f"{m} {'yes' if t['falls'] else 'NO'}{' (monotone)' if t['monotone'] else ''}"
                for m, t in trend.items()), "",
            f"Setting: {cfg}, predicted frames t = {[11 + f for f in frames]}, data="
            f"{args.data or 'generated (navier_stokes, dt=1e-2)'}, tol={args.tol}."]
    report.write_markdown("\n".join(body))
    C.plot_iterations(report, runs, models, iters, paper=PAPER)
    report.finish()
