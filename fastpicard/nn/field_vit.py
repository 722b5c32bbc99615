"""FieldViT: a small vision transformer from fields to fields (PDE operators, masked
reconstruction): patchify -> transformer blocks -> unpatchify. 2-D fields [B, C, H, W] with
p×p patches, or space-time volumes [B, C, T, H, W] with pt×ph×pw patches (a "ViT 3D").
``IterativeViT`` can wrap it (it exposes ``embed`` / ``blocks`` / ``decode``)."""
from __future__ import annotations

import math

import torch
from torch import nn

from .attention import ATTENTIONS, WIRINGS, Block


def _sizes(v, name, dims=None):
    t = (v,) * (dims or 2) if isinstance(v, int) else tuple(v)
    ok = len(t) in ((2, 3) if dims is None else (dims,))
    if not ok or not all(isinstance(i, int) and not isinstance(i, bool) and i > 0 for i in t):
        want = "a pair or triple" if dims is None else f"{dims} values"
        raise ValueError(f"FieldViT: {name} must be a positive int or {want} of them, got {v!r}")
    return t


class FieldViT(nn.Module):
    """``FieldViT(in_channels, out_channels, image_size, patch_size)``:
    [B, Cin, H, W] -> [B, Cout, H, W], or [B, Cin, T, H, W] -> [B, Cout, T, H, W] when
    ``image_size`` is a triple (T, H, W).

    Args:
        image_size: int, (h, w) or (t, h, w); patch_size: int or a tuple of as many values,
            each dividing the image size.
        dim, depth, heads, mlp_ratio, dropout: transformer width, number of blocks, heads.
        attention: "softmax" (default) or "galerkin" (linear in the number of patches).
        block: "pre" (pre-norm, default), "post" (post-norm) or "parallel" (attention and MLP
            side by side on one norm, ``x + attn(n(x)) + mlp(n(x))``).
    """

    def __init__(self, in_channels: int, out_channels: int, image_size, patch_size=4, *,
                 dim: int = 64, depth: int = 4, heads: int = 4, mlp_ratio: float = 2.0,
                 attention: str = "softmax", dropout: float = 0.0, block: str = "pre"):
        super().__init__()
        self.image_size = _sizes(image_size, "image_size")
        self.patch_size = _sizes(patch_size, "patch_size", len(self.image_size))
        if any(s % p for s, p in zip(self.image_size, self.patch_size)):
            raise ValueError(f"FieldViT: patch_size {self.patch_size} must divide image_size "
                             f"{self.image_size}")
        for name, v in (("in_channels", in_channels), ("out_channels", out_channels),
                        ("dim", dim), ("depth", depth), ("heads", heads)):
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"FieldViT: {name} must be a positive int, got {v!r}")
        if attention not in ATTENTIONS:
            raise ValueError(f"FieldViT: attention must be one of {ATTENTIONS}, got {attention!r}")
        if block not in WIRINGS:
            raise ValueError(f"FieldViT: block must be one of {WIRINGS}, got {block!r}")
        self.grid = tuple(s // p for s, p in zip(self.image_size, self.patch_size))
        self.in_channels, self.out_channels = in_channels, out_channels
        conv = nn.Conv2d if len(self.image_size) == 2 else nn.Conv3d
        self.patch_embed = conv(in_channels, dim, self.patch_size, stride=self.patch_size)
        self.pos_embed = nn.Parameter(torch.randn(1, math.prod(self.grid), dim) * 0.02)
        self.blocks = nn.ModuleList(Block(dim, heads, attention, mlp_ratio, dropout, wiring=block)
                                    for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, out_channels * math.prod(self.patch_size))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """[B, Cin, *image_size] -> tokens [B, L, dim]."""
        if x.dim() != 2 + len(self.image_size) or x.shape[1] != self.in_channels or \
                tuple(x.shape[2:]) != self.image_size:
            raise ValueError(f"FieldViT: expected input [B, {self.in_channels}, "
                             f"{', '.join(map(str, self.image_size))}], got {tuple(x.shape)}")
        return self.patch_embed(x).flatten(2).transpose(1, 2) + self.pos_embed

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens [B, L, dim] -> [B, Cout, *image_size]."""
        b, d = tokens.shape[0], len(self.grid)
        p = self.head(self.norm(tokens)).view(b, *self.grid, self.out_channels, *self.patch_size)
        # [b, g1..gd, c, p1..pd] -> [b, c, g1, p1, ..., gd, pd]
        order = [0, d + 1] + [i for k in range(d) for i in (1 + k, d + 2 + k)]
        return p.permute(order).reshape(b, self.out_channels, *self.image_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.embed(x)
        for blk in self.blocks:
            t = blk(t)
        return self.decode(t)
