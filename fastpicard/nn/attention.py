"""Transformer blocks with softmax or Galerkin (softmax-free, linear) attention, used by
FieldViT and ANIE.

Galerkin attention (Cao, NeurIPS 2021) computes ``Q (Kᵀ V) / n``: a Petrov-Galerkin projection,
i.e. a quadrature of an integral operator over the n tokens, linear in n. Keys and values are
layer-normalised per head (``kv_norm=True``, Cao's default); ANIE's authors run it without.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

ATTENTIONS = ("softmax", "galerkin")
WIRINGS = ("pre", "post", "parallel")
ACTIVATIONS = {"gelu": nn.GELU, "relu": nn.ReLU}


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int = 4, kind: str = "softmax", dropout: float = 0.0,
                 kv_norm: bool = True):
        super().__init__()
        if kind not in ATTENTIONS:
            raise ValueError(f"Attention: kind must be one of {ATTENTIONS}, got {kind!r}")
        if heads < 1 or dim % heads:
            raise ValueError(f"Attention: dim={dim} must be a positive multiple of heads={heads}")
        self.heads, self.kind, self.dropout = heads, kind, dropout
        self.kv_norm = kind == "galerkin" and bool(kv_norm)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        if self.kv_norm:
            hd = dim // heads
            # per-head affine of the K and V layer norms
            self.k_weight = nn.Parameter(torch.ones(heads, 1, hd))
            self.k_bias = nn.Parameter(torch.zeros(heads, 1, hd))
            self.v_weight = nn.Parameter(torch.ones(heads, 1, hd))
            self.v_bias = nn.Parameter(torch.zeros(heads, 1, hd))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        if self.kind == "softmax":
            out = F.scaled_dot_product_attention(
                q, k, v, dropout_p=self.dropout if self.training else 0.0)
        else:
            if self.kv_norm:
                hd = d // self.heads
                k = F.layer_norm(k, (hd,)) * self.k_weight + self.k_bias
                v = F.layer_norm(v, (hd,)) * self.v_weight + self.v_bias
            # 1/n before the sum over tokens: in fp16 the raw sum overflows at ~65k tokens
            ctx = (k / n).transpose(-2, -1) @ v  # [b, heads, hd, hd]
            out = F.dropout(q @ ctx, self.dropout, self.training)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class Block(nn.Module):
    """Transformer block; ``wiring`` selects where the norms and residuals go:

    * ``"pre"`` (default): ``x + attn(n1(x))`` then ``x + mlp(n2(x))``;
    * ``"post"`` (original Transformer; ANIE's authors): ``n1(x + attn(x))`` then
      ``n2(x + mlp(x))``;
    * ``"parallel"`` (GPT-J / ViT-22B): ``x + attn(n1(x)) + mlp(n1(x))``.

    ``act`` is the feed-forward activation, "gelu" or "relu".
    """

    def __init__(self, dim: int, heads: int = 4, attention: str = "softmax",
                 mlp_ratio: float = 2.0, dropout: float = 0.0, *, wiring: str = "pre",
                 act: str = "gelu", kv_norm: bool = True):
        super().__init__()
        if wiring not in WIRINGS:
            raise ValueError(f"Block: wiring must be one of {WIRINGS}, got {wiring!r}")
        if act not in ACTIVATIONS:
            raise ValueError(f"Block: act must be one of {tuple(ACTIVATIONS)}, got {act!r}")
        self.wiring = wiring
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, attention, dropout, kv_norm)
        if wiring != "parallel":
            self.norm2 = nn.LayerNorm(dim)
        hidden = max(1, int(dim * mlp_ratio))
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), ACTIVATIONS[act](), nn.Dropout(dropout),
                                 nn.Linear(hidden, dim), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.wiring == "pre":
            x = x + self.attn(self.norm1(x))
            return x + self.mlp(self.norm2(x))
        if self.wiring == "post":
            x = self.norm1(x + self.attn(x))
            return self.norm2(x + self.mlp(x))
        h = self.norm1(x)
        return x + self.attn(h) + self.mlp(h)
