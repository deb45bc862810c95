"""``task_arithmetic`` (Ilharco et al., 2023): add the weighted task vectors to the base.

    θ* = θ0 + λ Σ_k w_k Δ_k,             Δ_k = θ_k − θ0      (normalize: false, the default)
    θ* = θ0 + λ Σ_k w_k Δ_k / Σ_k w_k                         (normalize: true; a |Σ w| below 1e-8 counts as 1)

With the default uniform weights w_k = 1/K and λ = 1 this equals the uniform soup; λ > 1 extrapolates.

This is mergekit's "generalized task arithmetic", which TIES and DARE (ties.py, dare.py) end in too: the same
parameters with mergekit's names and defaults — ``lambda`` (1), ``normalize`` (per method), ``rescale`` (per method),
``density`` (1, also per model), ``int8_mask`` (false). Here ``density`` and ``rescale`` have no effect (mergekit's
task arithmetic does not sparsify), nor does ``int8_mask`` anywhere (mergekit's mask dtype: the values are the same).
"""
from __future__ import annotations

from typing import Callable

import torch

from .base import flag, register


def gta_params(normalize: bool, rescale: bool) -> dict:
    """mergekit's parameters of a generalized-task-arithmetic method, with its defaults."""
    return {"lambda": 1.0, "normalize": normalize, "rescale": rescale, "density": 1.0, "int8_mask": False}


def weighted_sum(delta_of: Callable[[int], torch.Tensor], weights: torch.Tensor, n: int,
                 normalize: bool) -> torch.Tensor:
    """Σ_k w_k Δ_k, divided by Σ_k w_k when ``normalize`` (a |Σ w| below 1e-8 counts as 1, as in mergekit)."""
    acc = None
    for k in range(n):
        term = delta_of(k) * weights[k]
        acc = term if acc is None else acc.add_(term)
    if normalize:
        divisor = weights.sum()
        acc = acc / (divisor if divisor.abs() >= 1e-8 else torch.ones_like(divisor))
    return acc


def finish(base: torch.Tensor, mixed: torch.Tensor, params: dict, method: str) -> torch.Tensor:
    """θ0 + λ δ (``int8_mask`` is checked and otherwise has no effect)."""
    flag(params, "int8_mask", method)
    lam = float(params["lambda"])
    return base + (mixed * lam if lam != 1 else mixed)


@register("task_arithmetic", needs_base=True, summary="θ0 + λ Σ w_k Δ_k", params=gta_params(False, False),
          per_model_params=("density",))
def task_arithmetic(base, tensors, weights, params, seed):
    flag(params, "rescale", "task_arithmetic")
    mixed = weighted_sum(lambda k: tensors[k] - base, weights, len(tensors),
                         flag(params, "normalize", "task_arithmetic"))
    return finish(base, mixed, params, "task_arithmetic")
