"""The graph ops on CUDA tensors: the dispatcher runs the Triton kernels (registered for the
CUDA key) under the shared C++ autograd. Skipped without a GPU; the same kernels are tested
on CPU tensors through the Triton interpreter in test_spmm.py / test_spmm_update.py."""
from __future__ import annotations

import pytest
import torch

from fastpicard import Graph
from fastpicard.ops import spmm, spmm_update
from fastpicard.ops.spmm import graph_tensors

from graph_helpers import CASES, make_graph, random_edges
from helpers import assert_close

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

ACTS = ["relu", "identity", "tanh", "leaky_relu"]


def _seed():
    return torch.tensor([1234, 99], dtype=torch.int64)


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("reduce", ["sum", "mean", "max"])
def test_spmm_matches_cpu(case, reduce):
    g = make_graph(case, weighted=True)
    gc = g.to("cuda")
    h = torch.randn(g.num_nodes, 70, dtype=torch.float64, requires_grad=True)
    w = g.weight.double().requires_grad_()
    hc = h.detach().cuda().requires_grad_()
    wc = w.detach().cuda().requires_grad_()
    g.weight, gc.weight = w, wc
    exp = spmm(g, h, reduce, backend="reference")
    got = spmm(gc, hc, reduce)
    assert_close(got.cpu(), exp)
    if g.num_nodes:
        gy = torch.randn_like(exp)
        for a, e in zip(torch.autograd.grad(got, (hc, wc), gy.cuda()),
                        torch.autograd.grad(exp, (h, w), gy)):
            assert_close(a.cpu(), e)


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_spmm_update_matches_cpu(act, dtype):
    g = make_graph("batched", weighted=True)
    n = g.num_nodes
    h, x = torch.randn(n, 33).to(dtype), torch.randn(n, 33).to(dtype)
    b = torch.randn(33).to(dtype)
    frozen = torch.tensor([False, True, False, False])
    args = (h, x, 0.375, b, act, 0.125, 0.25, _seed(), g.batch, 4, frozen, True, False)
    exp = torch.ops.fastpicard.spmm_update(*graph_tensors(g, dtype), *args)
    gc = g.to("cuda")
    cuda_args = tuple(a.cuda() if isinstance(a, torch.Tensor) else a for a in args)
    got = torch.ops.fastpicard.spmm_update(*graph_tensors(gc, dtype), *cuda_args)
    for a, e in zip(got[:3], exp[:3]):  # same seed: the same dropout mask on both devices
        assert_close(a.cpu(), e, dtype=dtype)


def test_spmm_update_gradients_match_cpu():
    g = make_graph("hub", weighted=True)
    n = g.num_nodes
    h, x, b = (torch.randn(*s, dtype=torch.float64, requires_grad=True)
               for s in ((n, 70), (n, 70), (70,)))
    w = g.weight.double().requires_grad_()
    gc = g.to("cuda")
    hc, xc, bc, wc = (t.detach().cuda().requires_grad_() for t in (h, x, b, w))
    g.weight, gc.weight = w, wc
    gen_c = torch.Generator("cuda").manual_seed(5)
    exp, _ = spmm_update(g, h, x, 0.375, bias=b, act="tanh", backend="reference")
    got, _ = spmm_update(gc, hc, xc, 0.375, bias=bc, act="tanh")
    assert_close(got.cpu(), exp)
    gy = torch.randn_like(exp)
    for a, e in zip(torch.autograd.grad(got, (hc, xc, bc, wc), gy.cuda()),
                    torch.autograd.grad(exp, (h, x, b, w), gy)):
        assert_close(a.cpu(), e)
    out1, _ = spmm_update(gc, hc, xc, 0.375, dropout=0.5, generator=gen_c)
    gen_c.manual_seed(5)
    out2, _ = spmm_update(gc, hc, xc, 0.375, dropout=0.5, generator=gen_c)
    assert torch.equal(out1, out2)


def test_deterministic_runs():
    gen = torch.Generator().manual_seed(2)
    ei = random_edges(5000, 60000, gen=gen, hub=3)
    g = Graph.from_edge_index(ei, 5000).to("cuda")
    h = torch.randn(5000, 64, device="cuda", requires_grad=True)
    x = torch.randn(5000, 64, device="cuda", requires_grad=True)
    outs = []
    for _ in range(2):
        out, res = spmm_update(g, h, x, 0.5)
        outs.append((out, res, *torch.autograd.grad(out.square().sum(), (h, x))))
    for a, e in zip(*outs):
        assert torch.equal(a, e)


def test_compile_fullgraph():
    g = make_graph("hub", weighted=True).to("cuda")
    lin = torch.nn.Linear(16, 16).cuda()
    x0 = torch.randn(g.num_nodes, 16, device="cuda", requires_grad=True)

    def step(x):
        return spmm_update(g, lin(x), x, 0.5, act="relu")[0] + spmm(g, x, "max")

    got = torch.compile(step, fullgraph=True)(x0)
    exp = step(x0)
    torch.testing.assert_close(got, exp)
    torch.testing.assert_close(torch.autograd.grad(got.sum(), x0)[0],
                               torch.autograd.grad(exp.sum(), x0)[0])
