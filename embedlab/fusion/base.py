"""The merge-method registry and the per-tensor contract every method follows.

A merge method combines ONE tensor at a time (the same named tensor of every input), so the merge can stream:

    fn(base, tensors, weights, params, seed) -> merged tensor
      base     the pre-trained tensor θ0 (fp32) or None for methods that do not use it
      tensors  a sequence of K checkpoints' copies: ``len(tensors)`` and ``tensors[k]`` (fp32). In a streaming merge
               ``tensors[k]`` reads the tensor from disk each time it is indexed, so a method that visits the models
               one at a time, accumulating into a few buffers of one tensor's size, uses memory independent of K
               (every method here does; TIES, DARE-TIES and some delta-guided variants make two passes)
      weights  tensor [K] of the user's model weights (uniform 1/K by default)
      params   the method's parameters, defaults filled in, unknown names rejected before any tensor is read
      seed     an integer derived from (merge seed, tensor name): random methods seed a generator per (seed, k), so
               results are reproducible and do not depend on the order tensors or models are visited

Δ_k = θ_k − θ0 throughout. Methods see only float tensors; integer buffers are copied by the merge driver.
It does not read or write files (merge.py) or evaluate models (greedy.py).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from ..errors import ConfigError
from ..registry import Registry


@dataclass(frozen=True)
class MergeMethod:
    name: str
    fn: Callable[..., torch.Tensor]
    needs_base: bool
    min_models: int = 1
    max_models: int | None = None
    params: dict[str, Any] = field(default_factory=dict)  # name -> default
    per_model_params: tuple[str, ...] = ()  # params that may also be given per model (a list of K values)
    summary: str = ""
    needs_score: bool = False  # driven by dev scores (greedy_soup): run through greedy.greedy_soup, not fuse()

    def resolve_params(self, given: dict[str, Any] | None, n_models: int) -> dict[str, Any]:
        """Defaults filled in; an unknown name or a per-model list of the wrong length is a ConfigError."""
        given = dict(given or {})
        unknown = sorted(set(given) - set(self.params))
        if unknown:
            valid = ", ".join(sorted(self.params)) or "none"
            hint = (" (model weights: --weights, or models[].parameters.weight in a config)" if "weight" in unknown
                    else "")
            raise ConfigError(f"merge method {self.name!r} has no parameter {', '.join(map(repr, unknown))} "
                              f"(its parameters: {valid}){hint}")
        out = {**self.params, **given}
        for key, value in out.items():
            if isinstance(value, (list, tuple)):
                if key not in self.per_model_params:
                    raise ConfigError(f"merge method {self.name!r}: parameter {key!r} takes one value, got a list")
                if len(value) != n_models:
                    raise ConfigError(f"merge method {self.name!r}: parameter {key!r} has {len(value)} values for "
                                      f"{n_models} models")
            out[key] = check_param(self.name, key, value)
        return out

    def check_count(self, n_models: int) -> None:
        if n_models < self.min_models or (self.max_models is not None and n_models > self.max_models):
            want = (f"exactly {self.min_models}" if self.max_models == self.min_models else
                    f"at least {self.min_models}" if self.max_models is None else
                    f"{self.min_models} to {self.max_models}")
            raise ConfigError(f"merge method {self.name!r} takes {want} models, got {n_models}")


MERGE_METHODS: Registry[MergeMethod] = Registry("merge method")


def register(name: str, needs_base: bool, summary: str, params: dict[str, Any] | None = None,
             per_model_params: tuple[str, ...] = (), min_models: int = 1, max_models: int | None = None,
             needs_score: bool = False):
    """Decorator: ``@register("ties", needs_base=True, summary=..., params={"density": 0.2})``."""

    def decorator(fn):
        MERGE_METHODS.add(name, MergeMethod(name, fn, needs_base, min_models, max_models, dict(params or {}),
                                            per_model_params, summary, needs_score))
        return fn

    return decorator


# The type and allowed range of each numeric parameter a method may take (None: unbounded, but finite), and the
# booleans (checked by ``flag``). Other parameters (rescale, variant, granularity) are checked by their method.
NUMERIC_PARAMS: dict[str, tuple[float | None, float | None]] = {
    "density": (0.0, 1.0), "t": (0.0, 1.0), "lambda": (None, None), "temperature": (None, None)}
BOOL_PARAMS = ("normalize", "int8_mask")


def number(value: Any, what: str, low: float | None = None, high: float | None = None) -> float:
    """A finite float (from a number or a numeric string) in [low, high]; anything else a ConfigError
    naming ``what``."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ConfigError(f"{what} must be a number, got {value!r}")
    try:
        x = float(value)
    except (ValueError, OverflowError):
        raise ConfigError(f"{what} must be a number, got {value!r}") from None
    if not math.isfinite(x):
        raise ConfigError(f"{what} must be a finite number, got {value!r}")
    if (low is not None and x < low) or (high is not None and x > high):
        lo, hi = ("-inf" if low is None else f"{low:g}"), ("inf" if high is None else f"{high:g}")
        raise ConfigError(f"{what} must be in [{lo}, {hi}], got {value!r}")
    return x


def check_param(method: str, key: str, value: Any) -> Any:
    """One parameter value (or per-model list) checked against its type and range; numeric strings become floats."""
    if key in NUMERIC_PARAMS:
        low, high = NUMERIC_PARAMS[key]
        what = f"merge method {method!r}: parameter {key!r}"
        if isinstance(value, (list, tuple)):
            xs = [number(v, f"{what} (model {i + 1})", low, high) for i, v in enumerate(value)]
            return [x if isinstance(v, str) else v for v, x in zip(value, xs)]
        x = number(value, what, low, high)
        return x if isinstance(value, str) else value
    if key in BOOL_PARAMS:
        flag({key: value}, key, method)
    return value


def per_model(value: Any, n: int, what: str = "parameter") -> list[float]:
    """A parameter given once or per model, as K finite floats (anything else a ConfigError naming ``what``)."""
    if isinstance(value, (list, tuple)):
        return [number(v, what) for v in value]
    return [number(value, what)] * n


def flag(params: dict[str, Any], key: str, method: str) -> bool:
    """A boolean parameter (mergekit's normalize, int8_mask, ...): true/false (or 1/0), anything else a ConfigError."""
    value = params[key]
    if isinstance(value, bool) or (isinstance(value, int) and value in (0, 1)):
        return bool(value)
    raise ConfigError(f"merge method {method!r}: {key} must be true or false, got {value!r}")


def generator(seed: int, k: int) -> torch.Generator:
    """The generator of model k for one tensor (see ``seed`` above)."""
    return torch.Generator().manual_seed((seed * 1_000_003 + k) & 0x7FFF_FFFF)
