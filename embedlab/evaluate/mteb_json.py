"""MTEB result files: build one task's result dict in MTEB's current (v2) format and write it where MTEB would.

    result = mteb_result("STSBenchmark", "test", sts_scores(...), evaluation_time=3.2)
    write_result("results", "org/my-model", result)   # -> results/org__my-model/no_revision_available/STSBenchmark.json

The format follows ``mteb.results.TaskResult`` (mteb 2.x):

    {"dataset_revision": str, "task_name": str, "mteb_version": str,
     "scores": {split: [{<metric>: float, ..., "main_score": float, "hf_subset": str, "languages": [str]}]},
     "evaluation_time": float, "kg_co2_emissions": null, "date": <unix timestamp>, "embedlab_version": str}

Scores stay on MTEB's 0-1 scale; an undefined score (NaN) is written as null. ``mteb_version`` must parse as a
version (mteb's loader compares it to decide whether to convert pre-1.11 files), so it holds the mteb release whose
format we write, ``MTEB_FORMAT_VERSION``; the extra top-level ``embedlab_version`` (ignored by mteb's loader) says who
really computed the numbers. MTEB rounds scores to 6 decimals on disk; we write full precision. The layout is
mteb's own:
``<dir>/<model name with "/" -> "__" and " " -> "_">/<model revision or "no_revision_available">/<task_name>.json``.

It does not compute scores, validate task names against mteb's registry, or merge with an existing file (it replaces
it, atomically: an interrupted or failed write leaves the old file intact).
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Mapping

import embedlab
from embedlab.atomic import write_text

MTEB_FORMAT_VERSION = "2.0.0"
NO_REVISION = "no_revision_available"  # mteb's folder name when a model has no revision
NO_DATASET_REVISION = "revision_not_applicable"  # mteb's placeholder for data without a hub revision


def _plain(value: Any) -> Any:
    """numpy/torch scalars -> Python numbers and NaN/inf -> None, recursively, so the dict is strict JSON."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def mteb_result(
    task_name: str,
    split: str,
    scores: Mapping[str, Any],
    evaluation_time: float,
    hf_subset: str = "default",
    languages: list[str] | None = None,
    extra: Mapping[str, Any] | None = None,
    *,
    dataset_revision: str = NO_DATASET_REVISION,
    mteb_version: str = MTEB_FORMAT_VERSION,
) -> dict[str, Any]:
    """One task, one split, one subset as an MTEB result dict.

    ``scores`` must hold ``main_score``; ``extra`` entries are added to the same score entry (MTEB keeps
    task-specific keys there too) and may not overwrite a score. ``languages`` defaults to ["eng-Latn"].
    """
    if "main_score" not in scores:
        raise ValueError(f"scores for {task_name}/{split} have no 'main_score'")
    entry: dict[str, Any] = _plain(dict(scores))
    for key, value in (extra or {}).items():
        if key in entry:
            raise ValueError(f"extra key {key!r} would overwrite a score")
        entry[key] = _plain(value)
    entry["hf_subset"] = hf_subset
    entry["languages"] = list(languages) if languages is not None else ["eng-Latn"]
    return {
        "dataset_revision": dataset_revision,
        "task_name": task_name,
        "mteb_version": mteb_version,
        "scores": {split: [entry]},
        "evaluation_time": float(evaluation_time),
        "kg_co2_emissions": None,
        "date": time.time(),
        "embedlab_version": embedlab.__version__,
    }


def model_name_as_path(model_name: str) -> str:
    """mteb's folder name for a model: "/" -> "__", " " -> "_"."""
    name = model_name.replace("/", "__").replace(" ", "_")
    if name in ("", ".", "..") or "\\" in name or "\x00" in name:
        raise ValueError(f"model name {model_name!r} cannot be a folder name")
    return name


def result_path(directory: str | Path, model_name: str, task_name: str, revision: str | None = None) -> Path:
    """Where ``write_result`` puts a task's file (mteb's layout)."""
    rev = model_name_as_path(revision) if revision else NO_REVISION
    if "/" in task_name or task_name in ("", ".", ".."):
        raise ValueError(f"task name {task_name!r} cannot be a file name")
    return Path(directory) / model_name_as_path(model_name) / rev / f"{task_name}.json"


def write_result(
    directory: str | Path, model_name: str, result: Mapping[str, Any], revision: str | None = None
) -> Path:
    """Write ``result`` atomically to ``result_path(directory, model_name, result["task_name"], revision)``.

    The JSON is serialised before the file is touched, so a non-serialisable value raises and leaves any previous
    file as it was. NaN/inf (e.g. the correlation of a collapsed model) are written as null: mteb writes a bare NaN,
    which is not JSON and breaks strict readers.
    """
    target = result_path(directory, model_name, str(result["task_name"]), revision)
    text = json.dumps(_plain(dict(result)), indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    return write_text(target, text)


def read_result(path: str | Path) -> dict[str, Any]:
    """Load a result file written by ``write_result`` (or by mteb)."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


def main_score(result: Mapping[str, Any], split: str, hf_subset: str = "default") -> float:
    """The main score of one split/subset of a result dict (NaN when absent)."""
    for entry in result.get("scores", {}).get(split, []):
        if entry.get("hf_subset") == hf_subset:
            return float(entry["main_score"])
    return math.nan
