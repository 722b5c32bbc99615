"""scale: the fused graph step per CSR entry from 1e4 nodes up, node orders, Graph build time.

Per graph kind and size, with hidden width F (64): one forward ``spmm_update(graph, h, x, a,
bias=b)`` (aggregation, bias, relu, smoothing, residual; h given, no GEMM), timed interleaved
against the same step in torch (``torch.sparse.mm`` on the same CSR, then bias, relu,
smoothing and norm, in place where torch allows) and, for each node order, against the
unordered fused step of the same run. Reports ns per CSR entry, effective GB/s (compulsory
traffic: h and x read, x_new written, col and weight read: 4·(3·N·F + 2·E + N) bytes), the
Graph build time (compiled vs the torch path, in fused steps), the reorder time, and the peak
memory. Graph kinds (ids shuffled, as real graphs are stored in arbitrary order):

    random     E = degree·N random directed edges (no locality at all)
    sbm        stochastic block model: blocks of --block nodes, a fraction --mu of the edges
               leave their block, undirected
    powerlaw   degree-corrected SBM: power-law node weights (exponent --gamma), same blocks
    Cora, CiteSeer, PubMed   Planetoid graphs as stored (PubMed via --data / $FASTPICARD_DATA)

Orders: none (as given), rcm, degree, cluster (Graph.reorder), shuffle (a random relabelling:
the arbitrary-order case for the Planetoid graphs). ``--huge-pages`` also times the fused step
with h and x on 2 MiB pages (a TLB experiment, Linux); for large graphs run the whole benchmark
with THP_MEM_ALLOC_ENABLE=1 (torch's allocator then puts large tensors on 2 MiB pages: on 4 KiB
pages the gathers are TLB-bound, BENCHMARKS.md "Large graphs"). Rows go to the CSV, the
log-log plot to --plot.

``--minibatch``: PIGN (hidden F, 8 iterations) on PyG-style mini-batches whose Graph is built
per batch: sampled subgraphs (random, degree 10) of 1e3-1e5 nodes, and 128 small graphs in one
batch (a batch vector). Forward (no grad) and forward+backward, timed as build + PIGN against
PIGN on a prebuilt Graph; "kept" = prebuilt time / (build + PIGN time).
"""
from __future__ import annotations

import ctypes
import os
import resource
import statistics
import time

import torch

from ..graph import Graph
from ..ops import spmm_update
from .data import add_data_argument, load_planetoid
from .timing import append_csv, interleaved_samples, print_table, sync

ALPHA = 0.5
PLANETOID = ("Cora", "CiteSeer", "PubMed")


def add_arguments(p):
    p.add_argument("--sizes", default="1e4,1e5,1e6,3e6", help="node counts (synthetic graphs)")
    p.add_argument("--graphs", default="random,sbm,powerlaw,Cora,CiteSeer,PubMed")
    p.add_argument("--orders", default="none,rcm,degree,cluster",
                   help="comma-separated: none, rcm, degree, cluster, shuffle")
    p.add_argument("--degree", type=float, default=10, help="edges per node (synthetic)")
    p.add_argument("--block", type=int, default=1000, help="block size (sbm, powerlaw)")
    p.add_argument("--mu", type=float, default=0.1, help="fraction of edges leaving a block")
    p.add_argument("--gamma", type=float, default=2.5, help="power-law exponent (powerlaw)")
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--reps", type=int, default=7, help="repetitions (a third above 1e6 nodes)")
    p.add_argument("--peer-max-nodes", type=float, default=3e6,
                   help="time torch.sparse.mm up to this many nodes")
    p.add_argument("--lean-above", type=float, default=3e6,
                   help="above this many nodes, one graph in memory at a time: per order the "
                        "graph is built again and reordered, with fresh features; only the "
                        "fused step (and the smallest graph's) is timed")
    p.add_argument("--build-peer-max-nodes", type=float, default=3e6,
                   help="time the torch-path Graph build up to this many nodes")
    p.add_argument("--minibatch", action="store_true",
                   help="instead: PIGN per mini-batch with the Graph built per batch (compiled "
                        "build, torch-path build) vs prebuilt")
    p.add_argument("--huge-pages", action="store_true",
                   help="also time the fused step with h and x on 2 MiB pages")
    add_data_argument(p)
    p.add_argument("--plot", default="bench_results/scale.png", help="log-log plot ('' to skip)")
    p.add_argument("--plot-orders", default="none,rcm,cluster", help="orders drawn in the plot")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--clock", default="wall", choices=["wall", "process"],
                   help="process: CPU seconds of all the process's threads (steadier than wall "
                        "time on an oversubscribed machine, with OMP_WAIT_POLICY=PASSIVE)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")


