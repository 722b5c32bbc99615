"""fastpicard.nn.GATLayer: PyG GATConv's maths on fastpicard's spmm, against a dense float64
reference written here and against PyG's GATConv itself (same state_dict, same RNG)."""
import pytest
import torch
import torch.nn.functional as F

from fastpicard.nn import PIGN, GATLayer

from helpers import needs_triton


def _graph(n=13, e=40, seed=0, loops=True, dup=True, isolated=True):
    g = torch.Generator().manual_seed(seed)
    ei = torch.randint(0, n - 2 if isolated else n, (2, e), generator=g)  # last two: no edges
    extra = [ei]
    if loops:
        extra.append(torch.tensor([[0, 3], [0, 3]]))
    if dup:
        extra.append(ei[:, :3])
    return torch.cat(extra, 1)


def dense_reference(layer, x, edge_index):
    """GAT from its definition, edge by edge in float64."""
    h = (x.double() @ layer.lin.weight.double().T).view(x.shape[0], layer.heads, -1)
    src, dst = edge_index[0].tolist(), edge_index[1].tolist()
    if layer.add_self_loops:
        pairs = [(s, d) for s, d in zip(src, dst) if s != d] + [(i, i) for i in range(len(x))]
        src, dst = [p[0] for p in pairs], [p[1] for p in pairs]
    a_s = (h * layer.att_src.double()).sum(-1)
    a_d = (h * layer.att_dst.double()).sum(-1)
    out = torch.zeros_like(h)
    for i in range(len(x)):
        edges = [k for k, d in enumerate(dst) if d == i]
        if not edges:
            continue
        score = torch.stack([F.leaky_relu(a_s[src[k]] + a_d[i], layer.negative_slope)
                             for k in edges])  # [deg, H]
        alpha = torch.softmax(score, 0)
        out[i] = sum(alpha[m, :, None] * h[src[k]] for m, k in enumerate(edges))
    out = out.reshape(len(x), -1) if layer.concat else out.mean(1)
    return out if layer.bias is None else out + layer.bias.double()


CASES = [dict(heads=1), dict(heads=3), dict(heads=3, concat=False),
         dict(heads=2, add_self_loops=False), dict(heads=2, bias=False, negative_slope=0.05)]


@pytest.mark.parametrize("kw", CASES)
def test_matches_dense_reference(kw):
    torch.manual_seed(1)
    layer = GATLayer(6, 5, **kw).double()
    x, ei = torch.randn(13, 6, dtype=torch.float64), _graph()
    torch.testing.assert_close(layer(x, ei), dense_reference(layer, x, ei), rtol=1e-10,
                               atol=1e-12)


def test_float32_and_non_contiguous_input():
    torch.manual_seed(2)
    layer = GATLayer(6, 4, heads=3)
    x = torch.randn(13, 12)[:, ::2]
    assert not x.is_contiguous()
    ei = _graph()
    torch.testing.assert_close(layer(x, ei).double(), dense_reference(layer, x, ei), rtol=1e-5,
                               atol=1e-5)


def test_gradcheck():
    torch.manual_seed(3)
    layer = GATLayer(4, 3, heads=2, concat=False).double()
    x = torch.randn(9, 4, dtype=torch.float64, requires_grad=True)
    ei = _graph(n=9, e=25)
    params = (layer.lin.weight, layer.att_src, layer.att_dst)

    def f(x, w, a, b):
        with torch.nn.utils.stateless._reparametrize_module(
                layer, {"lin.weight": w, "att_src": a, "att_dst": b}):
            return layer(x, ei)
    assert torch.autograd.gradcheck(f, (x, *[p.detach().requires_grad_() for p in params]))


def test_no_edges_and_nodes_without_edges():
    layer = GATLayer(3, 2, heads=2, add_self_loops=False)
    with torch.no_grad():
        layer.bias.fill_(0.25)
    out = layer(torch.randn(5, 3), torch.empty(2, 0, dtype=torch.long))
    assert torch.equal(out, torch.full((5, 4), 0.25))  # no neighbour: the sum is 0, + bias
    ei = torch.tensor([[0, 1], [1, 0]])  # nodes 2..4 receive nothing
    out = layer(torch.randn(5, 3), ei)
    assert torch.equal(out[2:], torch.full((3, 4), 0.25))


