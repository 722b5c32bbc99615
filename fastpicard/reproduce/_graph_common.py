"""Shared by the graph tables (table5, table1): fast input layers, the baselines, selection on
validation, a small worker pool and the plots.

Speed notes (all measured on the 2-core development box, see docs/RESULTS.md):
* Planetoid features are 99 % zeros when clean: :class:`InputLinear` multiplies a sparse CSR
  input with ``torch.sparse.mm`` and runs its weight gradient through a cached transposed CSR
  (20-40x faster than the dense GEMM, which is the largest cost of every model here).
* With drop-in noise the features are dense; torch's CPU dropout on them costs ~10x the GEMM
  (its RNG), so :func:`input_dropout` uses fastpicard's fused ``spmm_update`` on the identity
  graph instead (counter-based RNG inside the kernel, one pass).
* An evaluation forward and the next training forward of a model without input dropout see the
  same input and weights: :class:`InputLinear` reuses the evaluation's product (one GEMM less).
"""
from __future__ import annotations

import json
import math
import multiprocessing as mp
import os
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import fastpicard
from fastpicard.nn.gat import GATLayer, with_self_loops  # noqa: F401 (table1, table5)
from fastpicard.ops import spmm, spmm_update

from .report import mean_std, progress


# ---------------------------------------------------------------- input features
_TRANSPOSES: dict = {}


def _transpose(x: torch.Tensor) -> torch.Tensor:
    """xᵀ as a CSR tensor. The structure (and the permutation of the values) is computed once
    per sparsity pattern; a pattern is identified by its index tensors, which the cache keeps
    alive (so their addresses cannot be reused by another tensor)."""
    crow, col = x.crow_indices(), x.col_indices()
    key = (crow.data_ptr(), col.data_ptr(), col.numel(), tuple(x.shape))
    hit = _TRANSPOSES.get(key)
    if hit is None:
        if len(_TRANSPOSES) >= 16:
            _TRANSPOSES.clear()
        ids = torch.sparse_csr_tensor(crow, col, torch.arange(col.numel(), dtype=torch.float64),
                                      x.shape, check_invariants=False)
        t = ids.to_sparse_coo().t().coalesce().to_sparse_csr()
        hit = (crow, col, t.crow_indices(), t.col_indices(), t.values().long())
        _TRANSPOSES[key] = hit
    _, _, t_crow, t_col, perm = hit
    return torch.sparse_csr_tensor(t_crow, t_col, x.values()[perm], (x.shape[1], x.shape[0]),
                                   check_invariants=False)


class _InputLinearFn(torch.autograd.Function):
    """out = x·Wᵀ (+ b) with x a constant (dense or sparse CSR); ``out`` may be given (the
    product was already computed for these weights). Gradients for W and b only."""

    @staticmethod
    def forward(ctx, x, weight, bias, out):
        ctx.x = x
        ctx.has_bias = bias is not None
        if out is not None:
            return out.clone()  # a fresh tensor: the cached one stays untouched
        out = (torch.sparse.mm(x, weight.t()) if x.layout == torch.sparse_csr
               else F.linear(x, weight))
        return out + bias if bias is not None else out

    @staticmethod
    def backward(ctx, grad):
        x = ctx.x
        gw = gb = None
        if ctx.needs_input_grad[1]:
            gw = (torch.sparse.mm(_transpose(x), grad).t() if x.layout == torch.sparse_csr
                  else grad.t() @ x)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            gb = grad.sum(0)
        return None, gw, gb, None


