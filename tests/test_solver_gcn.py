"""fastpicard.picard_gcn: the GCN Picard loop in C++ against the generic solver on the same
layer, per-graph early exit, backward modes, dropout, divergence, arguments."""
from __future__ import annotations

import math

import pytest
import torch

import fastpicard
from fastpicard import Graph, picard, picard_gcn
from fastpicard.ops import spmm_update

F64 = torch.float64


def random_graphs(sizes=(7, 12, 5), p=0.3, F=6, seed=0, dtype=F64):
    g = torch.Generator().manual_seed(seed)
    edges, batch, off = [], [], 0
    for i, n in enumerate(sizes):
        a = (torch.rand(n, n, generator=g) < p).nonzero().T + off
        edges.append(a)
        batch += [i] * n
        off += n
    edge_index = torch.cat(edges, 1)
    batch = torch.tensor(batch, dtype=torch.int64)
    graph = Graph.from_edge_index(edge_index, off, batch=batch, num_graphs=len(sizes))
    W = torch.randn(F, F, generator=g, dtype=dtype)
    W = (0.8 * W / torch.linalg.matrix_norm(W, 2)).requires_grad_()
    b = (0.1 * torch.randn(F, generator=g, dtype=dtype)).requires_grad_()
    x0 = torch.randn(off, F, generator=g, dtype=dtype)
    # per-graph scales so graphs converge at different steps
    x0 = x0 * torch.tensor([0.01, 1.0, 10.0], dtype=dtype)[batch][:, None]
    return graph, W, b, x0


def layer(graph, W, b, act="tanh"):
    return lambda x: spmm_update(graph, x @ W, x, 0.0, bias=b, act=act)[0]


@pytest.mark.parametrize("check_every", [1, 3])
@pytest.mark.parametrize("stop", ["abs", "rel"])
def test_matches_generic_solver_per_graph(check_every, stop):
    graph, W, b, x0 = random_graphs()
    with torch.no_grad():
        x, st = picard_gcn(graph, x0, W, bias=b, act="tanh", alpha=0.3, tol=1e-9, max_iter=300,
                           stop=stop, check_every=check_every)
        xr, sr = picard(layer(graph, W, b), x0, alpha=0.3, tol=1e-9, max_iter=300, stop=stop,
                        batch=graph.batch)
    assert st.converged.all() and st.num_samples == 3
    torch.testing.assert_close(x, xr, rtol=1e-12, atol=1e-12)
    assert torch.equal(st.iterations, sr.iterations)
    assert len(set(st.iterations.tolist())) > 1
    assert sr.steps <= st.steps < sr.steps + check_every
    torch.testing.assert_close(st.abs_residual, sr.abs_residual, rtol=1e-9, atol=1e-15)


def test_single_graph_and_float32():
    _, W, b, x0 = random_graphs(sizes=(20,), dtype=torch.float32)
    ring = torch.arange(20)
    graph = Graph.from_edge_index(torch.stack([ring, (ring + 1) % 20]), 20)
    with torch.no_grad():
        x, st = picard_gcn(graph, x0, W, bias=b, act="relu", tol=1e-5, max_iter=200)
    assert st.num_samples == 1 and bool(st.converged[0]) and x.dtype == torch.float32
    z = spmm_update(graph, x @ W, x, 0.0, bias=b, act="relu")[0]
    torch.testing.assert_close(z, x, rtol=0, atol=1e-4)


