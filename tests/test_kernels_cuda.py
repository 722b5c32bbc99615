"""Every Triton kernel on a real GPU (run by benchmarks/gpu_check.sh; skipped elsewhere) at
realistic sizes, every dtype, against the float64 reference: picard_update (flat and per-sample
rows, full blocks and a masked tail, an unaligned view), picard_control, spmm (sum/mean/max) and
spmm_update forward and backward; float64 scalars reach the kernels unrounded; two runs are
bitwise equal; the torch.compile path; PIGN on CUDA against CPU."""
from __future__ import annotations

import pytest
import torch

from fastpicard import Graph
from fastpicard.ops import picard_update, reference, spmm, spmm_update
from fastpicard.ops.spmm import graph_tensors

from graph_helpers import random_edges
from helpers import DTYPES, TOL, assert_close, poisoned_like

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

ACTS = ["identity", "relu", "leaky_relu", "tanh"]
SEED = torch.tensor([1234, 99], dtype=torch.int64)


def _big_graph(n=60_000, e=600_000, weighted=True, num_graphs=1):
    """A random graph of realistic size with a hub and isolated nodes (CPU), its batch vector
    splitting the nodes into num_graphs contiguous samples."""
    gen = torch.Generator().manual_seed(3)
    ei = random_edges(n, e, gen=gen, hub=7, isolated=50)
    ew = torch.rand(ei.shape[1], generator=gen) + 0.1 if weighted else None
    batch = (torch.arange(n) * num_graphs // n) if num_graphs > 1 else None
    return Graph.from_edge_index(ei, n, edge_weight=ew, norm="gcn", batch=batch)


def _stat_close(got, want, dtype):
    tol = 1e-10 if dtype == torch.float64 else 1e-4
    torch.testing.assert_close(got.double().cpu(), want.double(), rtol=tol, atol=tol)


# ------------------------------------------------------------------ picard_update
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(1_000_000,), (1_000_003,), (100_000, 64), (30_001, 3),
                                   (2_000, 1024), (777, 130)], ids=str)
@pytest.mark.parametrize("batched", [False, True], ids=["whole", "batch"])
def test_picard_update_realistic(dtype, shape, batched):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype)
    z = torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype)
    kw = {}
    if batched:
        kw = dict(batch=torch.randint(0, 37, (shape[0],), generator=gen), num_samples=37,
                  frozen=torch.arange(37) % 5 == 0)
    want = reference.picard_update(x.double(), z.double(), 0.1, kw.get("batch"),
                                   kw.get("num_samples", 1), kw.get("frozen"), True)
    kc = {k: v.cuda() for k, v in kw.items() if isinstance(v, torch.Tensor)}
    kc.update({k: v for k, v in kw.items() if not isinstance(v, torch.Tensor)})
    xc, zc = x.cuda(), z.cuda()
    out = poisoned_like(xc)
    got = picard_update(xc, zc, 0.1, return_norm=True, out=out, **kc)
    assert_close(got[0].cpu(), want[0], dtype)
    _stat_close(got[1], want[1], dtype)
    _stat_close(got[2], want[2], dtype)
    again = picard_update(xc, zc, 0.1, return_norm=True, **kc)
    assert all(torch.equal(a, b) for a, b in zip(got, again))  # deterministic


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_picard_update_unaligned_view(dtype):
    """A view starting one element into its storage (no 16-byte alignment: scalar accesses)."""
    base = torch.randn(2, 1_000_001, device="cuda").to(dtype)
    x, z = base[0, 1:], base[1, 1:]
    got, res = picard_update(x, z, 0.25)
    want = reference.picard_update(x.double().cpu(), z.double().cpu(), 0.25)
    assert_close(got.cpu(), want[0], dtype)
    _stat_close(res, want[1], dtype)


def test_float64_scalars_reach_kernels_unrounded():
    """alpha = 0.1 is not a float32 number: float64 data must see it exactly (as on CPU)."""
    x = torch.randn(4097, 5, dtype=torch.float64)
    z = torch.randn(4097, 5, dtype=torch.float64)
    for kw in ({}, dict(batch=torch.arange(4097) % 3, num_samples=3)):
        cpu = picard_update(x, z, 0.1, backend="cpp", **kw)
        kc = {k: v.cuda() if isinstance(v, torch.Tensor) else v for k, v in kw.items()}
        got = picard_update(x.cuda(), z.cuda(), 0.1, **kc)
        torch.testing.assert_close(got[0].cpu(), cpu[0], rtol=1e-13, atol=1e-13)
    gd = Graph.from_edge_index(random_edges(3000, 20_000, gen=torch.Generator().manual_seed(3),
                                            hub=7, isolated=50), 3000, dtype=torch.float64)
    h, xx = torch.randn(3000, 16, dtype=torch.float64), torch.randn(3000, 16, dtype=torch.float64)
    for act in ("leaky_relu", "relu"):
        want = spmm_update(gd, h, xx, 0.1, act=act, negative_slope=0.3, backend="cpp")[0]
        got = spmm_update(gd.to("cuda"), h.cuda(), xx.cuda(), 0.1, act=act,
                          negative_slope=0.3)[0]
        torch.testing.assert_close(got.cpu(), want, rtol=1e-13, atol=1e-13)


