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
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..config import read_config_text
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
    seed: int = 0
    tokenizer_source: str | None = None  # mergekit key; only "base" or the default (the first model) are meaningful


def load_fusion_config(path: str | Path) -> dict[str, Any]:
    """-> keyword arguments for ``merge.fuse``: models, method, base, weights, params, seed."""
    path = Path(path)
    try:
        raw = yaml.safe_load(read_config_text(path, "fusion config"))
        cfg = FusionConfig.model_validate(raw)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from None
    except ValidationError as e:
        raise ConfigError("\n".join(f"{path}: {'.'.join(map(str, x['loc']))}: {x['msg']}" for x in e.errors())) \
            from None
    spec = MERGE_METHODS.get(cfg.merge_method)
    weights = None
    if any("weight" in m.parameters for m in cfg.models):
        weights = [float(m.parameters.get("weight", 1.0)) for m in cfg.models]
    params = dict(cfg.parameters)
    params.pop("weight", None)
    per_model_keys = sorted({k for m in cfg.models for k in m.parameters if k != "weight"})
    for key in per_model_keys:
        if key not in spec.per_model_params:
            raise ConfigError(f"{path}: models[].parameters.{key}: merge method {cfg.merge_method!r} takes "
                              f"{key!r} once for all models (under parameters), not per model")
        default = params.get(key, spec.params.get(key))
        params[key] = [m.parameters.get(key, default) for m in cfg.models]
    if cfg.dtype not in (None, "float32", "bfloat16", "float16"):
        raise ConfigError(f"{path}: dtype must be float32, bfloat16 or float16, got {cfg.dtype!r}")
    return {"models": [m.model for m in cfg.models], "method": cfg.merge_method, "base": cfg.base_model,
            "weights": weights, "params": params, "seed": cfg.seed}