@pytest.mark.parametrize("mode", ["unroll", "implicit", "phantom"])
def test_gradients_match_generic_unroll(mode):
    graph, W, b, x0 = random_graphs()
    w = torch.randn_like(x0)
    x, _ = picard(layer(graph, W, b), x0, alpha=0.3, tol=1e-12, max_iter=500,
                  batch=graph.batch)
    (x * w).sum().backward()
    ref = (W.grad.clone(), b.grad.clone())
    W.grad = b.grad = None
    x, st = picard_gcn(graph, x0, W, bias=b, act="tanh", alpha=0.3, tol=1e-12, max_iter=500,
                       backward=mode, phantom_steps=80)
    assert st.converged.all()
    (x * w).sum().backward()
    tol = dict(rtol=1e-6, atol=1e-8) if mode != "unroll" else dict(rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(W.grad, ref[0], **tol)
    torch.testing.assert_close(b.grad, ref[1], **tol)


def test_dropout_is_reproducible_and_matches_a_python_loop():
    graph, W, b, x0 = random_graphs()
    W, b = W.detach(), b.detach()
    torch.manual_seed(5)
    x1, st = picard_gcn(graph, x0, W, bias=b, act="relu", dropout=0.3, tol=1e-30, max_iter=7)
    torch.manual_seed(5)
    x2, _ = picard_gcn(graph, x0, W, bias=b, act="relu", dropout=0.3, tol=1e-30, max_iter=7)
    assert torch.equal(x1, x2) and st.steps == 7
    torch.manual_seed(5)
    x = x0
    for _ in range(7):  # the same ops from Python draw the same dropout keys
        x = spmm_update(graph, x @ W, x, 0.5, bias=b, act="relu", dropout=0.3)[0]
    torch.testing.assert_close(x1, x, rtol=1e-12, atol=1e-12)
    torch.manual_seed(6)
    x3, _ = picard_gcn(graph, x0, W, bias=b, act="relu", dropout=0.3, tol=1e-30, max_iter=7)
    assert not torch.equal(x1, x3)


def test_dropout_unroll_gradient_flows():
    graph, W, b, x0 = random_graphs()
    x, _ = picard_gcn(graph, x0, W, bias=b, dropout=0.2, tol=1e-6, max_iter=30)
    x.sum().backward()
    assert torch.isfinite(W.grad).all() and W.grad.abs().sum() > 0


def test_divergence_warns_and_raises():
    graph, _, _, x0 = random_graphs()
    W = 3.0 * torch.eye(x0.shape[1], dtype=F64)
    with pytest.warns(RuntimeWarning, match="diverged") as record:
        x, st = picard_gcn(graph, x0, W, act="identity", alpha=0.0, tol=1e-9, max_iter=200,
                           divergence_factor=50.0)
    assert record[0].filename == __file__  # attributed to the caller
    assert st.diverged.any() and torch.isfinite(x).all()
    with pytest.raises(fastpicard.DivergenceError):
        picard_gcn(graph, x0, W, act="identity", alpha=0.0, tol=1e-9, max_iter=200,
                   divergence_factor=50.0, on_diverge="raise")


def injected(graph, W, b, f, act="tanh"):
    """T(x) = act(Â ((x + f) W) + b), the float64 reference of the inject argument."""
    return lambda x: spmm_update(graph, (x + f) @ W, x, 0.0, bias=b, act=act)[0]


@pytest.mark.parametrize("tol", [1e-10, None])
def test_inject_matches_reference(tol):
    graph, W, b, x0 = random_graphs()
    f = torch.randn_like(x0)
    with torch.no_grad():
        x, st = picard_gcn(graph, x0, W, bias=b, act="tanh", alpha=0.4, tol=tol, max_iter=200,
                           inject=f @ W)
        xr, sr = picard(injected(graph, W, b, f), x0, alpha=0.4, tol=tol, max_iter=200,
                        batch=graph.batch)
    torch.testing.assert_close(x, xr, rtol=1e-10, atol=1e-10)
    assert torch.equal(st.iterations, sr.iterations)
    if tol is not None:  # the fixed point of the injected map, not of the plain one
        assert st.converged.all()
        torch.testing.assert_close(injected(graph, W, b, f)(x), x, rtol=0, atol=1e-8)


@pytest.mark.parametrize("mode", ["unroll", "implicit"])
def test_inject_gradients(mode):
    """Gradients reach inject (and through it f) and W as through the reference loop."""
    graph, W, b, x0 = random_graphs()
    f = torch.randn_like(x0, requires_grad=True)
    w = torch.randn_like(x0)
    x, _ = picard(injected(graph, W, b, f), x0, alpha=0.3, tol=1e-12, max_iter=500,
                  batch=graph.batch)
    (x * w).sum().backward()
    ref = (W.grad.clone(), b.grad.clone(), f.grad.clone())
    W.grad = b.grad = f.grad = None
    x, st = picard_gcn(graph, x0, W, bias=b, act="tanh", alpha=0.3, tol=1e-12, max_iter=500,
                       inject=f @ W, backward=mode)
    assert st.converged.all()
    (x * w).sum().backward()
    for got, want in zip((W.grad, b.grad, f.grad), ref):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-8)


