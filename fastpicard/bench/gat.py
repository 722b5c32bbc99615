"""gat: fastpicard.nn.GATLayer vs PyG's GATConv with the same state_dict (same outputs).

Per graph (Cora, PubMed through fastpicard.datasets, a large random graph; self loops added
once, ``add_self_loops=False``) and layer shape (PIGN's iterated layer: 8 heads x 32 averaged;
GAT's first layer: 8 heads x 8 concatenated), forward (no grad) and forward+backward
(grads of x and the parameters), in training mode with attention dropout 0.6 (the same RNG
state before each call of either layer):
    fused    GATLayer: scores and softmax on [E, heads], the neighbour sum on fastpicard's spmm
    pyg      torch_geometric.nn.GATConv: one [E, heads, C] message tensor, gathered and scattered
Prints medians and the speedup of fused over pyg; rows go to the CSV.
"""
from __future__ import annotations

import torch

from ..nn.gat import GATLayer, with_self_loops
from .data import add_data_argument
from .graph import bench_graphs
from .timing import append_csv, interleaved_medians, print_table

SHAPES = {"8x32-mean": (8, 32, False), "8x8-concat": (8, 8, True)}


def add_arguments(p):
    p.add_argument("--graphs", default="Cora,PubMed,large",
                   help="comma-separated: Cora, CiteSeer, PubMed, large")
    add_data_argument(p)
    p.add_argument("--large-nodes", type=float, default=2e5)
    p.add_argument("--large-edges", type=float, default=2e6)
    p.add_argument("--shapes", default=",".join(SHAPES), help=f"from {','.join(SHAPES)}")
    p.add_argument("--modes", default="fwd,fwd+bwd", help="fwd, fwd+bwd")
    p.add_argument("--reps", type=int, default=15, help="repetitions (large graph: a third)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")


def run(args):
    try:
        from torch_geometric.nn import GATConv
    except ImportError as e:
        raise SystemExit("bench gat: needs torch_geometric (the peer)") from e
    device = torch.device(args.device)
    rows = []
    for _, edge_index, n, label, reps, _ in bench_graphs(args, gcn=False):
        ei = with_self_loops(edge_index, n).to(device)
        for shape in args.shapes.split(","):
            heads, c, concat = SHAPES[shape]
            fin = heads * c if concat else c
            kw = dict(heads=heads, concat=concat, dropout=0.6, add_self_loops=False)
            ours = GATLayer(fin, c, **kw).to(device)
            peer = GATConv(fin, c, **kw).to(device)
            peer.load_state_dict(ours.state_dict())
            gen = torch.Generator().manual_seed(0)
            x = torch.randn(n, fin, generator=gen).to(device)
            gy = torch.randn(n, heads * c if concat else c, generator=gen).to(device)
            layers = {"fused": ours, "pyg": peer}
            for mode in args.modes.split(","):
                x.requires_grad_(mode != "fwd")

                def step(layer, backward=mode != "fwd"):
                    def f():
                        torch.manual_seed(1)
                        out = layer(x, ei)
                        if backward:
                            torch.autograd.backward(out, gy)
                            x.grad = None
                            layer.zero_grad(set_to_none=True)
                    return f
                with torch.set_grad_enabled(mode != "fwd"):
                    t = interleaved_medians({k: step(v) for k, v in layers.items()}, device,
                                            reps=reps, warmup=2, min_time=2e-2)
                for case, sec in t.items():
                    rows.append({"bench": "gat", "device": str(device), "graph": label,
                                 "nodes": n, "edges": int(ei.shape[1]), "shape": shape,
                                 "mode": mode, "case": case, "ms": sec * 1e3,
                                 "fused_speedup": sec / t["fused"]})
        print(f"{label}: {n} nodes, {ei.shape[1]} edges (with self loops)", flush=True)
    print(f"device={device} threads={torch.get_num_threads()}")
    print_table(rows, ["graph", "shape", "mode", "case", "ms", "fused_speedup"])
    append_csv(args.csv, rows)