# ---------------------------------------------------------------- graphs
def _shuffle(ei, n, gen):
    return torch.randperm(n, generator=gen)[ei]


def random_graph(n, degree, gen):
    return torch.randint(0, n, (2, int(degree * n)), generator=gen)


def block_graph(n, degree, block, mu, gen, gamma=None):
    """Undirected (degree-corrected when gamma is set) stochastic block model, ids shuffled.
    Each of the degree·N/2 edges picks u (by weight), then v in u's block with probability
    1 - mu, else anywhere (by weight)."""
    m = int(degree * n / 2)
    if gamma is None:
        u = torch.randint(0, n, (m,), generator=gen)
        anywhere = torch.randint(0, n, (m,), generator=gen)
        start = u // block * block
        inside = start + (torch.rand(m, generator=gen) * (torch.clamp(start + block, max=n)
                                                          - start)).long()
    else:  # node weights ~ Pareto(gamma - 1): degrees follow a power law of exponent gamma
        theta = torch.rand(n, generator=gen, dtype=torch.float64).pow(-1.0 / (gamma - 1))
        cum = theta.cumsum(0)
        total = float(cum[-1])

        def pick(lo, hi):  # node with cumulative weight in (lo, hi], by weight
            r = lo + torch.rand(lo.shape, generator=gen, dtype=torch.float64) * (hi - lo)
            return torch.searchsorted(cum, r).clamp_(max=n - 1)
        zero = torch.zeros(m, dtype=torch.float64)
        u = pick(zero, zero + total)
        anywhere = pick(zero, zero + total)
        start = u // block * block
        stop = torch.clamp(start + block, max=n)
        base = torch.cat([torch.zeros(1, dtype=torch.float64), cum])
        inside = pick(base[start], base[stop])
    v = torch.where(torch.rand(m, generator=gen) < mu, anywhere, inside)
    ei = torch.stack([torch.cat([u, v]), torch.cat([v, u])])
    return _shuffle(ei, n, gen)


def synthetic(kind, n, args, seed=0):
    gen = torch.Generator().manual_seed(seed)
    if kind == "random":
        return random_graph(n, args.degree, gen)
    if kind == "sbm":
        return block_graph(n, args.degree, args.block, args.mu, gen)
    if kind == "powerlaw":
        return block_graph(n, args.degree, args.block, args.mu, gen, gamma=args.gamma)
    raise ValueError(f"scale: unknown graph {kind!r}")


def planetoid_graph(name, data):
    """(edge_index, num_nodes), or None when the data is missing (a line says why)."""
    d = load_planetoid(name, data)
    return None if d is None else (d.edge_index, d.num_nodes)


# ---------------------------------------------------------------- helpers
def _huge_copy(t):
    """t copied into memory advised onto 2 MiB transparent huge pages (Linux)."""
    out = torch.empty_like(t)
    page = 2 << 20
    lo = (out.data_ptr() + page - 1) // page * page
    hi = (out.data_ptr() + out.nbytes) // page * page
    if hi > lo:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.madvise(ctypes.c_void_p(lo), ctypes.c_size_t(hi - lo), 14)  # MADV_HUGEPAGE
    return out.copy_(t)


def _torch_path_build(ei, n, **kw):
    """Graph.from_edge_index on its torch path (the build before the compiled one)."""
    from .. import graph_build

    applies = graph_build.applies
    graph_build.applies = lambda edge_index: False
    try:
        return Graph.from_edge_index(ei, n, **kw)
    finally:
        graph_build.applies = applies


def _graph_bytes(g):
    ts = (g.rowptr, g.col, g.weight, g.t_rowptr, g.t_col, g.t_perm, g.t_weight)
    return sum(t.numel() * t.element_size() for t in ts if t is not None)


def _peak_mib(device):
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _medians(cases, device, args, reps, min_time=2e-2):
    clock = time.process_time if args.clock == "process" else time.perf_counter
    samples = interleaved_samples(cases, device, reps=reps, warmup=1, min_time=min_time,
                                  clock=clock)
    return {name: statistics.median(v) for name, v in samples.items()}


def _load():
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


