"""``slerp``: spherical linear interpolation between two checkpoints, tensor by tensor.

With a = θ_1, b = θ_2 flattened, Ω the angle between them (cos Ω = a·b / (|a||b|)) and t ∈ [0, 1]:

    θ* = sin((1−t)Ω)/sin Ω · a + sin(tΩ)/sin Ω · b

falling back to the linear (1−t) a + t b when the two are nearly parallel (|cos Ω| > 0.9995), as mergekit does.
t = 0 gives the first model, t = 1 the second. Model weights are not used (t is the parameter); the base is not used.
"""
from __future__ import annotations

import torch

from .base import register


@register("slerp", needs_base=False, summary="spherical interpolation of two models (t)", params={"t": 0.5},
          min_models=2, max_models=2)
def slerp(base, tensors, weights, params, seed):
    a, b = tensors[0], tensors[1]
    t = float(params["t"])
    fa, fb = a.flatten().double(), b.flatten().double()
    na, nb = fa.norm(), fb.norm()
    if na == 0 or nb == 0:
        return (1 - t) * a + t * b
    cos = torch.clamp((fa / na) @ (fb / nb), -1.0, 1.0)
    if cos.abs() > 0.9995:
        return (1 - t) * a + t * b
    omega = torch.arccos(cos)
    s = torch.sin(omega)
    out = (torch.sin((1 - t) * omega) / s) * fa + (torch.sin(t * omega) / s) * fb
    return out.view_as(a).to(a.dtype)
