"""spmm: the graph aggregation out[i] = reduce_k w_k h[src_k] (sum / mean / max) vs torch.

Per graph (Cora, PubMed through fastpicard.datasets, a large random graph; GCN-normalised
weights, features 64 wide) and reduction, forward (no grad) and forward+backward (grads of h):
    fused           fastpicard.ops.spmm on a prebuilt fastpicard.Graph
    torch_csr       torch.sparse.mm on the same CSR (sum; mean divides by the degree), cuSPARSE
                    on CUDA
    scatter_reduce  gather h[src]*w then Tensor.index_add_ / scatter_reduce_ (PyG's pure-torch
                    message passing)
    segment         torch_scatter.segment_csr of the same messages (when installed)
Prints medians and the speedup of fused over each peer; rows go to the CSV.
"""
from __future__ import annotations

import torch

from ..ops import spmm
from .data import add_data_argument
from .graph import bench_graphs
from .timing import append_csv, interleaved_medians, print_table

WIDTH = 64


def add_arguments(p):
    p.add_argument("--graphs", default="Cora,PubMed,large",
                   help="comma-separated: Cora, CiteSeer, PubMed, large")
    add_data_argument(p)
    p.add_argument("--reduces", default="sum,mean,max")
    p.add_argument("--large-nodes", type=float, default=1e6)
    p.add_argument("--large-edges", type=float, default=1e7)
    p.add_argument("--modes", default="fwd,fwd+bwd", help="fwd, fwd+bwd")
    p.add_argument("--peers", default="torch_csr,scatter_reduce,segment")
    p.add_argument("--reps", type=int, default=15, help="repetitions (large graph: a third)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")


def _peers(graph, h, reduce, wanted):
    """Callables computing the aggregation of h over graph, one per available peer."""
    n = graph.num_nodes
    rowptr, col, w = graph.rowptr.long(), graph.col.long(), graph.weight
    rows = torch.repeat_interleave(torch.arange(n, device=h.device), rowptr.diff())
    deg = rowptr.diff().clamp_min(1).to(h.dtype).unsqueeze(1)
    cases = {}
    if "torch_csr" in wanted and reduce != "max":
        a = graph.adjacency()
        cases["torch_csr"] = ((lambda: torch.sparse.mm(a, h)) if reduce == "sum"
                              else (lambda: torch.sparse.mm(a, h) / deg))
    if "scatter_reduce" in wanted:
        def scatter():
            msg = h[col] * w[:, None]
            if reduce == "max":
                idx = rows[:, None].expand_as(msg)
                return h.new_zeros(n, h.shape[1]).scatter_reduce_(0, idx, msg, "amax",
                                                                  include_self=False)
            out = h.new_zeros(n, h.shape[1]).index_add_(0, rows, msg)
            return out if reduce == "sum" else out / deg
        cases["scatter_reduce"] = scatter
    if "segment" in wanted:
        try:
            import torch_scatter
        except ImportError:
            torch_scatter = None
        if torch_scatter is not None:
            cases["segment"] = lambda: torch_scatter.segment_csr(h[col] * w[:, None], rowptr,
                                                                 reduce=reduce)
    return cases


def run(args):
    wanted = set(args.peers.split(","))
    device = torch.device(args.device)
    rows = []
    for _, _, n, label, reps, graph in bench_graphs(args):
        gen = torch.Generator().manual_seed(0)
        h = torch.randn(n, WIDTH, generator=gen).to(device)
        gy = torch.randn(n, WIDTH, generator=gen).to(device)
        for reduce in args.reduces.split(","):
            steps = {"fused": lambda: spmm(graph, h, reduce), **_peers(graph, h, reduce, wanted)}
            for mode in args.modes.split(","):
                if mode == "fwd":
                    with torch.no_grad():
                        t = interleaved_medians(steps, device, reps=reps, warmup=2,
                                                min_time=2e-2)
                else:
                    h.requires_grad_(True)

                    def with_backward(step):
                        def f():
                            torch.autograd.backward(step(), gy)
                            h.grad = None
                        return f
                    t = interleaved_medians({k: with_backward(v) for k, v in steps.items()},
                                            device, reps=reps, warmup=2, min_time=2e-2)
                    h.requires_grad_(False)
                for case, sec in t.items():
                    rows.append({"bench": "spmm", "device": str(device), "graph": label,
                                 "nodes": n, "edges": graph.num_edges, "reduce": reduce,
                                 "mode": mode, "case": case, "ms": sec * 1e3,
                                 "fused_speedup": sec / t["fused"]})
        print(f"{label}: {n} nodes, {graph.num_edges} entries (with self loops)", flush=True)
    print(f"device={device} threads={torch.get_num_threads()}")
    print_table(rows, ["graph", "reduce", "mode", "case", "ms", "fused_speedup"])
    append_csv(args.csv, rows)