class InputLinear(nn.Module):
    """``nn.Linear`` for constant input features (the first layer of a model): dense or sparse
    CSR ``x``, optionally with :func:`input_dropout` before the product (``dropout``); an
    evaluation forward's product is reused by the next forward on the same input with
    unchanged weights (the training forward when there is no input dropout)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 dropout: float = 0.0):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        lin = nn.Linear(in_features, out_features, bias=bias)
        self.weight, self.bias = lin.weight, lin.bias
        self.dropout = dropout
        self._cache = None

    @classmethod
    def from_linear(cls, lin: nn.Module, dropout: float = 0.0) -> "InputLinear":
        """Takes over the parameters of an existing linear layer (same initialisation)."""
        new = cls(lin.in_features, lin.out_features, bias=lin.bias is not None, dropout=dropout)
        new.weight, new.bias = lin.weight, lin.bias
        return new

    def _key(self, x):
        vs = (self.weight._version, -1 if self.bias is None else self.bias._version)
        return (id(x), x._version if x.layout == torch.strided else 0) + vs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = input_dropout(x, self.dropout, self.training)
        key, cache = self._key(x), self._cache
        reuse = cache[1] if cache is not None and cache[0] == key and cache[2] is x else None
        out = _InputLinearFn.apply(x, self.weight, self.bias, reuse)
        self._cache = (key, out.detach(), x) if not torch.is_grad_enabled() else None
        return out


def sparse_features(x: torch.Tensor) -> torch.Tensor:
    """x as a sparse CSR tensor (torch's one-time "beta" warning silenced)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Sparse CSR tensor support is in beta")
        return x.to_sparse_csr()


_IDENTITY: dict = {}


def input_dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Dropout of constant input features: on the stored values of a sparse CSR tensor; for a
    dense tensor, fastpicard's fused ``spmm_update`` on the identity graph (one pass, the
    kernel's counter-based RNG)."""
    if not training or p == 0.0:
        return x
    if x.layout == torch.sparse_csr:
        return torch.sparse_csr_tensor(x.crow_indices(), x.col_indices(),
                                       F.dropout(x.values(), p, True), x.shape,
                                       check_invariants=False)
    n = x.shape[0]
    eye = _IDENTITY.get((n, x.device))
    if eye is None:
        eye = fastpicard.Graph.from_edge_index(
            torch.empty(2, 0, dtype=torch.long, device=x.device), n, norm="sum")
        _IDENTITY.clear()
        _IDENTITY[(n, x.device)] = eye
    return spmm_update(eye, x, x, 0.0, act="identity", dropout=p)[0]


# ---------------------------------------------------------------- baselines
def glorot_(w: torch.Tensor) -> torch.Tensor:
    return nn.init.xavier_uniform_(w)


class GCN2(nn.Module):
    """The 2-layer GCN of Kipf & Welling: dropout, Â·(x W₁) + b₁, relu, dropout, Â·(h W₂) + b₂;
    the aggregations on fastpicard's fused kernels (``spmm_update`` with bias, relu and dropout;
    ``spmm``), the input product through :class:`InputLinear`."""

    uses_graph = True

    def __init__(self, fin: int, hidden: int, fout: int, dropout: float = 0.5):
        super().__init__()
        self.lin1 = InputLinear(fin, hidden, bias=False)
        self.lin2 = nn.Linear(hidden, fout, bias=False)
        glorot_(self.lin1.weight)
        glorot_(self.lin2.weight)
        self.b1, self.b2 = nn.Parameter(torch.zeros(hidden)), nn.Parameter(torch.zeros(fout))
        self.dropout = dropout

    def forward(self, x, graph):
        h = self.lin1(input_dropout(x, self.dropout, self.training))
        p = self.dropout if self.training else 0.0
        h = spmm_update(graph, h, h, 0.0, bias=self.b1, act="relu", dropout=p)[0]
        return spmm(graph, self.lin2(h)) + self.b2


class GAT2(nn.Module):
    """The 2-layer GAT of Veličković et al.: dropout, GAT (``heads`` x ``hidden``, concat), ELU,
    dropout, GAT (1 head) — :class:`fastpicard.nn.gat.GATLayer` (PyG ``GATConv``'s maths,
    parameters and draws, aggregated on fastpicard's spmm) with attention dropout; the first
    layer's projection runs through :class:`InputLinear` (its ``lin``)."""

    uses_graph = False

    def __init__(self, fin: int, hidden: int, fout: int, heads: int = 8, dropout: float = 0.6):
        super().__init__()
        kw = dict(dropout=dropout, add_self_loops=False)  # forward gets them ready-made
        # built as GATConv(heads*hidden, ...) was, then its lin swapped: the same random draws
        self.conv1 = GATLayer(heads * hidden, hidden, heads=heads, **kw)
        self.conv1.lin = InputLinear(fin, heads * hidden, bias=False)
        self.conv1.in_channels = fin
        glorot_(self.conv1.lin.weight)
        self.conv2 = GATLayer(heads * hidden, fout, heads=1, concat=False, **kw)
        self.dropout = dropout

    def forward(self, x, edge_index):
        """``edge_index`` with one self loop per node (:func:`with_self_loops`)."""
        h = F.elu(self.conv1(input_dropout(x, self.dropout, self.training), edge_index))
        return self.conv2(F.dropout(h, self.dropout, self.training), edge_index)


def fast_input(model: nn.Module, dropout: float = 0.0) -> nn.Module:
    """Swaps a PIGN/IterGNN encoder for an :class:`InputLinear` with the same parameters
    (and input dropout ``dropout``, 0 as in the authors' models)."""
    model.encoder = InputLinear.from_linear(model.encoder, dropout)
    return model


# ---------------------------------------------------------------- selection on validation
class Selection:
    """Keeps the epoch with the best validation score (ties: lower validation loss) and its
    test score; ``stop()`` once ``patience`` epochs brought no improvement."""

    def __init__(self, patience: int):
        self.patience = patience
        self.best = (-math.inf, math.inf)
        self.epoch, self.test, self.extra = -1, math.nan, {}

    def update(self, epoch: int, val: float, val_loss: float, test: float, **extra) -> None:
        if (val, -val_loss) > (self.best[0], -self.best[1]):
            self.best, self.epoch, self.test, self.extra = (val, val_loss), epoch, test, extra

    def stop(self, epoch: int) -> bool:
        return epoch - self.epoch >= self.patience

    @property
    def val(self) -> float:
        return self.best[0]


# ---------------------------------------------------------------- running many jobs
def add_run_arguments(p, out: str) -> None:
    """The options every graph table takes: workers, threads, --quick, --resume, --out."""
    p.add_argument("--workers", type=int, default=None,
                   help="worker processes (default: one per core, at most 4)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads per worker (default: 1 with several workers)")
    p.add_argument("--quick", action="store_true", help="tiny run for tests (seconds)")
    p.add_argument("--resume", action="store_true",
                   help="reuse the runs already in --out/runs.json (an interrupted command)")
    p.add_argument("--report-only", action="store_true",
                   help="with --resume: train nothing, write the tables from the runs there "
                        "(a cell with fewer seeds says so)")
    p.add_argument("--out", default=out)


def _init_worker(threads: int) -> None:
    torch.set_num_threads(threads)


def run_jobs(fn, jobs: list, workers: int, threads: int | None, desc: str):
    """Yields ``fn(job)`` for every job (in completion order), with a progress bar; ``workers``
    > 1 runs them in that many spawned processes with ``threads`` torch threads each."""
    if not jobs:  # no pool to spawn
        return
    bar = progress(total=len(jobs), desc=desc, dynamic_ncols=True)
    if workers <= 1:
        if threads:
            torch.set_num_threads(threads)
        for job in jobs:
            out = fn(job)
            if bar is not None:
                bar.update()
            yield out
    else:
        ctx = mp.get_context("spawn")
        with ctx.Pool(workers, initializer=_init_worker, initargs=(threads or 1,)) as pool:
            for out in pool.imap_unordered(fn, jobs):
                if bar is not None:
                    bar.update()
                yield out
    if bar is not None:
        bar.close()


class Resume:
    """Runs an earlier invocation recorded in ``out/runs.json`` (``--resume``): a job whose key
    is there is not run again, its record is reused; with ``only`` (``--report-only``) the
    missing jobs are not run either. Refuses records made with other values of the settings
    named in ``same`` (they would not be the same runs)."""

    def __init__(self, out, settings: dict, same: tuple, key, only: bool = False):
        self.key, self.done, self.only, self.records = key, {}, only, []
        path = Path(out) / "runs.json"
        if not path.exists():
            return
        old = json.loads(path.read_text())
        before = old.get("settings", {})
        diff = [f"{k}={before.get(k)!r}" for k in same if before.get(k) != settings.get(k)]
        if diff:
            raise SystemExit(f"--resume: {path} was made with other settings: {', '.join(diff)}")
        self.records = [rec for rec in old.get("runs", [])
                        if "seed" in rec]  # training runs only (timings are measured again)
        self.done = {key(rec): rec for rec in self.records}

    def keep(self, report) -> None:
        """Puts every earlier training run into the report's runs.json, also those this
        invocation does not ask for: nothing computed is lost."""
        if self.records:
            report.runs.extend(self.records[:-1])
            report.add_run(self.records[-1])  # one write for them all

    def split(self, jobs: list) -> tuple[list, list]:
        """(records reused, jobs still to run)."""
        reused = [self.done[self.key(j)] for j in jobs if self.key(j) in self.done]
        return reused, [] if self.only else [j for j in jobs if self.key(j) not in self.done]


def default_workers() -> int:
    """One single-threaded worker per core, at most 4: these models are many small ops, which
    two processes run faster than one process with two threads."""
    return max(1, min(4, os.cpu_count() or 1))


# ---------------------------------------------------------------- output helpers
def summarize(values, scale: float = 100.0) -> dict:
    m, s = mean_std(values)
    return {"mean": m * scale, "std": s * scale, "n": len(values)}


def pm(values, scale: float = 100.0, digits: int = 1, seeds: int | None = None) -> str:
    """mean ± std; with ``seeds``, a cell with another number of values says how many."""
    if not values:
        return "—"
    m, s = mean_std(values)
    short = "" if seeds is None or len(values) == seeds else f" (n={len(values)})"
    return f"{m * scale:.{digits}f} ± {s * scale:.{digits}f}{short}"


def timer():
    t0 = time.perf_counter()
    return lambda: time.perf_counter() - t0


def cpu_timer():
    """CPU seconds of this process (all its threads) since the call: on a shared machine the
    wall time says little, this says how much work a run was."""
    t0 = time.process_time()
    return lambda: time.process_time() - t0


def plot_lines(path, panels: dict, xlabel: str, ylabel: str, title: str, logx: bool = False):
    """One subplot per panel; ``panels[name] = {line: (xs, means, stds)}``. PNG at ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.0), squeeze=False)
    for ax, (name, lines) in zip(axes[0], panels.items()):
        for label, (xs, ms, ss) in lines.items():
            ax.errorbar(xs, ms, yerr=ss, marker="o", ms=3, capsize=2, label=label)
        ax.set_title(name)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        if logx:
            ax.set_xscale("log", base=2)
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
