"""FieldViT: a small vision transformer from 2-D fields to 2-D fields (PDE operators, masked
reconstruction): patchify -> transformer blocks -> unpatchify. ``IterativeViT`` can wrap it
(it exposes ``embed`` / ``blocks`` / ``decode``)."""
from __future__ import annotations

import torch
from torch import nn

from .attention import ATTENTIONS, Block


def _pair(v, name):
    t = (v, v) if isinstance(v, int) else tuple(v)
    if len(t) != 2 or not all(isinstance(i, int) and i > 0 for i in t):
        raise ValueError(f"FieldViT: {name} must be a positive int or a pair of them, got {v!r}")
    return t


class FieldViT(nn.Module):
    """``FieldViT(in_channels, out_channels, image_size, patch_size)``:
    [B, Cin, H, W] -> [B, Cout, H, W].

    Args:
        image_size, patch_size: int or (h, w); the patch size must divide the image size.
        dim, depth, heads, mlp_ratio, dropout: transformer width, number of blocks, heads.
        attention: "softmax" (default) or "galerkin" (linear in the number of patches).
    """

    def __init__(self, in_channels: int, out_channels: int, image_size, patch_size=4, *,
                 dim: int = 64, depth: int = 4, heads: int = 4, mlp_ratio: float = 2.0,
                 attention: str = "softmax", dropout: float = 0.0):
        super().__init__()
        self.image_size, self.patch_size = _pair(image_size, "image_size"), _pair(patch_size,
                                                                                 "patch_size")
        (h, w), (ph, pw) = self.image_size, self.patch_size
        if h % ph or w % pw:
            raise ValueError(f"FieldViT: patch_size {self.patch_size} must divide image_size "
                             f"{self.image_size}")
        for name, v in (("in_channels", in_channels), ("out_channels", out_channels),
                        ("dim", dim), ("depth", depth), ("heads", heads)):
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"FieldViT: {name} must be a positive int, got {v!r}")
        if attention not in ATTENTIONS:
            raise ValueError(f"FieldViT: attention must be one of {ATTENTIONS}, got {attention!r}")
        self.grid = (h // ph, w // pw)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.patch_embed = nn.Conv2d(in_channels, dim, self.patch_size, stride=self.patch_size)
        self.pos_embed = nn.Parameter(torch.randn(1, self.grid[0] * self.grid[1], dim) * 0.02)
        self.blocks = nn.ModuleList(Block(dim, heads, attention, mlp_ratio, dropout)
                                    for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, out_channels * ph * pw)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """[B, Cin, H, W] -> tokens [B, L, dim]."""
        if x.dim() != 4 or x.shape[1] != self.in_channels or tuple(x.shape[2:]) != self.image_size:
            raise ValueError(f"FieldViT: expected input [B, {self.in_channels}, "
                             f"{self.image_size[0]}, {self.image_size[1]}], got {tuple(x.shape)}")
        return self.patch_embed(x).flatten(2).transpose(1, 2) + self.pos_embed

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens [B, L, dim] -> [B, Cout, H, W]."""
        b = tokens.shape[0]
        (gh, gw), (ph, pw) = self.grid, self.patch_size
        p = self.head(self.norm(tokens)).view(b, gh, gw, self.out_channels, ph, pw)
        return p.permute(0, 3, 1, 4, 2, 5).reshape(b, self.out_channels, gh * ph, gw * pw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.embed(x)
        for blk in self.blocks:
            t = blk(t)
        return self.decode(t)
