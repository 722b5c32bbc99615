"""models: PIGN / IterativeViT / ANIE vs the same architectures written as plain Python loops.

* ``speed``: PIGN (GCN) training epoch and inference forward on Cora and PubMed vs the same
  architecture in plain PyG (GCNConv in a Python loop, as in the authors' iterativeGCN).
* ``accuracy``: test accuracy over seeds (200 epochs, public split) of fastpicard's PIGN and the
  plain PyG loop with the authors' GCN and GAT settings.
* ``tol``: PIGN (GCN) per step with a tolerance (the fused graph solve, loop in C++) vs the
  fixed schedule and vs the previous tolerance path (the generic solver around the fused step
  with alpha=0: one more pass over N x F and a second residual per step).
* ``vit``: forward+backward of IterativeViT (FieldViT backbone) and ANIE vs a plain loop over
  the same blocks.
"""
from __future__ import annotations

import statistics
import time
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from ..datasets import planetoid
from ..nn import ANIE, PIGN, FieldViT, IterativeViT
from .data import add_data_argument, load_planetoid
from .timing import append_csv, interleaved_medians, interleaved_samples, print_table

PARTS = ("speed", "accuracy", "tol", "vit")
# the authors' settings (issue 5): GCN and GAT on Cora, 2 iterations, 200 epochs
ACC_SETTINGS = {
    "gcn": dict(alpha=0.5, lr=0.01, weight_decay=5e-4, hidden=32, dropout=0.5, iters=2),
    "gat": dict(alpha=0.55, lr=0.0145, weight_decay=5e-4, hidden=32, dropout=0.6, iters=2),
}


def add_arguments(p):
    p.add_argument("--parts", default="speed,accuracy,tol,vit", help=f"comma-separated: {PARTS}")
    p.add_argument("--datasets", default="Cora,PubMed")
    p.add_argument("--hidden", default="32,64")
    p.add_argument("--iterations", type=int, default=8)
    add_data_argument(p)
    p.add_argument("--seeds", type=int, default=10, help="seeds for the accuracy runs")
    p.add_argument("--convs", default="gcn,gat", help="convs for the accuracy runs")
    p.add_argument("--reps", type=int, default=15)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--clock", choices=("wall", "process"), default="wall",
                   help="tol part: wall-clock or process CPU time (CPU only; steadier than "
                        "wall-clock on a shared machine)")


class PlainPIGN(nn.Module):
    """The authors' iterative GCN/GAT written out: a Python loop over one PyG conv."""

    def __init__(self, fin, hidden, fout, conv, iters, alpha, dropout):
        super().__init__()
        self.encoder, self.conv = nn.Linear(fin, hidden), conv
        self.decoder = nn.Linear(hidden, fout)
        self.iters, self.alpha, self.dropout = iters, alpha, dropout

    def forward(self, x, edge_index):
        x = F.dropout(F.relu(self.encoder(x)), self.dropout, self.training)
        for _ in range(self.iters):
            new = F.dropout(F.relu(self.conv(x, edge_index)), self.dropout, self.training)
            x = self.alpha * x + (1 - self.alpha) * new
        return self.decoder(x)


def _pyg_conv(kind, hidden, dropout):
    from torch_geometric.nn import GATConv, GCNConv

    if kind == "gcn":
        return GCNConv(hidden, hidden)
    return GATConv(hidden, hidden, heads=8, concat=False, dropout=dropout)


def _pair(kind, fin, hidden, fout, iters, alpha, dropout, device):
    """fastpicard's PIGN and the plain loop, with identical weights."""
    ours = PIGN(fin, hidden, fout, conv=kind, max_iter=iters, alpha=alpha,
                dropout=dropout).to(device)
    plain = PlainPIGN(fin, hidden, fout, _pyg_conv(kind, hidden, dropout), iters, alpha,
                      dropout).to(device)
    plain.load_state_dict(ours.state_dict())
    return ours, plain


def _epoch_fn(model, data, opt):
    from ..train import train_step

    return lambda: train_step(model, data, opt)


def _forward_fn(model, data):
    def run():
        model.eval()
        with torch.no_grad():
            model(data.x, data.edge_index)
    return run


def _graphs_and_widths(args, device):
    """(data on ``device``, hidden width) for every --datasets graph found and --hidden width."""
    for name in args.datasets.split(","):
        data = load_planetoid(name, args.data, normalize=True)
        if data is None:
            continue
        data = data.to(device)
        for hidden in (int(h) for h in args.hidden.split(",")):
            yield data, hidden


