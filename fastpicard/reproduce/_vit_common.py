"""Shared by the transformer tables (2, 3, 4): one training loop that runs unchanged on one
process or under ``torchrun --nproc_per_node N`` (DDP: gloo on CPU, NCCL on GPU; samples sharded
by rank; solves with a tolerance stop together through the solver's ``dist_sync``), common
options, and the plots (error against iterations, a predicted field beside the truth)."""
from __future__ import annotations

import math
import os
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F

from .report import Report, fmt, mean_std, progress


# ---------------------------------------------------------------- processes
def distributed() -> tuple[int, int]:
    """(rank, world size); joins the process group when started by torchrun."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def close_distributed() -> None:
    """Leaves the process group (after the last collective) when this process joined one."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def solver_options(tol) -> dict:
    """Options for the Picard modules: with a tolerance and several ranks, the ranks stop
    their solves together (every rank runs the slowest rank's number of steps)."""
    if tol is None:
        return {}
    _, world = distributed()
    return {"tol": tol, "dist_sync": world > 1}


def add_common(parser, *, out: str, seeds: int) -> None:
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes (seconds): for tests and a first look")
    parser.add_argument("--seeds", type=int, default=seeds, help="training seeds per cell")
    parser.add_argument("--out", default=out, help="output folder (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=None, help="override the epochs")
    parser.add_argument("--tol", type=float, default=None,
                        help="Picard tolerance (default: none, the paper's fixed schedule)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")


def check_common(parser, args) -> None:
    if args.seeds < 1:
        parser.error("--seeds must be >= 1")
    if args.epochs is not None and args.epochs < 1:
        parser.error("--epochs must be >= 1")
    if args.tol is not None and not args.tol > 0:
        parser.error("--tol must be > 0")
    if args.threads is not None:
        if args.threads < 1:
            parser.error("--threads must be >= 1")
        torch.set_num_threads(args.threads)


def int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise ValueError(f"expected a comma-separated list of positive integers, got {text!r}")
    return values


# ---------------------------------------------------------------- training
def train_eval(model, predict, train, test, *, epochs: int, batch_size: int, lr: float,
               seed: int, desc: str = "") -> dict:
    """Trains ``model`` with Adam (cosine learning rate) on ``train`` and returns the test
    error.

    ``train`` and ``test`` are tuples of tensors with samples on dim 0 (inputs..., target);
    ``predict(model, *inputs) -> prediction`` shaped like the target; the loss is its MSE.
    Each rank trains on its shard of every epoch's permutation (the same permutation on every
    rank) and DDP averages the gradients; the test error is summed over the ranks' shards.
    """
    rank, world = distributed()
    dev = device()
    model = model.to(dev)
    net = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[dev.index] if dev.type == "cuda" else None)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    n = train[0].shape[0]
    per_rank = n // world
    steps = epochs * math.ceil(per_rank / batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(steps, 1),
                                                pct_start=0.1)
    g = torch.Generator().manual_seed(seed)
    losses = []
    t0, c0 = time.perf_counter(), time.process_time()
    bar = progress(total=steps, desc=desc, leave=False, disable=rank != 0)
    for _ in range(epochs):
        perm = torch.randperm(n, generator=g)[rank::world][:per_rank]
        for i in range(0, per_rank, batch_size):
            idx = perm[i:i + batch_size]
            *xs, y = (t[idx].to(dev) for t in train)
            value = F.mse_loss(predict(net, *xs), y)
            opt.zero_grad(set_to_none=True)
            value.backward()
            opt.step()
            sched.step()
            losses.append(float(value.detach()))
            if bar is not None:
                bar.update()
                bar.set_postfix(loss=f"{losses[-1]:.4g}")
    if bar is not None:
        bar.close()
    train_s, train_cpu = time.perf_counter() - t0, time.process_time() - c0
    result = evaluate(model, predict, test, batch_size)
    result.update(train_seconds=round(train_s, 2), train_cpu_seconds=round(train_cpu, 2),
                  final_train_loss=sum(losses[-10:]) / max(1, len(losses[-10:])),
                  loss_curve=losses[:: max(1, len(losses) // 200)], world_size=world,
                  parameters=sum(p.numel() for p in model.parameters()))
    if world > 1:
        result["max_weight_diff_across_ranks"] = weight_spread(model)
    return result


@torch.no_grad()
def evaluate(model, predict, test, batch_size: int) -> dict:
    """Mean squared error and mean relative L2 error (FNO's metric) over the test samples,
    each rank on its shard, summed over ranks. Every rank runs the same number of batches (a
    short shard repeats a sample with weight 0), so solves synchronised across ranks match up."""
    rank, world = distributed()
    dev = device()
    model.eval()
    sums = torch.zeros(3, dtype=torch.float64, device=dev)  # squared error, rel. L2, samples
    n = test[0].shape[0]
    idx = torch.arange(rank, n, world)
    count = -(-n // world)
    weight = torch.ones(count, dtype=torch.float64)
    if idx.numel() < count:
        weight[idx.numel():] = 0
        idx = torch.cat([idx, idx.new_zeros(count - idx.numel())])
    elems = test[-1][0].numel()
    for i in range(0, count, batch_size):
        *xs, y = (t[idx[i:i + batch_size]].to(dev) for t in test)
        w = weight[i:i + batch_size].to(dev)
        diff = (predict(model, *xs) - y).flatten(1).double()
        sums[0] += (diff.pow(2).sum(1) * w).sum()
        rel = diff.norm(dim=1) / y.flatten(1).double().norm(dim=1).clamp_min(1e-12)
        sums[1] += (rel * w).sum()
        sums[2] += w.sum()
    model.train()
    if world > 1:
        dist.all_reduce(sums)
    return {"mse": float(sums[0] / (sums[2] * elems)), "rel_l2": float(sums[1] / sums[2])}


@torch.no_grad()
def weight_spread(model) -> float:
    """Largest difference of any weight between ranks (0 when DDP kept them identical)."""
    flat = torch.cat([p.detach().reshape(-1).double() for p in model.parameters()])
    lo, hi = flat.clone(), flat.clone()
    dist.all_reduce(lo, op=dist.ReduceOp.MIN)
    dist.all_reduce(hi, op=dist.ReduceOp.MAX)
    return float((hi - lo).abs().max())


# ---------------------------------------------------------------- outputs
def iteration_table(runs, models, iters, key="mse", paper=None, digits=4) -> str:
    """Markdown: one row per model, one column per iteration count (ours, then the paper's)."""
    head = "| model | " + " | ".join(f"N_iter={n}" for n in iters) + " |"
    lines = [head, "|" + "---|" * (len(iters) + 1)]
    for m in models:
        cells = []
        for n in iters:
            vals = [r[key] for r in runs if r["model"] == m and r["iterations"] == n]
            cell = fmt(vals, digits=digits) if vals else "–"
            ref = (paper or {}).get(m, {}).get(n)
            cells.append(cell + (f" (paper {ref})" if ref is not None else ""))
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def trend(runs, models, iters, key="mse") -> dict:
    """Per model: does the mean error fall from the fewest to the most iterations, and is it
    monotone?"""
    out = {}
    for m in models:
        means = [mean_std([r[key] for r in runs if r["model"] == m and r["iterations"] == n])[0]
                 for n in iters]
        if any(math.isnan(v) for v in means):
            continue
        out[m] = {"falls": means[-1] < means[0],
                  "monotone": all(b < a for a, b in zip(means, means[1:])), "means": means}
    return out


def plot_iterations(report: Report, runs, models, iters, key="mse", paper=None,
                    ylabel="test MSE") -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(6, 4), layout="constrained")
    for m in models:
        stats = [mean_std([r[key] for r in runs if r["model"] == m and r["iterations"] == n])
                 for n in iters]
        ax.errorbar(iters, [s[0] for s in stats], yerr=[s[1] for s in stats], marker="o",
                    capsize=3, label=m)
    ax.set_xlabel("Picard iterations N_iter")
    ax.set_ylabel(ylabel)
    ax.set_xticks(iters)
    ax.set_title(f"{report.table}: {ylabel} vs iterations (mean ± std over seeds)")
    ax.legend()
    fig.savefig(report.figure(f"{key}_vs_iterations.png"), dpi=110)
    if paper:
        fig2, ax2 = plt.subplots(figsize=(6, 4), layout="constrained")
        for m, vals in paper.items():
            xs = [n for n in iters if n in vals]
            ax2.plot(xs, [vals[n] for n in xs], marker="s", label=m)
        ax2.set_xlabel("Picard iterations N_iter")
        ax2.set_ylabel("MSE (paper)")
        ax2.set_xticks(iters)
        ax2.set_title(f"{report.table}: the paper's numbers")
        ax2.legend()
        fig2.savefig(report.figure("paper_vs_iterations.png"), dpi=110)
        plt.close(fig2)
    plt.close(fig)


def plot_fields(report: Report, name: str, rows, title: str, cmap="RdBu_r") -> None:
    """``rows``: list of (label, [field, ...]) with 2-D tensors; one image per cell."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    ncols = max(len(fields) for _, fields in rows)
    fig, axes = plt.subplots(len(rows), ncols, figsize=(2.2 * ncols, 2.2 * len(rows) + 0.5),
                             layout="constrained", squeeze=False)
    lim = max(float(f.abs().max()) for _, fields in rows for f in fields)
    for r, (label, fields) in enumerate(rows):
        for c in range(ncols):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c < len(fields):
                kw = dict(vmin=-lim, vmax=lim) if cmap == "RdBu_r" else dict(vmin=0, vmax=1)
                ax.imshow(fields[c].detach().cpu().float().numpy(), cmap=cmap, **kw)
            if c == 0:
                ax.set_ylabel(label)
    fig.suptitle(title)
    fig.savefig(report.figure(name), dpi=110)
    plt.close(fig)
