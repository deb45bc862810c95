"""Training checkpoints: the model in the sentence-transformers layout plus everything needed to resume exactly.

A checkpoint folder ``<output_dir>/checkpoints/step-000200/`` holds:
- the model (``Embedder.save``: loadable by ``embedlab eval`` and ``SentenceTransformer``),
- ``trainer_state.pt``: optimizer, scheduler, sampler position, step, and the torch / numpy / python RNG states,
- ``trainer_state.json``: step, loss and dev metrics, human-readable.
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

STATE_FILE = "trainer_state.pt"
INFO_FILE = "trainer_state.json"


def rng_state() -> dict[str, Any]:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
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
    model.save(staging)
    for name, folder in (extra_dirs or {}).items():
        os.replace(folder, staging / name)
    torch.save({**state, "rng": rng_state(), "step": step}, staging / STATE_FILE)
    write_json(staging / INFO_FILE, {"step": step, **info})
    if target.exists():
        shutil.rmtree(target)
    os.replace(staging, target)
    return target


def list_checkpoints(output_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first (a folder without its state file is not complete)."""
    root = output_dir / "checkpoints"
    if not root.is_dir():
        return []
    return sorted(p for p in root.glob("step-*") if (p / STATE_FILE).is_file())


def latest_checkpoint(output_dir: Path) -> Path | None:
    found = list_checkpoints(output_dir)
    return found[-1] if found else None


def load_state(checkpoint: Path) -> dict[str, Any]:
    return torch.load(checkpoint / STATE_FILE, map_location="cpu", weights_only=False)


def prune(output_dir: Path, keep: int, protect: Path | None = None) -> None:
    """Delete all but the newest ``keep`` checkpoints, never ``protect`` (the best one)."""
    found = list_checkpoints(output_dir)
    for old in found[: max(0, len(found) - keep)]:
        if protect is not None and old.resolve() == protect.resolve():
            continue
        shutil.rmtree(old, ignore_errors=True)


def read_info(checkpoint: Path) -> dict[str, Any]:
    return json.loads((checkpoint / INFO_FILE).read_text())
