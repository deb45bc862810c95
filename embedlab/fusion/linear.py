"""``linear``: the model soup (Wortsman et al., 2022) — a weighted average of the checkpoints.

    θ* = Σ_k w_k θ_k / Σ_k w_k          (normalize: true, the default)
    θ* = Σ_k w_k θ_k                    (normalize: false)

Uniform weights give the uniform soup. The base model is not used (a mergekit config's ``base_model`` is one more
input here, as mergekit makes it: config.py). One pass, one accumulator. mergekit's parameters and defaults.
"""
from __future__ import annotations

import torch

from .base import flag, register


@register("linear", needs_base=False, summary="weighted average (uniform soup by default)",
          params={"normalize": True})
def linear(base, tensors, weights, params, seed):
    acc = None
    for k in range(len(tensors)):
        term = tensors[k] * weights[k]
        acc = term if acc is None else acc.add_(term)
    if acc is None:
        return torch.zeros(())
    return acc / weights.sum() if flag(params, "normalize", "linear") else acc  # mergekit's order: sum, then divide
