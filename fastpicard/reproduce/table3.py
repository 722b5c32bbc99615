"""Table 3: masked-pixel reconstruction with an iterative ViT, test MSE for N_iter = 1, 2, 3.

75 % of the pixels of each image are blacked out; a ViT T (image -> image) is iterated in pixel
space from the masked image, x_{i+1} = (1-λ)T(x_i) + λx_i with λ = 1/2, and trained on
MSE(x_N, y) at the last iteration — the paper's loss. The paper used CIFAR-10 with 12 encoder +
4 decoder layers, 3 heads, width 192, patch 2; this runs on Fashion-MNIST by default (the IDX
files, ``--root`` or $FASTPICARD_DATA/fashion-mnist) with a smaller ViT, and on CIFAR-10's
python batches with ``--dataset cifar10 --root DIR``.
"""
from __future__ import annotations

import torch
from torch import nn

from ..datasets import images
from ..nn import FieldViT, IterativeViT
from . import _vit_common as C
from .report import Report, progress

PAPER = {"ViT": {1: 0.0126, 2: 0.0121, 3: 0.0122}}  # CIFAR-10; FID 20.04 / 20.02 / 19.30
FULL = dict(n_train=3000, n_test=500, dim=48, depth=4, heads=3, patch=4, epochs=5, batch=25,
            lr=2e-3)
QUICK = dict(n_train=16, n_test=8, dim=12, depth=1, heads=3, patch=4, epochs=1, batch=8,
             lr=2e-3)


class PixelOperator(nn.Module):
    """A whole image-to-image ViT as one operator, so ``IterativeViT`` iterates it on images
    (its embed and decode are the identity)."""

    def __init__(self, vit: nn.Module):
        super().__init__()
        self.blocks = nn.ModuleList([vit])

    def embed(self, x):
        return x

    def decode(self, x):
        return x


def add_arguments(parser) -> None:
    C.add_common(parser, out="results/table3", seeds=2)
    parser.add_argument("--dataset", default="fashion-mnist", choices=("fashion-mnist", "cifar10"))
    parser.add_argument("--root", default=None,
                        help="folder with the data set's files (default: $FASTPICARD_DATA/"
                             "fashion-mnist or .../cifar-10-batches-py)")
    parser.add_argument("--iters", default="1,2,3", help="N_iter values (default %(default)s)")
    parser.add_argument("--mask", type=float, default=0.75, help="fraction of pixels blacked out")
    parser.add_argument("--n-train", type=int, default=None)
    parser.add_argument("--n-test", type=int, default=None)


def masked(x, fraction, seed):
    """x with ``fraction`` of its pixels (all channels of a pixel) set to 0, fixed by seed."""
    g = torch.Generator().manual_seed(seed)
    keep = (torch.rand(x.shape[0], 1, *x.shape[2:], generator=g) >= fraction).to(x.dtype)
    return x * keep


def run(args) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="table3")
    C.check_common(parser, args)
    if not 0 < args.mask < 1:
        parser.error("--mask must lie in (0, 1)")
    rank, _ = C.distributed()
    cfg = dict(QUICK if args.quick else FULL)
    for key in ("n_train", "n_test", "epochs"):
        if getattr(args, key) is not None:
            cfg[key] = getattr(args, key)
    iters = C.int_list(args.iters)
    try:
        xtr, _ = images(args.dataset, args.root, "train")
        xte, _ = images(args.dataset, args.root, "test")
    except (ValueError, FileNotFoundError) as e:
        raise SystemExit(f"table3: {e}") from None
    if cfg["n_train"] > xtr.shape[0] or cfg["n_test"] > xte.shape[0]:
        raise SystemExit(f"table3: asked for {cfg['n_train']}/{cfg['n_test']} images, the data "
                         f"set has {xtr.shape[0]}/{xte.shape[0]}")
    ytr, yte = xtr[:cfg["n_train"]], xte[:cfg["n_test"]]
    train = (masked(ytr, args.mask, 1), ytr)
    test = (masked(yte, args.mask, 2), yte)
    channels, size = ytr.shape[1], ytr.shape[-1]

    def predict(model, x):
        return model(x)

    report = Report("table3", args.out, args) if rank == 0 else None
    runs = []
    cells = [(k, s) for k in iters for s in range(args.seeds)]
    shown = []
    for k, seed in progress(cells, desc="table3", disable=rank != 0):
        torch.manual_seed(seed)
        vit = FieldViT(channels, channels, size, cfg["patch"], dim=cfg["dim"],
                       depth=cfg["depth"], heads=cfg["heads"])
        model = IterativeViT(PixelOperator(vit), max_iter=k, alpha=0.5,
                             **C.solver_options(args.tol))
        res = C.train_eval(model, predict, train, test, epochs=cfg["epochs"],
                           batch_size=cfg["batch"], lr=cfg["lr"], seed=seed,
                           desc=f"N_iter={k} seed={seed}")
        rec = dict(model="ViT", iterations=k, seed=seed, dataset=args.dataset, **res)
        runs.append(rec)
        if report:
            report.add_run(rec)
        if seed == 0:  # on every rank: solves may be synchronised across ranks
            with torch.no_grad():
                model.eval()
                shown.append((f"N_iter={k}", model(test[0][:4]).clamp(0, 1)))

    C.close_distributed()
    if report is None:
        return
    pick = (lambda t: t[:, 0]) if channels == 1 else (lambda t: t.mean(1))
    rows = [("masked input", list(pick(test[0][:4]))), *((n, list(pick(p))) for n, p in shown),
            ("truth", list(pick(test[1][:4])))]
    C.plot_fields(report, "prediction.png", rows,
                  f"{args.dataset}: {args.mask:.0%} of pixels masked (test images)", cmap="gray")
    trend = C.trend(runs, ["ViT"], iters)
    body = [f"# Table 3: masked-pixel reconstruction ({args.dataset}, "
            f"{args.mask:.0%} masked)\n",
            f"Test MSE over all pixels (mean ± std over {args.seeds} seeds; intensities in "
            "[0, 1]); the paper's CIFAR-10 value in brackets.\n",
            C.iteration_table(runs, ["ViT"], iters, paper=PAPER, digits=5), "",
            f"Parameters: {runs[0]['parameters']:,} (equal for every N_iter). Error falls "
            f"from the fewest to the most iterations: "
            f"{'yes' if trend['ViT']['falls'] else 'NO'}"
            f"{' (monotone)' if trend['ViT']['monotone'] else ''}.", "",
            f"Setting: {cfg}, λ = 1/2, loss at the last iteration, tol={args.tol}."]
    report.write_markdown("\n".join(body))
    C.plot_iterations(report, runs, ["ViT"], iters, paper=PAPER)
    report.finish()
