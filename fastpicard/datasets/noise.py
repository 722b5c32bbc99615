"""The paper's drop-in noise for node features."""
from __future__ import annotations

import numbers

import torch

from .planetoid import row_normalize


def dropin_noise(x: torch.Tensor, p: float, seed: int | None = None, *,
                 normalize: bool = True) -> torch.Tensor:
    """Row-normalises ``x`` (unless ``normalize=False``), then adds 1.0 to ``floor(p * x.numel())``
    entries chosen uniformly at random without replacement.

    This is the paper's "a fraction p of the bag-of-words feature values increased" as the
    authors' code applies it (``add_noise`` in ``GCNexperiments/src/utils/utils.py``): PyG's
    ``NormalizeFeatures`` first, then exactly ``floor(p · numel)`` ones added at a random
    permutation's positions, no renormalisation afterwards, every node (train, val and test)
    noised. After normalisation a word is worth about 1/18 on Cora, so p = 0.5 buries each
    node's words under ~700 unit entries (row normalisation is idempotent, so already
    normalised features may be passed either way).

    The draw uses its own ``torch.Generator`` seeded with ``seed`` (fresh entropy when None), so
    the noise is reproducible and leaves the global RNG untouched. Returns a new tensor.
    """
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f"dropin_noise: x must be a floating-point Tensor, got "
                        f"{getattr(x, 'dtype', type(x).__name__)}")
    if not isinstance(p, numbers.Real) or isinstance(p, bool) or not 0.0 <= p <= 1.0:
        raise ValueError(f"dropin_noise: p must be a fraction in [0, 1], got {p!r}")
    if seed is not None and (not isinstance(seed, numbers.Integral) or isinstance(seed, bool)):
        raise TypeError(f"dropin_noise: seed must be an int or None, got {type(seed).__name__}")
    out = (row_normalize(x) if normalize else x.clone()).contiguous()
    k = int(p * out.numel())
    if k:
        gen = torch.Generator()
        if seed is None:
            gen.seed()
        else:
            gen.manual_seed(int(seed))
        idx = torch.randperm(out.numel(), generator=gen)[:k].to(out.device)
        out.view(-1)[idx] += 1.0
    return out
