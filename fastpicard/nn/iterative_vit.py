"""IterativeViT: a pretrained (or fresh) ViT whose whole block stack becomes the operator T of a
smoothed Picard iteration ``x_{i+1} = (1-α)·T(x_i) + α·x_i`` on the token sequence (the paper's
λ is the solver's α).

Supported backbones: Hugging Face ``ViTModel`` / ``ViTForImageClassification``, timm
``VisionTransformer`` (recognised by ``blocks`` + ``patch_embed``) and fastpicard's
``FieldViT`` (or any module with ``embed`` / ``blocks`` / ``decode``). Patch embedding, class
token, final norm, pooler and head stay the wrapped model's, and ``state_dict`` keys are the
wrapped model's own, so pretrained weights load unchanged.
"""
from __future__ import annotations

import warnings

import torch
from torch import nn

from ._solve import check_count, check_fraction, check_solver_opts, check_tol, iterate

_PREFIX = "model."


class _Adapter:
    """How to get tokens in, the block stack, and the output out of one backbone family."""

    kind = ""
    keywords: tuple | None = ()  # forward keywords it understands (None: passed through)

    def __init__(self, model):
        self.model = model

    def blocks(self):
        raise NotImplementedError


class _Protocol(_Adapter):  # FieldViT and anything exposing embed / blocks / decode
    kind = "embed/decode"
    keywords = None  # the module's own embed() checks them

    def embed(self, x, **kw):
        return self.model.embed(x, **kw)

    def blocks(self):
        return self.model.blocks

    def finish(self, tokens, **kw):
        return self.model.decode(tokens)


class _Timm(_Adapter):  # timm.models.vision_transformer.VisionTransformer
    kind = "timm"

    def embed(self, x, **kw):
        m = self.model
        x = m._pos_embed(m.patch_embed(x))
        x = m.patch_drop(x) if hasattr(m, "patch_drop") else x
        return m.norm_pre(x) if hasattr(m, "norm_pre") else x

    def blocks(self):
        return self.model.blocks

    def finish(self, tokens, **kw):
        return self.model.forward_head(self.model.norm(tokens))


class _HF(_Adapter):  # transformers ViTModel / ViTForImageClassification
    kind = "transformers"
    keywords = ("labels", "bool_masked_pos", "interpolate_pos_encoding")

    def __init__(self, model):
        super().__init__(model)
        self.classifier = getattr(model, "classifier", None)
        self.base = model.vit if self.classifier is not None else model

    def blocks(self):
        base = self.base
        if isinstance(getattr(base, "layers", None), nn.ModuleList):  # transformers >= 5
            return base.layers
        return base.encoder.layer  # transformers 4.x

    def embed(self, pixel_values, bool_masked_pos=None, interpolate_pos_encoding=None, **kw):
        emb = self.base.embeddings
        dtype = emb.patch_embeddings.projection.weight.dtype
        return emb(pixel_values.to(dtype), bool_masked_pos=bool_masked_pos,
                   interpolate_pos_encoding=bool(interpolate_pos_encoding))

    def finish(self, tokens, labels=None, **kw):
        from transformers.modeling_outputs import BaseModelOutputWithPooling, ImageClassifierOutput

        seq = self.base.layernorm(tokens)
        if self.classifier is None:
            pooled = self.base.pooler(seq) if self.base.pooler is not None else None
            return BaseModelOutputWithPooling(last_hidden_state=seq, pooler_output=pooled)
        logits = self.classifier(seq[:, 0, :])
        loss = None
        if labels is not None:
            loss = self.model.loss_function(labels, logits, self.model.config)
        return ImageClassifierOutput(loss=loss, logits=logits)


def _adapter(model) -> _Adapter:
    if not isinstance(model, nn.Module):
        raise TypeError(f"IterativeViT: vit must be an nn.Module, got {type(model).__name__}")
    if all(hasattr(model, a) for a in ("embed", "blocks", "decode")):
        return _Protocol(model)
    base = getattr(model, "vit", model)
    if hasattr(base, "embeddings") and hasattr(base, "layernorm") and (
            hasattr(base, "layers") or hasattr(getattr(base, "encoder", None), "layer")):
        return _HF(model)
    if hasattr(model, "blocks") and hasattr(model, "patch_embed"):
        return _Timm(model)
    raise TypeError(f"IterativeViT: do not know how to iterate {type(model).__name__}: expected a "
                    "transformers ViTModel/ViTForImageClassification, a timm VisionTransformer, "
                    "or a module with embed/blocks/decode (e.g. fastpicard.nn.FieldViT)")


