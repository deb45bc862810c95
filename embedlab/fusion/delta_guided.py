"""``delta_guided``: CoDiEmb's fusion — merging weights per parameter from each checkpoint's deviation from the base.

The published description (see ../shared/notes/codiemb.md) fixes the idea, not the formula; these are the variants we
measure (docs/fusion.md). With Δ_k = θ_k − θ0 and the user's model weights w_k (uniform by default):

    θ* = θ0 + λ Σ_k a_k Δ_k,      a_k = w_k g(Δ_k) / Σ_j w_j g(Δ_j)          (Σ_k a_k = 1 wherever defined)

    variant="magnitude"  g = |Δ_k|                     parameters that moved more get more say
    variant="softmax"    g = exp(|Δ_k| / (T · s))      sharper (T → 0: the largest mover wins; T → ∞: the soup),
                         s = mean |Δ| over the models and elements of this tensor, so T is scale-free
    variant="inverse"    g = 1 / (|Δ_k| + ε)           conservative: the smallest move wins ties (ε = 1e-8)

granularity="element": g per element (the default); granularity="tensor": |Δ_k| is replaced by the tensor's mean
absolute delta, one weight per model and tensor. Where every g is 0 (all Δ_k = 0 at an element, magnitude variant)
the weights fall back to w_k / Σ w (the soup), which leaves θ0 there anyway.
"""
from __future__ import annotations

import torch

from ..errors import ConfigError
from .base import broadcast_weights, register, stack_deltas

VARIANTS = ("magnitude", "softmax", "inverse")
GRANULARITIES = ("element", "tensor")


def guidance_weights(deltas: torch.Tensor, weights: torch.Tensor, variant: str, granularity: str,
                     temperature: float, eps: float = 1e-8) -> torch.Tensor:
    """a_k as a [K, *shape] (or [K, 1, ...] for the tensor granularity) tensor summing to 1 over k."""
    if variant not in VARIANTS:
        raise ConfigError(f"delta_guided: variant must be one of {', '.join(VARIANTS)}; got {variant!r}")
    if granularity not in GRANULARITIES:
        raise ConfigError(f"delta_guided: granularity must be one of {', '.join(GRANULARITIES)}; got {granularity!r}")
    mag = deltas.abs()
    if granularity == "tensor":
        mag = mag.flatten(1).mean(1).view(-1, *([1] * (deltas.dim() - 1)))
    w = broadcast_weights(weights, deltas)
    if variant == "magnitude":
        g = mag
    elif variant == "inverse":
        g = 1.0 / (mag + eps)
    else:
        if not temperature > 0:
            raise ConfigError(f"delta_guided: temperature must be > 0, got {temperature}")
        scale = mag.mean().clamp_min(1e-12) * temperature
        z = mag / scale
        g = torch.exp(z - z.max(0, keepdim=True).values)  # stable; the shift cancels in the normalisation
    num = w * g
    den = num.sum(0, keepdim=True)
    soup = (w / w.sum()).expand_as(num)
    return torch.where(den > 0, num / torch.where(den > 0, den, torch.ones_like(den)), soup)


@register("delta_guided", needs_base=True, summary="per-parameter weights from |θ_k − θ0| (CoDiEmb)",
          params={"variant": "magnitude", "granularity": "element", "temperature": 1.0, "lambda": 1.0})
def delta_guided(base, tensors, weights, params, gen):
    deltas = stack_deltas(base, tensors)
    a = guidance_weights(deltas, weights, params["variant"], params["granularity"], float(params["temperature"]))
    return base + params["lambda"] * (a * deltas).sum(0)
