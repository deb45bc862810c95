"""mergekit-style fusion configs, so users can bring theirs:

    merge_method: ties                 # any name in MERGE_METHODS
    base_model: sentence-transformers/all-MiniLM-L6-v2
    models:
      - model: runs/a/final
        parameters: {weight: 0.6, density: 0.5}    # weight -> model weights; other keys per model (e.g. density)
      - model: runs/b/final
        parameters: {weight: 0.4, density: 0.7}
    parameters: {lambda: 1.0}          # method parameters for all models
    dtype: float32                     # accepted; the output keeps the checkpoints' dtype
    seed: 0                            # embedlab: the DARE masks

Unknown keys are errors naming the key; a per-model parameter is turned into a list of K values (missing entries take
the global value or the method's default). It only parses; ``merge.fuse`` runs the merge.

Read as mergekit reads it: a ``weight`` under ``parameters`` is every model's default weight; ``base_model`` is not a
merge input of the methods that take a base (listed among ``models`` or not, it is dropped from them and its
parameters ignored), it is ``slerp``'s first model (t = 0), whatever order ``models`` gives, and one more input of
``linear`` (mergekit adds it to the inputs when it is not listed, and ``linear`` averages every input). mergekit's
gradients (a list of values across layers) and filters (``{filter, value}`` entries) are refused with a message.
embedlab's own leniency: without any weight the weights are uniform, and a model without one (when others have one)
takes 1 — mergekit requires a weight for every input of the methods that use weights.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ..configfile import load_config
from ..errors import ConfigError
from .base import MERGE_METHODS


class ModelEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str
    parameters: dict[str, Any] = Field(default_factory=dict)


class FusionConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    merge_method: str
    base_model: str | None = None
    models: list[ModelEntry]
    parameters: dict[str, Any] = Field(default_factory=dict)
    dtype: str | None = None
    seed: int = Field(0, ge=0, strict=True)  # as the CLI's --seed: an integer >= 0 (not true, 1.5 or "3")
    tokenizer_source: str | None = None  # mergekit key; only "base" or the default (the first model) are meaningful


def load_fusion_config(path: str | Path) -> dict[str, Any]:
    """-> keyword arguments for ``merge.fuse``: models, method, base, weights, params, seed."""
    path = Path(path)
    cfg = load_config(path, FusionConfig, "fusion config")
    spec = MERGE_METHODS.get(cfg.merge_method)
    for where, values in [("parameters", cfg.parameters)] + [(f"models[{i}].parameters", m.parameters)
                                                             for i, m in enumerate(cfg.models)]:
        for key, value in values.items():
            if isinstance(value, dict) or (isinstance(value, list) and any(isinstance(v, dict) for v in value)):
                raise ConfigError(f"{path}: {where}.{key}: mergekit's filters ({{filter, value}} entries) are not "
                                  f"supported: give one value")
            if isinstance(value, list):
                raise ConfigError(f"{path}: {where}.{key}: mergekit's gradients (a list of values across layers) "
                                  f"are not supported: give one value")
    models = _inputs(cfg)
    params = dict(cfg.parameters)
    default_weight = params.pop("weight", None)
    weights = None
    if default_weight is not None:
        _weight(default_weight, f"{path}: parameters.weight")
    if default_weight is not None or any("weight" in m.parameters for m in models):
        weights = [_weight(m.parameters.get("weight", 1.0 if default_weight is None else default_weight),
                           f"{path}: models[{_index(cfg, m)}].parameters.weight") for m in models]
    per_model_keys = sorted({k for m in models for k in m.parameters if k != "weight"})
    for key in per_model_keys:
        if key not in spec.per_model_params:
            raise ConfigError(f"{path}: models[].parameters.{key}: merge method {cfg.merge_method!r} takes "
                              f"{key!r} once for all models (under parameters), not per model")
        default = params.get(key, spec.params.get(key))
        params[key] = [m.parameters.get(key, default) for m in models]
    if cfg.dtype not in (None, "float32", "bfloat16", "float16"):
        raise ConfigError(f"{path}: dtype must be float32, bfloat16 or float16, got {cfg.dtype!r}")
    return {"models": [m.model for m in models], "method": cfg.merge_method, "base": cfg.base_model,
            "weights": weights, "params": params, "seed": cfg.seed}


def _weight(value: Any, where: str) -> float:
    """A model weight: a finite number (the merge checks the float32 range); else a ConfigError naming the key."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ConfigError(f"{where}: must be a number, got {value!r}")
    try:
        x = float(value)
    except (ValueError, OverflowError):
        raise ConfigError(f"{where}: must be a number, got {value!r}") from None
    if not math.isfinite(x):
        raise ConfigError(f"{where}: must be a finite number, got {value!r}")
    return x


def _index(cfg: FusionConfig, entry: ModelEntry) -> str:
    return next((str(i) for i, m in enumerate(cfg.models) if m is entry), "base_model")


def _same_model(a: str, b: str) -> bool:
    return a == b or (Path(a).exists() and Path(b).exists() and Path(a).resolve() == Path(b).resolve())


def _inputs(cfg: FusionConfig) -> list[ModelEntry]:
    """The merge inputs as mergekit makes them from ``models`` and ``base_model`` (see the module docstring)."""
    base = cfg.base_model
    if base is None:
        return list(cfg.models)
    others = [m for m in cfg.models if not _same_model(m.model, base)]
    listed = [m for m in cfg.models if _same_model(m.model, base)]
    base_entry = listed[0] if listed else ModelEntry(model=base)
    if cfg.merge_method == "slerp":
        return [base_entry] + others
    if cfg.merge_method == "linear":
        return list(cfg.models) if listed else list(cfg.models) + [base_entry]
    return others if MERGE_METHODS.get(cfg.merge_method).needs_base else list(cfg.models)
