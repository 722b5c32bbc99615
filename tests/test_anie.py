"""fastpicard.nn.ANIE and the Galerkin / softmax attention it uses."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fastpicard.nn import ANIE, Attention
from helpers import adam_losses

F64 = torch.float64


def test_galerkin_attention_matches_formula():
    """Q (Kᵀ V) / n with K, V layer-normed per head, against a float64 loop over heads."""
    torch.manual_seed(0)
    att = Attention(12, heads=3, kind="galerkin").double()
    with torch.no_grad():
        for p in (att.k_weight, att.k_bias, att.v_weight, att.v_bias):
            p.normal_()
    x = torch.randn(2, 7, 12, dtype=F64)
    q, k, v = att.qkv(x).split(12, -1)
    heads = []
    for h in range(3):
        sl = slice(4 * h, 4 * h + 4)
        kh = F.layer_norm(k[..., sl], (4,)) * att.k_weight[h] + att.k_bias[h]
        vh = F.layer_norm(v[..., sl], (4,)) * att.v_weight[h] + att.v_bias[h]
        heads.append(q[..., sl] @ (kh.transpose(1, 2) @ vh) / 7)
    ref = att.proj(torch.cat(heads, -1))
    torch.testing.assert_close(att(x), ref, rtol=1e-12, atol=1e-12)


def test_softmax_attention_matches_formula():
    torch.manual_seed(0)
    att = Attention(8, heads=2, kind="softmax").double()
    x = torch.randn(3, 5, 8, dtype=F64)
    q, k, v = att.qkv(x).split(8, -1)
    heads = [torch.softmax(q[..., s] @ k[..., s].transpose(1, 2) / 2.0, -1) @ v[..., s]
             for s in (slice(0, 4), slice(4, 8))]
    torch.testing.assert_close(att(x), att.proj(torch.cat(heads, -1)), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("attention", ["galerkin", "softmax"])
def test_shapes_and_fixed_schedule(attention):
    torch.manual_seed(0)
    m = ANIE(3, width=16, heads=2, attention=attention, alpha=0.3, max_iter=4)
    x0 = torch.randn(2, 3)
    t = torch.linspace(0, 1, 6)
    y = m(x0, t)
    assert y.shape == (2, 6, 3)
    # y_{k+1} = α y_k + (1-α) (f + T(y_k)), y_0 = f, exactly max_iter steps
    f = x0.unsqueeze(1).expand(2, 6, 3)
    ref = f
    for _ in range(4):
        ref = 0.3 * ref + 0.7 * (f + m.operator(ref, t))
    torch.testing.assert_close(y, ref, rtol=1e-6, atol=1e-6)
    assert m.last_stats.iterations.tolist() == [4, 4]
    assert m(x0, t.expand(2, 6)).shape == (2, 6, 3)  # per-sample grids


@pytest.mark.parametrize("patch", [1, 2])
def test_field_shapes_and_patch_locality(patch):
    torch.manual_seed(0)
    m = ANIE(2, width=16, heads=2, patch_size=patch, max_iter=2)
    x0 = torch.randn(2, 2, 8, 6)
    y = m(x0, torch.linspace(0, 1, 3))
    assert y.shape == (2, 3, 2, 8, 6)
    # samples do not interact: changing sample 1 leaves sample 0 unchanged
    x1 = x0.clone()
    x1[1] += 1
    torch.testing.assert_close(m(x1, torch.linspace(0, 1, 3))[0], y[0], rtol=1e-6, atol=1e-6)


def decay_problem(n=32, steps=8, seed=0):
    """y(t) = y0 · exp(-t), learned from (y0, t grid) pairs."""
    g = torch.Generator().manual_seed(seed)
    y0 = torch.randn(n, 2, generator=g)
    t = torch.linspace(0, 2, steps)
    return y0, t, y0.unsqueeze(1) * torch.exp(-t).view(1, -1, 1)


def test_trains_on_decay():
    y0, t, target = decay_problem(16, 6)
    torch.manual_seed(0)
    m = ANIE(2, width=32, heads=4, depth=1)
    losses = adam_losses(m, lambda: F.mse_loss(m(y0, t), target), 30)
    assert losses[-1] < 0.3 * losses[0], losses


def test_field_trains():
    """Heat-equation-like smoothing of 2-D fields over time, with 2x2 patches."""
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(8, 1, 8, 8, generator=g)
    t = torch.linspace(0, 1, 4)
    blur = F.avg_pool2d(F.pad(x0, (1, 1, 1, 1), mode="circular"), 3, 1)
    target = torch.stack([x0 + (blur - x0) * float(s) for s in t], 1)
    torch.manual_seed(0)
    m = ANIE(1, width=32, heads=4, depth=1, patch_size=2, attention="softmax")
    losses = adam_losses(m, lambda: F.mse_loss(m(x0, t), target), 30)
    assert losses[-1] < 0.5 * losses[0], losses


@pytest.mark.parametrize("mode", ["implicit", "phantom"])
def test_backward_modes_match_unroll_at_fixed_point(mode):
    """A contractive ANIE (small output projection) solved to 1e-12: the implicit and phantom
    gradients equal backprop through all iterations."""
    y0, t, target = decay_problem(4, 5)
    y0, t, target = y0.double(), t.double(), target.double()
    grads = []
    for backward in ("unroll", mode):
        torch.manual_seed(0)
        m = ANIE(2, width=16, heads=2, depth=1, tol=1e-12, max_iter=200, backward=backward,
                 phantom_steps=60).double()
        with torch.no_grad():
            m.proj.weight.mul_(0.3)
        F.mse_loss(m(y0, t), target).backward()
        assert m.last_stats.converged.all()
        grads.append([p.grad for p in m.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-9)
    assert max(float(g.abs().max()) for g in grads[0]) > 1e-3


def test_state_dict_round_trip():
    torch.manual_seed(0)
    a, b = ANIE(2, width=16, heads=2), ANIE(2, width=16, heads=2)
    y0, t, _ = decay_problem(3, 4)
    assert not torch.equal(a(y0, t), b(y0, t))
    b.load_state_dict(a.state_dict())
    assert torch.equal(a(y0, t), b(y0, t))


def test_bad_arguments():
    for kw, match in [(dict(width=10, heads=4), "multiple of heads"),
                      (dict(attention="linear"), "attention"),
                      (dict(alpha=1.0), "alpha"),
                      (dict(max_iter=0), "max_iter"),
                      (dict(tol=-1.0), "tol"),
                      (dict(patch_size=0), "patch_size"),
                      (dict(backward="implicit"), "needs a tolerance")]:
        with pytest.raises(ValueError, match=match):
            ANIE(2, **kw)
    with pytest.raises(TypeError, match="unknown solver option"):
        ANIE(2, maxiter=3)
    m = ANIE(2, width=16, heads=2)
    with pytest.raises(ValueError, match="channels"):
        m(torch.randn(2, 3), torch.linspace(0, 1, 4))
    with pytest.raises(ValueError, match=r"\[B, C\]"):
        m(torch.randn(2, 2, 4, 4), torch.linspace(0, 1, 4))
    with pytest.raises(ValueError, match="t_grid"):
        m(torch.randn(2, 2), torch.linspace(0, 1, 4).expand(3, 4))
    field = ANIE(1, width=16, heads=2, patch_size=3)
    with pytest.raises(ValueError, match="divide"):
        field(torch.randn(1, 1, 8, 9), torch.linspace(0, 1, 2))


def test_galerkin_attention_many_tokens_in_half_precision():
    # the 1/n of Galerkin attention comes before the sum over tokens: an fp16 sum of 70k
    # tokens would overflow (a 64x64 field with 17 time steps has that many)
    torch.manual_seed(0)
    att = Attention(8, heads=1, kind="galerkin")
    x = torch.ones(1, 70_000, 8) + 0.1 * torch.randn(1, 70_000, 8)
    ref = att(x)
    out = att.half()(x.half())
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.float(), ref, rtol=0.05, atol=0.05)


def authors_transcription(m, x0, t, n, alpha):
    """The authors' ANIE written from its equations with plain torch ops on m's weights:
    A = proj ∘ (post-norm blocks: z = LN(x + Attn(x)), x = LN(z + W2 relu(W1 z))) ∘ lift with
    Galerkin attention Q (Kᵀ V)/L and no K/V norm; T(y) = y + A(y); y_0 = f,
    y_{k+1} = α y_k + (1-α)(f + T(y_k)); answer f + T(y_n)."""
    b, c = x0.shape
    f = x0.unsqueeze(1).expand(b, t.numel(), c)

    def lin(x, layer):
        return x @ layer.weight.T + layer.bias

    def A(y):
        x = lin(torch.cat([y, t.view(1, -1, 1).expand(b, -1, 1)], -1), m.lift)
        for blk in m.blocks:
            heads, L, d = blk.attn.heads, x.shape[1], x.shape[2]
            q, k, v = lin(x, blk.attn.qkv).split(d, -1)
            hd = d // heads
            att = torch.cat([q[..., h * hd:(h + 1) * hd] @ (
                k[..., h * hd:(h + 1) * hd].transpose(1, 2) @ v[..., h * hd:(h + 1) * hd]) / L
                for h in range(heads)], -1)
            z = F.layer_norm(x + lin(att, blk.attn.proj), (d,), blk.norm1.weight, blk.norm1.bias)
            ff = lin(torch.relu(lin(z, blk.mlp[0])), blk.mlp[3])
            x = F.layer_norm(z + ff, (d,), blk.norm2.weight, blk.norm2.bias)
        return lin(x, m.proj)

    def T(y):
        return y + A(y)

    y = f
    for _ in range(n):
        y = alpha * y + (1 - alpha) * (f + T(y))
    return f + T(y)


@pytest.mark.parametrize("heads,depth,n", [(1, 1, 1), (2, 2, 3), (4, 1, 4)])
def test_authors_formulation_matches_its_equations(heads, depth, n):
    torch.manual_seed(0)
    m = ANIE(2, width=8, heads=heads, depth=depth, alpha=0.3, max_iter=n,
             formulation="authors").double()
    with torch.no_grad():  # non-trivial norms so a missing or misplaced norm shows
        for p in m.parameters():
            p.add_(0.1 * torch.randn_like(p))
    for blk in m.blocks:  # no K/V layer norm, ReLU feed-forward, post-norm wiring
        assert not hasattr(blk.attn, "k_weight") and isinstance(blk.mlp[1], torch.nn.ReLU)
        assert blk.wiring == "post"
    x0 = torch.randn(3, 2, dtype=F64)
    t = torch.linspace(0.1, 1, 5, dtype=F64)
    y = m(x0, t)
    ref = authors_transcription(m, x0, t, n, 0.3)
    torch.testing.assert_close(y, ref, rtol=1e-12, atol=1e-12)
    # gradients flow through every iteration (unrolled), equal to the transcription's
    params = list(m.parameters())
    g = torch.autograd.grad(y.square().sum(), params)
    g_ref = torch.autograd.grad(authors_transcription(m, x0, t, n, 0.3).square().sum(), params)
    for a, b in zip(g, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_authors_formulation_on_fields_answers_f_plus_T():
    torch.manual_seed(0)
    m = ANIE(1, width=8, heads=2, depth=1, patch_size=2, max_iter=2, alpha=0.5,
             formulation="authors").double()
    x0 = torch.randn(2, 1, 4, 6, dtype=F64)
    t = torch.linspace(0, 1, 3, dtype=F64)
    f = x0.unsqueeze(1).expand(2, 3, 1, 4, 6)
    y = f
    for _ in range(2):
        y = 0.5 * y + 0.5 * (f + m.operator(y, t))
    torch.testing.assert_close(m(x0, t), f + m.operator(y, t), rtol=1e-12, atol=1e-12)
    # T carries the residual: T(y) - y is the transformer's output alone
    fp = ANIE(1, width=8, heads=2, depth=1, patch_size=2, formulation="fastpicard").double()
    assert isinstance(fp.norm, torch.nn.LayerNorm) and hasattr(fp.blocks[0].attn, "k_weight")
    with pytest.raises(ValueError, match="formulation"):
        ANIE(1, formulation="paper")


def test_clear_errors_for_empty_batch_and_integer_input():
    m = ANIE(2, width=8, heads=2)
    t = torch.linspace(0, 1, 3)
    with pytest.raises(ValueError, match="x_init has an empty batch"):
        m(torch.zeros(0, 2), t)
    with pytest.raises(TypeError, match="x_init must be a floating-point tensor"):
        m(torch.ones(2, 2, dtype=torch.int64), t)
    with pytest.raises(TypeError, match="t_grid must hold real times"):
        m(torch.ones(2, 2), torch.ones(3, dtype=torch.complex64))
    assert m(torch.ones(2, 2), torch.arange(3)).shape == (2, 3, 2)  # integer times are fine
