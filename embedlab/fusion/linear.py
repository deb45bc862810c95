"""``linear``: the model soup (Wortsman et al., 2022) — a weighted average of the checkpoints.

    θ* = Σ_k w_k θ_k / Σ_k w_k          (normalize: true, the default)
    θ* = Σ_k w_k θ_k                    (normalize: false)

Uniform weights give the uniform soup. The base model is not used.
"""
from __future__ import annotations

import torch

from .base import broadcast_weights, register


@register("linear", needs_base=False, summary="weighted average (uniform soup by default)",
          params={"normalize": True})
def linear(base, tensors, weights, params, gen):
    stacked = torch.stack(tensors)
    w = weights / weights.sum() if params["normalize"] else weights
    return (broadcast_weights(w, stacked) * stacked).sum(0)
