"""ANIE: Attentional Neural Integral Equations (Zappala et al. 2022; seed paper, Table 4).

Solves ``y = f + T(y)`` on a time grid (optionally times a 2-D spatial grid), where T is a
transformer over space-time tokens: each token carries the current solution on one time point
(and one spatial patch) plus its coordinates, and attention over all tokens acts as the integral
operator ``∫ K(s, t, y(t)) dt``. ``f`` is the initial condition lifted over the time grid.
The equation is solved with the smoothed Picard iteration through ``fastpicard.picard``.

Two formulations (``formulation=``), with A = proj ∘ blocks ∘ lift the transformer on tokens:

* ``"fastpicard"`` (default): T(y) = A(y), pre-norm blocks with a GELU feed-forward, Galerkin
  keys and values layer-normalised, a final layer norm before proj; y_0 = f,
  y_{k+1} = α y_k + (1-α)(f + T(y_k)), and the answer is y_n (n = ``max_iter``).
* ``"authors"`` (emazap7/ANIE, the configuration of their Navier–Stokes runs): T(y) = y + A(y)
  (the residual is inside T), post-norm blocks ``n(x + attn(x))``, ``n(x + relu-mlp(x))``, no
  K/V layer norm and no final norm; the same iteration, and the answer is ``f + T(y_n)``
  (one more application of T after the loop).

Both backpropagate through every iteration with the default fixed schedule (the authors keep
gradients through every iteration in their spatial solver); ``backward="phantom"`` or
``"implicit"`` with a ``tol`` are the cheap alternatives. Attention weighs time points equally
(1/n), whatever the grid spacing.
"""
from __future__ import annotations

import torch
from torch import nn

from ._solve import check_count, check_fraction, check_solver_opts, check_tol, iterate
from .attention import ATTENTIONS, Block

FORMULATIONS = ("fastpicard", "authors")


