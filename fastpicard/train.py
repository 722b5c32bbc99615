"""Train PIGN on a Planetoid graph: ``python -m fastpicard.train`` (embedded Cora, no download).

Prints test accuracy, the Picard iterations used and the time per epoch. The defaults are the
setting of the authors' iterative GCN on Cora (hidden 32, α 0.5, dropout 0.5, Adam lr 0.01,
weight decay 5e-4, 200 epochs, row-normalised features, standard public split).
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from .datasets import dropin_noise, planetoid
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

def _positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m fastpicard.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="Cora", help="Cora, CiteSeer (embedded) or PubMed")
    p.add_argument("--root", default=None, help="folder with ind.<name>.* files (PubMed)")
    p.add_argument("--conv", default="gcn", choices=["gcn", "gat", "sage"])
    p.add_argument("--hidden", type=int, default=32)
    p.add_argument("--iterations", type=int, default=2, help="Picard iterations (max_iter)")
    p.add_argument("--eval-iterations", type=int, default=None,
                   help="iterations at evaluation (default: as in training)")
    p.add_argument("--tol", type=float, default=None,
                   help="early-exit tolerance (default: the paper's fixed schedule)")
    p.add_argument("--alpha", type=float, default=0.5, help="smoothing α")
    p.add_argument("--dropout", type=float, default=0.5)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--epochs", type=_positive_int, default=200)
    p.add_argument("--noise", type=float, default=0.0,
                   help="drop-in noise: fraction of feature entries given +1 (paper, Sec. 5)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def _progress(n, disable):
    try:
        from tqdm.auto import tqdm
    except ImportError:  # tqdm is optional: fall back to a line every 20 epochs
        return None
    return tqdm(total=n, disable=disable, unit="epoch", dynamic_ncols=True)


def accuracy(logits, y, mask):
    return float((logits[mask].argmax(1) == y[mask]).float().mean())


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    data = planetoid(args.dataset, root=args.root, normalize=True)
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

    bar = _progress(args.epochs, args.no_progress)
    train_time, train_iters, best_val, best_epoch = 0.0, 0, 0.0, 0
    for epoch in range(1, args.epochs + 1):
        t0 = time.perf_counter()
        loss = train_step(model, data, opt)
        _sync(device)
        train_time += time.perf_counter() - t0
        train_iters += int(model.last_stats.iterations.max())
        model.eval()
        with torch.no_grad():
            val = accuracy(model(data.x, data.edge_index), data.y, data.val_mask)
        if val > best_val:
            best_val, best_epoch = val, epoch
        if bar is not None:
            bar.set_postfix(loss=f"{float(loss.detach()):.3f}", val=f"{val:.3f}")
            bar.update()
        elif not args.no_progress and (epoch % 20 == 0 or epoch == args.epochs):
            print(f"epoch {epoch:4d}  loss {float(loss.detach()):.4f}  val {val:.4f}", flush=True)
    if bar is not None:
        bar.close()

    model.eval()
    with torch.no_grad():
        _sync(data.x.device)
        t0 = time.perf_counter()
        logits = model(data.x, data.edge_index)
        _sync(data.x.device)  # GPU work is asynchronous: time it finished, not launched
        fwd = time.perf_counter() - t0
    stats = model.last_stats
    print(f"test accuracy: {accuracy(logits, data.y, data.test_mask):.4f} "
          f"(val {accuracy(logits, data.y, data.val_mask):.4f}; best val {best_val:.4f} at "
          f"epoch {best_epoch})")
    print(f"iterations used: {train_iters / args.epochs:.1f} per training forward, "
          f"{int(stats.iterations.max())} at evaluation (last-step residual "
          f"{float(stats.abs_residual.max()):.3g})")
    print(f"time per epoch: {train_time / args.epochs * 1e3:.1f} ms (forward+backward+step); "
          f"inference forward {fwd * 1e3:.1f} ms")
    return model


if __name__ == "__main__":
    main()
