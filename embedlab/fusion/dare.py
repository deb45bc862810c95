"""``dare_linear`` and ``dare_ties`` (Yu et al., 2024, DARE: drop and rescale).

Each element of Δ_k = θ_k − θ0 is kept with probability p = ``density`` (per model if given as a list) and
rescaled by 1/p, so E[Δ̃_k] = Δ_k:   Δ̃_k = m_k ⊙ Δ_k / p,  m_k ~ Bernoulli(p).
Then
    dare_linear:  θ* = θ0 + λ Σ_k w_k Δ̃_k                      (task arithmetic on the sparsified deltas)
    dare_ties:    θ* = θ0 + λ · disjoint_mean(sign election over Δ̃)   (TIES steps 2-3, see ties.py)

The mask of model k comes from a generator seeded with (tensor seed, k), so a merge is reproducible, the two TIES
passes see the same mask, and streaming and in-memory merges agree.
"""
from __future__ import annotations

import torch

from ..errors import ConfigError
from .base import generator, per_model, register
from .ties import sign_elect_disjoint_mean


def drop_and_rescale(delta: torch.Tensor, density: float, gen: torch.Generator) -> torch.Tensor:
    if not 0 < density <= 1:
        raise ConfigError(f"dare: density must be in (0, 1], got {density}")
    if density == 1:
        return delta
    keep = torch.rand(delta.shape, generator=gen, dtype=delta.dtype) < density
    return delta * keep / density


@register("dare_linear", needs_base=True, summary="random drop + rescale, then task arithmetic",
          params={"density": 0.5, "lambda": 1.0}, per_model_params=("density",))
def dare_linear(base, tensors, weights, params, seed):
    density = per_model(params["density"], len(tensors))
    acc = torch.zeros_like(base)
    for k in range(len(tensors)):
        acc.add_(drop_and_rescale(tensors[k] - base, density[k], generator(seed, k)), alpha=float(weights[k]))
    return base + params["lambda"] * acc


@register("dare_ties", needs_base=True, summary="random drop + rescale, then TIES sign election",
          params={"density": 0.5, "lambda": 1.0}, per_model_params=("density",))
def dare_ties(base, tensors, weights, params, seed):
    density = per_model(params["density"], len(tensors))
    delta = sign_elect_disjoint_mean(
        lambda k: drop_and_rescale(tensors[k] - base, density[k], generator(seed, k)), weights, len(tensors))
    return base + params["lambda"] * delta