_WARNED: set = set()


def _deprecated(old: str, new: str) -> None:
    if old not in _WARNED:  # once per process
        _WARNED.add(old)
        warnings.warn(f"IterativeViT: {old} is deprecated, use {new} (the name PIGN, ANIE and "
                      "fastpicard.picard use)", FutureWarning, stacklevel=3)


class IterativeViT(nn.Module):
    """``IterativeViT(vit, max_iter=3, alpha=0.5, tol=None, **solver_opts)``.

    Args:
        vit: the backbone (see the module docstring); it is used in place, not copied.
        max_iter: iterations of the block stack; ``max_iter=1, alpha=0`` reproduces the wrapped
            model exactly.
        alpha: smoothing in [0, 1), the paper's λ in ``x_{i+1} = (1-λ)T(x_i) + λx_i``.
        tol: None runs exactly ``max_iter`` iterations; a float stops each sample early once
            its token residual falls below it.
        n_iter, lam: deprecated names of ``max_iter`` and ``alpha`` (they warn once).
        **solver_opts: passed to ``fastpicard.picard`` (``backward``, ``solver``,
            ``check_every``, ...).

    ``forward`` takes the wrapped model's inputs and returns its kind of output;
    ``last_stats`` holds the solver statistics of the latest call.
    """

    def __init__(self, vit: nn.Module, max_iter: int = 3, alpha: float = 0.5, tol=None, *,
                 n_iter=None, lam=None, **solver_opts):
        super().__init__()
        self._adapter = _adapter(vit)
        self.model = vit
        if n_iter is not None:
            _deprecated("n_iter=", "max_iter=")
            max_iter = n_iter
        if lam is not None:
            _deprecated("lam=", "alpha=")
            alpha = lam
        self.max_iter = check_count("IterativeViT", "max_iter", max_iter)
        self.alpha = check_fraction("IterativeViT", "alpha", alpha)
        self.tol = check_tol("IterativeViT", tol)
        self.solver_opts = check_solver_opts("IterativeViT", solver_opts, self.tol)
        self.last_stats = None
        # state_dict keys are the wrapped model's own: drop / restore the "model." prefix
        self.register_state_dict_post_hook(_strip_prefix)
        self.register_load_state_dict_pre_hook(_add_prefix)

    @property
    def n_iter(self) -> int:
        _deprecated(".n_iter", ".max_iter")
        return self.max_iter

    @property
    def lam(self) -> float:
        _deprecated(".lam", ".alpha")
        return self.alpha

    @property
    def backbone(self) -> str:
        return self._adapter.kind

    def operator(self, tokens: torch.Tensor) -> torch.Tensor:
        """T: the wrapped model's whole block stack applied once."""
        for blk in self._adapter.blocks():
            out = blk(tokens)
            tokens = out[0] if isinstance(out, tuple) else out
        return tokens

    def forward(self, x, **kwargs):
        allowed = self._adapter.keywords
        if allowed is not None:
            unknown = sorted(set(kwargs) - set(allowed))
            if unknown:
                raise TypeError(f"IterativeViT ({self.backbone}): unsupported keyword(s) "
                                f"{unknown}; supported: {list(allowed)}")
        tokens = self._adapter.embed(x, **kwargs)
        tokens, self.last_stats = iterate(
            self.operator, tokens, alpha=self.alpha, tol=self.tol, max_iter=self.max_iter,
            batch="leading", opts=self.solver_opts)
        return self._adapter.finish(tokens, **kwargs)


def _strip_prefix(module, state_dict, prefix, local_metadata):
    for key in [k for k in state_dict if k.startswith(prefix + _PREFIX)]:
        state_dict[prefix + key[len(prefix) + len(_PREFIX):]] = state_dict.pop(key)


def _add_prefix(module, state_dict, prefix, local_metadata, strict, missing_keys,
                unexpected_keys, error_msgs):
    # state_dict() stripped "model." from every key under prefix: restore it on all of them
    # (also on keys that start with "model." themselves, i.e. a submodule named model)
    for key in [k for k in state_dict if k.startswith(prefix)]:
        state_dict[prefix + _PREFIX + key[len(prefix):]] = state_dict.pop(key)
