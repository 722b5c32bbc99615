"""fastpicard.nn.IterativeViT (transformers, timm, FieldViT backbones) and FieldViT."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fastpicard.nn import FieldViT, IterativeViT
from helpers import adam_losses


def hf_config():
    transformers = pytest.importorskip("transformers")
    return transformers, transformers.ViTConfig(
        image_size=16, patch_size=4, num_channels=3, hidden_size=32, num_hidden_layers=2,
        num_attention_heads=4, intermediate_size=64, num_labels=5,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def hf_model(kind, seed=0):
    transformers, cfg = hf_config()
    torch.manual_seed(seed)
    return getattr(transformers, kind)(cfg).eval()


def plain_loop(blocks, tokens, n, lam):
    for _ in range(n):
        t = tokens
        for blk in blocks:
            out = blk(t)
            t = out[0] if isinstance(out, tuple) else out
        tokens = (1 - lam) * t + lam * tokens
    return tokens


@pytest.mark.parametrize("kind", ["ViTModel", "ViTForImageClassification"])
def test_hf_single_pass_is_exact_and_keys_kept(kind):
    model = hf_model(kind)
    it = IterativeViT(model, max_iter=1, alpha=0.0)
    assert it.backbone == "transformers"
    x = torch.randn(2, 3, 16, 16)
    a, b = model(x), it(x)
    if kind == "ViTModel":
        assert torch.equal(a.last_hidden_state, b.last_hidden_state)
        assert torch.equal(a.pooler_output, b.pooler_output)
    else:
        assert torch.equal(a.logits, b.logits)
    assert list(it.state_dict()) == list(model.state_dict())
    # pretrained weights load unchanged, strictly
    other = hf_model(kind, seed=1)
    fresh = IterativeViT(hf_model(kind, seed=2), max_iter=1, alpha=0.0)
    fresh.load_state_dict(other.state_dict())
    ref = other(x)
    got = fresh(x)
    key = "last_hidden_state" if kind == "ViTModel" else "logits"
    assert torch.equal(getattr(got, key), getattr(ref, key))


def test_hf_iterates_the_block_stack():
    model = hf_model("ViTModel")
    it = IterativeViT(model, max_iter=3, alpha=0.4)
    x = torch.randn(2, 3, 16, 16)
    blocks = model.layers if hasattr(model, "layers") else model.encoder.layer
    tokens = plain_loop(blocks, model.embeddings(x), 3, 0.4)
    ref = model.layernorm(tokens)
    torch.testing.assert_close(it(x).last_hidden_state, ref, rtol=1e-6, atol=1e-6)
    assert it.last_stats.steps == 3 and it.last_stats.iterations.tolist() == [3, 3]


def test_hf_classifier_trains_with_labels():
    model = hf_model("ViTForImageClassification").train()
    it = IterativeViT(model, max_iter=2, alpha=0.5)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 3, 16, 16, generator=g)
    y = torch.arange(8) % 5
    losses = adam_losses(it, lambda: it(x, labels=y).loss, 15)
    assert losses[-1] < 0.5 * losses[0], losses


def test_nested_state_dict_keys():
    class Holder(nn.Module):
        def __init__(self, m):
            super().__init__()
            self.backbone = m
            self.extra = nn.Linear(2, 2)

    model = FieldViT(1, 1, 8, 4, dim=16, depth=1)
    bare = Holder(model).state_dict()
    wrapped = Holder(IterativeViT(model, max_iter=2))
    assert list(wrapped.state_dict()) == list(bare)
    wrapped.load_state_dict(bare)


class TimmLike(nn.Module):
    """The parts of timm's VisionTransformer that IterativeViT uses, with timm's names (timm
    itself needs torchvision, which has no CPU wheel for this torch)."""

    def __init__(self, dim=16, depth=2, classes=4):
        super().__init__()
        self.patch_embed = nn.Sequential(nn.Conv2d(3, dim, 4, 4), nn.Flatten(2))
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, 17, dim) * 0.02)
        self.norm_pre = nn.Identity()
        self.blocks = nn.Sequential(*[nn.TransformerEncoderLayer(dim, 2, 32, 0.0,
                                                                 batch_first=True)
                                      for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def _pos_embed(self, x):
        x = x.transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], 1)
        return x + self.pos_embed

    def forward_features(self, x):
        return self.norm(self.blocks(self.norm_pre(self._pos_embed(self.patch_embed(x)))))

    def forward_head(self, x):
        return self.head(x[:, 0])

    def forward(self, x):
        return self.forward_head(self.forward_features(x))


def test_timm_style_backbone():
    torch.manual_seed(0)
    model = TimmLike().eval()
    it = IterativeViT(model, max_iter=1, alpha=0.0)
    assert it.backbone == "timm"
    x = torch.randn(3, 3, 16, 16)
    assert torch.equal(it(x), model(x))
    it3 = IterativeViT(model, max_iter=3, alpha=0.5)
    tokens = plain_loop(model.blocks, model._pos_embed(model.patch_embed(x)), 3, 0.5)
    torch.testing.assert_close(it3(x), model.forward_head(model.norm(tokens)), rtol=1e-6,
                               atol=1e-6)


def test_real_timm():
    # the TimmLike stand-in above covers the interface without timm; this checks timm itself
    timm = pytest.importorskip("timm", reason="timm is not installed (optional: it pulls "
                                              "torchvision, so the test extra leaves it out)")
    model = timm.models.vision_transformer.VisionTransformer(
        img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=4, num_classes=3).eval()
    x = torch.randn(2, 3, 16, 16)
    assert torch.equal(IterativeViT(model, max_iter=1, alpha=0.0)(x), model(x))


def smooth_fields(n, seed):
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 16), torch.linspace(0, 1, 16), indexing="ij")
    a, b = torch.rand(2, n, 1, 1, generator=g) * 3
    u = torch.sin(a * 3.14 * xx + b) * torch.cos(b * 3.14 * yy)
    return u.unsqueeze(1)


def test_field_vit_shapes_and_iteration():
    torch.manual_seed(0)
    vit = FieldViT(2, 3, (16, 12), (4, 3), dim=16, depth=2, attention="galerkin")
    x = torch.randn(2, 2, 16, 12)
    assert vit(x).shape == (2, 3, 16, 12)
    it = IterativeViT(vit, max_iter=1, alpha=0.0)
    assert it.backbone == "embed/decode" and torch.equal(it(x), vit(x))
    ref = vit.decode(plain_loop(vit.blocks, vit.embed(x), 4, 0.25))
    torch.testing.assert_close(IterativeViT(vit, max_iter=4, alpha=0.25)(x), ref, rtol=1e-6,
                               atol=1e-6)


@pytest.mark.parametrize("mode", ["unroll", "implicit", "phantom"])
def test_field_vit_trains_masked_reconstruction(mode):
    """Masked reconstruction of smooth fields; every backward mode trains (tol set)."""
    torch.manual_seed(0)
    vit = FieldViT(2, 1, 16, 4, dim=32, depth=1)
    opts = {} if mode == "unroll" else dict(backward=mode, tol=1e-3)
    it = IterativeViT(vit, max_iter=3 if mode == "unroll" else 6, alpha=0.5, **opts)
    u = smooth_fields(16, 0)
    mask = (torch.rand(u.shape, generator=torch.Generator().manual_seed(1)) < 0.5).float()
    inp = torch.cat([u * mask, mask], 1)
    def grads_finite():
        assert all(torch.isfinite(p.grad).all() for p in it.parameters() if p.grad is not None)

    losses = adam_losses(it, lambda: F.mse_loss(it(inp), u), 25, after_backward=grads_finite)
    assert losses[-1] < 0.5 * losses[0], losses


def test_state_dict_round_trip():
    a = IterativeViT(FieldViT(1, 1, 8, 4, dim=16, depth=2), max_iter=2)
    b = IterativeViT(FieldViT(1, 1, 8, 4, dim=16, depth=2), max_iter=2)
    x = torch.randn(2, 1, 8, 8)
    assert not torch.equal(a(x), b(x))
    b.load_state_dict(a.state_dict())
    assert torch.equal(a(x), b(x))


def test_state_dict_round_trip_with_a_submodule_named_model():
    # the wrapper stores the backbone as "model": a backbone's own "model" child must survive
    class Backbone(FieldViT):
        def __init__(self):
            super().__init__(1, 1, 8, 4, dim=16, depth=1)
            self.model = nn.Linear(2, 2)

    a, b = IterativeViT(Backbone(), max_iter=2), IterativeViT(Backbone(), max_iter=2)
    assert "model.weight" in a.state_dict()
    b.load_state_dict(a.state_dict())
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)


def test_unsupported_forward_arguments_are_refused():
    it = IterativeViT(TimmLike().eval(), max_iter=2)
    x = torch.randn(1, 3, 16, 16)
    with pytest.raises(TypeError, match="labels"):
        it(x, labels=torch.tensor([0]))
    with pytest.raises(TypeError):
        it(x, None)  # positional extras would bind to the wrong parameters


def test_hf_unsupported_keywords_are_refused():
    model = hf_model("ViTForImageClassification")
    it = IterativeViT(model, max_iter=2)
    with pytest.raises(TypeError, match="output_attentions"):
        it(torch.randn(1, 3, 16, 16), output_attentions=True)


def test_deprecated_names_warn_once_and_still_work(monkeypatch):
    import warnings

    from fastpicard.nn import iterative_vit

    monkeypatch.setattr(iterative_vit, "_WARNED", set())
    vit = FieldViT(1, 1, 8, 4, dim=16, depth=1)
    with pytest.warns(FutureWarning) as rec:
        it = IterativeViT(vit, n_iter=2, lam=0.25)
    assert sorted(str(w.message).split()[1] for w in rec) == ["lam=", "n_iter="]
    assert (it.max_iter, it.alpha) == (2, 0.25)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the second use is silent
        IterativeViT(vit, n_iter=3, lam=0.5)
    with pytest.warns(FutureWarning, match=r"\.lam is deprecated"):
        assert it.lam == 0.25
    x = torch.randn(2, 1, 8, 8)
    torch.testing.assert_close(it(x), IterativeViT(vit, max_iter=2, alpha=0.25)(x))


def test_parallel_and_post_blocks_and_3d_patches():
    torch.manual_seed(0)
    for block in ("parallel", "post"):
        vit = FieldViT(2, 1, 8, 4, dim=16, depth=2, block=block)
        x = torch.randn(2, 2, 8, 8)
        blk = vit.blocks[0]
        t = vit.embed(x)
        if block == "parallel":  # x + attn(n(x)) + mlp(n(x)), one norm
            h = blk.norm1(t)
            ref = t + blk.attn(h) + blk.mlp(h)
        else:
            h = blk.norm1(t + blk.attn(t))
            ref = blk.norm2(h + blk.mlp(h))
        torch.testing.assert_close(blk(t), ref)
        assert vit(x).shape == (2, 1, 8, 8)
    # space-time patches: each output patch depends only through attention on others, and the
    # unpatchify puts patch (it, ih, iw) back at its own place
    vit3 = FieldViT(1, 2, (4, 8, 6), (2, 4, 3), dim=16, depth=1)
    assert vit3.grid == (2, 2, 2)
    x = torch.randn(3, 1, 4, 8, 6)
    y = vit3(x)
    assert y.shape == (3, 2, 4, 8, 6)
    tokens = vit3.embed(x)
    head = vit3.head(vit3.norm(vit3.blocks[0](tokens)))  # [3, 8, 2*2*4*3]
    patch = head[:, 5].view(3, 2, 2, 4, 3)  # token 5 = grid (1, 0, 1)
    torch.testing.assert_close(y[:, :, 2:4, 0:4, 3:6], patch)
    it = IterativeViT(vit3, max_iter=2)
    assert it(x).shape == y.shape
    with pytest.raises(ValueError, match="block"):
        FieldViT(1, 1, 8, 4, block="sandwich")
    with pytest.raises(ValueError, match="patch_size"):
        FieldViT(1, 1, (4, 8, 8), (2, 4))


def test_bad_arguments():
    vit = FieldViT(1, 1, 8, 4, dim=16, depth=1)
    for n in (0, -1, 1.5):
        with pytest.raises(ValueError, match="max_iter"):
            IterativeViT(vit, max_iter=n)
    for alpha in (1.0, -0.1, 2):
        with pytest.raises(ValueError, match="alpha"):
            IterativeViT(vit, alpha=alpha)
    with pytest.raises(ValueError, match="tol"):
        IterativeViT(vit, tol=0.0)
    with pytest.raises(TypeError, match="unknown solver option"):
        IterativeViT(vit, anderson=True)
    with pytest.raises(ValueError, match="needs a tolerance"):
        IterativeViT(vit, solver="anderson")
    for key, value in (("stop", "rel"), ("check_every", 2), ("phantom_steps", 3)):
        with pytest.raises(ValueError, match=key):  # ignored without a tolerance: refused
            IterativeViT(vit, **{key: value})
    IterativeViT(vit, tol=1e-4, stop="rel", check_every=2)
    with pytest.raises(TypeError, match="do not know how to iterate"):
        IterativeViT(nn.Linear(3, 3))
    with pytest.raises(TypeError, match="nn.Module"):
        IterativeViT("vit")
    with pytest.raises(ValueError, match="patch_size"):
        FieldViT(1, 1, 10, 4)
    with pytest.raises(ValueError, match="attention"):
        FieldViT(1, 1, 8, 4, attention="linear")
    with pytest.raises(ValueError, match="in_channels"):
        FieldViT(0, 1, 8, 4)
    with pytest.raises(ValueError, match="expected input"):
        vit(torch.randn(1, 2, 8, 8))