# ------------------------------------------------------------------ graph kernels
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("reduce", ["sum", "mean", "max"])
def test_spmm_realistic(dtype, reduce):
    g = _big_graph()
    gc = g.to("cuda")
    for width in (1, 3, 64, 130):
        h = torch.randn(g.num_nodes, width, dtype=torch.float64).to(dtype)
        want = reference.spmm(*graph_tensors(g, torch.float64), h.double(), reduce)[0]
        hc = h.cuda()
        got = spmm(gc, hc, reduce)
        assert_close(got.cpu(), want, dtype)
        again = spmm(gc, hc, reduce)
        assert torch.equal(got, again)


@pytest.mark.parametrize("reduce", ["sum", "mean", "max"])
def test_spmm_gradients_realistic(reduce):
    g = _big_graph(20_000, 200_000)
    h = torch.randn(g.num_nodes, 70, dtype=torch.float64, requires_grad=True)
    w = g.weight.double().requires_grad_()
    gc = g.to("cuda")
    hc, wc = h.detach().cuda().requires_grad_(), w.detach().cuda().requires_grad_()
    g.weight, gc.weight = w, wc
    want = spmm(g, h, reduce, backend="reference")
    got = spmm(gc, hc, reduce)
    gy = torch.randn_like(want)
    grads = torch.autograd.grad(got, (hc, wc), gy.cuda())
    for a, e in zip(grads, torch.autograd.grad(want, (h, w), gy)):
        assert_close(a.cpu(), e)
    again = torch.autograd.grad(spmm(gc, hc, reduce), (hc, wc), gy.cuda())
    assert all(torch.equal(a, b) for a, b in zip(grads, again))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("act", ACTS)
def test_spmm_update_realistic(dtype, act):
    g = _big_graph(num_graphs=6)
    gc = g.to("cuda")
    frozen = torch.tensor([False, True, False, False, True, False])
    for width in (3, 64, 130):
        h = torch.randn(g.num_nodes, width, dtype=torch.float64).to(dtype)
        x = torch.randn(g.num_nodes, width, dtype=torch.float64).to(dtype)
        b = torch.randn(width, dtype=torch.float64).to(dtype)
        args = (0.375, b, act, 0.125, 0.25, SEED, g.batch, 6, frozen, True, True)
        want = reference.spmm_update(*graph_tensors(g, torch.float64), h.double(), x.double(),
                                     *((a.double() if isinstance(a, torch.Tensor) and
                                        a.is_floating_point() else a) for a in args))
        cargs = tuple(a.cuda() if isinstance(a, torch.Tensor) else a for a in args)
        got = torch.ops.fastpicard.spmm_update(*graph_tensors(gc, dtype), h.cuda(), x.cuda(),
                                               *cargs)
        assert_close(got[0].cpu(), want[0], dtype)  # same key: the same dropout mask
        _stat_close(got[1], want[1], dtype)
        _stat_close(got[2], want[2], dtype)
        again = torch.ops.fastpicard.spmm_update(*graph_tensors(gc, dtype), h.cuda(),
                                                 x.cuda(), *cargs)
        assert all(torch.equal(a, e) for a, e in zip(got, again))