def test_graph_cache_follows_edge_index_values():
    torch.manual_seed(4)
    layer = GATLayer(4, 3, heads=2)
    x, ei = torch.randn(13, 4), _graph()
    first = layer(x, ei)
    ei[0, :5] = (ei[0, :5] + 1) % 13  # in place: same tensor, new edges
    torch.testing.assert_close(layer(x, ei).double(), dense_reference(layer, x, ei), rtol=1e-5,
                               atol=1e-5)
    assert not torch.allclose(layer(x, ei), first)


def test_bad_inputs_name_the_argument():
    layer = GATLayer(4, 3)
    x = torch.randn(6, 4)
    with pytest.raises(ValueError, match="edge_index has node ids outside"):
        layer(x, torch.tensor([[0, 6], [1, 2]]))
    with pytest.raises(ValueError, match="edge_index has node ids outside"):
        layer(x, torch.tensor([[0, -1], [1, 2]]))
    with pytest.raises(ValueError, match=r"edge_index must be a \[2, E\]"):
        layer(x, torch.tensor([[0, 1, 2]]))
    with pytest.raises(ValueError, match=r"edge_index must be a \[2, E\]"):
        layer(x, torch.tensor([[0.0, 1.0], [1.0, 2.0]]))
    with pytest.raises(TypeError, match="edge_index must be"):
        layer(x, [[0, 1], [1, 2]])
    with pytest.raises(ValueError, match=r"x must be \[num_nodes, 4\]"):
        layer(torch.randn(6, 5), torch.tensor([[0], [1]]))
    for kw in (dict(heads=0), dict(out_channels=0), dict(dropout=1.0)):
        args = {"in_channels": 4, "out_channels": 3, **kw}
        with pytest.raises(ValueError, match="GATLayer: " + next(iter(kw))):
            GATLayer(**args)


@pytest.mark.parametrize("kw", CASES + [dict(heads=8, concat=False, dropout=0.6)])
def test_same_state_dict_draws_and_results_as_pyg(kw):
    pyg = pytest.importorskip("torch_geometric.nn")
    torch.manual_seed(5)
    ref = pyg.GATConv(6, 5, **kw)
    torch.manual_seed(5)
    ours = GATLayer(6, 5, **kw)
    ref_sd, our_sd = ref.state_dict(), ours.state_dict()
    assert list(ref_sd) == list(our_sd)
    for k in ref_sd:  # the same random draws, in the same order
        assert torch.equal(ref_sd[k], our_sd[k]), k
    ref.double(), ours.double()
    x = torch.randn(13, 6, dtype=torch.float64, requires_grad=True)
    ei = _graph()
    for training in (False, True):  # training: the same attention-dropout mask
        ref.train(training), ours.train(training)
        torch.manual_seed(6)
        a = ref(x, ei)
        torch.manual_seed(6)
        b = ours(x, ei)
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-12)
        wrt = [x, *ours.parameters()]
        ga = torch.autograd.grad((a * a.detach().cos()).sum(), [x, *ref.parameters()])
        gb = torch.autograd.grad((b * b.detach().cos()).sum(), wrt)
        for u, v in zip(ga, gb):
            torch.testing.assert_close(v, u, rtol=1e-9, atol=1e-11)


def test_pign_gat_runs_on_gat_layer_and_falls_back_for_other_options():
    model = PIGN(5, 8, 3, conv="gat")
    assert isinstance(model.conv, GATLayer) and model.conv.heads == 8 and not model.conv.concat
    out = model(torch.randn(13, 5), _graph())
    assert out.shape == (13, 3) and torch.isfinite(out).all()
    pyg = pytest.importorskip("torch_geometric.nn")
    other = PIGN(5, 8, 3, conv="gat", conv_kwargs=dict(residual=True))
    assert type(other.conv) is pyg.GATConv


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    """On a GPU the neighbour sum runs on spmm's Triton kernel: same outputs and gradients."""
    torch.manual_seed(7)
    layer = GATLayer(6, 5, heads=4, concat=False)
    x, ei = torch.randn(300, 6), torch.randint(0, 300, (2, 3000))
    want = layer(x, ei)
    gw = torch.autograd.grad(want.square().sum(), list(layer.parameters()))
    layer.cuda()
    got = layer(x.cuda(), ei.cuda())
    gg = torch.autograd.grad(got.square().sum(), list(layer.parameters()))
    torch.testing.assert_close(got.cpu(), want, rtol=1e-4, atol=1e-5)
    for a, b in zip(gg, gw):
        torch.testing.assert_close(a.cpu(), b, rtol=1e-4, atol=1e-4)


