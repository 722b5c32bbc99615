"""Second-order gradients through the graph ops: the compiled backward kernels are first-order
only and refuse create_graph=True; inside fastpicard.higher_order_grads() (entered by
jacobian_penalty and lipschitz_estimate) the ops run on their references, so second-order
terms are exact, never silently dropped."""
from __future__ import annotations

import pytest
import torch

import fastpicard
from fastpicard import Graph
from fastpicard.ops import spmm, spmm_update

F64 = torch.float64
needs_ext = pytest.mark.skipif(not fastpicard.extension_available(),
                               reason="needs the compiled extension")


def setup(seed=0, n=23, f=5):
    g = torch.Generator().manual_seed(seed)
    ei = torch.randint(0, n, (2, 4 * n), generator=g)
    graph = Graph.from_edge_index(ei, n, dtype=F64)
    x = torch.randn(n, f, dtype=F64, generator=g)
    W = (0.4 * torch.randn(f, f, dtype=F64, generator=g)).requires_grad_()
    return graph, x, W


@needs_ext
@pytest.mark.parametrize("op", ["spmm", "spmm_update"])
def test_compiled_backward_refuses_create_graph(op):
    graph, x, W = setup()
    h = (x @ W).detach().requires_grad_()
    out = spmm(graph, h) if op == "spmm" else spmm_update(graph, h, x, 0.5, act="tanh")[0]
    with pytest.raises(RuntimeError, match="higher_order_grads"):
        torch.autograd.grad(out.sum(), h, create_graph=True)
    (g,) = torch.autograd.grad(out.sum(), h)  # first order is fine
    assert torch.isfinite(g).all()


@pytest.mark.parametrize("act", ["tanh", "relu"])
def test_gradgradcheck_inside_the_context(act):
    graph, x, _ = setup()
    h = torch.randn(x.shape, dtype=F64, requires_grad=True)
    b = torch.randn(x.shape[1], dtype=F64, requires_grad=True)
    with fastpicard.higher_order_grads():
        assert torch.autograd.gradgradcheck(
            lambda h, b: spmm_update(graph, h, x, 0.3, bias=b, act=act)[0], (h, b))
        assert torch.autograd.gradgradcheck(lambda h: spmm(graph, h, "mean"), (h,))
    assert not fastpicard.ops._backend.higher_order_enabled()  # restored on exit


@pytest.mark.parametrize("backend", [None, "reference"])
def test_contraction_tools_on_a_gcn_step(backend):
    # the default (compiled) path must give the reference's penalty gradient and Lipschitz
    # estimate: the tools enter higher_order_grads() themselves
    graph, x, W = setup(seed=1)

    def fn(z):
        return spmm_update(graph, z @ W.T, z, 0.5, act="tanh", backend=backend)[0]

    results = []
    for b in (backend, "reference"):
        W.grad = None
        torch.manual_seed(5)  # same Hutchinson probes
        f = (lambda z: spmm_update(graph, z @ W.T, z, 0.5, act="tanh", backend=b)[0])
        pen = fastpicard.jacobian_penalty(f, x, n_samples=2)
        pen.backward()
        results.append((pen.detach(), W.grad.clone(), fastpicard.lipschitz_estimate(f, x)))
    (p0, g0, l0), (p1, g1, l1) = results
    torch.testing.assert_close(p0, p1, rtol=1e-12, atol=0)
    torch.testing.assert_close(g0, g1, rtol=1e-10, atol=1e-12)
    assert l1 > 0 and l0 == pytest.approx(l1, rel=1e-9)


def test_picard_gcn_inside_the_context_is_twice_differentiable():
    graph, x, W = setup(seed=2)
    Wn = (0.5 * W / torch.linalg.matrix_norm(W, 2)).detach().requires_grad_()
    with fastpicard.higher_order_grads():
        xs, _ = fastpicard.picard_gcn(graph, x, Wn, act="tanh", tol=1e-10, max_iter=200)
        (g,) = torch.autograd.grad(xs.square().sum(), Wn, create_graph=True)
    (gg,) = torch.autograd.grad(g.sum(), Wn)
    assert torch.isfinite(gg).all() and gg.abs().sum() > 0
