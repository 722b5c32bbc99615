"""Gradients through a fixed point without backpropagating through the forward iterations.

At x* = T(x*, theta), dL/dtheta = (dT/dtheta)^T g with g = (dT/dx)^T g + dL/dx* (implicit
function theorem). ``implicit`` solves that adjoint fixed point with the same solver and loop
control (VJPs of one extra fn call at x*); ``phantom`` backpropagates through a few damped
steps from the detached x* instead. Both return a tensor whose value is exactly x*.
"""
from __future__ import annotations

import torch

from ..ops import picard_update
from .solve import solve


class _AttachAdjoint(torch.autograd.Function):
    """Forward: returns x* (value). Backward: turns dL/dx* into the adjoint g and feeds it
    into the graph of z = T(x*), which carries it on to theta (and whatever built fn)."""

    @staticmethod
    def forward(ctx, z, x_star, adjoint):
        ctx.adjoint = adjoint
        return x_star.clone()

    @staticmethod
    def backward(ctx, grad):
        return ctx.adjoint(grad), None, None


def _reaches_other_leaves(z, x_leaf) -> bool:
    """Whether z's graph leads to a leaf other than x_leaf (a parameter, f, ...)."""
    stack, seen = [z.grad_fn], set()
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        var = getattr(node, "variable", None)  # AccumulateGrad of a leaf
        if var is not None:
            if var is not x_leaf:
                return True
            continue
        stack.extend(n for n, _ in node.next_functions)
    return False


def attach(fn, x_star, opts, stats):
    """x_star (its value) with the gradient of ``opts.backward`` ("implicit" or "phantom")."""
    return (implicit if opts.backward == "implicit" else phantom)(fn, x_star, opts, stats)


def implicit(fn, x_star, opts, stats):
    x_leaf = x_star.detach().requires_grad_()
    with torch.enable_grad():
        z = fn(x_leaf)
    if not _reaches_other_leaves(z, x_leaf):  # nothing upstream needs a gradient
        return x_star

    def vjp(v):
        (g,) = torch.autograd.grad(z, x_leaf, v, retain_graph=True, allow_unused=True)
        return torch.zeros_like(v) if g is None else g

    def adjoint(grad):
        grad = grad.contiguous()
        with torch.no_grad():
            g, adj_stats = solve(lambda v: vjp(v) + grad, grad, opts)
        stats.backward = adj_stats
        return g

    return _AttachAdjoint.apply(z, x_star, adjoint)


def phantom(fn, x_star, opts, stats):
    y = x_star.detach()
    # Diverged samples stay frozen at their rolled-back iterate: damped steps of a map that
    # blew up there would overflow, and 0 * inf in the backward poisons shared parameters.
    frozen = stats.diverged.to(y.device) if bool(stats.diverged.any()) else None
    with torch.enable_grad():
        for _ in range(opts.phantom_steps):
            y = picard_update(y, fn(y), opts.alpha, batch=opts.batch, num_samples=opts.num_samples,
                              frozen=frozen)[0]
    if not y.requires_grad:
        return x_star
    return x_star + (y - y.detach())
