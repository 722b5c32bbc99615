"""Table 1 stand-in: long-range node classification. LRGB PascalVOC-SP cannot be downloaded
here, so the default task is generated (``fastpicard.datasets.long_range_graphs``): a target
node must report the colour of the nearest of the flagged, coloured ends of the paths that
meet at it (the source, k hops away; the decoys, k + 1 hops away, look the same; one arm per
colour), for k in {2, 4, 8, 16}. Compared per backbone (GCN, GAT, SAGE), each within 500k
parameters:

* stacked: the backbone's block (PIGN's smoothed step) stacked 2k times with distinct weights
  (no iteration);
* IterGNN: one shared layer, adaptive iterations (at most 2k), learned stopping confidence;
* PIGN: one shared layer iterated 2k times (the paper's fixed schedule);
* PIGN, contractive: ``lipschitz=0.9``, early exit at residual 1e-4 within 4k steps, implicit
  backward.

2k, not k: with smoothing alpha = 0.5 a message that must cross k hops in exactly k steps
keeps only (1 - alpha)^k of its weight; with 2k steps about 1/sqrt(pi k) of it.

Metric: accuracy on the targets (chance = 1/colours), test at the epoch of best validation
accuracy, mean ± std over seeds (the data are fixed; seeds change initialisation and dropout).

``--root DIR`` runs the same models on LRGB PascalVOC-SP instead (PyG's raw layout, read by
``fastpicard.datasets.pascalvoc_sp``): minibatches of graphs, LRGB's class-weighted
cross-entropy, macro F1 as in the paper, ``--layers`` blocks / iterations.
"""
from __future__ import annotations

import statistics

import torch
import torch.nn.functional as F
from torch import nn

import fastpicard
from fastpicard.datasets import GraphBatch, long_range_graphs, pascalvoc_sp
from fastpicard.nn import PIGN, IterGNN
from fastpicard.nn.pign import _make_conv, fusable_gcn
from fastpicard.ops import spmm_update

from . import _graph_common as gc
from .report import Report

BACKBONES = ("gcn", "gat", "sage")
MODELS = {"stacked": "stacked (no iteration)", "itergnn": "IterGNN", "pign": "PIGN",
          "cpign": "PIGN, contractive"}
# Paper, Table 1: LRGB PascalVOC-SP, macro F1, 500k parameters, 5 seeds
PAPER = {("gcn", "stacked"): 0.1510, ("gat", "stacked"): 0.1204, ("sage", "stacked"): 0.3015,
         ("gcn", "itergnn"): 0.1736, ("gat", "itergnn"): 0.1099, ("sage", "itergnn"): 0.1816,
         ("gcn", "pign"): 0.1831, ("gat", "pign"): 0.1706, ("sage", "pign"): 0.3560}
BUDGET = 500_000
# GAT with 2 heads (averaged): 8 would cost 4x the time of the whole table on 2 cores
CONV_KWARGS = {"gat": dict(heads=2, add_self_loops=False)}  # self loops: see _adj


def add_arguments(p):
    p.add_argument("--ks", default="2,4,8,16", help="ranges k of the generated task")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--backbones", default=",".join(BACKBONES))
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--hidden", type=int, default=32)
    p.add_argument("--colors", type=int, default=3,
                   help="colours (classes) of the task = arms per graph (cost grows with it)")
    p.add_argument("--graphs", default="256,128,128", help="train,val,test graphs per k")
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--patience", type=int, default=50)
    p.add_argument("--lr", type=float, default=0.005)
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument("--alpha", type=float, default=0.5, help="smoothing of every block")
    p.add_argument("--root", default=None,
                   help="LRGB PascalVOC-SP raw folder: run on it instead of the generated task")
    p.add_argument("--layers", type=int, default=8,
                   help="with --root: blocks / iterations of every model")
    p.add_argument("--batch-size", type=int, default=32, help="with --root: graphs per step")
    gc.add_run_arguments(p, out="results/table1")


