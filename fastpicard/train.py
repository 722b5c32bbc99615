"""Train PIGN on a Planetoid graph: ``python -m fastpicard.train`` (embedded Cora, no download).

Prints test accuracy, the Picard iterations used, how far the iteration converged and the time
per epoch; ``--out DIR`` also writes metrics.json (metrics, settings, per-epoch history),
curves.png, residuals.png and model.pt (the state_dict). The defaults are the setting of the
authors' iterative GCN on Cora (hidden 32, α 0.5, dropout 0.5, Adam lr 0.01, weight decay 5e-4,
200 epochs, row-normalised features, standard public split).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import pickle
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .datasets import dropin_noise, planetoid
from .datasets.planetoid import EMBEDDED, NAMES
from .nn import PIGN


def train_step(model, data, opt):
    """One full-batch training step on the train mask (shared with the models benchmark)."""
    model.train()
    out = model(data.x, data.edge_index)
    loss = F.cross_entropy(out[data.train_mask], data.y[data.train_mask])
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss


# ------------------------------------------------------------------ options, checked at parsing
def _number(kind, *, low=None, high=None, low_open=False, high_open=False):
    """An argparse type: kind (int/float) within the given bounds, else one plain error."""
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            what = "an integer" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        too_low = low is not None and (value <= low if low_open else value < low)
        too_high = high is not None and (value >= high if high_open else value > high)
        if not math.isfinite(value) or too_low or too_high:
            lo = "" if low is None else f"{'>' if low_open else '>='} {low:g}"
            hi = "" if high is None else f"{'<' if high_open else '<='} {high:g}"
            raise argparse.ArgumentTypeError(f"must be {' and '.join(filter(None, (lo, hi)))}, "
                                             f"got {text}")
        return value
    return parse


_count = _number(int, low=1)


def _dataset(text):
    if text.lower() not in NAMES:
        raise argparse.ArgumentTypeError(f"must be one of {', '.join(NAMES.values())}, "
                                         f"got {text!r}")
    return NAMES[text.lower()]


def _device(text):
    try:
        device = torch.device(text)
        if device.type == "meta":
            raise ValueError("meta tensors hold no data")
        torch.empty(0, device=device)  # the device exists and this torch can use it
    except Exception as exc:  # noqa: BLE001  (torch raises several types here)
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise argparse.ArgumentTypeError(f"{text!r} is not usable here: {reason}") from None
    return device


PROG = "python -m fastpicard.train"


def _fail(message):
    """A bad option or input: one line on stderr and exit code 2 (argparse's convention)."""
    print(f"{PROG}: error: {message} (--help lists the options)", file=sys.stderr)
    sys.exit(2)


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse would print the whole usage first
        _fail(message)


def parse_args(argv=None):
    """The options, checked: a bad value exits with one line and code 2."""
    p = _Parser(prog=PROG, description=__doc__,
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="Cora", type=_dataset,
                   help="Cora, CiteSeer (embedded) or PubMed (needs --root)")
    p.add_argument("--root", default=None, help="folder with ind.<name>.* files (PubMed)")
    p.add_argument("--conv", default="gcn", choices=["gcn", "gat", "sage"])
    p.add_argument("--hidden", type=_count, default=32)
    p.add_argument("--iterations", type=_count, default=2, help="Picard iterations (max_iter)")
    p.add_argument("--eval-iterations", type=_count, default=None,
                   help="iterations at evaluation (default: as in training)")
    p.add_argument("--tol", type=_number(float, low=0, low_open=True), default=None,
                   help="early-exit tolerance (default: the paper's fixed schedule)")
    p.add_argument("--alpha", type=_number(float, low=0, high=1, high_open=True), default=0.5,
                   help="smoothing α in [0, 1)")
    p.add_argument("--dropout", type=_number(float, low=0, high=1, high_open=True), default=0.5)
    p.add_argument("--lr", type=_number(float, low=0, low_open=True), default=0.01)
    p.add_argument("--weight-decay", type=_number(float, low=0), default=5e-4)
    p.add_argument("--epochs", type=_count, default=200)
    p.add_argument("--noise", type=_number(float, low=0, high=1), default=0.0,
                   help="drop-in noise: fraction of feature entries given +1 (paper, Sec. 5)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=_count, default=None,
                   help="torch threads (default: torch's)")
    p.add_argument("--device", type=_device,
                   default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", type=Path, default=None, metavar="DIR",
                   help="write metrics.json, curves.png, residuals.png and model.pt here")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    if args.root is None and args.dataset.lower() not in EMBEDDED:
        _fail(f"--dataset {args.dataset} is not shipped with fastpicard: pass --root DIR, "
                f"a folder holding the ind.{args.dataset.lower()}.* files")
    if args.root is not None and not Path(args.root).is_dir():
        _fail(f"argument --root: no such folder: {args.root}")
    if args.out is not None and args.out.exists() and not args.out.is_dir():
        _fail(f"argument --out: {args.out} exists and is not a folder")
    return args


# ------------------------------------------------------------------ helpers
def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def accuracy(logits, y, mask):
    return float((logits[mask].argmax(1) == y[mask]).float().mean())


def _convergence(stats, tol, iterations) -> str:
    """What the residual of the evaluation solve says, in words."""
    res, rel = float(stats.abs_residual.max()), float(stats.rel_residual.max())
    what = (f"last-step residual {res:.3g} (relative {rel:.2g}): ‖x_k - x_(k-1)‖, how much "
            "the last Picard step still changed the node states (near 0 once converged)")
    if tol is None:
        return what + f"; fixed schedule of {iterations} steps, no tolerance"
    if bool(stats.converged.all()):
        return what + f"; tolerance {tol:g} ({stats.stop} residual) reached"
    return what + (f"; tolerance {tol:g} ({stats.stop} residual) NOT reached in {iterations} "
                   "steps: not converged (try more --iterations, or a contractive layer, "
                   "fastpicard.contractive)")


def _atomic(path: Path, write) -> None:
    """write(tmp) then rename over path: a reader never sees a half-written file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _save(out: Path, model, record, history, stats) -> list[str]:
    """Writes the results folder; returns the names written."""
    out.mkdir(parents=True, exist_ok=True)
    _atomic(out / "model.pt", lambda p: torch.save(model.state_dict(), p))
    _atomic(out / "metrics.json",
            lambda p: p.write_text(json.dumps(record, indent=1, default=str) + "\n"))
    written = ["metrics.json", "model.pt"]
    try:
        import matplotlib
        matplotlib.use("Agg")  # files only, no window
        import matplotlib.pyplot as plt
    except ImportError:
        print("--out: plots skipped, matplotlib is not installed (pip install matplotlib)")
        return written
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4), layout="constrained")
    epochs = history["epoch"]
    axes[0].plot(epochs, history["loss"])
    axes[0].set(xlabel="epoch", ylabel="training loss")
    axes[1].plot(epochs, history["val_accuracy"])
    axes[1].set(xlabel="epoch", ylabel="validation accuracy")
    axes[2].semilogy(epochs, history["residual"])
    axes[2].set(xlabel="epoch", ylabel="last-step residual (training)")
    fig.suptitle(f"PIGN on {record['dataset']['name']}: test accuracy "
                 f"{record['metrics']['test_accuracy']:.4f}")
    _atomic(out / "curves.png", lambda p: fig.savefig(p, format="png", dpi=110))
    plt.close(fig)
    fig = stats.plot()
    _atomic(out / "residuals.png", lambda p: fig.savefig(p, format="png", dpi=110))
    plt.close(fig)
    return written + ["curves.png", "residuals.png"]


# ------------------------------------------------------------------ the job
def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = args.device
    try:
        data = planetoid(args.dataset, root=args.root, normalize=True)
    except (OSError, ValueError, EOFError, pickle.UnpicklingError) as exc:
        _fail(f"cannot load --dataset {args.dataset}"
                     + (f" from --root {args.root}" if args.root else "") + f": {exc}")
    if args.noise:
        data.x = dropin_noise(data.x, args.noise, seed=args.seed)
    data = data.to(device)
    model = PIGN(data.num_features, args.hidden, data.num_classes, conv=args.conv,
                 alpha=args.alpha, max_iter=args.iterations, tol=args.tol,
                 eval_max_iter=args.eval_iterations, dropout=args.dropout).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    print(f"{data.name}: {data.num_nodes} nodes, {data.num_edges} edges, {data.num_features} "
          f"features, {data.num_classes} classes | PIGN({args.conv}, hidden {args.hidden}, "
          f"{args.iterations} iterations, alpha {args.alpha}) on {device}, "
          f"{torch.get_num_threads()} threads")

    bar = tqdm(total=args.epochs, disable=args.no_progress, unit="epoch", dynamic_ncols=True)
    history = {"epoch": [], "loss": [], "val_accuracy": [], "iterations": [], "residual": []}
    train_time, best_val, best_epoch = 0.0, 0.0, 0
    for epoch in range(1, args.epochs + 1):
        t0 = time.perf_counter()
        loss = train_step(model, data, opt)
        _sync(device)
        train_time += time.perf_counter() - t0
        train_stats = model.last_stats
        model.eval()
        with torch.no_grad():
            val = accuracy(model(data.x, data.edge_index), data.y, data.val_mask)
        if val > best_val:
            best_val, best_epoch = val, epoch
        for key, value in (("epoch", epoch), ("loss", float(loss.detach())),
                           ("val_accuracy", val),
                           ("iterations", int(train_stats.iterations.max())),
                           ("residual", float(train_stats.abs_residual.max()))):
            history[key].append(value)
        bar.set_postfix(loss=f"{history['loss'][-1]:.3f}", val=f"{val:.3f}")
        bar.update()
    bar.close()

    model.eval()
    with torch.no_grad():
        _sync(device)
        t0 = time.perf_counter()
        logits = model(data.x, data.edge_index)
        _sync(device)  # GPU work is asynchronous: time it finished, not launched
        fwd = time.perf_counter() - t0
    stats = model.last_stats
    eval_iters = args.eval_iterations or args.iterations
    metrics = {
        "test_accuracy": accuracy(logits, data.y, data.test_mask),
        "val_accuracy": accuracy(logits, data.y, data.val_mask),
        "best_val_accuracy": best_val, "best_epoch": best_epoch,
        "train_iterations_mean": sum(history["iterations"]) / args.epochs,
        "eval_iterations": int(stats.iterations.max()),
        "eval_residual": float(stats.abs_residual.max()),
        "eval_relative_residual": float(stats.rel_residual.max()),
        "tol_reached": None if args.tol is None else bool(stats.converged.all()),
        "time_per_epoch_ms": train_time / args.epochs * 1e3,
        "inference_forward_ms": fwd * 1e3,
    }
    print(f"test accuracy: {metrics['test_accuracy']:.4f} (val {metrics['val_accuracy']:.4f}; "
          f"best val {best_val:.4f} at epoch {best_epoch})")
    print(f"iterations used: {metrics['train_iterations_mean']:.1f} per training forward, "
          f"{metrics['eval_iterations']} at evaluation")
    print(_convergence(stats, args.tol, eval_iters))
    print(f"time per epoch: {metrics['time_per_epoch_ms']:.1f} ms (forward+backward+step); "
          f"inference forward {metrics['inference_forward_ms']:.1f} ms")
    if args.out is not None:
        from . import __version__, extension_available
        from .reproduce.report import machine

        record = {
            "command": "python -m fastpicard.train " + " ".join(
                sys.argv[1:] if argv is None else argv),
            "settings": {k: str(v) if isinstance(v, (Path, torch.device)) else v
                         for k, v in vars(args).items()},
            "dataset": {"name": data.name, "nodes": data.num_nodes, "edges": data.num_edges,
                        "features": data.num_features, "classes": data.num_classes},
            "metrics": metrics, "history": history,
            # [step][sample]; None where a sample had already stopped
            "eval_residual_trace": [[None if math.isnan(v) else v for v in row]
                                    for row in stats.trace.double().tolist()],
            "environment": {**machine(), "fastpicard": __version__, "device": str(device),
                            "compiled_extension": extension_available()},
        }
        written = _save(args.out, model, record, history, stats)
        print(f"results in {args.out}/: {', '.join(written)}")
    return model


if __name__ == "__main__":
    main()
