"""A training run's output folder: may this recipe write there, may it resume there, and setting an old run aside.

Three rules, checked before any training work starts (the trainer calls ``prepare_output_dir``):
- The folder is embedlab's: it is new or empty, carries embedlab's owner marker, or holds a run an older embedlab
  wrote (``recipe.json`` with an ``embedlab`` key). A folder of the user's own files is refused.
- Resuming takes the newest checkpoint only when the recipe that wrote it (recorded in its ``trainer_state.json``)
  equals this recipe in everything that changes the result; otherwise the run stops and names every difference.
  Settings that cannot change the weights (``RESUME_SAFE``: logging and checkpoint cadence, thread count, the
  post-training fusion step, the run's name and folder) may change between launches.
- Starting fresh (``--no-resume``, or nothing to resume) never deletes a previous run: its checkpoints, models and
  logs move to ``previous/<UTC time>/`` inside the folder, and the move is logged. Files embedlab did not write stay.

It does not train, save checkpoints (checkpoint.py) or load them.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import os
from pathlib import Path
from typing import Any

from ..atomic import OWNER_MARKER, owned_by_embedlab, write_json
from ..errors import ConfigError
from ..outputs import LOCK_FILE, lock_folder
from . import checkpoint as ckpt

log = logging.getLogger("embedlab.train")

# Dotted recipe keys that do not change what training computes; everything else must match to resume.
RESUME_SAFE = ("name", "output_dir", "train.log_every", "train.keep", "train.save_every", "train.num_threads",
               "fusion")
# What one run writes at the top of its folder (a previous run's copies are moved aside, nothing else is).
RUN_ENTRIES = ("checkpoints", "final", "best", "best.json", "recipe.json", "train_log.jsonl", "dev_log.jsonl",
               "st-checkpoints")
PREVIOUS = "previous"
# Keys a run writes into its recipe.json next to the recipe (who trained it, how many steps the peer ran).
NOT_RECIPE = ("embedlab", "trainer", "trained_steps")


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        out.update(_flatten(v, key) if isinstance(v, dict) and v else {key: v})
    return out


def recipe_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """``key: saved -> current`` for every result-changing key that differs (RESUME_SAFE keys are ignored)."""
    a, b = _flatten(saved), _flatten(current)
    diffs = []
    for key in sorted(set(a) | set(b)):
        if key in NOT_RECIPE or any(key == s or key.startswith(s + ".") for s in RESUME_SAFE):
            continue
        va, vb = a.get(key, "<unset>"), b.get(key, "<unset>")
        if isinstance(va, tuple):
            va = list(va)
        if isinstance(vb, tuple):
            vb = list(vb)
        if va != vb:
            diffs.append(f"{key}: {va!r} -> {vb!r}")
    return diffs


def _owned(folder: Path) -> bool:
    if owned_by_embedlab(folder):
        return True
    try:  # a run folder written before the owner marker existed
        return "embedlab" in json.loads((folder / "recipe.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, TypeError):
        return False


def _being_marked(entry: Path) -> bool:
    """The owner marker while the main process writes it (atomic_path's temporary file), or the lock file it takes
    next: in a multi-process launch another rank can look at the folder in between, and must see an empty folder
    (embedlab's), not a foreign one."""
    return (entry.name.startswith(f".{OWNER_MARKER}.") and entry.name.endswith(".tmp")) or entry.name == LOCK_FILE


def check_writable_run_folder(output_dir: Path) -> None:
    """ConfigError unless ``output_dir`` is new, empty or embedlab's (see the module docstring)."""
    if output_dir.exists() and not output_dir.is_dir():
        raise ConfigError(f"output_dir {output_dir} is a file, expected a folder")
    if output_dir.is_dir() and any(not _being_marked(p) for p in output_dir.iterdir()) and not _owned(output_dir):
        shown = ", ".join(sorted(p.name for p in output_dir.iterdir())[:3])
        raise ConfigError(f"output_dir {output_dir} is a folder embedlab did not write (it holds {shown}, ...); "
                          f"set output_dir to a new folder")


def saved_recipe(checkpoint: Path, output_dir: Path) -> dict[str, Any] | None:
    """The recipe that wrote ``checkpoint``: from its own record, else (older checkpoints) the run's recipe.json."""
    info = ckpt.read_info(checkpoint)
    if isinstance(info.get("recipe_config"), dict):
        return info["recipe_config"]
    try:
        return json.loads((output_dir / "recipe.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def check_resumable(checkpoint: Path, output_dir: Path, current: dict[str, Any]) -> None:
    """ConfigError naming every difference when ``checkpoint`` was written by another recipe."""
    saved = saved_recipe(checkpoint, output_dir)
    if saved is None:
        raise ConfigError(f"cannot resume from {checkpoint}: no record of the recipe that wrote it; start fresh "
                          f"with --no-resume (the previous run is kept under {output_dir / PREVIOUS}) or use another "
                          f"output_dir")
    diffs = recipe_differences(saved, current)
    if diffs:
        shown = "; ".join(diffs[:8]) + (f"; and {len(diffs) - 8} more" if len(diffs) > 8 else "")
        raise ConfigError(f"cannot resume from {checkpoint}: it was written by a different recipe ({shown}). Resume "
                          f"with the recipe that wrote it, start fresh with --no-resume (the previous run is kept "
                          f"under {output_dir / PREVIOUS}), or use another output_dir")


def set_previous_run_aside(output_dir: Path) -> Path | None:
    """Move a previous run's entries (RUN_ENTRIES) to ``previous/<UTC time>/``; returns that folder (None: none)."""
    present = [output_dir / e for e in RUN_ENTRIES if (output_dir / e).exists() or (output_dir / e).is_symlink()]
    if not present:
        return None
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    target = output_dir / PREVIOUS / stamp
    target.mkdir(parents=True)
    for entry in present:
        os.replace(entry, target / entry.name)
    log.warning("starting a fresh run in %s: the previous run's %s moved to %s", output_dir,
                ", ".join(p.name for p in present), target)
    return target


def prepare_output_dir(output_dir: Path, current: dict[str, Any], resume: bool, is_main: bool,
                       inputs: tuple[str, ...] = ()) -> Path | None:
    """Apply the three rules; returns the checkpoint to resume from (None: start fresh). Only the main process
    moves files; every process runs the checks, so every rank refuses the same way. ``inputs`` (the model to train
    from) may not lie in what a fresh start would move aside."""
    check_writable_run_folder(output_dir)
    last = ckpt.latest_checkpoint(output_dir) if resume else None
    if last is not None:
        check_resumable(last, output_dir, current)
        return last
    for item in inputs:
        path = Path(item).expanduser()
        if not path.exists():
            continue
        for entry in RUN_ENTRIES:
            held = (output_dir / entry).resolve()
            if path.resolve() == held or held in path.resolve().parents:
                raise ConfigError(f"the model {item} is inside {output_dir / entry}, which a fresh start moves to "
                                  f"{output_dir / PREVIOUS}; train it into another output_dir")
    if is_main and output_dir.is_dir():
        set_previous_run_aside(output_dir)
    return None


def trim_logs(output_dir: Path, step: int) -> None:
    """On resume at ``step``: drop log lines of later steps (written after the checkpoint by the interrupted run),
    so the logs hold each step once."""
    from ..atomic import write_text

    for name in ("train_log.jsonl", "dev_log.jsonl"):
        path = output_dir / name
        if not path.is_file():
            continue
        kept = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                if int(json.loads(line).get("step", 0)) <= step:
                    kept.append(line)
            except (ValueError, AttributeError, TypeError):
                continue  # a line cut by the interruption
        write_text(path, "".join(x + "\n" for x in kept))


def lock_run_folder(output_dir: Path):
    """Hold an exclusive lock on ``output_dir`` for this process's lifetime (returns the open lock file; keep it).
    A second training launched into the same folder stops with a ConfigError instead of mixing two runs'
    checkpoints. The lock is the kernel's (flock, embedlab.outputs.lock_folder), so a killed run releases it."""
    check_writable_run_folder(output_dir)
    mark_run_folder(output_dir)  # before the lock file, so the folder is recognisably embedlab's
    return lock_folder(output_dir)


def mark_run_folder(output_dir: Path) -> None:
    """Create the folder with embedlab's owner marker (main process)."""
    output_dir.mkdir(parents=True, exist_ok=True)
    if not (output_dir / OWNER_MARKER).is_file():
        write_json(output_dir / OWNER_MARKER, {"written_by": "embedlab", "kind": "training run"})


def finished_model(output_dir: Path, recipe) -> Path | None:
    """``output_dir/final`` when this recipe already finished there (callers reuse it instead of training again);
    None when there is no final model; ConfigError naming the differences when another recipe wrote it."""
    from ..config import recipe_to_dict

    final = output_dir / "final"
    if not (final / "modules.json").is_file():
        return None
    try:
        saved = json.loads((output_dir / "recipe.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        saved = None
    diffs = recipe_differences(saved, recipe_to_dict(recipe)) if isinstance(saved, dict) else ["no recipe.json"]
    if diffs:
        shown = "; ".join(diffs[:8]) + (f"; and {len(diffs) - 8} more" if len(diffs) > 8 else "")
        raise ConfigError(f"{final} was trained by a different recipe ({shown}); it is not this run's model. "
                          f"Train with --no-resume (the previous run is kept under {output_dir / PREVIOUS}) or use "
                          f"another output_dir")
    return final
