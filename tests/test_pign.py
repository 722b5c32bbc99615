"""fastpicard.nn.PIGN: the paper's architecture, solver options, PyG convs, errors."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import fastpicard
from fastpicard.nn import PIGN, GCNLayer
from helpers import adam_losses

pyg_nn = pytest.importorskip("torch_geometric.nn")


def toy_graph(n=40, f=6, classes=3, seed=0):
    """Nodes in `classes` communities (dense inside, sparse across), features = class mean +
    noise: a graph where message passing helps."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % classes
    src, dst = torch.randint(0, n, (2, 6 * n), generator=g)
    keep = (y[src] == y[dst]) | (torch.rand(src.shape, generator=g) < 0.1)
    ei = torch.stack([src[keep], dst[keep]])
    ei = torch.cat([ei, ei.flip(0)], 1)
    x = F.one_hot(y, f).float() + 0.8 * torch.randn(n, f, generator=g)
    return x, ei, y


def plain_pign(model, x, ei, n_iter):
    """The authors' loop written out: the reference PIGN must match."""
    h = F.dropout(F.relu(model.encoder(x)), model.dropout, model.training)
    for _ in range(n_iter):
        new = F.dropout(F.relu(model.conv(h, ei)), model.dropout, model.training)
        h = model.alpha * h + (1 - model.alpha) * new
    return model.decoder(h)


def train_losses(model, x, ei, y, steps=25, lr=0.02):
    return adam_losses(model, lambda: F.cross_entropy(model.train()(x, ei), y), steps, lr)


@pytest.mark.parametrize("conv", ["gcn", "gat", "sage", "instance"])
def test_loss_decreases(conv):
    x, ei, y = toy_graph()
    torch.manual_seed(0)
    c = pyg_nn.GCNConv(16, 16) if conv == "instance" else conv
    model = PIGN(6, 16, 3, conv=c, max_iter=4, dropout=0.1)
    losses = train_losses(model, x, ei, y)
    assert losses[-1] < 0.6 * losses[0], losses
    assert model.last_stats.iterations.tolist() == [4]


@pytest.mark.parametrize("conv", ["gcn", "gat", "sage"])
@pytest.mark.parametrize("training", [False, True])
def test_matches_plain_loop(conv, training):
    """Fixed schedule (tol=None), unfused: exactly max_iter smoothed steps, the last one
    returned, bit-identical to the loop in the authors' code (same dropout draws)."""
    x, ei, _ = toy_graph()
    torch.manual_seed(0)
    model = PIGN(6, 16, 3, conv=conv, alpha=0.3, max_iter=5, fused=False).train(training)
    torch.manual_seed(1)
    out = model(x, ei)
    torch.manual_seed(1)
    ref = plain_pign(model, x, ei, 5)
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    st = model.last_stats
    assert st.steps == 5 and st.trace.shape == (5, 1) and not st.converged.any()
    if not training:
        out.sum().backward()  # differentiable through every step
        assert all(p.grad is not None for p in model.parameters())


def _fused_pair(conv="gcn", **kw):
    torch.manual_seed(0)
    fused = PIGN(6, 16, 3, conv=conv, alpha=0.4, max_iter=5, **kw)
    plain = PIGN(6, 16, 3, conv=conv, alpha=0.4, max_iter=5, fused=False, **kw)
    plain.load_state_dict(fused.state_dict())
    with torch.no_grad():
        fused.conv.bias.normal_()
        plain.conv.bias.copy_(fused.conv.bias)
    assert fused.uses_fused_path and not plain.uses_fused_path
    return fused, plain


@pytest.mark.parametrize("conv", ["gcn", "instance", "builtin"])
@pytest.mark.parametrize("act", ["relu", "tanh", "leaky_relu", "identity"])
def test_fused_matches_pyg_path(conv, act):
    """The fused GCN step (GEMM + spmm_update) = PyG's GCNConv + act + smoothing, forward and
    backward (dropout off: its masks come from different generators)."""
    c = {"gcn": "gcn", "instance": pyg_nn.GCNConv(16, 16), "builtin": GCNLayer(16, 16)}[conv]
    x, ei, y = toy_graph()
    fused, plain = _fused_pair(c, act=act, dropout=0.0)
    for mode in ("eval", "train"):
        fused.train(mode == "train")
        plain.train(mode == "train")
        a, b = fused(x, ei), plain(x, ei)
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    F.cross_entropy(a, y).backward()
    F.cross_entropy(b, y).backward()
    for (name, p), q in zip(fused.named_parameters(), plain.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-6, msg=name)
    torch.testing.assert_close(fused.last_stats.trace, plain.last_stats.trace, rtol=1e-4,
                               atol=1e-6)


