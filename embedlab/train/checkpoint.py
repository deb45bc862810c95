"""Training checkpoints: the model in the sentence-transformers layout plus everything needed to resume exactly.

A checkpoint folder ``<output_dir>/checkpoints/step-000200/`` holds:
- the model (``Embedder.save``: loadable by ``embedlab eval`` and ``SentenceTransformer``),
- ``trainer_state.pt``: optimizer, scheduler, sampler position, step, and the torch / numpy / python RNG states,
  as tensors and plain Python values only: it is read with ``torch.load(weights_only=True)``, so a pickled object
  placed in a run folder is refused instead of run (a checkpoint from an older embedlab that pickled numpy arrays is
  refused with the same message),
- ``trainer_state.json``: step, loss and dev metrics and the full recipe that wrote it (resume compares it),
- ``zero/`` (DeepSpeed ZeRO runs only): every rank's optimizer shard, in DeepSpeed's format; ``trainer_state.pt``
  then holds no optimizer state.
Folders are written under a temporary name and renamed, so a crash never leaves a half checkpoint; only the newest
``keep`` are kept (the best one, if selected on dev data, is never deleted). This module knows nothing of losses.
"""
from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..atomic import write_json
from ..errors import ConfigError

STATE_FILE = "trainer_state.pt"
INFO_FILE = "trainer_state.json"


def rng_state() -> dict[str, Any]:
    """Every RNG's state as tensors and plain Python values (what ``torch.load(weights_only=True)`` accepts)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {"torch": torch.get_rng_state(),
            "numpy": [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
            "python": [version, list(internal), gauss_next],
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoint_dir(output_dir: Path, step: int) -> Path:
    return output_dir / "checkpoints" / f"step-{step:06d}"


def save_checkpoint(output_dir: Path, step: int, model, state: dict[str, Any], info: dict[str, Any],
                    extra_dirs: dict[str, Path] | None = None) -> Path:
    """Write model + trainer state for ``step`` atomically (model first, then the state that marks it complete).

    ``extra_dirs`` (name -> folder already written, e.g. DeepSpeed's optimizer shards) are moved inside."""
    target = checkpoint_dir(output_dir, step)
    staging = target.with_name(f".{target.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        model.save(staging)
        for name, folder in (extra_dirs or {}).items():
            os.replace(folder, staging / name)
        torch.save({**state, "rng": rng_state(), "step": step}, staging / STATE_FILE)
        write_json(staging / INFO_FILE, {"step": step, **info})
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    except BaseException:  # an interrupt mid-save leaves no half checkpoint behind
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def list_checkpoints(output_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first (a folder without its state file is not complete)."""
    root = output_dir / "checkpoints"
    if not root.is_dir():
        return []
    found = [p for p in root.glob("step-*") if (p / STATE_FILE).is_file() and p.name[5:].isdigit()]
    return sorted(found, key=lambda p: int(p.name[5:]))  # by number: names outgrow their 6-digit padding


def latest_checkpoint(output_dir: Path) -> Path | None:
    found = list_checkpoints(output_dir)
    return found[-1] if found else None


def load_state(checkpoint: Path) -> dict[str, Any]:
    """The trainer state, unpickled with ``weights_only=True``: tensors and plain values only, never code."""
    import pickle

    path = checkpoint / STATE_FILE
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError) as e:  # truncated or not a torch file at all
        why = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise ConfigError(f"{path}: damaged trainer state ({why}); delete {checkpoint} to resume from the checkpoint "
                          f"before, or start fresh with --no-resume") from None
    except (pickle.UnpicklingError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"{path}: not a trainer state embedlab can read safely ({first[:200]}); it holds objects "
                          f"other than tensors and plain values (a file from an older embedlab, or not written by "
                          f"embedlab at all), and loading it could run code. Start fresh with --no-resume or use "
                          f"another output_dir") from None


def prune(output_dir: Path, keep: int, protect: Path | None = None) -> None:
    """Delete all but the newest ``keep`` checkpoints, never ``protect`` (the best one)."""
    found = list_checkpoints(output_dir)
    for old in found[: max(0, len(found) - keep)]:
        if protect is not None and old.resolve() == protect.resolve():
            continue
        shutil.rmtree(old, ignore_errors=True)


def read_info(checkpoint: Path) -> dict[str, Any]:
    path = checkpoint / INFO_FILE
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path}: unreadable checkpoint record ({e})") from None
    return info if isinstance(info, dict) else {}


def clean_partial(output_dir: Path) -> list[Path]:
    """Remove half-written checkpoint folders (``.step-*.partial``, ``.step-*.zero``) left by a killed run."""
    root = output_dir / "checkpoints"
    removed = []
    if root.is_dir():
        for cand in list(root.glob(".step-*.partial")) + list(root.glob(".step-*.zero")):
            if cand.is_dir() and not cand.is_symlink():
                shutil.rmtree(cand, ignore_errors=True)
                removed.append(cand)
    return removed
