"""``ties`` (Yadav et al., 2023, TIES-Merging): trim, elect sign, disjoint mean.

For each tensor, with Δ_k = θ_k − θ0:
1. trim:  keep the ⌈density · n⌉ entries of Δ_k with the largest magnitude (exactly that many: ``topk``), zero the
          rest → Δ̂_k. ``density`` may be given per model.
2. elect: γ = sign(Σ_k w_k Δ̂_k) per element (the sign of the larger total mass). Where the sum is exactly 0 (a tie,
          or every Δ̂ is 0) no sign is elected and the element keeps the base value.
3. disjoint mean over the models that agree with γ:
          δ = Σ_k w_k Δ̂_k [sign(Δ̂_k) = γ] / Σ_k w_k [sign(Δ̂_k) = γ]      (0 where no model agrees)
          θ* = θ0 + λ δ
"""
from __future__ import annotations

import math

import torch

from .base import broadcast_weights, per_model, register, stack_deltas


def trim_to_density(deltas: torch.Tensor, density) -> torch.Tensor:
    """Keep the top ⌈density·n⌉ magnitudes of each Δ_k (per model), zero the rest."""
    k_models, n = deltas.shape[0], deltas[0].numel()
    dens = per_model(density, k_models, deltas).flatten().tolist()
    out = torch.zeros_like(deltas)
    for k in range(k_models):
        keep = min(n, math.ceil(dens[k] * n))
        if keep == 0:
            continue
        flat = deltas[k].flatten()
        idx = flat.abs().topk(keep, sorted=False).indices
        out[k].view(-1)[idx] = flat[idx]
    return out


def sign_elect_disjoint_mean(deltas: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Steps 2 and 3 above on (already sparsified) deltas [K, *shape] -> δ [*shape]."""
    w = broadcast_weights(weights, deltas)
    weighted = w * deltas
    elected = torch.sign(weighted.sum(0))
    agree = (torch.sign(deltas) == elected) & (deltas != 0)
    mass = (weighted * agree).sum(0)
    norm = (w * agree).sum(0)
    return torch.where(norm != 0, mass / torch.where(norm != 0, norm, torch.ones_like(norm)), torch.zeros_like(mass))


@register("ties", needs_base=True, summary="trim to density, elect sign, disjoint mean",
          params={"density": 0.2, "lambda": 1.0}, per_model_params=("density",))
def ties(base, tensors, weights, params, gen):
    deltas = trim_to_density(stack_deltas(base, tensors), params["density"])
    return base + params["lambda"] * sign_elect_disjoint_mean(deltas, weights)