def test_fused_dropout_and_graph_cache():
    x, ei, y = toy_graph()
    fused, plain = _fused_pair(dropout=0.5)
    fused.train()
    torch.manual_seed(3)
    a = fused(x, ei)
    torch.manual_seed(3)
    assert torch.equal(a, fused(x, ei))  # reproducible under torch.manual_seed
    assert not torch.equal(a, fused(x, ei))  # fresh masks on the next call
    assert not torch.allclose(a, fused.eval()(x, ei))
    g = fused._graph_cache[1]
    fused(x, ei)
    assert fused._graph_cache[1] is g  # same edge_index: Graph reused
    ei2 = ei.clone()
    fused(x, ei2)
    assert fused._graph_cache[1] is g  # another tensor, the same values: reused
    ei2[0, 0] = (ei2[0, 0] + 1) % 40
    fused(x, ei2)
    assert fused._graph_cache[1] is not g  # other values: rebuilt
    graph = fastpicard.Graph.from_edge_index(ei, 40, norm="gcn")
    torch.testing.assert_close(fused(x, graph), fused(x, ei), rtol=0, atol=0)
    losses = train_losses(fused, x, ei, y, steps=60)  # trains with in-kernel dropout
    assert sum(losses[-10:]) / 10 < 0.75 * losses[0], losses
    with pytest.raises(TypeError, match="needs the fused GCN path"):
        plain(x, graph)
    with pytest.raises(ValueError, match="nodes"):
        fused(x[:30], graph)


def test_fused_choice():
    assert not PIGN(4, 8, 2, act=torch.sin).uses_fused_path  # a callable act: PyG path
    assert not PIGN(4, 8, 2, conv=pyg_nn.GCNConv(8, 8, improved=True)).uses_fused_path
    assert not PIGN(4, 8, 2, conv="sage").uses_fused_path
    # GCNConv variants the fused step does not compute
    for kw in (dict(flow="target_to_source"), dict(aggr="mean"), dict(aggr="max")):
        assert not PIGN(4, 8, 2, conv=pyg_nn.GCNConv(8, 8, **kw)).uses_fused_path, kw
    lazy = PIGN(4, 8, 2, conv=pyg_nn.GCNConv(-1, 8))
    assert not lazy.uses_fused_path  # weight not materialised yet
    x, ei, _ = toy_graph(f=4)
    lazy(x, ei)
    with pytest.raises(ValueError, match="fused=True"):
        PIGN(4, 8, 2, conv="gat", fused=True)
    with pytest.raises(TypeError, match="fused"):
        PIGN(4, 8, 2, fused="yes")


def test_fused_float64_matches_pyg_path_closely():
    # float64 models get float64 graph weights (PyG's gcn_norm works in x's dtype)
    x, ei, _ = toy_graph()
    fused, plain = _fused_pair(dropout=0.0)
    fused, plain, x = fused.double().eval(), plain.double().eval(), x.double()
    torch.testing.assert_close(fused(x, ei), plain(x, ei), rtol=1e-12, atol=1e-12)
    assert fused._graph_cache[1].weight.dtype == torch.float64


def test_inference_mode_edge_index():
    x, ei, _ = toy_graph()
    model = PIGN(6, 8, 3).eval()
    expected = model(x, ei)
    with torch.inference_mode():
        ei_inf = ei.clone()  # an inference tensor: no version counter
        torch.testing.assert_close(model(x, ei_inf), expected, rtol=0, atol=0)
        torch.testing.assert_close(model(x, ei_inf), expected, rtol=0, atol=0)


def test_eval_max_iter():
    x, ei, _ = toy_graph()
    model = PIGN(6, 8, 3, max_iter=2, eval_max_iter=7)
    model.train()(x, ei)
    assert model.last_stats.steps == 2
    model.eval()(x, ei)
    assert model.last_stats.steps == 7
    torch.testing.assert_close(model(x, ei), plain_pign(model, x, ei, 7), rtol=1e-5, atol=1e-6)


def contractive_model(dtype=torch.float64, **kw):
    torch.manual_seed(0)
    model = PIGN(6, 8, 3, dropout=0.0, act="tanh", **kw).to(dtype)
    with torch.no_grad():
        model.conv.lin.weight.mul_(0.4)  # Lipschitz < 1: a unique fixed point
        model.conv.bias.normal_()  # (with zero bias it would be x* = 0)
    return model


