"""``delta_guided``: CoDiEmb's fusion — merging weights per parameter from each checkpoint's deviation from the base.

The published description (see ../shared/notes/codiemb.md) fixes the idea, not the formula; these are the variants we
measure (docs/fusion.md). With Δ_k = θ_k − θ0 and the user's model weights w_k (uniform by default):

    θ* = θ0 + λ Σ_k a_k Δ_k,      a_k = w_k g(Δ_k) / Σ_j w_j g(Δ_j)          (Σ_k a_k = 1 wherever defined)

    variant="magnitude"  g = |Δ_k|                     parameters that moved more get more say
    variant="softmax"    g = exp(|Δ_k| / (T · s))      sharper (T → 0: the largest mover wins; T → ∞: the soup),
                         s = mean |Δ| over the models and elements of this tensor, so T is scale-free
    variant="inverse"    g = 1 / (|Δ_k| + ε)           conservative: the smallest move wins (ε = 1e-8)

granularity="tensor" (the default): |Δ_k| is replaced by the tensor's mean absolute delta, one weight per model and
tensor; granularity="element": g per element. The default was chosen on dev data (stsb-dev + scifact-dev) among the
variants in experiments/fusion.yaml: magnitude per tensor scored best of them (docs/fusion.md, the "dev" column).
Where every g is 0 (all Δ_k = 0 at an element, magnitude variant) the weights fall back to w_k / Σ w (the soup),
which leaves θ0 there anyway.

Memory: one model's Δ at a time plus three accumulators; softmax and the tensor granularity make a first pass for
their statistics (s and the elementwise maximum, resp. the per-model means).
"""
from __future__ import annotations

import torch

from ..errors import ConfigError
from .base import register

VARIANTS = ("magnitude", "softmax", "inverse")
GRANULARITIES = ("element", "tensor")
EPS = 1e-8


def _check(variant: str, granularity: str, temperature: float) -> None:
    if variant not in VARIANTS:
        raise ConfigError(f"delta_guided: variant must be one of {', '.join(VARIANTS)}; got {variant!r}")
    if granularity not in GRANULARITIES:
        raise ConfigError(f"delta_guided: granularity must be one of {', '.join(GRANULARITIES)}; got {granularity!r}")
    if variant == "softmax" and not temperature > 0:
        raise ConfigError(f"delta_guided: temperature must be > 0, got {temperature}")


def _per_tensor(base, tensors, weights, variant, temperature) -> torch.Tensor:
    n = len(tensors)
    means = torch.tensor([float((tensors[k] - base).abs().mean()) for k in range(n)], dtype=torch.float64)
    if variant == "magnitude":
        g = means
    elif variant == "inverse":
        g = 1.0 / (means + EPS)
    else:
        scale = max(float(means.mean()), 1e-12) * temperature
        g = torch.exp((means - means.max()) / scale)
    w = weights.double()
    a = w * g / (w * g).sum() if float((w * g).sum()) > 0 else w / w.sum()
    acc = torch.zeros_like(base)
    for k in range(n):
        acc.add_(tensors[k] - base, alpha=float(a[k]))
    return acc


def _per_element(base, tensors, weights, variant, temperature) -> torch.Tensor:
    n = len(tensors)
    if variant == "softmax":  # first pass: the scale s and the elementwise max (for a stable exp)
        top, total = torch.zeros_like(base), 0.0
        for k in range(n):
            mag = (tensors[k] - base).abs()
            torch.maximum(top, mag, out=top)
            total += float(mag.sum())
        scale = max(total / (n * base.numel()), 1e-12) * temperature
    num, den, soup = torch.zeros_like(base), torch.zeros_like(base), torch.zeros_like(base)
    for k in range(n):
        delta = tensors[k] - base
        mag = delta.abs()
        if variant == "magnitude":
            g = mag
        elif variant == "inverse":
            g = 1.0 / (mag + EPS)
        else:
            g = torch.exp((mag - top) / scale)
        wk = float(weights[k])
        num.add_(g * delta, alpha=wk)
        den.add_(g, alpha=wk)
        soup.add_(delta, alpha=wk)
    soup.div_(float(weights.sum()))
    return torch.where(den > 0, num / torch.where(den > 0, den, torch.ones_like(den)), soup)


@register("delta_guided", needs_base=True, summary="per-parameter weights from |θ_k − θ0| (CoDiEmb)",
          params={"variant": "magnitude", "granularity": "tensor", "temperature": 1.0, "lambda": 1.0})
def delta_guided(base, tensors, weights, params, seed):
    variant, granularity, temperature = params["variant"], params["granularity"], float(params["temperature"])
    _check(variant, granularity, temperature)
    merge = _per_tensor if granularity == "tensor" else _per_element
    return base + params["lambda"] * merge(base, tensors, weights, variant, temperature)
