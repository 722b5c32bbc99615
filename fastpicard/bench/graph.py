"""graph: one PIGN step (hidden 64, GEMM included) with the fused spmm_update vs PyG and torch.

Per graph (Cora, PubMed through fastpicard.datasets, a large random graph), one step
``x_new = a*x + (1-a)*relu(Â·(x·W) + b)`` with its residual ``‖x_new - x‖``:
    fused       fastpicard.ops.spmm_update on a prebuilt fastpicard.Graph
    pyg         (a) PyG GCNConv on edge_index (normalises every call) + relu + smoothing + norm
    pyg_cached  (b) PyG GCNConv(cached=True) on a torch.sparse_csr adjacency + the same ops
    torch_csr   (c) torch.sparse.mm on a precomputed normalised CSR + the same ops
    scatter     (d) torch_scatter.scatter_add of the gathered messages (PyG's MessagePassing
                pattern), when torch_scatter is installed
    segment     (d') torch_scatter.segment_csr of the same messages in CSR order (its fastest
                sum reduction: no atomics, rows contiguous)
timed forward (no grad) and forward+backward (grads of x, W, b). Prints medians and the
speedup of fused over each peer; rows go to the CSV.
"""
from __future__ import annotations

import os

import torch

from ..graph import Graph
from ..ops import spmm_update
from .data import add_data_argument, load_planetoid
from .timing import append_csv, interleaved_medians, print_table

HIDDEN = 64
ALPHA = 0.5


def add_arguments(p):
    p.add_argument("--graphs", default="Cora,PubMed,large",
                   help="comma-separated: Cora, CiteSeer, PubMed, large")
    add_data_argument(p)
    p.add_argument("--large-nodes", type=float, default=1e6)
    p.add_argument("--large-edges", type=float, default=1e7)
    p.add_argument("--modes", default="fwd,fwd+bwd", help="fwd, fwd+bwd")
    p.add_argument("--peers", default="pyg,pyg_cached,torch_csr,scatter,segment")
    p.add_argument("--reps", type=int, default=15, help="repetitions (large graph: a third)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")