@pytest.mark.parametrize("mode", ["unroll", "implicit", "phantom"])
def test_backward_modes_match_unrolled_fixed_point(mode):
    """At a converged fixed point every backward mode gives unroll's gradient. (PIGN's fixed
    point does not depend on the encoder — T has no input term — so the encoder's gradient is
    ~0 when unrolled and absent in implicit mode.)"""
    x, ei, _ = (t.double() if t.is_floating_point() else t for t in toy_graph())
    w = torch.randn(40, 3, dtype=torch.float64)
    ref = contractive_model(tol=1e-12, max_iter=300)
    model = contractive_model(tol=1e-12, max_iter=300, backward=mode, phantom_steps=80)
    (ref(x, ei) * w).sum().backward()
    out = model(x, ei)
    assert model.last_stats.converged.all() and model.last_stats.steps > 20
    (out * w).sum().backward()
    for (name, p), q in zip(model.named_parameters(), ref.parameters()):
        g = torch.zeros_like(q) if p.grad is None else p.grad
        torch.testing.assert_close(g, q.grad, rtol=1e-6, atol=1e-9, msg=name)
        if not name.startswith("encoder"):
            assert q.grad.abs().max() > 1e-3, name  # a gradient worth comparing


@pytest.mark.parametrize("opts", [dict(solver="anderson"), dict(check_every=3),
                                  dict(stop="rel", backward="implicit")])
def test_solver_options_pass_through(opts):
    x, ei, y = (t.double() if t.is_floating_point() else t for t in toy_graph())
    plain = contractive_model(tol=1e-10, max_iter=300)
    model = contractive_model(tol=1e-10, max_iter=300, **opts)
    with torch.no_grad():
        torch.testing.assert_close(model(x, ei), plain(x, ei), rtol=1e-7, atol=1e-8)
    assert model.last_stats.converged.all() and model.last_stats.stop == opts.get("stop", "abs")
    if "solver" in opts:  # Anderson needs fewer steps than Picard for the same answer
        assert model.last_stats.steps < plain.last_stats.steps
    model.tol = 1e-4  # float32 training
    losses = train_losses(model.float(), x.float(), ei, y, steps=10, lr=0.05)
    assert losses[-1] < losses[0]


def test_per_graph_early_exit_with_batch():
    """Two graphs in one PyG-style batch: each stops at its own iteration, and gets the same
    answer as when solved alone."""
    x1, e1, _ = toy_graph(20, seed=1)
    x2, e2, _ = toy_graph(30, seed=2)
    x2 = 3 * x2  # a different graph that needs more iterations
    x = torch.cat([x1, x2])
    ei = torch.cat([e1, e2 + 20], 1)
    batch = torch.cat([torch.zeros(20, dtype=torch.long), torch.ones(30, dtype=torch.long)])
    model = contractive_model(torch.float32, tol=1e-5, max_iter=200).eval()
    both = model(x, ei, batch)
    its = model.last_stats.iterations
    alone = [model(x1, e1), model(x2, e2)]
    torch.testing.assert_close(both, torch.cat(alone), rtol=1e-5, atol=1e-6)
    assert its.shape == (2,) and model.last_stats.converged.all()
    # a batched Graph carries the graph ids itself
    graph = fastpicard.Graph.from_edge_index(ei, 50, norm="gcn", batch=batch)
    torch.testing.assert_close(model(x, graph), both, rtol=0, atol=0)
    assert torch.equal(model.last_stats.iterations, its)
    fixed = PIGN(6, 8, 3, max_iter=3).eval()
    fixed(x, graph)
    assert fixed.last_stats.trace.shape == (3, 2)


def test_state_dict_round_trip():
    x, ei, _ = toy_graph()
    for conv in ("gcn", "gat"):
        a = PIGN(6, 16, 3, conv=conv, max_iter=3).eval()
        b = PIGN(6, 16, 3, conv=conv, max_iter=3).eval()
        assert not torch.equal(a(x, ei), b(x, ei))
        b.load_state_dict(a.state_dict())
        torch.testing.assert_close(a(x, ei), b(x, ei), rtol=0, atol=0)


