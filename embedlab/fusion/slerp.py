"""``slerp``: spherical linear interpolation between two checkpoints, tensor by tensor — mergekit's arithmetic.

With a = θ_1, b = θ_2 flattened, â = a/|a| and b̂ = b/|b| (a norm ≤ 1e-8 counts as 1), cos Ω = â·b̂ clamped to
[−1, 1] and t ∈ [0, 1]:

    θ* = sin((1−t)Ω)/sin Ω · a + sin(tΩ)/sin Ω · b

falling back to the linear (1−t) a + t b when the two are nearly parallel or antiparallel (|cos Ω| > 0.9995). As in
mergekit, a zero tensor is not special: cos Ω = 0, so it is interpolated as if orthogonal (a = 0 gives sin(tπ/2) b).
Computed in float32 (float64 for float64 inputs), as mergekit does. t = 0 gives the first model, t = 1 the second;
a mergekit config's ``base_model`` is the first (config.py). Model weights and the base are not used. mergekit
requires ``t``; embedlab defaults it to 0.5.
"""
from __future__ import annotations

import torch

from .base import register


@register("slerp", needs_base=False, summary="spherical interpolation of two models (t)", params={"t": 0.5},
          min_models=2, max_models=2)
def slerp(base, tensors, weights, params, seed):
    a, b = tensors[0], tensors[1]
    dtype = torch.float64 if a.dtype == torch.float64 else torch.float32
    t = torch.tensor(float(params["t"]), dtype=dtype)
    fa, fb = a.reshape(-1).to(dtype), b.reshape(-1).to(dtype)
    if fa.numel() == 0:
        return a.clone()
    na, nb = torch.linalg.vector_norm(fa), torch.linalg.vector_norm(fb)
    na, nb = (torch.where(n > 1e-8, n, torch.ones_like(n)) for n in (na, nb))
    cos = ((fa / na) * (fb / nb)).sum().clamp(-1, 1)
    if cos.abs() > 0.9995:
        ca, cb = 1 - t, t
    else:
        omega = torch.acos(cos)
        s = torch.sin(omega)
        ca, cb = torch.sin((1 - t) * omega) / s, torch.sin(t * omega) / s
    return (ca * fa + cb * fb).view_as(a)