@pytest.mark.parametrize("act", ACTS)
def test_spmm_update_gradients_realistic(act):
    g = _big_graph(20_000, 200_000, num_graphs=3)
    n = g.num_nodes
    h, x, b = (torch.randn(*s, dtype=torch.float64, requires_grad=True)
               for s in ((n, 64), (n, 64), (64,)))
    w = g.weight.double().requires_grad_()
    gc = g.to("cuda")
    hc, xc, bc, wc = (t.detach().cuda().requires_grad_() for t in (h, x, b, w))
    g.weight, gc.weight = w, wc
    frozen = torch.tensor([False, True, False])
    want, _ = spmm_update(g, h, x, 0.375, bias=b, act=act, frozen=frozen, backend="reference")
    got, _ = spmm_update(gc, hc, xc, 0.375, bias=bc, act=act, frozen=frozen.cuda())
    assert_close(got.detach().cpu(), want.detach())
    gy = torch.randn_like(want)
    grads = torch.autograd.grad(got, (hc, xc, bc, wc), gy.cuda())
    for a, e in zip(grads, torch.autograd.grad(want, (h, x, b, w), gy)):
        assert_close(a.cpu(), e)
    got2, _ = spmm_update(gc, hc, xc, 0.375, bias=bc, act=act, frozen=frozen.cuda())
    again = torch.autograd.grad(got2, (hc, xc, bc, wc), gy.cuda())
    assert all(torch.equal(a, e) for a, e in zip(grads, again))


def test_dropout_training_step_is_reproducible():
    g = _big_graph(20_000, 200_000).to("cuda")
    h = torch.randn(g.num_nodes, 64, device="cuda", requires_grad=True)
    x = torch.randn(g.num_nodes, 64, device="cuda", requires_grad=True)
    runs = []
    for _ in range(2):
        gen = torch.Generator("cuda").manual_seed(11)
        out, res = spmm_update(g, h, x, 0.5, act="identity", dropout=0.5, generator=gen)
        runs.append((out, res, *torch.autograd.grad(out.square().sum(), (h, x))))
    assert all(torch.equal(a, b) for a, b in zip(*runs))
    kept = (runs[0][0] != 0.5 * x).float().mean().item()  # a dropped element gives x_new = x/2
    assert 0.45 < kept < 0.55


# ------------------------------------------------------------------ solver control
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("rel", [False, True])
def test_picard_control_matches_cpu(dtype, rel):
    import math
    S = 5000
    gen = torch.Generator().manual_seed(4)
    res = torch.rand(S, generator=gen, dtype=dtype)
    res[::97] = math.nan
    res[::89] = 2e6
    norm = torch.rand(S, generator=gen, dtype=dtype)
    outs = []
    for dev in ("cpu", "cuda"):
        st = [torch.arange(S) % 7 == 0, torch.zeros(S, dtype=torch.bool),
              torch.zeros(S, dtype=torch.bool), torch.zeros(S, dtype=torch.int64),
              torch.full((3, S), 1.0, dtype=dtype), torch.full((2, S), math.nan, dtype=dtype),
              torch.zeros(S, dtype=torch.bool), torch.zeros(S, dtype=torch.bool),
              torch.zeros(4, dtype=torch.int64)]
        st = [t.to(dev) for t in st]
        torch.ops.fastpicard.picard_control_(res.to(dev), norm.to(dev), *st, 1, 0.3, rel, 1e3)
        outs.append([t.cpu() for t in st])
    for a, b in zip(*outs):
        torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)


# ------------------------------------------------------------------ torch.compile, models
def test_compile_fullgraph_step():
    g = _big_graph(20_000, 200_000).to("cuda")
    lin = torch.nn.Linear(64, 64).cuda()
    x0 = torch.randn(g.num_nodes, 64, device="cuda", requires_grad=True)

    def step(x):
        new, res = spmm_update(g, lin(x), x, 0.5, act="relu")
        new2, res2 = picard_update(new, spmm(g, new, "mean"), 0.25)
        return new2, res + res2

    got = torch.compile(step, fullgraph=True)(x0)
    want = step(x0)
    for a, e in zip(got, want):
        torch.testing.assert_close(a, e, **TOL[torch.float32])
    torch.testing.assert_close(torch.autograd.grad(got[0].sum(), x0)[0],
                               torch.autograd.grad(want[0].sum(), x0)[0], **TOL[torch.float32])


def test_pign_cuda_matches_cpu():
    from fastpicard.datasets import planetoid
    from fastpicard.nn import PIGN

    data = planetoid("Cora", normalize=True)
    torch.manual_seed(0)
    model = PIGN(data.num_features, 32, data.num_classes, conv="gcn", max_iter=8,
                 dropout=0.5).double().eval()
    want = model(data.x.double(), data.edge_index)
    got = model.cuda()(data.x.double().cuda(), data.edge_index.cuda())
    torch.testing.assert_close(got.cpu(), want, rtol=1e-10, atol=1e-10)
    model.float().train()
    out = model(data.x.cuda(), data.edge_index.cuda())
    out[data.train_mask.cuda()].logsumexp(1).sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters()
               if p.requires_grad)