@needs_triton()
def test_triton_path_matches_cpp():
    """The GPU path without a GPU: spmm's Triton kernels (Triton's interpreter on CPU tensors)
    give GATLayer the same outputs and gradients as the C++ kernels."""
    from fastpicard.ops import _backend

    torch.manual_seed(8)
    layer = GATLayer(6, 5, heads=3, concat=False)
    x, ei = torch.randn(40, 6), torch.randint(0, 40, (2, 300))
    want = layer(x, ei)
    gw = torch.autograd.grad(want.square().sum(), [*layer.parameters()])
    with _backend.triton_cpu_kernels():
        got = layer(x, ei)
        gg = torch.autograd.grad(got.square().sum(), [*layer.parameters()])
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    for a, b in zip(gg, gw):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_index_layouts_low_precision_and_no_nodes():
    torch.manual_seed(9)
    ei = torch.randint(0, 50, (60, 2)).t()  # a non-contiguous view
    layer = GATLayer(8, 4, heads=2)
    x = torch.randn(50, 8)
    want = dense_reference(layer, x, ei.contiguous())
    for idx in (ei, ei.int(), ei.contiguous()):
        fresh = GATLayer(8, 4, heads=2)
        fresh.load_state_dict(layer.state_dict())
        torch.testing.assert_close(fresh(x, idx).double(), want, rtol=1e-5, atol=1e-5)
    for dtype, tol in ((torch.float16, 1e-2), (torch.bfloat16, 5e-2)):
        low = GATLayer(8, 4, heads=2).to(dtype)
        low.load_state_dict(layer.state_dict())
        out = low(x.to(dtype), ei)
        assert out.dtype == dtype
        torch.testing.assert_close(out.double(), want, rtol=tol, atol=tol)
    assert layer(torch.randn(0, 8), torch.empty(2, 0, dtype=torch.long)).shape == (0, 8)


def _twin(layer):
    fresh = GATLayer(layer.in_channels, layer.out_channels, heads=layer.heads,
                     concat=layer.concat, add_self_loops=layer.add_self_loops)
    fresh.load_state_dict(layer.state_dict())
    return fresh


def test_graph_first_seen_in_inference_mode_serves_training():
    layer = GATLayer(4, 3, heads=2)
    x, ei = torch.randn(13, 4), _graph()
    with torch.inference_mode():
        layer.eval()
        layer(x, ei)
        layer(x, ei.clone())  # an inference tensor as edge_index too
    layer.train()
    layer(x, ei).sum().backward()
    assert layer.att_src.grad is not None
    model = PIGN(4, 6, 3, conv="gat")  # the same through PIGN (its GCN path: next test)
    with torch.inference_mode():
        model.eval()(x, ei)
    model.train()(x, ei).sum().backward()


def test_pign_gcn_graph_first_seen_in_inference_mode_serves_training():
    model = PIGN(4, 6, 3, conv="gcn")
    x, ei = torch.randn(13, 4), _graph()
    with torch.inference_mode():
        model.eval()(x, ei)
    model.train()(x, ei).sum().backward()
    assert model.conv.lin.weight.grad is not None


def test_cache_does_not_alias_the_callers_buffer_and_follows_add_self_loops():
    torch.manual_seed(10)
    layer = GATLayer(4, 3, heads=2, add_self_loops=False)
    x = torch.randn(13, 4)
    buf = _graph()
    saved = buf.clone()
    layer(x, buf)
    buf.copy_(torch.randint(0, 13, buf.shape))  # the caller reuses its buffer
    torch.testing.assert_close(layer(x, saved), _twin(layer)(x, saved))
    layer.add_self_loops = True  # read on every call, as GATConv does
    torch.testing.assert_close(layer(x, saved), _twin(layer)(x, saved))


def test_softmax_keeps_the_dtype_of_its_exponentials():
    """Under CUDA autocast exp runs in float32 on float16 scores; the sums must follow it."""
    from fastpicard.nn.gat import segment_softmax

    s = torch.randn(7, 2).half()
    idx = torch.tensor([0, 0, 1, 2, 2, 2, 1])
    real_exp = torch.Tensor.exp
    try:
        torch.Tensor.exp = lambda t: real_exp(t.float())  # what autocast does
        out = segment_softmax(s, idx, 3)
    finally:
        torch.Tensor.exp = real_exp
    assert out.dtype == torch.float32
    want = torch.cat([torch.softmax(s.float()[idx == i], 0) for i in range(3)])
    order = torch.cat([torch.nonzero(idx == i).flatten() for i in range(3)])
    torch.testing.assert_close(out[order], want, rtol=1e-3, atol=1e-3)
