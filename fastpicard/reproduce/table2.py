"""Table 2: iterative ViTs on 2-D Navier–Stokes (ν = 1e-3), test MSE for N_iter = 1, 2, 3.

The operator-learning task of the FNO benchmark: the vorticity at t = 1…10 in (as channels),
the next ``--t-out`` frames out. Four backbones, each a ``FieldViT`` whose block stack
``IterativeViT`` applies N_iter times (x_{i+1} = (1-α)T(x_i) + αx_i, α = 1/2) — the same
parameters for every N_iter: ViT (pre-norm blocks), ViTsmall (half the width), ViTparallel
(attention and MLP side by side), ViT 3D (space-time patches over the frames). Data: generated
by ``fastpicard.datasets.navier_stokes`` (cached), or FNO's file through ``--data``.
"""
from __future__ import annotations

import torch

from ..datasets import navier_stokes
from ..nn import FieldViT, IterativeViT
from . import _vit_common as C
from .report import Report, progress

PAPER = {  # Table 2 of the paper, MSE for N_iter = 1, 2, 3
    "ViT": {1: 0.2472, 2: 0.2121, 3: 0.0691},
    "ViTsmall": {1: 0.2471, 2: 0.1672, 3: 0.0648},
    "ViTparallel": {1: 0.2474, 2: 0.2172, 3: 0.2079},
    "ViT3D": {1: 0.2512, 2: 0.2237, 3: 0.2529},
}
MODELS = tuple(PAPER)
# sizes for a shared 2-core CPU (docs/RESULTS.md); data are solved on a `grid`² grid and
# subsampled to `resolution`², time patches of ViT3D span `t_patch` frames
FULL = dict(n_train=600, n_test=100, grid=32, resolution=32, dim=64, depth=2, heads=4, patch=4,
            t_patch=5, epochs=8, batch=20, lr=2e-3)
QUICK = dict(n_train=8, n_test=4, grid=16, resolution=16, dim=16, depth=1, heads=2, patch=4,
             t_patch=5, epochs=1, batch=4, lr=2e-3)


def add_arguments(parser) -> None:
    C.add_common(parser, out="results/table2", seeds=2)
    parser.add_argument("--data", default=None,
                        help="FNO file (.mat v5/v7.3 or .npz with a [N,S,S], u [N,S,S,T], t) "
                             "instead of generated data")
    parser.add_argument("--models", default=",".join(MODELS),
                        help="comma-separated subset of %(default)s")
    parser.add_argument("--iters", default="1,2,3", help="N_iter values (default %(default)s)")
    parser.add_argument("--t-in", type=int, default=10, help="input frames")
    parser.add_argument("--t-out", type=int, default=10, help="predicted frames")
    parser.add_argument("--n-train", type=int, default=None)
    parser.add_argument("--n-test", type=int, default=None)
    parser.add_argument("--resolution", type=int, default=None,
                        help="grid size (generated data and files are subsampled to it)")
    parser.add_argument("--cache-dir", default=None, help="where generated data are cached")


def load_fields(args, cfg, n_total):
    """(inputs [N, t_in, S, S], targets [N, t_out, S, S]) from the generator or a file."""
    steps = args.t_in + args.t_out
    if args.data:
        u = navier_stokes(n_total, path=args.data).u
        where = args.data
    else:
        grid = max(cfg["grid"], cfg["resolution"])
        u = navier_stokes(n_total, resolution=grid, steps=steps, delta_t=1e-2,
                          cache_dir=args.cache_dir).u
        where = f"the {grid}² data"
    s = u.shape[1]
    if u.shape[-1] < steps or s % cfg["resolution"]:
        raise SystemExit(f"table: {where} has T={u.shape[-1]}, S={s}; need T >= {steps} and S "
                         f"a multiple of --resolution {cfg['resolution']}")
    sub = s // cfg["resolution"]
    u = u[:, ::sub, ::sub, :steps].permute(0, 3, 1, 2).contiguous()  # [N, T, S, S]
    return u[:, :args.t_in], u[:, args.t_in:steps]


def config(args, full, quick) -> dict:
    cfg = dict(quick if args.quick else full)
    for key in ("n_train", "n_test", "resolution", "epochs"):
        if getattr(args, key, None) is not None:
            cfg[key] = getattr(args, key)
    return cfg


