"""Job kinds: what the job runner can run, registered by the domains; the one interface between them.

A **job** is a kind + a model + dataset(s)/tasks + a config + a seed (``JobSpec``). A **kind** is a function
``run(spec, ctx) -> JobOutcome`` that a domain registers under a name ("evaluate", "train+evaluate",
"fuse+evaluate" for text; Med-VQA adds its own):

    from embedlab.jobkinds import JOB_KINDS, JobKind

    def run_evaluate(spec, ctx): ...                       # returns JobOutcome(rows=[...result rows...])
    JOB_KINDS.add("evaluate", JobKind("evaluate", domain="text", run=run_evaluate))

The runner (embedlab.bench.jobs) never imports a domain: it calls ``load_domains()``, which imports the modules
listed in ``DOMAIN_MODULES`` and in the ``embedlab.domains`` entry-point group (a plug-in package registers its kinds
the same way), then looks kinds up here. Results come back as rows of ``embedlab.results.make_rows``; the runner
stamps them with the job id, experiment, seed and config and writes them.

This module holds no job state (the store's ``jobs`` table does) and runs nothing itself.
"""
from __future__ import annotations

import importlib
import logging
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

from .errors import ConfigError
from .registry import Registry
from .results import config_hash

log = logging.getLogger("embedlab.jobs")

# The domains that ship with embedlab; more come from the "embedlab.domains" entry-point group.
DOMAIN_MODULES = ("embedlab.text_jobs", "embedlab.medvqa.jobs")
ENTRY_POINT_GROUP = "embedlab.domains"


@dataclass(frozen=True)
class JobSpec:
    """Everything that determines a job's result. ``config`` holds the kind's own settings (JSON-able: a recipe
    path and overrides, evaluation settings, fusion parameters...); ``name`` names the job (and its folder),
    ``label`` the model column of its result rows, ``experiment`` groups jobs into one table."""

    kind: str
    name: str
    model: str | None = None
    tasks: tuple[str, ...] = ()
    config: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    experiment: str | None = None
    threads: int = 1  # CPU threads the job uses: the local executor fits jobs into the cores by this
    resources: dict[str, Any] = field(default_factory=dict)  # e.g. {"gpus": 1, "memory_gb": 8} for Ray
    # The model column of the job's result rows (default: ``name``). Jobs of one model under several configurations
    # share it, so a leaderboard can pick the best configuration per model.
    label: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["tasks"] = list(self.tasks)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> JobSpec:
        return cls(**{**d, "tasks": tuple(d.get("tasks") or ())})

    @property
    def row_label(self) -> str:
        return self.label or self.name

    def config_hash(self) -> str:
        """The key that makes two submissions of one job the same job: everything but the seed (stored beside it)
        and the scheduling hints (threads, resources), which do not change the result."""
        d = self.to_dict()
        for key in ("seed", "threads", "resources", "label"):
            d.pop(key)
        return config_hash(d)


@dataclass
class JobOutcome:
    """What a kind returns: result rows (embedlab.results.make_rows, without job fields) and facts to keep with
    the job (steps, seconds, chosen parameters) in its ``timings``/rows' ``extra``."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)


class JobContext:
    """What a running job may use: where to write, how many threads, and how to report progress.

    ``progress(fraction, text)`` and ``log`` lines are picked up by the runner's heartbeat and shown by
    ``embedlab jobs show``; ``output_dir`` is the job's own folder (no other job writes there)."""

    def __init__(self, output_dir: Path, threads: int = 1, show_progress: bool = False,
                 on_progress: Callable[[float | None, str], None] | None = None):
        self.output_dir = Path(output_dir)
        self.threads = threads
        self.show_progress = show_progress
        self._on_progress = on_progress

    def progress(self, fraction: float | None, text: str = "") -> None:
        if self._on_progress is not None:
            self._on_progress(fraction, text)


@dataclass(frozen=True)
class JobKind:
    name: str
    domain: str
    run: Callable[[JobSpec, JobContext], JobOutcome]
    description: str = ""
    # Checked at submit time (before anything runs): raises ConfigError naming the bad field.
    validate: Callable[[JobSpec], None] | None = None


JOB_KINDS: Registry[JobKind] = Registry("job kind")
_loaded = False


def load_domains() -> None:
    """Import every domain module (built-in and entry points) so that their kinds are registered. Idempotent. A
    plug-in that fails to load is reported (a warning naming it) and skipped: the other domains still work."""
    global _loaded
    if _loaded:
        return
    for name in DOMAIN_MODULES:
        importlib.import_module(name)
    try:
        plugins = [ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP) if ep.value not in DOMAIN_MODULES]
    except Exception as e:  # a broken third-party distribution must not stop the built-in domains
        log.warning("could not read the %s entry points: %s", ENTRY_POINT_GROUP, e)
        plugins = []
    for ep in plugins:
        try:
            ep.load()  # "package.module" or "package.module:register"; importing registers the kinds
        except Exception as e:
            log.warning("job-kind plug-in %s (%s) failed to load and is skipped: %s: %s", ep.name, ep.value,
                        type(e).__name__, e)
    _loaded = True


def get_kind(name: str) -> JobKind:
    load_domains()
    try:
        return JOB_KINDS.get(name)
    except Exception as e:
        raise ConfigError(str(e)) from None