# ---------------------------------------------------------------- models
class Stacked(nn.Module):
    """PIGN's block ``x = α·x + (1-α)·dropout(act(conv_l(x)))`` with ``layers`` distinct convs
    (GCN layers on the fused ``spmm_update`` path when given a fastpicard.Graph)."""

    def __init__(self, fin, hidden, fout, conv, layers, alpha, dropout, conv_kwargs):
        super().__init__()
        self.encoder = nn.Linear(fin, hidden)
        self.convs = nn.ModuleList(_make_conv(conv, hidden, dropout, conv_kwargs)
                                   for _ in range(layers))
        self.decoder = nn.Linear(hidden, fout)
        self.alpha, self.dropout = alpha, dropout

    def forward(self, x, adj, batch=None):
        h = F.dropout(F.relu(self.encoder(x)), self.dropout, self.training)
        p = self.dropout if self.training else 0.0
        for conv in self.convs:
            if isinstance(adj, fastpicard.Graph) and fusable_gcn(conv):
                h = spmm_update(adj, F.linear(h, conv.lin.weight), h, self.alpha,
                                bias=conv.bias, act="relu", dropout=p)[0]
            else:
                new = F.dropout(F.relu(conv(h, adj)), p, self.training)
                h = self.alpha * h + (1 - self.alpha) * new
        return self.decoder(h)


def build(model, backbone, fin, fout, depth, args):
    kw = CONV_KWARGS.get(backbone, {})
    h, a, d = args.hidden, args.alpha, args.dropout
    if model == "stacked":
        return Stacked(fin, h, fout, backbone, depth, a, d, dict(kw))
    if model == "itergnn":
        return IterGNN(fin, h, fout, conv=backbone, max_iter=depth, dropout=d, conv_kwargs=kw)
    if model == "pign":
        return PIGN(fin, h, fout, conv=backbone, alpha=a, max_iter=depth, dropout=d,
                    conv_kwargs=kw)
    return PIGN(fin, h, fout, conv=backbone, alpha=a, max_iter=2 * depth, dropout=d,
                conv_kwargs=kw, lipschitz=0.9, tol=1e-4, backward="implicit")


def num_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------- data
_DATA: dict = {}


def _adj(b: GraphBatch, backbone: str):
    """What the backbone's layers take: a fastpicard.Graph (fused GCN steps), the edge_index
    with one self loop per node (GAT, built once instead of per call) or as is (SAGE)."""
    if backbone == "gcn":
        return fastpicard.Graph.from_edge_index(b.edge_index, b.num_nodes, batch=b.batch,
                                                num_graphs=b.num_graphs)
    if backbone == "gat":
        return gc.with_self_loops(b.edge_index, b.num_nodes)
    return b.edge_index


def _dataset(job):
    """{split: [(GraphBatch, adjacency)]} (one chunk per split for the generated task,
    minibatches of graphs for LRGB); cached per worker."""
    key = (job["k"], job["backbone"], job.get("root"))
    if key not in _DATA:
        _DATA.clear()
        if job.get("root"):
            splits = {}
            for split in ("train", "val", "test"):
                graphs = pascalvoc_sp(job["root"], split)
                bs = job["batch_size"]
                splits[split] = [GraphBatch.collate(graphs[i:i + bs])
                                 for i in range(0, len(graphs), bs)]
        else:
            sizes = dict(zip(("train", "val", "test"), job["graphs"]))
            splits = {s: [long_range_graphs(job["k"], n, num_colors=job["colors"],
                                            seed=1000 * job["k"] + i)]
                      for i, (s, n) in enumerate(sizes.items())}
        _DATA[key] = {s: [(b, _adj(b, job["backbone"])) for b in chunks]
                      for s, chunks in splits.items()}
    return _DATA[key]


# ---------------------------------------------------------------- metrics and loss
def macro_f1(pred: torch.Tensor, true: torch.Tensor) -> float:
    """Macro F1 over the classes present in either (sklearn's ``average="macro"``)."""
    classes = torch.unique(torch.cat([pred, true]))
    scores = []
    for c in classes:
        tp = int(((pred == c) & (true == c)).sum())
        fp = int(((pred == c) & (true != c)).sum())
        fn = int(((pred != c) & (true == c)).sum())
        scores.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    return sum(scores) / len(scores) if scores else 0.0


def weighted_ce(logits, y, num_classes):
    """LRGB's class-weighted cross-entropy: weight (V - n_c) / V for the classes present."""
    counts = torch.bincount(y, minlength=num_classes).float()
    w = (y.numel() - counts) / y.numel() * (counts > 0)
    return F.cross_entropy(logits, y, weight=w)


