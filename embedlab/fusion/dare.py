"""``dare_linear`` and ``dare_ties`` (Yu et al., 2024, DARE: drop and rescale) — as mergekit computes them.

Each element of Δ_k = θ_k − θ0 is kept with probability p = ``density`` (default 1: nothing dropped; per model if
given as a list), m_k ~ Bernoulli(p), and the kept entries are rescaled (``rescale``, default true):

    rescale: true              Δ̃_k = m_k ⊙ Δ_k · ‖Δ_k‖₁ / ‖m_k ⊙ Δ_k‖₁   (mergekit: the L1 norm is kept; ≈ 1/p)
    rescale: inverse_density   Δ̃_k = m_k ⊙ Δ_k / p                     (embedlab's own: the paper's, E[Δ̃_k] = Δ_k;
                                                                         what embedlab did before it matched mergekit)
    rescale: false             Δ̃_k = m_k ⊙ Δ_k

Then, with the model weights w_k:
    dare_linear:  θ* = θ0 + λ Σ_k w_k Δ̃_k  (/ Σ_k w_k with normalize: true; default false)   (task_arithmetic.py)
    dare_ties:    θ* = θ0 + λ δ, δ the TIES sign election and sum over Δ̃ (ties.py), divided by the agreeing
                  weights Σ_k m_k w_k only with normalize: true (default false, as in mergekit)

The mask of model k comes from a generator seeded with (tensor seed, k), so a merge is reproducible, the two TIES
passes see the same mask, and streaming and in-memory merges agree. (mergekit draws from torch's global generator:
the two tools keep the same fraction and rescale alike, but not the same entries.)
"""
from __future__ import annotations

import torch

from ..errors import ConfigError
from .base import flag, generator, per_model, register
from .task_arithmetic import finish, gta_params, weighted_sum
from .ties import l1_rescale, sign_elect_disjoint_mean


def drop_and_rescale(delta: torch.Tensor, density: float, gen: torch.Generator,
                     rescale: bool | str = True) -> torch.Tensor:
    if not 0 < density <= 1:
        raise ConfigError(f"dare: density must be in (0, 1], got {density}")
    if density == 1:
        return delta
    kept = delta * (torch.rand(delta.shape, generator=gen, dtype=delta.dtype) < density)
    if rescale == "inverse_density":
        return kept / density
    return l1_rescale(delta, kept) if rescale else kept


def _rescale(params, method: str) -> bool | str:
    value = params["rescale"]
    if isinstance(value, str) and value.strip().lower() == "inverse_density":
        return "inverse_density"
    if isinstance(value, bool) or (isinstance(value, int) and value in (0, 1)):
        return bool(value)
    raise ConfigError(f"merge method {method!r}: rescale must be true (mergekit's L1 rescale), false or "
                      f"inverse_density (embedlab's 1/density), got {value!r}")


def _deltas(base, tensors, params, seed, method):
    density, rescale = per_model(params["density"], len(tensors), f"{method}: density"), _rescale(params, method)
    return lambda k: drop_and_rescale(tensors[k] - base, density[k], generator(seed, k), rescale)


@register("dare_linear", needs_base=True, summary="random drop + rescale, then task arithmetic",
          params=gta_params(False, True), per_model_params=("density",))
def dare_linear(base, tensors, weights, params, seed):
    mixed = weighted_sum(_deltas(base, tensors, params, seed, "dare_linear"), weights, len(tensors),
                         flag(params, "normalize", "dare_linear"))
    return finish(base, mixed, params, "dare_linear")


@register("dare_ties", needs_base=True, summary="random drop + rescale, then TIES sign election",
          params=gta_params(False, True), per_model_params=("density",))
def dare_ties(base, tensors, weights, params, seed):
    mixed = sign_elect_disjoint_mean(_deltas(base, tensors, params, seed, "dare_ties"), weights, len(tensors),
                                     flag(params, "normalize", "dare_ties"))
    return finish(base, mixed, params, "dare_ties")
