"""Type-II Anderson acceleration of the smoothed Picard map, per sample and safeguarded.

With G(x) = alpha*x + (1-alpha)*T(x) and the last n <= m pairs (x_i, g_i = G(x_i)), the next
iterate is sum_i gamma_i g_i where gamma minimises ||sum_i gamma_i (g_i - x_i)|| subject to
sum_i gamma_i = 1 (Walker & Ni's type II; with n = 1 it is the Picard step). The constrained
least squares is solved as (H + lam*tr(H)/n * I) y = 1, gamma = y / sum(y), H the per-sample
Gram matrix of the residuals. A sample whose system is singular, non-finite or ill-conditioned
(|gamma| > GAMMA_MAX) takes the plain Picard step instead: no host sync, never an exception.
"""
from __future__ import annotations

import torch

GAMMA_MAX = 1e4  # larger mixing weights mean catastrophic cancellation: take the Picard step


class Anderson:
    def __init__(self, m: int, lam: float, batch, num_samples: int, leading: bool):
        self.m, self.lam = m, lam
        self.batch, self.S, self.leading = batch, num_samples, leading
        self.xs: list[torch.Tensor] = []
        self.gs: list[torch.Tensor] = []

    def _per_sample(self, rows_val):
        """Sum per-row values [rows, ...] into per-sample values [S, ...]."""
        if self.batch is None:
            return rows_val.sum(0, keepdim=True)
        if self.leading:
            return rows_val
        out = rows_val.new_zeros((self.S,) + rows_val.shape[1:])
        return out.index_add(0, self.batch, rows_val)

    def _rows(self, per_sample, ndim):
        """Per-sample values [S, n] -> per-row [rows, n, 1, ...] (or [n, 1...] unbatched)."""
        if self.batch is None:
            return per_sample[0].reshape((-1,) + (1,) * ndim)
        v = per_sample if self.leading else per_sample[self.batch]
        return v.reshape(v.shape + (1,) * (ndim - 1))

    def mix(self, x, g, active_rows):
        """Next iterate from x_k and g_k = G(x_k); rows of inactive samples keep g."""
        self.xs.append(x)
        self.gs.append(g)
        if len(self.xs) > self.m:
            self.xs.pop(0)
            self.gs.pop(0)
        n = len(self.xs)
        if n == 1:
            return g
        X = torch.stack(self.xs, 1 if self.batch is not None else 0)
        Gs = torch.stack(self.gs, 1 if self.batch is not None else 0)
        acc = torch.float64 if x.dtype == torch.float64 else torch.float32
        F = (Gs - X).to(acc)
        if self.batch is None:  # one sample: F is [n, ...]
            F = F.reshape(1, n, -1)
        else:
            F = F.reshape(F.shape[0], n, -1)
        H = self._per_sample(torch.einsum("rid,rjd->rij", F, F))  # [S, n, n]
        scale = torch.diagonal(H, dim1=-2, dim2=-1).mean(-1).clamp_min(torch.finfo(acc).tiny)
        eye = torch.eye(n, dtype=acc, device=x.device)
        A = H + (self.lam * scale)[:, None, None] * eye
        ones = torch.ones(H.shape[0], n, 1, dtype=acc, device=x.device)
        with torch.no_grad():  # which samples can use their mixing weights
            y, info = torch.linalg.solve_ex(A, ones, check_errors=False)
            gamma = y[..., 0] / y[..., 0].sum(-1, keepdim=True)
            ok = (info == 0) & torch.isfinite(gamma).all(-1) & (gamma.abs().amax(-1) <= GAMMA_MAX)
        if A.requires_grad:
            # Differentiate the solve only where its weights are used: a sample that falls back
            # (e.g. frozen, with an all-zero history) would put inf/NaN into the backward of
            # the unused torch.where branch, and 0 * NaN poisons every gradient.
            safe = torch.linalg.solve(torch.where(ok[:, None, None], A, eye), ones)[..., 0]
            gamma = safe / safe.sum(-1, keepdim=True)
        picard = torch.zeros_like(gamma)
        picard[:, -1] = 1.0
        gamma = torch.where(ok[:, None], gamma, picard)
        w = self._rows(gamma, x.dim()).to(x.dtype)  # [rows, n, 1..] or [n, 1..]
        mixed = (w * Gs).sum(1 if self.batch is not None else 0)
        return torch.where(active_rows, mixed, g)