# ---------------------------------------------------------------- one run
def run_one(job: dict) -> dict:
    data = _dataset(job)
    lrgb = bool(job.get("root"))
    fin = data["train"][0][0].x.shape[1]
    fout = 21 if lrgb else job["colors"]
    torch.manual_seed(job["seed"])
    args = job["args"]
    model = build(job["model"], job["backbone"], fin, fout, job["depth"], args)
    params = num_params(model)
    if params > BUDGET:
        raise ValueError(f"table1: {job['model']}/{job['backbone']} has {params} parameters, "
                         f"over the {BUDGET} budget")
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    sel = gc.Selection(job["patience"])
    elapsed, cpu, epochs = gc.timer(), gc.cpu_timer(), 0

    def evaluate(split):
        """(score, loss, mean iterations per graph) on a split."""
        model.eval()
        preds, trues, loss, iters = [], [], 0.0, []
        with torch.no_grad():
            for b, adj in data[split]:
                out = model(b.x, adj, b.batch)
                m = b.labelled
                preds.append(out[m].argmax(1))
                trues.append(b.y[m])
                loss += float(F.cross_entropy(out[m], b.y[m])) * int(m.sum())
                iters.append(_iterations(model))
        p, t = torch.cat(preds), torch.cat(trues)
        score = macro_f1(p, t) if lrgb else float((p == t).float().mean())
        return score, loss / max(t.numel(), 1), statistics.mean(iters)

    for epoch in range(job["epochs"]):
        model.train()
        for b, adj in data["train"]:
            out = model(b.x, adj, b.batch)
            m = b.labelled
            loss = (weighted_ce(out[m], b.y[m], fout) if lrgb
                    else F.cross_entropy(out[m], b.y[m]))
            opt.zero_grad()
            loss.backward()
            opt.step()
        epochs += 1
        val, val_loss, _ = evaluate("val")
        test, _, iters = evaluate("test")
        sel.update(epoch, val, val_loss, test, iterations=iters)
        if sel.stop(epoch):
            break
    seconds = elapsed()
    return {**{k: job[k] for k in ("model", "backbone", "k", "seed", "depth")},
            "params": params, "val": sel.val, "test": sel.test, "epoch": sel.epoch,
            "epochs_run": epochs, "seconds": seconds, "cpu_seconds": cpu(),
            "ms_per_epoch": 1e3 * seconds / epochs, **sel.extra,
            "metric": "macro_f1" if lrgb else "accuracy"}


def _iterations(model):
    if isinstance(model, PIGN) and model.last_stats is not None:
        return float(model.last_stats.iterations.float().mean())
    if isinstance(model, IterGNN) and model.last_iterations is not None:
        return float(model.last_iterations.float().mean())
    return float(len(model.convs))


# ---------------------------------------------------------------- command
def run(args):
    backbones = [b for b in args.backbones.split(",") if b]
    models = [m for m in args.models.split(",") if m]
    bad = [b for b in backbones if b not in BACKBONES] + [m for m in models if m not in MODELS]
    if bad:
        raise SystemExit(f"table1: unknown backbones/models {bad}")
    if args.quick:
        args.epochs, args.patience, args.seeds, args.graphs = 2, 2, 1, "16,8,8"
        if not args.root:
            args.ks = "2,4"
    graphs = tuple(int(v) for v in args.graphs.split(","))
    ks = [args.layers] if args.root else [int(k) for k in args.ks.split(",")]
    workers = args.workers if args.workers is not None else gc.default_workers()
    # read before Report() rewrites the folder's runs.json
    if args.report_only and not args.resume:
        raise SystemExit("table1: --report-only needs --resume")
    resume = gc.Resume(args.out, vars(args), SAME_RUNS, _key, args.report_only) \
        if args.resume else None
    report = Report("table1", args.out, args)
    # seed by seed: a command stopped early (and rerun with --resume) has complete seeds
    jobs = [dict(model=m, backbone=b, k=k, depth=k if args.root else 2 * k, seed=s,
                 epochs=args.epochs,
                 patience=args.patience, graphs=graphs, colors=args.colors, root=args.root,
                 batch_size=args.batch_size, args=args)
            for s in range(args.seeds) for k in ks for b in backbones for m in models]
    reused, jobs = resume.split(jobs) if resume else ([], jobs)
    runs = list(reused)
    if resume:
        resume.keep(report)
    for rec in gc.run_jobs(run_one, jobs, workers, args.threads, "table1"):
        report.add_run(rec)
        runs.append(rec)
    report.write_markdown(_markdown(report, runs, ks, backbones, models, args, len(reused)))
    report.finish()
    return report


