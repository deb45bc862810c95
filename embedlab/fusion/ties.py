"""``ties`` (Yadav et al., 2023, TIES-Merging): trim, elect sign, disjoint mean.

For each tensor, with Δ_k = θ_k − θ0:
1. trim:  keep the ⌈density · n⌉ entries of Δ_k with the largest magnitude (exactly that many: ``topk``), zero the
          rest → Δ̂_k. ``density`` may be given per model.
2. elect: γ = sign(Σ_k w_k Δ̂_k) per element (the sign of the larger total mass). Where the sum is exactly 0 (a tie,
          or every Δ̂ is 0) no sign is elected and the element keeps the base value.
3. disjoint mean over the models that agree with γ:
          δ = Σ_k w_k Δ̂_k [sign(Δ̂_k) = γ] / Σ_k w_k [sign(Δ̂_k) = γ]      (0 where no model agrees)
          θ* = θ0 + λ δ

Two passes over the models (election, then the mean), each holding one model's Δ̂ at a time.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from .base import per_model, register


def trim_to_density(delta: torch.Tensor, density: float) -> torch.Tensor:
    """Keep the top ⌈density·n⌉ magnitudes of one Δ, zero the rest."""
    n = delta.numel()
    keep = min(n, math.ceil(density * n))
    if keep >= n:
        return delta
    out = torch.zeros_like(delta)
    if keep > 0:
        flat = delta.flatten()
        idx = flat.abs().topk(keep, sorted=False).indices
        out.view(-1)[idx] = flat[idx]
    return out


def sign_elect_disjoint_mean(delta_of: Callable[[int], torch.Tensor], weights: torch.Tensor, n: int) -> torch.Tensor:
    """Steps 2 and 3 above; ``delta_of(k)`` returns model k's (sparsified) Δ and must return the same each call."""
    total = None
    for k in range(n):
        term = delta_of(k) * weights[k]
        total = term if total is None else total.add_(term)
    elected = torch.sign(total)
    del total
    mass = torch.zeros_like(elected)
    norm = torch.zeros_like(elected)
    for k in range(n):
        d = delta_of(k)
        agree = ((torch.sign(d) == elected) & (d != 0)).to(d.dtype)
        mass.add_(d * agree, alpha=float(weights[k]))
        norm.add_(agree, alpha=float(weights[k]))
    return torch.where(norm != 0, mass / torch.where(norm != 0, norm, torch.ones_like(norm)), torch.zeros_like(mass))


@register("ties", needs_base=True, summary="trim to density, elect sign, disjoint mean",
          params={"density": 0.2, "lambda": 1.0}, per_model_params=("density",))
def ties(base, tensors, weights, params, seed):
    density = per_model(params["density"], len(tensors))
    delta = sign_elect_disjoint_mean(lambda k: trim_to_density(tensors[k] - base, density[k]), weights, len(tensors))
    return base + params["lambda"] * delta