def run_speed(args, device):
    rows = []
    for data, hidden in _graphs_and_widths(args, device):
        torch.manual_seed(0)
        ours, plain = _pair("gcn", data.num_features, hidden, data.num_classes,
                            args.iterations, 0.5, 0.5, device)
        cases = {}
        for label, m in (("fastpicard", ours), ("pyg_loop", plain)):
            opt = torch.optim.Adam(m.parameters(), lr=0.01, weight_decay=5e-4)
            cases[f"{label}/epoch"] = _epoch_fn(m, data, opt)
            cases[f"{label}/forward"] = _forward_fn(m, data)
        t = interleaved_medians(cases, device, reps=args.reps)
        for what in ("epoch", "forward"):
            ref = t[f"pyg_loop/{what}"]
            for label in ("fastpicard", "pyg_loop"):
                sec = t[f"{label}/{what}"]
                rows.append({"bench": "models", "part": "speed", "dataset": data.name,
                             "hidden": hidden, "iters": args.iterations, "what": what,
                             "case": label, "ms": sec * 1e3, "x_pyg_loop": ref / sec})
    print_table(rows, ["dataset", "hidden", "iters", "what", "case", "ms", "x_pyg_loop"])
    return rows


def _train_eval(model, data, lr, wd, epochs=200):
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=wd)
    step = _epoch_fn(model, data, opt)
    for _ in range(epochs):
        step()
    model.eval()
    with torch.no_grad():
        pred = model(data.x, data.edge_index).argmax(1)
    return float((pred[data.test_mask] == data.y[data.test_mask]).float().mean())


def run_accuracy(args, device):
    data = planetoid("Cora", normalize=True).to(device)
    rows = []
    for kind in args.convs.split(","):
        s = ACC_SETTINGS[kind]
        accs = {"fastpicard": [], "pyg_loop": []}
        for seed in range(args.seeds):
            for label in accs:
                torch.manual_seed(seed)  # same init and dropout stream for both
                ours, plain = _pair(kind, data.num_features, s["hidden"], data.num_classes,
                                    s["iters"], s["alpha"], s["dropout"], device)
                model = ours if label == "fastpicard" else plain
                accs[label].append(_train_eval(model, data, s["lr"], s["weight_decay"]))
        for label, a in accs.items():
            rows.append({"bench": "models", "part": "accuracy", "dataset": "Cora", "case": label,
                         "conv": kind, "seeds": len(a), "acc_mean": 100 * statistics.mean(a),
                         "acc_std": 100 * (statistics.stdev(a) if len(a) > 1 else 0.0)})
    print_table(rows, ["dataset", "conv", "case", "seeds", "acc_mean", "acc_std"])
    return rows


class GenericTolPIGN(PIGN):
    """PIGN's GCN path with a tolerance as it was: ``fastpicard.picard`` around the fused step
    (which smooths itself) with alpha=0, so the solver's own update adds a pass per step."""

    def forward(self, x, edge_index, batch=None):
        from ..ops import spmm_update
        from ..solver import picard

        h = F.dropout(F.relu(self.encoder(x)), self.dropout, self.training)
        graph = self._graph(edge_index, x.shape[0], h.dtype)
        w, b = self.conv.lin.weight, self.conv.bias
        p = self.dropout if self.training else 0.0
        h, self.last_stats = picard(
            lambda z: spmm_update(graph, F.linear(z, w), z, self.alpha, bias=b, act=self.act,
                                  dropout=p)[0],
            h, alpha=0.0, tol=self.tol, max_iter=self.max_iter, **self.solver_opts)
        return self.decoder(h)


