"""``task_arithmetic`` (Ilharco et al., 2023): add the weighted task vectors to the base.

    θ* = θ0 + λ Σ_k w_k Δ_k,     Δ_k = θ_k − θ0

With the default uniform weights w_k = 1/K and λ = 1 this equals the uniform soup; λ > 1 extrapolates.
"""
from __future__ import annotations

import torch

from .base import register


@register("task_arithmetic", needs_base=True, summary="θ0 + λ Σ w_k Δ_k", params={"lambda": 1.0})
def task_arithmetic(base, tensors, weights, params, seed):
    acc = torch.zeros_like(base)
    for k in range(len(tensors)):
        acc.add_(tensors[k] - base, alpha=float(weights[k]))
    return base + params["lambda"] * acc
