"""``ties`` (Yadav et al., 2023, TIES-Merging): trim, elect sign, disjoint mean — as mergekit computes it.

For each tensor, with Δ_k = θ_k − θ0 and the model weights w_k:
1. trim:  keep the max(1, ⌊density · n⌋) entries of Δ_k with the largest magnitude, zero the rest → Δ̂_k
          (density ≥ 1 keeps all, ≤ 0 none). ``density`` (default 1: no trimming) may be given per model.
          ``rescale: true`` then scales Δ̂_k by ‖Δ_k‖₁ / ‖Δ̂_k‖₁ (mergekit's L1 rescale; default false).
2. elect: γ = +1 where Σ_k w_k Δ̂_k ≥ 0, else −1 (mergekit's "sum" consensus: a tie, Σ = 0, elects +).
3. disjoint mean over the models whose weighted delta agrees, m_k = [sign(w_k Δ̂_k) = γ] (a zero never agrees):
          δ = Σ_k m_k w_k Δ̂_k / Σ_k m_k w_k      (normalize: true, the default; a zero divisor counts as 1)
          δ = Σ_k m_k w_k Δ̂_k                    (normalize: false)
          θ* = θ0 + λ δ

Two passes over the models (election, then the mean), each holding one model's Δ̂ at a time.
"""
from __future__ import annotations

from typing import Callable

import torch

from .base import flag, per_model, register
from .task_arithmetic import finish, gta_params


def trim_to_density(delta: torch.Tensor, density: float) -> torch.Tensor:
    """Keep the top max(1, ⌊density·n⌋) magnitudes of one Δ, zero the rest (mergekit's ``magnitude``)."""
    n = delta.numel()
    if density >= 1:
        return delta
    if density <= 0 or n == 0:
        return torch.zeros_like(delta)
    keep = max(1, int(density * n))
    out = torch.zeros_like(delta)
    flat = delta.flatten()
    idx = flat.abs().topk(keep, sorted=False).indices
    out.view(-1)[idx] = flat[idx]
    return out


def l1_rescale(delta: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
    """``kept`` (a masked ``delta``) scaled to ``delta``'s L1 norm; unchanged when either norm is below 1e-7."""
    before, after = delta.abs().sum(), kept.abs().sum()
    if before < 1e-7 or after < 1e-7:
        return kept
    return kept * (before / after)


def sign_elect_disjoint_mean(delta_of: Callable[[int], torch.Tensor], weights: torch.Tensor, n: int,
                             normalize: bool = True) -> torch.Tensor:
    """Steps 2 and 3 above; ``delta_of(k)`` returns model k's (sparsified) Δ and must return the same each call."""
    total = None
    for k in range(n):
        term = delta_of(k) * weights[k]
        total = term if total is None else total.add_(term)
    elected = torch.where(total >= 0, 1.0, -1.0).to(total.dtype)
    del total
    mass = torch.zeros_like(elected)
    norm = torch.zeros_like(elected)
    for k in range(n):
        d = delta_of(k) * weights[k]
        agree = (torch.sign(d) == elected).to(d.dtype)
        mass.add_(d * agree)
        norm.add_(agree * weights[k])
    if not normalize:
        return mass
    return mass / torch.where(norm == 0, torch.ones_like(norm), norm)


@register("ties", needs_base=True, summary="trim to density, elect sign, disjoint mean",
          params=gta_params(True, False), per_model_params=("density",))
def ties(base, tensors, weights, params, seed):
    density = per_model(params["density"], len(tensors), "ties: density")
    rescale = flag(params, "rescale", "ties")

    def delta_of(k):
        delta = tensors[k] - base
        kept = trim_to_density(delta, density[k])
        return l1_rescale(delta, kept) if rescale and kept is not delta else kept

    mixed = sign_elect_disjoint_mean(delta_of, weights, len(tensors), flag(params, "normalize", "ties"))
    return finish(base, mixed, params, "ties")
