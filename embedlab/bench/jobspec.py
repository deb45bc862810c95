"""Job matrix files: one YAML -> many jobs (``embedlab jobs submit SPEC.yaml``).

    kind: evaluate                      # a registered job kind (`embedlab list` shows them)
    experiment: minilm-batch-sizes      # groups the jobs' rows (one leaderboard); default: the file's name
    model: sentence-transformers/all-MiniLM-L6-v2
    tasks: [stsb, sts12]
    config: {eval: {max_length: 256}}   # the kind's own settings
    seeds: [0, 1, 2]
    threads: 1                          # CPU threads per job (the local executor fits jobs into the cores)
    matrix:                             # dotted paths into the job -> lists: one job per combination
      model: [sentence-transformers/all-MiniLM-L6-v2, runs/my-model/final]   # names: ...L6-v2, final
      config.eval.batch_size: [16, 32]
    workdir: runs/jobs/{experiment}     # each job's folder: <workdir>/<name>-s<seed>

Every combination of the matrix values times every seed is one job, named ``<name>-<key>=<value>...`` (``name``
defaults to the kind; a value is shortened to its last path components, as many as keep the values of one key
apart). The rows of a job are labelled by its model (``name`` and the model's short name when the matrix varies the
model), not by its configuration: a leaderboard then picks the best configuration per model. Matrix keys are
``model``, ``tasks`` or ``config.<path>`` (threads and resources do not change results: they are not a matrix
axis); anything else, an empty list or a path through a non-mapping is a ConfigError naming the key. It only
expands; submitting is ``JobQueue.submit``'s.
"""
from __future__ import annotations

import copy
import itertools
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ..configfile import load_config
from ..errors import ConfigError
from ..jobkinds import JobSpec

_TOP_KEYS = ("model", "tasks")


class JobMatrix(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: str
    name: str | None = Field(None, pattern=r"^[A-Za-z0-9_.+=-]+$")
    experiment: str | None = None
    model: str | None = None
    tasks: list[str] = Field(default_factory=list)
    config: dict[str, Any] = Field(default_factory=dict)
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    threads: int = Field(1, gt=0)
    resources: dict[str, Any] = Field(default_factory=dict)
    matrix: dict[str, list[Any]] = Field(default_factory=dict)
    workdir: str = "runs/jobs/{experiment}"


def load_job_matrix(path: str | Path) -> JobMatrix:
    spec = load_config(path, JobMatrix, "job spec")
    if spec.experiment is None:
        spec.experiment = Path(path).stem
    return spec


def _text(value: Any) -> str:
    return "+".join(map(str, value)) if isinstance(value, list) else str(value)


def _short_names(values: list[Any]) -> dict[str, str]:
    """Folder-safe short names of one key's values: the last path component (of a path or hub id), or as many
    trailing components as keep the values apart (``runs/a/final`` and ``runs/b/final`` -> ``a_final``, ``b_final``)."""
    texts = list(dict.fromkeys(_text(v) for v in values))
    parts = {t: [p for p in t.rstrip("/").split("/") if p] or [t] for t in texts}
    for n in range(1, max(len(p) for p in parts.values()) + 1):
        names = {t: "_".join(p[-n:]) for t, p in parts.items()}
        if len(set(names.values())) == len(names):
            break
    return {t: re.sub(r"[^A-Za-z0-9_.+=-]", "_", name)[-60:] for t, name in names.items()}


def _set(target: dict[str, Any], dotted: str, value: Any) -> None:
    node = target
    parts = dotted.split(".")
    for part in parts[:-1]:
        nxt = node.setdefault(part, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"matrix.{dotted}: {part} is not a mapping in config")
        node = nxt
    node[parts[-1]] = value


def expand(spec: JobMatrix, where: str = "job spec") -> list[tuple[JobSpec, Path]]:
    """Every (combination of matrix values) x seed as a JobSpec and its output folder."""
    for key, values in spec.matrix.items():
        if key not in _TOP_KEYS and not (key.startswith("config.") and len(key) > len("config.")):
            raise ConfigError(f"{where}: matrix.{key}: not a matrix axis; use model, tasks or config.<path>")
        if not values:
            raise ConfigError(f"{where}: matrix.{key}: an empty list would make no job")
    try:
        workdir = Path(spec.workdir.format(experiment=spec.experiment))
    except (KeyError, IndexError, ValueError) as e:
        raise ConfigError(f"{where}: workdir {spec.workdir!r}: only {{experiment}} may be filled in ({e})") from None
    keys = list(spec.matrix)
    short = {k: _short_names(spec.matrix[k]) for k in keys}
    jobs = []
    for combo in itertools.product(*(spec.matrix[k] for k in keys)):
        fields: dict[str, Any] = {"model": spec.model, "tasks": list(spec.tasks), "threads": spec.threads,
                                  "config": copy.deepcopy(spec.config)}
        for key, value in zip(keys, combo):
            if key in _TOP_KEYS:
                fields[key] = value
            else:
                _set(fields["config"], key[len("config."):], value)
        if isinstance(fields["tasks"], str):
            fields["tasks"] = [fields["tasks"]]
        base = spec.name or spec.kind.replace("+", "_")
        name = "-".join([base] + [f"{k.split('.')[-1]}={short[k][_text(v)]}" for k, v in zip(keys, combo)])
        label = f"{base}-{short['model'][_text(fields['model'])]}" if "model" in spec.matrix else base
        for seed in spec.seeds:
            job = JobSpec(kind=spec.kind, name=name, model=fields["model"], tasks=tuple(fields["tasks"]),
                          config=fields["config"], seed=seed, experiment=spec.experiment, threads=fields["threads"],
                          resources=dict(spec.resources), label=label)
            jobs.append((job, workdir / f"{name}-s{seed}"))
    return jobs
