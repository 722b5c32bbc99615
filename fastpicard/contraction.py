"""Contraction tools: the paper's conditions for the Picard iteration to converge, made usable.

* :func:`contractive` caps the spectral norm of a module's linear weights (Theorem 4;
  IGNN-style well-posedness) so a layer built from them and 1-Lipschitz activations is a
  contraction.
* :func:`lipschitz_estimate` measures the local Lipschitz constant ||dT/dx||_2 at a point by
  power iteration with JVPs and VJPs.
* :func:`jacobian_penalty` is a Hutchinson estimate of ||dT/dx||_F^2 to add to a loss
  (Theorem 3's suggestion: keep the Jacobian small so the iteration stays contractive).
"""
from __future__ import annotations

import math
import numbers
import warnings

import torch
from torch import nn
from torch.nn.utils import parametrize

from .ops._backend import higher_order_grads

__all__ = ["contractive", "lipschitz_estimate", "jacobian_penalty"]


class SpectralCap(nn.Module):
    """Parametrization W -> W * bound / max(sigma(W), bound), sigma the exact largest singular
    value (so the bound holds, unlike a power-iteration estimate that lags behind training).
    Weights whose spectral norm is already below ``bound`` pass unchanged."""

    def __init__(self, bound: float):
        super().__init__()
        self.bound = bound

    def forward(self, weight):
        sigma = torch.linalg.matrix_norm(weight.flatten(1), ord=2)
        return weight * (self.bound / sigma.clamp_min(self.bound))


def _linear_layers(module):
    """nn.Linear and look-alikes (torch_geometric's Linear) with a 2-D weight."""
    out = []
    for name, m in module.named_modules():
        if not (isinstance(m, nn.Linear) or type(m).__name__ == "Linear"):
            continue
        w = (m.parametrizations.weight.original if parametrize.is_parametrized(m, "weight")
             else getattr(m, "weight", None))
        if isinstance(w, nn.Parameter) and w.dim() == 2:
            out.append((name, m))
    return out