def test_builtin_gcn_layer_matches_pyg():
    """GCNLayer (used when torch_geometric is absent) = PyG GCNConv: same keys, same maths,
    including existing self loops, duplicate edges and isolated nodes."""
    torch.manual_seed(0)
    ref = pyg_nn.GCNConv(7, 5)
    ours = GCNLayer(7, 5)
    assert list(ours.state_dict()) == list(ref.state_dict())
    ours.load_state_dict(ref.state_dict())
    with torch.no_grad():
        ref.bias.normal_()
        ours.bias.copy_(ref.bias)
    x = torch.randn(12, 7)
    ei = torch.tensor([[0, 1, 1, 2, 3, 3, 5, 5, 7], [1, 0, 0, 2, 4, 4, 6, 5, 8]])  # 9..11 isolated
    torch.testing.assert_close(ours(x, ei), ref(x, ei), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("conv", ["gcn", "sage"])
def test_compile_no_graph_break(conv):
    """PIGN's forward compiles into one graph: the fused GCN path on a prebuilt Graph, and the
    fixed-schedule loop around a PyG conv (SAGE: PyG's GCN/GAT normalisation itself breaks
    graphs on boolean masks)."""
    x, ei, _ = toy_graph()
    model = PIGN(6, 16, 3, conv=conv, max_iter=4).eval()
    arg = fastpicard.Graph.from_edge_index(ei, 40, norm="gcn") if conv == "gcn" else ei
    assert model.uses_fused_path == (conv == "gcn")
    compiled = torch.compile(model, fullgraph=True)
    torch.testing.assert_close(compiled(x, arg), model(x, arg), rtol=1e-5, atol=1e-6)


def test_nonfinite_is_reported():
    x, ei, _ = toy_graph()
    model = PIGN(6, 8, 3, max_iter=3, act="identity").eval()
    x = x.clone()
    x[0, 0] = float("nan")
    with pytest.warns(RuntimeWarning, match="non-finite"):
        model(x, ei)
    assert model.last_stats.diverged.all()
    strict = PIGN(6, 8, 3, max_iter=3, on_diverge="raise").eval()
    from fastpicard import DivergenceError
    with pytest.raises(DivergenceError):
        strict(x, ei)


def test_bad_arguments():
    with pytest.raises(ValueError, match="hidden_channels=8"):
        PIGN(4, 8, 2, conv=pyg_nn.GCNConv(16, 16))
    with pytest.raises(ValueError, match="hidden_channels=8"):
        PIGN(4, 8, 2, conv=pyg_nn.GATConv(8, 8, heads=2))  # concat: 16 out
    PIGN(4, 8, 2, conv=pyg_nn.GATConv(8, 8, heads=2, concat=False))
    with pytest.raises(ValueError, match="conv must be one of"):
        PIGN(4, 8, 2, conv="gin")
    with pytest.raises(TypeError, match="conv"):
        PIGN(4, 8, 2, conv=3)
    with pytest.raises(TypeError, match="conv_kwargs"):
        PIGN(4, 8, 2, conv=pyg_nn.GCNConv(8, 8), conv_kwargs={"improved": True})
    with pytest.raises(ValueError, match="act"):
        PIGN(4, 8, 2, act="gelu2")
    with pytest.raises(ValueError, match="alpha"):
        PIGN(4, 8, 2, alpha=1.0)
    with pytest.raises(ValueError, match="max_iter"):
        PIGN(4, 8, 2, max_iter=0)
    with pytest.raises(ValueError, match="eval_max_iter"):
        PIGN(4, 8, 2, eval_max_iter=0)
    with pytest.raises(ValueError, match="tol"):
        PIGN(4, 8, 2, tol=-1.0)
    with pytest.raises(ValueError, match="dropout"):
        PIGN(4, 8, 2, dropout=1.5)
    with pytest.raises(ValueError, match="hidden_channels"):
        PIGN(4, 0, 2)
    with pytest.raises(TypeError, match="unknown solver option 'tolerance'"):
        PIGN(4, 8, 2, tolerance=1e-3)
    with pytest.raises(TypeError, match="'batch'"):
        PIGN(4, 8, 2, batch="leading")
    with pytest.raises(ValueError, match="needs a tolerance"):
        PIGN(4, 8, 2, backward="implicit")
    with pytest.raises(ValueError, match="needs a tolerance"):
        PIGN(4, 8, 2, solver="anderson")
    PIGN(4, 8, 2, backward="implicit", tol=1e-4)  # fine with a tolerance

    class Widen(torch.nn.Module):  # declares nothing; caught at the first forward
        def forward(self, x, ei):
            return torch.cat([x, x], 1)

    x, ei, _ = toy_graph()
    with pytest.raises(ValueError, match="keep the width"):
        PIGN(6, 8, 2, conv=Widen())(x, ei)


@pytest.mark.parametrize("how", ["data", "numpy", "inference"])
def test_edge_index_edited_behind_autograd_is_seen(how):
    """The Graph cache trusted tensor identity and version: edits through .data or numpy do
    not bump the version, so a changed graph silently reused the old one."""
    x, ei, _ = toy_graph()
    fused, plain = _fused_pair(dropout=0.0)
    fused.eval(), plain.eval()
    if how == "inference":
        with torch.inference_mode():
            ei = ei.clone()
    before = fused(x, ei)
    new = ei.clone()
    new[1, :25] = (new[1, :25] + 7) % 40
    if how == "data":
        ei.data[1, :25] = new[1, :25]
    elif how == "numpy":
        ei.numpy()[1, :25] = new[1, :25].numpy()
    else:
        with torch.inference_mode():
            ei[1, :25] = new[1, :25]
    after = fused(x, ei)
    assert not torch.allclose(before, after)
    torch.testing.assert_close(after, plain(x, new), rtol=1e-5, atol=1e-6)