# settings that change what a run computes: --resume reuses runs only where they agree
SAME_RUNS = ("hidden", "colors", "graphs", "epochs", "patience", "lr", "dropout", "alpha",
             "root", "layers", "batch_size", "quick")


def _key(r):
    return (r["model"], r["backbone"], r["k"], r["seed"], r["depth"])


def _markdown(report, runs, ks, backbones, models, args, reused=0):
    lrgb = bool(args.root)
    metric = "macro F1" if lrgb else "accuracy %"
    scale = 1.0 if lrgb else 100.0
    digits = 4 if lrgb else 1

    def cell(b, m, k):
        v = [r["test"] for r in runs if (r["backbone"], r["model"], r["k"]) == (b, m, k)]
        return gc.pm(v, scale, digits, seeds=args.seeds)

    out = []
    if lrgb:
        out += ["# Table 1: LRGB PascalVOC-SP (macro F1), ours beside the paper", "",
                "| backbone | model | paper | ours | params |", "|---|---|---|---|---|"]
        for b in backbones:
            for m in models:
                paper = PAPER.get((b, m))
                p = max((r["params"] for r in runs if (r["backbone"], r["model"]) == (b, m)),
                        default=0)
                out.append(f"| {b.upper()} | {MODELS[m]} | "
                           f"{'—' if paper is None else f'{paper:.4f}'} | "
                           f"{cell(b, m, ks[0])} | {p} |")
        return "\n".join(out) + "\n"
    out += ["# Table 1 stand-in: long-range task, test accuracy % vs range k", "",
            f"Generated task (`long_range_graphs`, {args.colors} colours: chance "
            f"{100 / args.colors:.0f} %), graphs train/val/test {args.graphs}, hidden "
            f"{args.hidden}, {args.seeds} seeds. The paper's Table 1 (LRGB PascalVOC-SP, "
            "macro F1) for reference in the last column.", "",
            "| backbone | model | " + " | ".join(f"k={k}" for k in ks) +
            " | params (largest k) | paper Table 1 (VOC F1) |",
            "|---|---|" + "---|" * len(ks) + "---|---|"]
    panels = {}
    for b in backbones:
        panel = {}
        for m in models:
            params = max((r["params"] for r in runs if (r["backbone"], r["model"]) == (b, m)),
                         default=0)
            paper = PAPER.get((b, m))
            out.append(f"| {b.upper()} | {MODELS[m]} | " +
                       " | ".join(cell(b, m, k) for k in ks) + f" | {params} | "
                       f"{'—' if paper is None else f'{paper:.4f}'} |")
            stats = [gc.summarize([r["test"] for r in runs
                                   if (r["backbone"], r["model"], r["k"]) == (b, m, k)])
                     for k in ks]
            panel[MODELS[m]] = (ks, [s["mean"] for s in stats], [s["std"] for s in stats])
        panels[b.upper()] = panel
    out += ["", "### Iterations used and time", "",
            "| backbone | model | " + " | ".join(f"k={k}: it / ms per epoch" for k in ks) + " |",
            "|---|---|" + "---|" * len(ks)]
    for b in backbones:
        for m in models:
            cells = []
            for k in ks:
                rs = [r for r in runs if (r["backbone"], r["model"], r["k"]) == (b, m, k)]
                cells.append("—" if not rs else
                             f"{statistics.mean(r['iterations'] for r in rs):.1f} / "
                             f"{statistics.mean(r['ms_per_epoch'] for r in rs):.0f}")
            out.append(f"| {b.upper()} | {MODELS[m]} | " + " | ".join(cells) + " |")
    gc.plot_lines(report.figure("accuracy_vs_k.png"), panels, "range k", metric,
                  "Long-range stand-in: accuracy vs range", logx=True)
    wall, cpu = (sum(r[key] for r in runs) / 60 for key in ("seconds", "cpu_seconds"))
    out += ["", f"{len(runs)} runs: {wall:.1f} min of run wall time on the shared machine, "
            f"{cpu:.1f} min of CPU time." + (
                f" {reused} of them were reused from an earlier invocation of the same command "
                "(`--resume`); the total time below is this invocation's." if reused else ""),
            "", "![accuracy vs k](accuracy_vs_k.png)", ""]
    return "\n".join(out) + "\n"
