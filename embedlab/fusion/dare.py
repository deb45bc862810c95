"""``dare_linear`` and ``dare_ties`` (Yu et al., 2024, DARE: drop and rescale).

Each element of Δ_k = θ_k − θ0 is kept with probability p = ``density`` (per model if given as a list) and
rescaled by 1/p, so E[Δ̃_k] = Δ_k:   Δ̃_k = m_k ⊙ Δ_k / p,  m_k ~ Bernoulli(p).
Then
    dare_linear:  θ* = θ0 + λ Σ_k w_k Δ̃_k                      (task arithmetic on the sparsified deltas)
    dare_ties:    θ* = θ0 + λ · disjoint_mean(sign election over Δ̃)   (TIES steps 2-3, see ties.py)

The masks come from the per-tensor generator (seed, tensor name), so a merge is reproducible and streaming and
in-memory merges agree.
"""
from __future__ import annotations

import torch

from .base import broadcast_weights, per_model, register, stack_deltas
from .ties import sign_elect_disjoint_mean


def drop_and_rescale(deltas: torch.Tensor, density, gen: torch.Generator) -> torch.Tensor:
    p = per_model(density, deltas.shape[0], deltas)
    if bool((p <= 0).any() or (p > 1).any()):
        from ..errors import ConfigError

        raise ConfigError(f"dare: density must be in (0, 1], got {density}")
    keep = torch.rand(deltas.shape, generator=gen, dtype=deltas.dtype) < p
    return deltas * keep / p


@register("dare_linear", needs_base=True, summary="random drop + rescale, then task arithmetic",
          params={"density": 0.5, "lambda": 1.0}, per_model_params=("density",))
def dare_linear(base, tensors, weights, params, gen):
    deltas = drop_and_rescale(stack_deltas(base, tensors), params["density"], gen)
    return base + params["lambda"] * (broadcast_weights(weights, deltas) * deltas).sum(0)


@register("dare_ties", needs_base=True, summary="random drop + rescale, then TIES sign election",
          params={"density": 0.5, "lambda": 1.0}, per_model_params=("density",))
def dare_ties(base, tensors, weights, params, gen):
    deltas = drop_and_rescale(stack_deltas(base, tensors), params["density"], gen)
    return base + params["lambda"] * sign_elect_disjoint_mean(deltas, weights)
