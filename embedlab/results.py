"""Result rows: the one shape in which every domain's scores travel to the results store.

    from embedlab import results
    rows = results.make_rows(domain="text", model="my-model", task="stsb", task_type="sts", dataset="stsb",
                             split="test", scores={"main_score": 0.8203, "cosine_spearman": 0.8203})
    results.write(rows, store)                 # one transaction; returns the run id

Evaluation code (``embedlab.evaluate``, a domain's own evaluator) returns its results and writes nothing; the caller
(the CLI, a job, an experiment) turns them into rows here and writes them with ``write``. This is the only place that
knows:

- the **display scale** of a task type (``display_scale``): metrics that are fractions (correlations, nDCG, accuracy)
  are stored and shown x100, as papers print them; others (alignment, uniformity, ranks) as computed. Each domain
  registers the scales of its task types (``DISPLAY_SCALES.add("sts", 100.0)``) next to its task definitions;
- the **provenance** of a number (``provenance``): embedlab version, git commit, package versions, machine;
- the **config hash** (``config_hash``): a stable digest of a JSON-able config, the key that tells two runs of the same
  configuration from two different ones.

It does not open databases (``embedlab.bench.store`` does), run evaluations, or format tables.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import socket
import subprocess
from collections.abc import Iterable, Mapping
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

from .registry import Registry

PROJECT_ROOT = Path(__file__).resolve().parent.parent

# task type -> factor from the computed value to the shown/stored one (registered by each domain)
DISPLAY_SCALES: Registry[float] = Registry("task type (display scale)")
# Task types whose main score is not a "higher is better" percentage (e.g. text's geometry: uniformity): shown in
# tables but never averaged or used to rank models. Registered by each domain next to its display scales.
UNRANKED_TYPES: set[str] = set()

# Packages whose versions decide numbers; recorded with every result that asks for provenance.
PROVENANCE_PACKAGES = ("torch", "transformers", "sentence-transformers", "numpy", "scipy", "faiss-cpu",
                       "pytrec-eval-terrier", "peft", "SQLAlchemy")


def display_scale(task_type: str) -> float:
    """The factor from a computed score of ``task_type`` to the number tables show (100 for fractions)."""
    return DISPLAY_SCALES.get(task_type)


def register_task_type(task_type: str, scale: float, ranked: bool = True) -> None:
    """A domain's task type: its display scale and whether its main score may be averaged and ranked. Idempotent for
    the same values (a module imported twice under two names must not fail)."""
    if task_type in DISPLAY_SCALES:
        if DISPLAY_SCALES.get(task_type) != scale:
            raise ValueError(f"task type {task_type!r} is registered with another display scale")
    else:
        DISPLAY_SCALES.add(task_type, scale)
    if not ranked:
        UNRANKED_TYPES.add(task_type)


def is_ranked(task_type: str) -> bool:
    return task_type not in UNRANKED_TYPES


def display_value(task_type: str, value: float | None) -> float | None:
    """``value`` on the display scale of ``task_type``; None and non-finite values become None (undefined)."""
    if value is None:
        return None
    value = float(value)
    return value * display_scale(task_type) if math.isfinite(value) else None


def config_hash(config: Any) -> str:
    """sha256 of ``config`` as canonical JSON (sorted keys, no whitespace): equal configs, equal hashes."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), default=_json_default, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def json_safe(value: Any) -> Any:
    """``value`` as plain JSON types (numpy/torch scalars unwrapped, paths as strings); TypeError otherwise."""
    return json.loads(json.dumps(value, default=_json_default))


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy / torch scalars
        return value.item()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def current_git_commit(path: str | Path | None = None) -> str | None:
    """The HEAD commit of the git checkout holding ``path`` (default: embedlab's source), or None when it is not a
    git checkout, has no commit yet, or git is not installed."""
    where = Path(path) if path is not None else PROJECT_ROOT
    try:
        out = subprocess.run(["git", "rev-parse", "--verify", "--quiet", "HEAD"], cwd=where, capture_output=True,
                             text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and commit else None


@lru_cache(maxsize=1)
def _package_versions() -> dict[str, str]:
    versions = {}
    for name in PROVENANCE_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def software() -> dict[str, Any]:
    """What computed a number, compactly: the git commit and the versions of the packages that decide numbers
    (an experiment record carries it: a checkout on a new machine may get newer releases than the last one)."""
    return {"git_commit": current_git_commit(), **_package_versions()}


def provenance() -> dict[str, Any]:
    """Where a number was computed: embedlab version and git commit, package versions, Python, machine."""
    from . import __version__

    return {"embedlab_version": __version__, "git_commit": current_git_commit(), "packages": _package_versions(),
            "python": platform.python_version(), "machine": platform.machine(), "host": socket.gethostname(),
            "cpus": os.cpu_count()}


def make_rows(*, domain: str, model: str, task: str, task_type: str, dataset: str, split: str,
              scores: Mapping[str, Any], model_path: str | None = None, model_hash: str | None = None,
              duration_s: float | None = None, extra: Mapping[str, Any] | None = None, job_id: str | None = None,
              experiment: str | None = None, seed: int | None = None, config: Mapping[str, Any] | None = None,
              status: str = "ok", run_id: str | None = None) -> list[dict[str, Any]]:
    """One store row per numeric score in ``scores`` (computed scale; shown scale in the row's ``value``).

    ``config`` (JSON-able) is what produced the model and the evaluation: it is stored with its ``config_hash``, so
    a query can group the seeds of one configuration. Non-numeric scores are skipped; NaN is stored as NULL.
    """
    scale = display_scale(task_type)
    cfg = json_safe(dict(config)) if config is not None else None
    rows = []
    for metric, value in scores.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        value = float(value)
        rows.append({
            "domain": domain, "model": model, "model_path": model_path, "model_hash": model_hash, "task": task,
            "task_type": task_type, "dataset": dataset, "split": split, "metric": metric,
            "value": value * scale if math.isfinite(value) else None, "duration_s": duration_s,
            "extra": json_safe(dict(extra)) if extra else None, "job_id": job_id, "experiment": experiment,
            "seed": seed, "config": cfg, "config_hash": config_hash(cfg) if cfg is not None else None,
            "status": status, **({"run_id": run_id} if run_id else {}),
        })
    return rows


def write(rows: Iterable[Mapping[str, Any]], store: Any) -> str:
    """Write ``rows`` to ``store`` (a ``embedlab.bench.store.ResultsStore``) in one transaction; returns the run id.
    The one door into the store for results (the store is passed in: this core module never imports it)."""
    return store.add_run(rows)