def test_inject_gradcheck():
    graph, W, b, x0 = random_graphs(sizes=(5, 4))
    f = torch.randn_like(x0, requires_grad=True)

    def fn(f, W):
        return picard_gcn(graph, x0, W, bias=b.detach(), act="tanh", alpha=0.3, tol=None,
                          max_iter=4, inject=f @ W)[0]
    assert torch.autograd.gradcheck(fn, (f, W))


def test_bad_arguments():
    graph, W, b, x0 = random_graphs()
    W, b = W.detach(), b.detach()
    cases = [
        (dict(weight=W[:, :3]), ValueError, "weight"),
        (dict(weight=W.float()), TypeError, "weight"),
        (dict(bias=b[:2]), ValueError, "bias"),
        (dict(act="gelu"), ValueError, "act"),
        (dict(dropout=1.0), ValueError, "dropout"),
        (dict(dropout=0.1, backward="implicit"), ValueError, "dropout"),
        (dict(alpha=1.0), ValueError, "alpha"),
        (dict(tol=-1.0), ValueError, "tol"),
        (dict(x0=x0[:3]), ValueError, "x0"),
        (dict(graph="cora"), TypeError, "graph"),
        (dict(inject=x0[:3]), ValueError, "inject"),
        (dict(inject=x0.float()), TypeError, "inject"),
        (dict(inject=x0.to("meta")), ValueError, "inject"),
        (dict(inject="f"), TypeError, "inject"),
    ]
    for override, exc, name in cases:
        kw = dict(graph=graph, x0=x0, weight=W, bias=b)
        kw.update(override)
        with pytest.raises(exc, match=name):
            picard_gcn(kw.pop("graph"), kw.pop("x0"), kw.pop("weight"), **kw)
    assert math.isfinite(float(x0.sum()))


def test_ctrl_c_stops_the_cpp_loop():
    """The loop is C++ and never looked at signals: Ctrl-C was ignored until max_iter."""
    import signal
    import subprocess
    import sys
    import textwrap
    code = textwrap.dedent("""
        import signal, sys, torch
        from fastpicard import Graph, picard_gcn
        # what the child inherited (a test runner may leave SIGINT ignored or blocked, which
        # exec keeps), then Python's own Ctrl-C handling, as in an interactive session
        print("inherited SIGINT:", signal.getsignal(signal.SIGINT),
              signal.SIGINT in signal.pthread_sigmask(signal.SIG_BLOCK, []), file=sys.stderr)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGINT])
        n = 2000
        ei = torch.randint(0, n, (2, 8 * n), generator=torch.Generator().manual_seed(0))
        g = Graph.from_edge_index(ei, n)
        W = torch.eye(16)
        print("started", flush=True)
        try:  # fresh dropout masks every step: it never converges, never diverges
            x, st = picard_gcn(g, torch.randn(n, 16), W, act="tanh", dropout=0.5, tol=1e-30,
                               max_iter=10**9, divergence_factor=float("inf"))
            print("returned", st.steps, st.converged.tolist(), st.diverged.tolist(),
                  st.abs_residual.tolist(), flush=True)
        except KeyboardInterrupt:
            print("interrupted", flush=True)
            sys.exit(3)
    """)
    # -P: the compiled loop of the installed package, not a checkout's source folder
    p = subprocess.Popen([sys.executable, "-P", "-c", code], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "started"
        import time
        time.sleep(1.0)  # inside the C++ loop
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=120)  # a hang (the old behaviour) fails here
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
    assert p.returncode == 3 and "interrupted" in out, (p.returncode, out, err)