def build(name, cfg, t_in, t_out, n_iter, tol):
    s, p = cfg["resolution"], cfg["patch"]
    common = dict(depth=cfg["depth"], heads=cfg["heads"])
    if name == "ViT3D":
        if t_in != t_out:
            raise SystemExit("table2: ViT3D maps the frames to as many frames: use --t-in == "
                             "--t-out")
        vit = FieldViT(1, 1, (t_in, s, s), (cfg["t_patch"], p, p), dim=cfg["dim"], **common)
    else:
        dim = cfg["dim"] // 2 if name == "ViTsmall" else cfg["dim"]
        heads = max(1, cfg["heads"] // 2) if name == "ViTsmall" else cfg["heads"]
        vit = FieldViT(t_in, t_out, s, p, dim=dim, depth=cfg["depth"], heads=heads,
                       block="parallel" if name == "ViTparallel" else "pre")
    return IterativeViT(vit, max_iter=n_iter, alpha=0.5, **C.solver_options(tol))


def predict(name, scale):
    def run(model, x):
        x = x / scale
        if name == "ViT3D":
            return model(x.unsqueeze(1)).squeeze(1) * scale
        return model(x) * scale
    return run


def run(args) -> None:
    import argparse

    C.check_common(argparse.ArgumentParser(prog="table2"), args)
    rank, _ = C.distributed()
    cfg = config(args, FULL, QUICK)
    models = [m for m in args.models.split(",") if m]
    bad = [m for m in models if m not in MODELS]
    if bad:
        raise SystemExit(f"table2: unknown --models {bad}; choose from {MODELS}")
    iters = C.int_list(args.iters)
    x, y = load_fields(args, cfg, cfg["n_train"] + cfg["n_test"])
    n = cfg["n_train"]
    train, test = (x[:n], y[:n]), (x[n:], y[n:])
    scale = float(train[0].std())
    report = Report("table2", args.out, args) if rank == 0 else None
    runs = []
    cells = [(m, k, s) for m in models for k in iters for s in range(args.seeds)]
    for m, k, seed in progress(cells, desc="table2", disable=rank != 0):
        torch.manual_seed(seed)
        model = build(m, cfg, args.t_in, args.t_out, k, args.tol)
        res = C.train_eval(model, predict(m, scale), train, test, epochs=cfg["epochs"],
                           batch_size=cfg["batch"], lr=cfg["lr"], seed=seed,
                           desc=f"{m} N_iter={k} seed={seed}")
        rec = dict(model=m, iterations=k, seed=seed, **res)
        runs.append(rec)
        if report:
            report.add_run(rec)
        if m == models[0] and k == iters[-1] and seed == 0:  # every rank: solves may sync
            with torch.no_grad():
                model.eval()
                pred = predict(m, scale)(model, test[0][:1])[0]
        if report and m == models[0] and k == iters[-1] and seed == 0:
            frames = [0, args.t_out // 2, args.t_out - 1]
            C.plot_fields(report, "prediction.png",
                          [("truth", [test[1][0, f] for f in frames]),
                           (f"{m}, N_iter={k}", [pred[f] for f in frames]),
                           ("error", [pred[f] - test[1][0, f] for f in frames])],
                          f"vorticity at t = {', '.join(str(args.t_in + f + 1) for f in frames)}"
                          " (test sample 0)")
    C.close_distributed()
    if report is None:
        return
    trend = C.trend(runs, models, iters)
    body = [f"# Table 2: iterative ViTs on Navier–Stokes (ν=1e-3)\n",
            f"Test MSE (mean ± std over {args.seeds} seeds; vorticity, raw units), paper's "
            "value in brackets (its scale differs: see docs/RESULTS.md).\n",
            C.iteration_table(runs, models, iters, paper=PAPER), "",
            "Relative L2 error (FNO's metric):\n",
            C.iteration_table(runs, models, iters, key="rel_l2"), "",
            "Parameters per model (equal for every N_iter): " + ", ".join(
                f"{m} {next(r['parameters'] for r in runs if r['model'] == m):,}"
                for m in models), "",
            "Error falls from the fewest to the most iterations: " + ", ".join(
                f"{m} {'yes' if t['falls'] else 'NO'}{' (monotone)' if t['monotone'] else ''}"
                for m, t in trend.items()), "",
            f"Setting: {cfg}, t_in={args.t_in}, t_out={args.t_out}, data="
            f"{args.data or 'generated (navier_stokes, dt=1e-2)'}, tol={args.tol}."]
    report.write_markdown("\n".join(body))
    C.plot_iterations(report, runs, models, iters, paper=PAPER)
    report.finish()