# ---------------------------------------------------------------- run
def measure(label, kind_n, ei, n, args, device, rows, refs=None):
    """Rows for one graph; ``refs`` maps each order to the fused step of the smallest graph
    of this kind (set on the first call), timed in every later group: the growth of the
    cost per entry is then a ratio within one run, like every other ratio here."""
    F = args.hidden
    reps = args.reps if n <= 1e6 else max(3, args.reps // 3)
    gen = torch.Generator().manual_seed(1)
    # Graph build: compiled vs the torch path (CPU tensors; a CUDA run builds on CPU too)
    cases = {"compiled": lambda: Graph.from_edge_index(ei, n)}
    if n <= args.build_peer_max_nodes:
        cases["torch_path"] = lambda: _torch_path_build(ei, n)
    build = _medians(cases, "cpu", args, max(3, reps // 2), min_time=0)
    graph = Graph.from_edge_index(ei, n).to(device)
    del ei, cases
    E = graph.num_edges
    h = torch.randn(n, F, generator=gen).to(device)
    x = torch.randn(n, F, generator=gen).to(device)
    b = (torch.randn(F, generator=gen) * 0.1).to(device)
    nbytes = 4 * (3 * n * F + 2 * E + n)

    def fused(g, hh, xx):
        return lambda: spmm_update(g, hh, xx, ALPHA, bias=b)

    def peer(g, hh, xx):
        a = g.adjacency()

        def step():
            y = torch.sparse.mm(a, hh)
            y.add_(b).relu_()
            y.mul_(1 - ALPHA).add_(xx, alpha=ALPHA)
            return y, torch.linalg.vector_norm(y - xx)
        return step

    base = fused(graph, h, x)
    clock = time.process_time if args.clock == "process" else time.perf_counter
    for order in args.orders.split(","):
        t0 = clock()
        if order == "none":
            g, hh, xx = graph, h, x
        else:
            g = graph.reorder(torch.randperm(n, generator=gen) if order == "shuffle" else order)
            hh, xx = h[g.node_order], x[g.node_order]
        sync(device)
        reorder_s = clock() - t0
        cases = {"fused_none": base}
        if order != "none":
            cases["fused"] = fused(g, hh, xx)
        ref = None if refs is None else refs.get(order)
        if ref is not None:
            cases["smallest"] = ref[0]
        if n <= args.peer_max_nodes:
            cases["torch"] = peer(g, hh, xx)
        if args.huge_pages and device.type == "cpu":
            cases["fused_huge"] = fused(g, _huge_copy(hh), _huge_copy(xx))
        with torch.no_grad():
            t = _medians(cases, device, args, reps)
        tf = t.get("fused", t["fused_none"])
        row = {"bench": "scale", "device": str(device), "clock": args.clock, "graph": label,
               "kind": kind_n,
               "nodes": n, "entries": E, "order": order, "hidden": F,
               "fused_ms": tf * 1e3, "ns_per_entry": tf / E * 1e9, "gbps": nbytes / tf / 1e9,
               "vs_unordered": t["fused_none"] / tf,
               "unordered_ns_per_entry": t["fused_none"] / E * 1e9,
               "build_ms": build["compiled"] * 1e3,
               "build_steps": build["compiled"] / t["fused_none"],
               "reorder_s": reorder_s if order != "none" else 0.0,
               "graph_bytes_per_entry": _graph_bytes(graph) / max(E, 1),
               "peak_mib": _peak_mib(device), "load": _load()}
        if "torch_path" in build:
            row["torch_build_ms"] = build["torch_path"] * 1e3
            row["build_speedup"] = build["torch_path"] / build["compiled"]
        if "torch" in t:
            row["torch_ns_per_entry"] = t["torch"] / E * 1e9
            row["vs_torch"] = t["torch"] / tf
        if "fused_huge" in t:
            row["huge_ns_per_entry"] = t["fused_huge"] / E * 1e9
        if ref is not None:  # ns/entry here over ns/entry of the smallest graph, same run
            row["vs_smallest"] = row["ns_per_entry"] / (t["smallest"] / ref[1] * 1e9)
        elif refs is not None:
            refs[order] = (cases.get("fused", base), E)
            row["vs_smallest"] = 1.0
        rows.append(row)
        print(f"{label} n={n} E={E} order={order}: {row['ns_per_entry']:.2f} ns/entry "
              f"({row['vs_unordered']:.2f}x unordered"
              + (f", {row['vs_torch']:.2f}x torch" if "vs_torch" in row else "")
              + (f", huge pages {row['huge_ns_per_entry']:.2f} ns" if "fused_huge" in t else "")
              + (f", {row['vs_smallest']:.2f}x smallest" if "vs_smallest" in row else "")
              + f"), build {row['build_ms']:.1f} ms = {row['build_steps']:.2f} steps"
              + (f" ({row['build_speedup']:.1f}x torch path)" if "build_speedup" in row else "")
              + f", reorder {reorder_s:.2f} s, peak {row['peak_mib']:.0f} MiB, "
              f"load {row['load']:.1f}", flush=True)
        del cases, g, hh, xx


def measure_lean(name, n, args, device, rows, refs):
    """measure() for graphs too large to hold twice (see --lean-above)."""
    F = args.hidden
    clock = time.process_time if args.clock == "process" else time.perf_counter
    for order in args.orders.split(","):
        ei = synthetic(name, n, args)
        t0 = clock()
        graph = Graph.from_edge_index(ei, n)
        build_s = clock() - t0
        del ei
        t0 = clock()
        if order != "none":
            graph = graph.reorder(order)
        reorder_s = clock() - t0
        graph = graph.to(device)
        gen = torch.Generator().manual_seed(1)
        h = torch.randn(n, F, generator=gen).to(device)
        x = torch.randn(n, F, generator=gen).to(device)
        b = (torch.randn(F, generator=gen) * 0.1).to(device)
        cases = {"fused": lambda: spmm_update(graph, h, x, ALPHA, bias=b)}
        if order in refs:
            cases["smallest"] = refs[order][0]
        with torch.no_grad():
            t = _medians(cases, device, args, max(3, args.reps // 3))
        E = graph.num_edges
        row = {"bench": "scale", "device": str(device), "clock": args.clock, "graph": name,
               "kind": "synthetic", "nodes": n, "entries": E, "order": order, "hidden": F,
               "fused_ms": t["fused"] * 1e3, "ns_per_entry": t["fused"] / E * 1e9,
               "gbps": 4 * (3 * n * F + 2 * E + n) / t["fused"] / 1e9,
               "build_ms": build_s * 1e3, "build_steps": build_s / t["fused"],
               "reorder_s": reorder_s, "graph_bytes_per_entry": _graph_bytes(graph) / E,
               "peak_mib": _peak_mib(device), "load": _load()}
        if "smallest" in t:
            row["vs_smallest"] = row["ns_per_entry"] / (t["smallest"] / refs[order][1] * 1e9)
        rows.append(row)
        print(f"{name} n={n} E={E} order={order} (lean): {row['ns_per_entry']:.2f} ns/entry"
              + (f", {row['vs_smallest']:.2f}x smallest" if "vs_smallest" in row else "")
              + f", build {row['build_ms']:.0f} ms, reorder {reorder_s:.1f} s, peak "
              f"{row['peak_mib']:.0f} MiB, load {row['load']:.1f}", flush=True)
        del cases, graph, h, x


def small_graphs(count, gen):
    """count rings of 20-40 nodes with random chords (both directions), as one batch."""
    parts, batch, off = [], [], 0
    for i in range(count):
        k = int(torch.randint(20, 41, (1,), generator=gen))
        ring = torch.stack([torch.arange(k), (torch.arange(k) + 1) % k])
        chords = torch.randint(0, k, (2, k // 4), generator=gen)
        ei = torch.cat([ring, chords], 1)
        parts.append(torch.cat([ei, ei.flip(0)], 1) + off)
        batch.append(torch.full((k,), i))
        off += k
    return torch.cat(parts, 1), off, torch.cat(batch)


def minibatch(args, device, rows):
    from ..nn import PIGN

    F = args.hidden
    gen = torch.Generator().manual_seed(2)
    batches = [(f"sampled {n:.0e}", random_graph(n, args.degree, gen), n, None)
               for n in (1000, 10_000, 100_000)]
    ei, n, batch = small_graphs(128, gen)
    batches.append(("128 small graphs", ei, n, batch))
    for label, ei, n, batch in batches:
        torch.manual_seed(0)
        model = PIGN(F, F, 16, max_iter=8, dropout=0.0).to(device)
        x = torch.randn(n, F, generator=gen).to(device)
        ei = ei.to(device)
        pre = Graph.from_edge_index(ei.cpu(), n, batch=batch).to(device)

        def with_build(build):
            return lambda: model(x, build(ei.cpu(), n, batch=batch).to(device))
        steps = {"prebuilt": lambda: model(x, pre),
                 "compiled_build": with_build(Graph.from_edge_index),
                 "torch_path_build": with_build(_torch_path_build)}
        for mode in ("fwd", "fwd+bwd"):
            if mode == "fwd":
                model.eval()
                with torch.no_grad():
                    t = _medians(steps, device, args, args.reps)
            else:
                model.train()

                def backward(f):
                    def g():
                        f().sum().backward()
                        model.zero_grad(set_to_none=True)
                    return g
                t = _medians({k: backward(f) for k, f in steps.items()}, device, args,
                                 args.reps)
            row = {"bench": "scale", "kind": "minibatch", "device": str(device),
                   "clock": args.clock, "graph": label,
                   "nodes": n, "entries": pre.num_edges, "mode": mode, "hidden": F,
                   "prebuilt_ms": t["prebuilt"] * 1e3,
                   "compiled_ms": t["compiled_build"] * 1e3,
                   "torch_path_ms": t["torch_path_build"] * 1e3,
                   "kept_compiled": t["prebuilt"] / t["compiled_build"],
                   "kept_torch_path": t["prebuilt"] / t["torch_path_build"], "load": _load()}
            rows.append(row)
            print(f"{label} {mode}: prebuilt {row['prebuilt_ms']:.2f} ms, + compiled build "
                  f"{row['compiled_ms']:.2f} ms (kept {row['kept_compiled']:.0%}), + torch-path "
                  f"build {row['torch_path_ms']:.2f} ms (kept {row['kept_torch_path']:.0%}), "
                  f"load {row['load']:.1f}", flush=True)


def plot(rows, path, orders):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    kinds = sorted({r["graph"] for r in rows if r["kind"] == "synthetic"})
    orders = [o for o in orders.split(",") if any(r["order"] == o for r in rows)]
    colors = dict(zip(kinds, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    marks = dict(zip(orders, "os^vDx"))
    for k in kinds:
        for o in orders:
            sel = sorted((r for r in rows if r["graph"] == k and r["order"] == o),
                         key=lambda r: r["nodes"])
            if len(sel) > 1:
                ax.plot([r["nodes"] for r in sel], [r["ns_per_entry"] for r in sel],
                        marker=marks[o], color=colors[k], ls="-" if o != "none" else "--",
                        label=f"{k}, {o}")
        sel = sorted((r for r in rows if r["graph"] == k and r["order"] == "none"
                      and "torch_ns_per_entry" in r), key=lambda r: r["nodes"])
        if len(sel) > 1:
            ax.plot([r["nodes"] for r in sel], [r["torch_ns_per_entry"] for r in sel],
                    color=colors[k], ls=":", label=f"{k}, torch.sparse.mm step")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("nodes")
    ax.set_ylabel("ns per CSR entry (forward step)")
    ax.set_title(f"spmm_update forward, hidden {rows[0]['hidden']}, {rows[0]['device']}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=6.5, ncol=2)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"plot: {path}")


def run(args):
    import warnings
    warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rows = []
    if args.minibatch:
        minibatch(args, device, rows)
        append_csv(args.csv, rows)
        return
    sizes = [int(float(s)) for s in args.sizes.split(",")]
    for name in args.graphs.split(","):
        if name in PLANETOID:
            graph = planetoid_graph(name, args.data)
            if graph is not None:
                measure(name, "planetoid", *graph, args, device, rows)
            continue
        refs = {}
        for n in sorted(sizes):
            if n > args.lean_above and refs:
                measure_lean(name, n, args, device, rows, refs)
            else:
                measure(name, "synthetic", synthetic(name, n, args), n, args, device, rows,
                        refs)
    print(f"device={device} threads={torch.get_num_threads()} OMP_WAIT_POLICY="
          f"{os.environ.get('OMP_WAIT_POLICY', '')!r}")
    print_table(rows, ["graph", "nodes", "entries", "order", "ns_per_entry", "gbps",
                       "vs_unordered", "vs_smallest", "vs_torch", "build_steps",
                       "build_speedup", "reorder_s", "peak_mib"])
    append_csv(args.csv, rows)
    if args.plot and any(r["kind"] == "synthetic" for r in rows):
        try:
            plot(rows, args.plot, args.plot_orders)
        except ImportError as e:  # matplotlib is optional (the "plot" extra)
            print(f"no plot: {e}")