def graph_input(name, args):
    """(edge_index, num_nodes, label, reps) of a benchmark graph: a Planetoid graph through
    fastpicard.datasets, or "large" (a random graph of --large-nodes / --large-edges, a third
    of the repetitions); None when the data is missing."""
    if name == "large":
        n_nodes, n_edges = int(args.large_nodes), int(args.large_edges)
        edge_index, n = random_edges(n_nodes, n_edges)
        return edge_index, n, f"random {n_nodes:.0e}/{n_edges:.0e}", max(3, args.reps // 3)
    data = load_planetoid(name, args.data)
    if data is None:
        return None
    return data.edge_index, data.num_nodes, data.name, args.reps


def random_edges(n: int, e: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, n, (2, e), generator=g), n


def _smoothed(x, new):
    """The peers' step: x_new = a*x + (1-a)*new(), with its residual ||x_new - x||."""
    def step():
        x_new = ALPHA * x + (1 - ALPHA) * new()
        return x_new, torch.linalg.vector_norm(x_new - x)
    return step


def _peers(name, edge_index, n, graph, x, W, b, wanted):
    """Callables computing (x_new, res) for each peer, sharing x, W, b (on x's device)."""
    cases = {}
    device = x.device
    edge_index = edge_index.to(device)
    if "pyg" in wanted or "pyg_cached" in wanted:
        from torch_geometric.nn import GCNConv
    if "pyg" in wanted:
        conv = GCNConv(HIDDEN, HIDDEN).to(device)
        conv.lin.weight = torch.nn.Parameter(W.t().detach().clone())
        conv.bias = b
        cases["pyg"] = _smoothed(x, lambda: torch.relu(conv(x, edge_index)))
    if "pyg_cached" in wanted:
        conv_c = GCNConv(HIDDEN, HIDDEN, cached=True).to(device)
        conv_c.lin.weight = torch.nn.Parameter(W.t().detach().clone())
        conv_c.bias = b
        adj_t = torch.sparse_coo_tensor(edge_index.flip(0),
                                        torch.ones(edge_index.shape[1], device=device), (n, n),
                                        check_invariants=False).coalesce().to_sparse_csr()
        cases["pyg_cached"] = _smoothed(x, lambda: torch.relu(conv_c(x, adj_t)))
    if "torch_csr" in wanted:
        a = graph.adjacency()
        cases["torch_csr"] = _smoothed(x, lambda: torch.relu(torch.sparse.mm(a, x @ W) + b))
    if "scatter" in wanted or "segment" in wanted:
        try:
            import torch_scatter
        except ImportError:
            torch_scatter = None
        if torch_scatter is not None:
            rows = torch.repeat_interleave(torch.arange(n, device=device),
                                           graph.rowptr.long().diff())
            col, w, rowptr = graph.col.long(), graph.weight, graph.rowptr.long()

            def messages():  # gathered and weighted, in CSR order
                return (x @ W)[col] * w[:, None]
            if "scatter" in wanted:
                cases["scatter"] = _smoothed(x, lambda: torch.relu(
                    torch_scatter.scatter_add(messages(), rows, 0, dim_size=n) + b))
            if "segment" in wanted:
                cases["segment"] = _smoothed(x, lambda: torch.relu(
                    torch_scatter.segment_csr(messages(), rowptr) + b))
    return cases


def bench_graphs(args, gcn: bool = True):
    """Sets up a graph benchmark (threads, quiet CSR warning) and yields, per ``--graphs``
    entry whose data is there, ``(name, edge_index, n, label, reps, graph)`` with the GCN
    Graph on ``--device`` (None with ``gcn=False``, for benchmarks that build their own)."""
    import warnings
    warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
    if args.threads:
        torch.set_num_threads(args.threads)
    for name in args.graphs.split(","):
        loaded = graph_input(name, args)
        if loaded is None:
            continue
        edge_index, n, label, reps = loaded
        graph = Graph.from_edge_index(edge_index, n, norm="gcn").to(args.device) if gcn else None
        yield name, edge_index, n, label, reps, graph


def run(args):
    wanted = set(args.peers.split(","))
    device = torch.device(args.device)
    modes = args.modes.split(",")
    rows = []
    for name, edge_index, n, label, reps, graph in bench_graphs(args):
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(n, HIDDEN, generator=gen).to(device)
        W = (torch.randn(HIDDEN, HIDDEN, generator=gen) / HIDDEN ** 0.5).to(device)
        b = torch.nn.Parameter((torch.randn(HIDDEN, generator=gen) * 0.1).to(device))
        gy = torch.randn(n, HIDDEN, generator=gen).to(device)

        def fused():
            return spmm_update(graph, x @ W, x, ALPHA, bias=b)

        def gemm():
            return x @ W

        steps = {"fused": fused, **_peers(name, edge_index, n, graph, x, W, b, wanted)}
        for mode in modes:
            if mode == "fwd":
                cases = dict(steps, gemm=gemm)
                with torch.no_grad():
                    t = interleaved_medians(cases, device, reps=reps, warmup=2, min_time=2e-2)
            else:
                x.requires_grad_(True)
                W.requires_grad_(True)

                def with_backward(step):
                    def f():
                        x_new, _ = step()
                        torch.autograd.backward(x_new, gy)
                        x.grad = W.grad = b.grad = None
                    return f
                cases = {k: with_backward(v) for k, v in steps.items()}
                t = interleaved_medians(cases, device, reps=reps, warmup=2, min_time=2e-2)
                x.requires_grad_(False)
                W.requires_grad_(False)
            for case, sec in t.items():
                rows.append({"bench": "graph", "device": str(device), "graph": label, "nodes": n,
                             "edges": graph.num_edges, "mode": mode, "case": case,
                             "ms": sec * 1e3, "fused_speedup": sec / t["fused"]})
        print(f"{label}: {n} nodes, {graph.num_edges} entries (with self loops)", flush=True)
    print(f"device={device} threads={torch.get_num_threads()} OMP_WAIT_POLICY="
          f"{os.environ.get('OMP_WAIT_POLICY', '')!r}")
    print_table(rows, ["graph", "mode", "case", "ms", "fused_speedup"])
    append_csv(args.csv, rows)
