"""Configuration files: one YAML loader and one error format for recipes, experiments, fusion configs and job specs.

    spec = load_config("experiments/x.yaml", ExperimentSpec, "experiment", overrides=["tasks=[stsb]"])

Every problem is a ConfigError naming the file and, where there is one, the line (bad YAML) or the dotted key
(validation: ``x.yaml: runs.0.seeds: Input should be a valid list``; unknown keys: ``...: unknown key``). Overrides
are ``a.b.c=value`` strings whose values are parsed as YAML. It knows no schema: the pydantic models live with the
code they configure (recipes in config.py, experiments and job specs in bench/).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from .errors import ConfigError

M = TypeVar("M", bound=BaseModel)


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Apply ``a.b.c=value`` strings to a nested dict; values are parsed as YAML (``3`` -> int, ``[1,2]`` -> list)."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key.sub=value")
        key, value = item.split("=", 1)
        parts = [p for p in key.strip().split(".") if p]
        if not parts:
            raise ConfigError(f"override {item!r} has an empty key")
        node = raw
        for p in parts[:-1]:
            nxt = node.setdefault(p, {})
            if not isinstance(nxt, dict):
                raise ConfigError(f"override {item!r}: {p!r} is not a section")
            node = nxt
        try:
            node[parts[-1]] = yaml.safe_load(value) if value.strip() else None
        except yaml.YAMLError as e:
            problem = getattr(e, "problem", None) or type(e).__name__
            raise ConfigError(f"override {item!r}: the value is not valid YAML ({problem}); quote text, "
                              f"e.g. key='[x'") from None
    return raw


def _format_errors(err: ValidationError, where: str) -> str:
    lines = []
    for e in err.errors():
        path = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = "unknown key" if e["type"] == "extra_forbidden" else e["msg"]
        lines.append(f"{where}: {path}: {msg}")
    return "\n".join(lines)


_MAX_CONFIG_BYTES = 16 * 2**20  # recipes, experiment and fusion files are a few KB


def read_config_text(path: str | Path, what: str = "recipe") -> str:
    """The text of a YAML configuration file (``what``: recipe, experiment file, ...); ConfigError naming the path
    when it is missing, a folder, unreadable or not UTF-8 text (e.g. a checkpoint passed by mistake), instead of
    IsADirectoryError / UnicodeDecodeError tracebacks."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path}: is a folder, expected a {what} YAML file")
    if path.exists() and not path.is_file():  # /dev/zero would be read until memory ran out; a pipe could block
        raise ConfigError(f"{path}: is not a regular file (a device, pipe or socket), expected a {what} YAML file")
    if path.is_file() and path.stat().st_size > _MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: is {path.stat().st_size / 2**20:.0f} MiB, far too large for a {what} YAML file "
                          f"(wrong file?)")
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: {what} file not found") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: is not UTF-8 text (byte {e.start + 1}: {e.object[e.start:e.end]!r}); expected a "
                          f"{what} YAML file") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the {what} file ({e.strerror or e})") from None


def read_yaml_mapping(path: str | Path, what: str) -> dict[str, Any]:
    """The YAML mapping in ``path`` (``what``: recipe, experiment, fusion config, job spec): one loader and one error
    format for every configuration file — ConfigError with ``file:line`` for bad YAML, naming the file when it is
    missing, not text, or not a mapping."""
    path = Path(path)
    try:
        raw = yaml.safe_load(read_config_text(path, what))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = " ".join(str(getattr(e, "problem", None) or e).split())
        raise ConfigError(f"{where}: not valid YAML ({problem})") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a {what} is a mapping of keys, got {type(raw).__name__}")
    return raw


def validate_config(model: type[M], raw: dict[str, Any], where: str | Path) -> M:
    """``model.model_validate(raw)``; every problem a ConfigError line ``<where>: <dotted key>: <message>``."""
    try:
        return model.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(_format_errors(e, str(where))) from None


def load_config(path: str | Path, model: type[M], what: str, overrides: list[str] | None = None) -> M:
    """Read, override (``key.sub=value``) and validate a YAML configuration file as ``model``."""
    raw = apply_overrides(read_yaml_mapping(path, what), overrides or [])
    return validate_config(model, raw, path)
