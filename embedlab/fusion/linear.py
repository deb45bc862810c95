"""``linear``: the model soup (Wortsman et al., 2022) — a weighted average of the checkpoints.

    θ* = Σ_k w_k θ_k / Σ_k w_k          (normalize: true, the default)
    θ* = Σ_k w_k θ_k                    (normalize: false)

Uniform weights give the uniform soup. The base model is not used. One pass, one accumulator.
"""
from __future__ import annotations

import torch

from .base import register


@register("linear", needs_base=False, summary="weighted average (uniform soup by default)",
          params={"normalize": True})
def linear(base, tensors, weights, params, seed):
    w = weights / weights.sum() if params["normalize"] else weights
    acc = None
    for k in range(len(tensors)):
        term = tensors[k] * w[k]
        acc = term if acc is None else acc.add_(term)
    return acc if acc is not None else torch.zeros(())