class ANIE(nn.Module):
    """``ANIE(channels, *, width=64, heads=4, depth=2, attention="galerkin", patch_size=None,
    alpha=0.5, max_iter=3, tol=None, formulation="fastpicard", **solver_opts)``;
    ``ANIE(...)(x_init, t_grid) -> y``.

    Args:
        channels: channels C of the state.
        width, heads, depth, mlp_ratio, dropout: the transformer T.
        attention: "galerkin" (softmax-free linear attention, the authors' default) or "softmax".
        formulation: "fastpicard" or "authors" (see the module docstring).
        patch_size: None for state vectors (``x_init`` [B, C], one token per time point); an
            int p for 2-D fields (``x_init`` [B, C, H, W]), one token per time point and p×p
            spatial patch (p=1: one per grid point).
        alpha: smoothing of the Picard iteration in [0, 1).
        max_iter: Picard iterations (3, as the authors' Navier-Stokes runs); ``tol`` (None or a
            float) enables per-sample early exit.
        **solver_opts: passed to ``fastpicard.picard`` (``backward``, ``solver``, ...).

    ``t_grid`` is [T] or [B, T]; the grid may change between calls.
    Returns y on the grid: [B, T, C] or [B, T, C, H, W]. ``last_stats`` holds solver statistics.
    """

    def __init__(self, channels: int, *, width: int = 64, heads: int = 4, depth: int = 2,
                 attention: str = "galerkin", patch_size: int | None = None,
                 mlp_ratio: float = 2.0, dropout: float = 0.0, alpha: float = 0.5,
                 max_iter: int = 3, tol=None, formulation: str = "fastpicard", **solver_opts):
        super().__init__()
        self.channels = check_count("ANIE", "channels", channels)
        width = check_count("ANIE", "width", width)
        heads = check_count("ANIE", "heads", heads)
        check_count("ANIE", "depth", depth)
        if width % heads:
            raise ValueError(f"ANIE: width={width} must be a multiple of heads={heads}")
        if attention not in ATTENTIONS:
            raise ValueError(f"ANIE: attention must be one of {ATTENTIONS}, got {attention!r}")
        self.patch_size = check_count("ANIE", "patch_size", patch_size, optional=True)
        self.alpha = check_fraction("ANIE", "alpha", alpha)
        self.max_iter = check_count("ANIE", "max_iter", max_iter)
        self.tol = check_tol("ANIE", tol)
        self.solver_opts = check_solver_opts("ANIE", solver_opts, self.tol)
        if formulation not in FORMULATIONS:
            raise ValueError(f"ANIE: formulation must be one of {FORMULATIONS}, got "
                             f"{formulation!r}")
        self.attention, self.formulation = attention, formulation
        authors = formulation == "authors"
        # token features: the state on the token's patch, time, and (for fields) 2 coordinates
        p = self.patch_size
        token = channels + 1 if p is None else channels * p * p + 3
        self.lift = nn.Linear(token, width)
        self.blocks = nn.ModuleList(
            Block(width, heads, attention, mlp_ratio, dropout, wiring="post" if authors else "pre",
                  act="relu" if authors else "gelu", kv_norm=not authors) for _ in range(depth))
        self.norm = nn.Identity() if authors else nn.LayerNorm(width)
        self.proj = nn.Linear(width, token - (1 if p is None else 3))
        self.last_stats = None

    # ------------------------------------------------------------ the operator T
    def _mix(self, tokens):
        for blk in self.blocks:
            tokens = blk(tokens)
        return self.norm(tokens)

    def _t_points(self, y, t):  # y [B, T, C]
        b, n, c = y.shape
        tok = self.lift(torch.cat([y, t.unsqueeze(-1)], -1))
        return self.proj(self._mix(tok))

    def _t_field(self, y, t):  # y [B, T, C, H, W]
        b, n, c, h, w = y.shape
        p = self.patch_size
        gh, gw = h // p, w // p
        patches = y.reshape(b, n, c, gh, p, gw, p).permute(0, 1, 3, 5, 2, 4, 6)
        patches = patches.reshape(b, n, gh, gw, c * p * p)
        ys = (torch.arange(gh, device=y.device, dtype=y.dtype) + 0.5) / gh
        xs = (torch.arange(gw, device=y.device, dtype=y.dtype) + 0.5) / gw
        coords = torch.stack(torch.meshgrid(ys, xs, indexing="ij"), -1)  # [gh, gw, 2]
        feats = torch.cat([patches, t.view(b, n, 1, 1, 1).expand(b, n, gh, gw, 1),
                           coords.expand(b, n, gh, gw, 2)], -1)
        tok = self.lift(feats.reshape(b, n * gh * gw, -1))
        out = self.proj(self._mix(tok)).view(b, n, gh, gw, c, p, p)
        return out.permute(0, 1, 4, 2, 5, 3, 6).reshape(b, n, c, h, w)

    def operator(self, y: torch.Tensor, t_grid: torch.Tensor) -> torch.Tensor:
        """T(y): the integral term, same shape as y ([B, T, C] or [B, T, C, H, W]); with the
        authors' formulation it includes their residual, T(y) = y + A(y)."""
        t = t_grid.to(device=y.device, dtype=y.dtype).expand(y.shape[0], y.shape[1])
        a = self._t_points(y, t) if self.patch_size is None else self._t_field(y, t)
        return y + a if self.formulation == "authors" else a

    # ------------------------------------------------------------ solve y = f + T(y)
    def forward(self, x_init: torch.Tensor, t_grid: torch.Tensor) -> torch.Tensor:
        want = 2 if self.patch_size is None else 4
        if isinstance(x_init, torch.Tensor) and not x_init.is_floating_point():
            raise TypeError(f"ANIE: x_init must be a floating-point tensor, got {x_init.dtype}")
        if not isinstance(x_init, torch.Tensor) or x_init.dim() != want:
            raise ValueError(f"ANIE: x_init must be {'[B, C]' if want == 2 else '[B, C, H, W]'} "
                             f"(patch_size={self.patch_size}), got "
                             f"{tuple(getattr(x_init, 'shape', ()))}")
        if x_init.shape[0] == 0:
            raise ValueError(f"ANIE: x_init has an empty batch (shape {tuple(x_init.shape)})")
        if x_init.shape[1] != self.channels:
            raise ValueError(f"ANIE: x_init has {x_init.shape[1]} channels, the model "
                             f"{self.channels}")
        if x_init.dim() == 4 and (x_init.shape[2] % self.patch_size
                                  or x_init.shape[3] % self.patch_size):
            raise ValueError(f"ANIE: patch_size={self.patch_size} must divide the field size "
                             f"{tuple(x_init.shape[2:])}")
        if not isinstance(t_grid, torch.Tensor) or t_grid.dim() not in (1, 2) or (
                t_grid.dim() == 2 and t_grid.shape[0] != x_init.shape[0]) or t_grid.shape[-1] < 1:
            raise ValueError(f"ANIE: t_grid must be [T] or [B={x_init.shape[0]}, T], got "
                             f"{tuple(getattr(t_grid, 'shape', ()))}")
        if t_grid.is_complex() or t_grid.dtype == torch.bool:
            raise TypeError(f"ANIE: t_grid must hold real times, got {t_grid.dtype}")
        n = t_grid.shape[-1]
        # f: the initial condition lifted over the time grid
        f = x_init.unsqueeze(1).expand(x_init.shape[0], n, *x_init.shape[1:])
        y, self.last_stats = iterate(
            lambda y: f + self.operator(y, t_grid), f.contiguous(), alpha=self.alpha,
            tol=self.tol, max_iter=self.max_iter, batch="leading", opts=self.solver_opts)
        return f + self.operator(y, t_grid) if self.formulation == "authors" else y