def contractive(module: nn.Module, lipschitz: float = 0.9) -> nn.Module:
    """Caps the spectral norm of every linear weight in ``module`` (in place; returns it).

    With n linear layers found, each is capped at ``lipschitz ** (1/n)``, which bounds the
    Lipschitz constant of any sequential composition of them with 1-Lipschitz activations
    (ReLU, tanh, ...) and normalised graph propagation (||D^-1/2 A D^-1/2|| <= 1) by
    ``lipschitz``. Residual branches, attention or normalisation layers are not bounded by
    this: check such layers with :func:`lipschitz_estimate`. Uses
    ``torch.nn.utils.parametrize`` (remove with ``parametrize.remove_parametrizations``).

    sigma(W) is computed exactly (an SVD of each weight, differentiable) whenever the weight
    is read; :func:`fastpicard.picard` caches parametrized weights for the whole solve, so a
    solve pays it once, not per iteration.
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"contractive: module must be an nn.Module, got {type(module).__name__}")
    if isinstance(lipschitz, bool) or not isinstance(lipschitz, numbers.Real):
        raise TypeError(f"contractive: lipschitz must be a number, got {type(lipschitz).__name__}")
    if not (0 < lipschitz and math.isfinite(lipschitz)):
        raise ValueError(f"contractive: lipschitz must be positive and finite, got {lipschitz}")
    layers = _linear_layers(module)
    if not layers:
        raise ValueError("contractive: module has no linear layer (nn.Linear or a Linear with a "
                         "2-D weight) to constrain")
    bound = float(lipschitz) ** (1.0 / len(layers))
    for name, m in layers:
        if parametrize.is_parametrized(m, "weight"):
            raise ValueError(f"contractive: {name or 'module'}.weight is already parametrized")
        parametrize.register_parametrization(m, "weight", SpectralCap(bound))
        if type(m)._save_to_state_dict is not nn.Module._save_to_state_dict:
            m._register_state_dict_hook(_drop_capped_weight)
    return module


def _drop_capped_weight(module, state_dict, prefix, local_metadata):
    # torch_geometric's Linear saves ``weight`` itself (the capped value, besides the
    # parametrization's ``original``); a strict load_state_dict would then refuse that key.
    state_dict.pop(prefix + "weight", None)


def _check_fn_x(name, fn, x):
    if not callable(fn):
        raise TypeError(f"{name}: fn must be callable, got {type(fn).__name__}")
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f"{name}: x must be a floating-point Tensor, got "
                        f"{getattr(x, 'dtype', type(x).__name__)}")


def _jvp(fn, x, v):
    """J v at x: forward-mode AD, or (for ops without a forward formula) the double-VJP trick
    d/dw <J^T w, v>."""
    try:
        with warnings.catch_warnings():  # torch.func's lazy setup calls deprecated jit.script
            warnings.filterwarnings("ignore", message=".*torch.jit.script.*deprecated",
                                    category=DeprecationWarning)
            return torch.func.jvp(fn, (x,), (v,))[1]
    except (RuntimeError, NotImplementedError):
        with torch.enable_grad():
            xr = x.detach().requires_grad_()
            z = fn(xr)
            w = torch.zeros_like(z, requires_grad=True)
            (jt,) = torch.autograd.grad(z, xr, w, create_graph=True)
            (jv,) = torch.autograd.grad(jt, w, v)
        return jv


def lipschitz_estimate(fn, x: torch.Tensor, *, n_iter: int = 30, rtol: float = 1e-4,
                       seed: int = 0) -> float:
    """Largest singular value L of the Jacobian of ``fn`` at ``x``: the local Lipschitz
    constant. L < 1 means the Picard iteration contracts near x (the smoothed map's constant
    is at most ``alpha + (1 - alpha) * L``). Power iteration on J^T J with a JVP and a VJP per
    step, ``n_iter`` steps at most, stopping once the estimate changes by less than ``rtol``.

    The Jacobian is over the whole tensor x (samples together); it is block diagonal when
    samples do not interact, so the result is then the largest per-sample constant.
    """
    _check_fn_x("lipschitz_estimate", fn, x)
    if isinstance(n_iter, bool) or not isinstance(n_iter, int) or n_iter < 1:
        raise ValueError(f"lipschitz_estimate: n_iter must be an int >= 1, got {n_iter}")
    with higher_order_grads():  # the JVP fallback differentiates a VJP
        return _lipschitz(fn, x, n_iter, rtol, seed)


def _lipschitz(fn, x, n_iter, rtol, seed):
    x = x.detach()
    g = torch.Generator(device="cpu").manual_seed(seed)
    v = torch.randn(x.shape, generator=g, dtype=torch.float64).to(x)
    v = v / torch.linalg.vector_norm(v).clamp_min(1e-30)
    with torch.enable_grad():
        xr = x.clone().requires_grad_()
        z = fn(xr)
    if not z.requires_grad:  # fn does not depend on x
        return 0.0
    sigma = 0.0
    for _ in range(n_iter):
        jv = _jvp(fn, x, v)
        (jtjv,) = torch.autograd.grad(z, xr, jv, retain_graph=True)
        new = math.sqrt(max(float(torch.linalg.vector_norm(jtjv)), 0.0))  # ||J^T J v|| -> s^2
        v = jtjv / torch.linalg.vector_norm(jtjv).clamp_min(1e-30)
        if new == 0.0 or abs(new - sigma) <= rtol * new:
            sigma = new
            break
        sigma = new
    return sigma


def jacobian_penalty(fn, x: torch.Tensor, n_samples: int = 1) -> torch.Tensor:
    """Hutchinson estimate of ||dfn/dx||_F^2 at x, differentiable (add ``lam * penalty`` to
    the loss). Unbiased: the mean of ||J^T v||^2 over ``n_samples`` Gaussian probes v.

    x is typically the (detached) fixed point; the penalty's gradient reaches fn's parameters
    (and x too, if x requires grad)."""
    _check_fn_x("jacobian_penalty", fn, x)
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
        raise ValueError(f"jacobian_penalty: n_samples must be an int >= 1, got {n_samples}")
    with torch.enable_grad(), higher_order_grads():  # the penalty's own backward is 2nd order
        xr = x if x.requires_grad else x.detach().requires_grad_()
        z = fn(xr)
        total = z.new_zeros(())
        for _ in range(n_samples):
            v = torch.randn_like(z)
            (jtv,) = torch.autograd.grad(z, xr, v, create_graph=True)
            total = total + jtv.square().sum()
    return total / n_samples