def run_tol(args, device):
    """Per step: every variant runs exactly --iterations steps (tol 1e-30 is never met) and
    returns the same iterate: a contractive layer (conv weight of spectral norm 0.5, no
    dropout), so the last iterate is the lowest-residual one that a tolerance solve returns
    ("returned": the step whose iterate came back in the last call)."""
    rows = []
    for data, hidden in _graphs_and_widths(args, device):
        models = {}
        for label, cls, tol in (("fixed", PIGN, None), ("tol_cpp_loop", PIGN, 1e-30),
                                ("tol_generic", GenericTolPIGN, 1e-30)):
            torch.manual_seed(0)  # identical weights
            m = cls(data.num_features, hidden, data.num_classes, conv="gcn",
                    max_iter=args.iterations, tol=tol, dropout=0.0).to(device)
            with torch.no_grad():  # spectral norm 0.5: a contraction
                w = m.conv.lin.weight
                w.mul_(0.5 / torch.linalg.matrix_norm(w, 2))
            models[label] = m
        cases = {}
        for label, m in models.items():
            # lr 0: an epoch's full work, but the weights (and the contraction) stay put
            opt = torch.optim.Adam(m.parameters(), lr=0.0)
            cases[f"{label}/epoch"] = _epoch_fn(m, data, opt)
            cases[f"{label}/forward"] = _forward_fn(m, data)
        clock = time.process_time if args.clock == "process" else time.perf_counter
        with warnings.catch_warnings():  # tol 1e-30 is out of reach on purpose
            warnings.filterwarnings("ignore", message="picard: tol=")
            t = {k: statistics.median(v) for k, v in interleaved_samples(
                cases, device, reps=args.reps, clock=clock).items()}
        for what in ("epoch", "forward"):
            ref = t[f"fixed/{what}"]
            for label, m in models.items():
                steps = m.last_stats.steps
                assert steps == args.iterations, (label, steps)
                trace = m.last_stats.trace[:, 0]
                returned = steps if m.tol is None else int(trace.argmin()) + 1
                sec = t[f"{label}/{what}"]
                rows.append({"bench": "models", "part": "tol", "dataset": data.name,
                             "hidden": hidden, "iters": steps, "returned": returned,
                             "what": what, "case": label, "clock": args.clock, "ms": sec * 1e3,
                             "ms_per_step": sec * 1e3 / steps, "x_fixed": ref / sec})
    print_table(rows, ["dataset", "hidden", "iters", "returned", "what", "case", "ms",
                       "ms_per_step", "x_fixed"])
    return rows


def run_vit(args, device):
    rows = []
    torch.manual_seed(0)
    vit = FieldViT(2, 1, 32, 4, dim=64, depth=4, heads=4).to(device)
    it = IterativeViT(vit, max_iter=3, alpha=0.5)
    x = torch.randn(16, 2, 32, 32, device=device)

    def plain_vit():
        t = vit.embed(x)
        for _ in range(3):
            z = t
            for blk in vit.blocks:
                z = blk(z)
            t = 0.5 * t + 0.5 * z
        vit.decode(t).square().mean().backward()

    anie = ANIE(1, width=64, heads=4, depth=2, patch_size=4).to(device)
    x0 = torch.randn(8, 1, 32, 32, device=device)
    tg = torch.linspace(0, 1, 8, device=device)

    def plain_anie():
        f = x0.unsqueeze(1).expand(8, 8, 1, 32, 32)
        y = f
        for _ in range(3):
            y = 0.5 * y + 0.5 * (f + anie.operator(y, tg))
        y.square().mean().backward()

    cases = {
        "IterativeViT/fastpicard": lambda: it(x).square().mean().backward(),
        "IterativeViT/python_loop": plain_vit,
        "ANIE/fastpicard": lambda: anie(x0, tg).square().mean().backward(),
        "ANIE/python_loop": plain_anie,
    }
    t = interleaved_medians(cases, device, reps=args.reps)
    for name, sec in t.items():
        model, label = name.split("/")
        ref = t[f"{model}/python_loop"]
        rows.append({"bench": "models", "part": "vit", "case": label, "model": model,
                     "what": "fwd+bwd", "ms": sec * 1e3, "x_python_loop": ref / sec})
    print_table(rows, ["model", "what", "case", "ms", "x_python_loop"])
    return rows


def run(args):
    device = torch.device(args.device)
    if args.clock == "process" and device.type != "cpu":
        raise SystemExit("models: --clock process measures CPU work: use it with --device cpu")
    parts = args.parts.split(",")
    bad = [p for p in parts if p not in PARTS]
    if bad:
        raise SystemExit(f"models: unknown part(s) {bad}; choose from {PARTS}")
    rows = []
    for part in parts:
        print(f"== {part}")
        rows += {"speed": run_speed, "accuracy": run_accuracy, "tol": run_tol,
                 "vit": run_vit}[part](args, device)
    append_csv(args.csv, rows)
