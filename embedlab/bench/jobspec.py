"""Job matrix files: one YAML -> many jobs (``embedlab jobs submit SPEC.yaml``).

    kind: evaluate                      # a registered job kind (`embedlab list` shows them)
    experiment: minilm-batch-sizes      # groups the jobs' rows (one leaderboard); default: the file's name
    model: sentence-transformers/all-MiniLM-L6-v2
    tasks: [stsb, sts12]
    config: {eval: {max_length: 256}}   # the kind's own settings
    seeds: [0, 1, 2]
    threads: 1                          # CPU threads per job (the local executor fits jobs into the cores)
    matrix:                             # dotted paths into the job -> lists: one job per combination
      model: [sentence-transformers/all-MiniLM-L6-v2, runs/my-model/final]
      config.eval.batch_size: [16, 32]
    workdir: runs/jobs/{experiment}     # each job's folder: <workdir>/<name>-s<seed>

Every combination of the matrix values times every seed is one job, named ``<name>-<key>=<value>...`` (``name``
defaults to the kind). Matrix keys are ``model``, ``tasks``, ``threads`` or ``config.<path>``; anything else, an
empty list or a path through a non-mapping is a ConfigError naming the key. It only expands; submitting is
``JobQueue.submit``'s.
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

_TOP_KEYS = ("model", "tasks", "threads")


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


def _short(value: Any) -> str:
    """A matrix value as a folder-safe name part: the last path component of a path or hub id."""
    text = "+".join(map(str, value)) if isinstance(value, list) else str(value)
    text = text.rstrip("/").split("/")[-1] or text
    return re.sub(r"[^A-Za-z0-9_.+=-]", "_", text)[:60]


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
            raise ConfigError(f"{where}: matrix.{key}: not a job field; use model, tasks, threads or config.<path>")
        if not values:
            raise ConfigError(f"{where}: matrix.{key}: an empty list would make no job")
    try:
        workdir = Path(spec.workdir.format(experiment=spec.experiment))
    except (KeyError, IndexError, ValueError) as e:
        raise ConfigError(f"{where}: workdir {spec.workdir!r}: only {{experiment}} may be filled in ({e})") from None
    keys = list(spec.matrix)
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
        name = "-".join([spec.name or spec.kind.replace("+", "_")]
                        + [f"{k.split('.')[-1]}={_short(v)}" for k, v in zip(keys, combo)])
        for seed in spec.seeds:
            job = JobSpec(kind=spec.kind, name=name, model=fields["model"], tasks=tuple(fields["tasks"]),
                          config=fields["config"], seed=seed, experiment=spec.experiment, threads=fields["threads"],
                          resources=dict(spec.resources))
            jobs.append((job, workdir / f"{name}-s{seed}"))
    return jobs
