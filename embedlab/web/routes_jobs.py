"""Model practice: build a job matrix (a job kind x models x tasks x hyper-parameter lists x seeds), see it before
launching, launch it, and watch the jobs (status, progress, a live training curve, the log tail, the result rows);
cancel, retry, and the run history. The same through a JSON API.

Pages (researchers and admins launch; everybody sees only the jobs they launched, admins every web job):

    GET  /jobs                     the run history: your jobs, newest first, filtered by status / experiment; the table
                                   refreshes itself (HTMX polling) while a job is queued or running
    GET  /jobs/new?kind=vqa-train  the matrix builder: models, tasks, profile, hyper-parameter lists, seeds
    POST /jobs/preview             the builder with the expanded matrix (exactly what `embedlab jobs submit --show`
                                   lists) and a Launch button
    POST /jobs                     launch: the previewed matrix (checked by its digest) is submitted and run
    GET  /jobs/{id}                one job: config, status, progress, training curve (an inline SVG of the per-epoch
                                   loss in the run's train_log.jsonl), log tail, results, error; polled while live
    GET  /jobs/{id}/log            the job's whole log file (text)
    POST /jobs/{id}/cancel|retry|run

    API: GET /api/jobs, GET /api/jobs/kinds, POST /api/jobs/preview, POST /api/jobs, GET /api/jobs/{id},
         POST /api/jobs/{id}/cancel, POST /api/jobs/{id}/retry, POST /api/jobs/{id}/run

Everything goes through the job system the CLI uses: the matrix is a JobMatrix (bench/jobspec.py) expanded by
``expand``, submitted by ``JobQueue.submit`` (idempotent: a job already known by config and seed is not added again,
a failed or cancelled one is queued again, as `embedlab jobs submit` does), cancelled and retried by
``JobQueue.cancel`` / ``retry``, and run by ``make_executor(...)`` (the server's ``--executor``: local worker
processes or Ray) in a background thread per launch (``JobLauncher``), so a request never waits for a job. Each job
is recorded as the launching user's (``Accounts.own("job", ...)``); another user's job answers 404 to reading,
cancelling and retrying alike.

Job kinds offered: ``vqa-train`` (Med-VQA library models, profiles paper / cpu / tiny; lists of batch sizes, images
per batch, epochs and learning rates), ``vqa-baseline`` and the text kind ``evaluate`` (bundled encoders or any model
name or folder; lists of batch sizes and max lengths). The Med-VQA kinds offer the registered tasks and every
registered dataset-tool export with train and val splits (``medvqa.tasks.all_tasks``). Every matrix key varies one
axis: one job per combination and seed, at most ``MAX_JOBS`` per launch. A user's experiments are named
``<name>@<user>``, so two users never share a job (its key includes the experiment), and job folders go to
``<web dir>/jobs/<user>/<name>/``.

What it does not do: train-and-evaluate or fuse-and-evaluate text jobs (their recipes and fusion settings are files:
use `embedlab jobs submit`), and it does not resume jobs a stopped server left
queued by itself (the job page offers Run; `embedlab jobs run` does the same). Leaderboards across jobs are the
evaluation pages'.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import math
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Callable, Mapping

from fastapi import APIRouter, Depends, Query, Request
from fastapi.encoders import jsonable_encoder
from pydantic import BaseModel, ConfigDict, Field
from pydantic import ValidationError as PydanticError
from starlette.concurrency import run_in_threadpool
from starlette.responses import PlainTextResponse, Response

from ..bench.jobs import LIVE, STALE_AFTER_S, JobQueue
from ..bench.jobspec import JobMatrix, expand
from ..bench.store import JOB_STATES
from ..errors import ConfigError, EmbedlabError
from ..jobkinds import JobSpec, get_kind
from .accounts import User
from .deps import AccountsDep, ConfigDep, CurrentUser, StoreDep, require_role
from .errors import NotFound, WebError
from .render import NavItem, redirect, render

log = logging.getLogger("embedlab.web.jobs")

router = APIRouter()
NAV = [NavItem("Jobs", "/jobs", "Build a job matrix, launch it, watch training curves; cancel, retry.",
               roles=("researcher",), order=200)]
Researcher = Annotated[User, Depends(require_role("researcher"))]

MAX_JOBS = 200          # per launch: a typo in a list must not queue thousands of trainings
MAX_VALUES = 50         # per list (seeds, batch sizes, ...)
MAX_FIELD_CHARS = 4000  # per form field
MAX_ATTEMPTS = 2        # tries per job when a worker is lost (the CLI's default)
LIST_LIMIT = 500        # jobs shown on the list page (newest first); the API has no limit
LOG_LINES = 80
JOB_ID = re.compile(r"^[0-9a-f]{32}$")
EXPERIMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,39}$")


class MatrixError(ConfigError):
    """The builder's input is wrong; ``messages`` says each problem (the page lists them next to the form)."""

    def __init__(self, messages: list[str]):
        super().__init__("; ".join(messages))
        self.messages = messages


class Conflict(WebError):
    status_code = 409


# ---------------------------------------------------------------------------------------------- what can be built
@dataclass(frozen=True)
class Choice:
    name: str
    description: str = ""


@dataclass(frozen=True)
class Axis:
    """A hyper-parameter list of the builder: ``key`` in the form and API, ``path`` under the job's config."""

    key: str
    label: str
    path: str
    number: type
    low: float
    high: float
    help: str = ""
    placeholder: str = ""


@dataclass(frozen=True)
class KindForm:
    kind: str
    label: str
    base_name: str
    description: str
    models: Callable[[], list[Choice]]
    tasks: Callable[[], list[Choice]]
    free_models: bool = False  # model names / folders may be typed in (validated by the kind at preview)
    profiles: tuple[str, ...] = ()
    default_profile: str | None = None
    axes: tuple[Axis, ...] = ()
    batching: bool = False
    limit: bool = False

    def axis(self, key: str) -> Axis | None:
        return next((a for a in self.axes if a.key == key), None)


def _vqa_models() -> list[Choice]:
    from ..medvqa.models import MODELS

    return [Choice(name, d.description + (f" ({d.label})" if d.label else "")) for name, d in MODELS.items()]


def _vqa_tasks() -> list[Choice]:
    from ..medvqa.tasks import all_tasks  # the registered tasks, then the registered dataset-tool exports

    return [Choice(t.name, t.description) for t in all_tasks()]


def _baselines() -> list[Choice]:
    from ..medvqa.baselines import BASELINES

    return [Choice(name, (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else "")
            for name, cls in BASELINES.items()]


def _text_models() -> list[Choice]:
    from ..pretrained import local_models

    return [Choice(m["name"], m["description"]) for m in local_models() if m["available"]]


def _text_tasks() -> list[Choice]:
    from ..evaluate.tasks import TASKS

    return [Choice(name, t.description) for name, t in TASKS.items()]


KINDS: dict[str, KindForm] = {k.kind: k for k in (
    KindForm("vqa-train", "Med-VQA: train + score", "vqa",
             "Train a Med-VQA library model on each task's training split and score its evaluation split with real, "
             "blank and shuffled images (the model is saved in the job's folder).",
             _vqa_models, _vqa_tasks, profiles=("paper", "cpu", "tiny"), default_profile="cpu", batching=True, axes=(
                 Axis("batch_size", "Batch sizes (questions)", "train.batch_size", int, 1, 4096,
                      "used with per-sample batching", "e.g. 16, 32"),
                 Axis("batch_images", "Images per batch", "train.batch_images", int, 1, 1024,
                      "used with image batching (the cpu and tiny profiles' default)", "e.g. 4, 8"),
                 Axis("epochs", "Epochs", "train.epochs", int, 1, 1000, "", "profile's default"),
                 Axis("lr", "Learning rates", "train.lr", float, 1e-8, 10.0, "", "e.g. 0.005, 0.001"),
             )),
    KindForm("vqa-baseline", "Med-VQA: baseline", "baseline",
             "Fit a baseline (majority, question-only, image identity) on each task's training split and score its "
             "evaluation split. Seconds per job.", _baselines, _vqa_tasks),
    KindForm("evaluate", "Text: evaluate an encoder", "evaluate",
             "Score a sentence encoder as it is on text tasks (STS, retrieval). Models: the bundled ones, or any "
             "hub id or model folder typed below.", _text_models, _text_tasks, free_models=True, limit=True, axes=(
                 Axis("batch_size", "Batch sizes", "eval.batch_size", int, 1, 4096, "", "default 32"),
                 Axis("max_length", "Max lengths (tokens)", "eval.max_length", int, 8, 8192, "",
                      "the model's own"),
             )),
)}
DEFAULT_KIND = "vqa-train"


def kind_form(kind: str) -> KindForm:
    try:
        return KINDS[kind]
    except KeyError:
        raise MatrixError([f"job kind {kind!r} cannot be launched from the web app (choose one of "
                           f"{', '.join(KINDS)}; `embedlab jobs submit` runs every kind)"]) from None


# ----------------------------------------------------------------------------------------------- reading a matrix
def _items(raw: Any) -> list[str]:
    """A list as given: a JSON list, or text with the values separated by commas, semicolons or white space."""
    if raw is None:
        return []
    items = raw if isinstance(raw, (list, tuple)) else re.split(r"[,;\s]+", str(raw))
    return [str(x).strip() for x in items if str(x).strip()]


def _numbers(raw: Any, label: str, number: type, low: float, high: float, errors: list[str]) -> list:
    values: list = []
    items = raw if isinstance(raw, (list, tuple)) else _items(raw)
    if len(items) > MAX_VALUES:
        errors.append(f"{label}: at most {MAX_VALUES} values, got {len(items)}")
        return []
    for item in items:
        value = _number(item, number)
        if value is None:
            kind = "a whole number" if number is int else "a number"
            errors.append(f"{label}: {str(item)[:40]!r} is not {kind}")
        elif not low <= value <= high:
            errors.append(f"{label}: {value} is out of range ({low:g} to {high:g})")
        elif value not in values:  # a repeated value would make the same job twice
            values.append(value)
    return values


def _number(item: Any, number: type) -> int | float | None:
    if isinstance(item, bool):  # JSON true is not 1 here
        return None
    if isinstance(item, (int, float)) and not isinstance(item, bool):
        value = item
    else:
        text = str(item).strip()
        if number is int:
            return int(text) if re.fullmatch(r"[+-]?\d{1,12}", text) else None
        try:
            value = float(text)
        except ValueError:
            return None
    if not math.isfinite(value):
        return None
    if number is int:
        return int(value) if float(value).is_integer() else None
    return float(value)


@dataclass
class Matrix:
    """The builder's choices, checked: what ``spec`` turns into a JobMatrix."""

    form: KindForm
    experiment: str
    name: str
    models: list[str]
    tasks: list[str]
    seeds: list[int]
    params: dict[str, list] = field(default_factory=dict)
    profile: str | None = None
    batching: str | None = None
    threads: int = 1
    limit: int | None = None

    @property
    def count(self) -> int:
        return len(self.models) * len(self.tasks) * math.prod(len(v) for v in self.params.values()) * len(self.seeds)

    def full_experiment(self, user: User) -> str:
        # The experiment is part of a job's key: the user's name in it keeps two users' identical matrices apart.
        return f"{self.experiment}@{user.username}"

    def spec(self, user: User, jobs_dir: Path) -> dict[str, Any]:
        """The job matrix, as a YAML file for `embedlab jobs submit` would hold it."""
        config: dict[str, Any] = {}
        if self.profile:
            config["profile"] = self.profile
        if self.batching:
            config["train"] = {"batching": self.batching}
        if self.limit:
            config["eval"] = {"limit": self.limit}
        matrix: dict[str, list] = {"model": list(self.models), "tasks": list(self.tasks)}
        for axis in self.form.axes:
            if axis.key in self.params:
                matrix[f"config.{axis.path}"] = list(self.params[axis.key])
        # {experiment} is the only placeholder JobMatrix fills: braces of the folder itself are escaped.
        workdir = str(jobs_dir.resolve() / user.username / self.experiment).replace("{", "{{").replace("}", "}}")
        return {"kind": self.form.kind, "name": self.name, "experiment": self.full_experiment(user), "config": config,
                "seeds": list(self.seeds), "threads": self.threads, "matrix": matrix, "workdir": workdir}


def read_matrix(data: Mapping[str, Any]) -> Matrix:
    """The builder's input (form fields or API JSON, same names) -> a Matrix, or MatrixError listing every problem."""
    form = kind_form(str(data.get("kind") or DEFAULT_KIND))
    errors: list[str] = []
    for key, value in data.items():
        if isinstance(value, str) and len(value) > MAX_FIELD_CHARS:
            raise MatrixError([f"{key}: too long (at most {MAX_FIELD_CHARS} characters)"])
    experiment = str(data.get("experiment") or "").strip()
    if not EXPERIMENT.match(experiment):
        errors.append("experiment: 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit")
    name = str(data.get("name") or form.base_name).strip()
    if not RUN_NAME.match(name):
        errors.append("run name: 1-40 letters, digits, '.', '_' or '-', starting with a letter or digit")

    models = list(dict.fromkeys(_items(data.get("models"))))
    if form.free_models:
        for model in models:
            if len(model) > 512 or any(ord(c) < 32 for c in model):
                errors.append(f"model {model[:40]!r}: not a model name or folder")
    else:
        known = {c.name for c in form.models()}
        for model in models:
            if model not in known:
                errors.append(f"unknown model {model[:60]!r} for {form.kind} (known: {', '.join(sorted(known))})")
    if not models:
        errors.append("models: choose at least one")

    tasks = list(dict.fromkeys(_items(data.get("tasks"))))
    known_tasks = {c.name for c in form.tasks()}
    for task in tasks:
        if task not in known_tasks:
            errors.append(f"unknown task {task[:60]!r} for {form.kind} (known: {', '.join(sorted(known_tasks))})")
    if not tasks:
        errors.append("tasks: choose at least one")

    profile = None
    if form.profiles:
        profile = str(data.get("profile") or form.default_profile)
        if profile not in form.profiles:
            errors.append(f"profile: {profile[:20]!r} is not one of {', '.join(form.profiles)}")
    batching = None
    if form.batching and data.get("batching"):
        batching = str(data["batching"])
        if batching not in ("per-sample", "image"):
            errors.append("batching: per-sample or image (or empty for the profile's default)")

    seeds = _numbers(data.get("seeds", "0"), "seeds", int, 0, 2**31 - 1, errors)
    if not seeds and not any(e.startswith("seeds") for e in errors):
        errors.append("seeds: give at least one seed")
    raw_params = data.get("params") or {}
    if not isinstance(raw_params, Mapping):
        errors.append("params: an object of hyper-parameter lists")
        raw_params = {}
    for key in raw_params:
        if form.axis(str(key)) is None:
            errors.append(f"params: {str(key)[:40]!r} is not a hyper-parameter of {form.kind} "
                          f"(known: {', '.join(a.key for a in form.axes) or 'none'})")
    params: dict[str, list] = {}
    for axis in form.axes:
        raw = raw_params.get(axis.key)
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            continue  # empty: the profile's (or kind's) default, not an axis
        values = _numbers(raw, axis.label.lower(), axis.number, axis.low, axis.high, errors)
        if values:
            params[axis.key] = values
        elif not any(e.startswith(axis.label.lower()) for e in errors):
            errors.append(f"{axis.label.lower()}: give values or leave it empty")

    threads = _numbers(data.get("threads", 1) or 1, "threads per job", int, 1, 256, errors)[:1]
    limit = None
    if form.limit and data.get("limit") not in (None, ""):
        got = _numbers(data.get("limit"), "limit", int, 1, 10_000_000, errors)
        if len(got) > 1:
            errors.append("limit: one number (or empty for every pair / query)")
        limit = got[0] if got else None
    matrix = Matrix(form, experiment, name, models, tasks, seeds, params, profile, batching,
                    threads[0] if threads else 1, limit)
    if not errors and matrix.count > MAX_JOBS:
        errors.append(f"this matrix makes {matrix.count} jobs; at most {MAX_JOBS} per launch (fewer models, tasks, "
                      "values or seeds; or `embedlab jobs submit` with a matrix file)")
    if errors:
        raise MatrixError(errors)
    return matrix


# ------------------------------------------------------------------------------------------------- the preview
@dataclass
class Preview:
    matrix: Matrix
    spec: dict[str, Any]
    jobs: list[tuple[JobSpec, Path]]
    rows: list[dict[str, Any]]
    digest: str
    warnings: list[str]

    @property
    def yaml(self) -> str:
        """The matrix as a file for `embedlab jobs submit` (the same jobs, from the command line)."""
        import yaml

        return yaml.safe_dump(self.spec, sort_keys=False, default_flow_style=None, width=100)

    def json(self) -> dict[str, Any]:
        return {"experiment": self.spec["experiment"], "count": len(self.rows), "digest": self.digest,
                "spec": self.spec, "yaml": self.yaml, "warnings": self.warnings, "jobs": self.rows}


def digest_of(spec: dict[str, Any]) -> str:
    """What the Launch button carries: the page launches only the matrix it showed."""
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:20]


def _settings(job: JobSpec) -> tuple[str, dict[str, Any]]:
    """The settings a job will train or score with (the profile's defaults with its overrides), as a short text."""
    if job.kind == "vqa-train":
        from ..medvqa.models import model_settings

        _, train = model_settings(job.model or "", job.config.get("profile", "cpu"),
                                  train_overrides=job.config.get("train"))
        per = (f"{train['batch_images']} images/batch" if train["batching"] == "image"
               else f"{train['batch_size']} questions/batch")
        return f"{train['epochs']} epochs · {per} · {train['optimizer']} lr {train['lr']:g}", train
    if job.kind == "evaluate":
        ev = job.config.get("eval", {})
        text = f"batch {ev.get('batch_size', 32)} · max length {ev.get('max_length') or 'model'}"
        return text + (f" · limit {ev['limit']}" if ev.get("limit") else ""), ev
    return "", {}


def build_preview(matrix: Matrix, user: User, web_dir: Path, store) -> Preview:
    """Expand the matrix with the job runner's own functions and check each job as ``JobQueue.submit`` will."""
    spec = matrix.spec(user, Path(web_dir) / "jobs")
    try:
        jobs = expand(JobMatrix(**spec), "job matrix")
    except PydanticError as e:
        raise MatrixError([f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors()]) from None
    kind = get_kind(matrix.form.kind)
    existing = {(j["config_hash"], j["seed"]): j for j in JobQueue(store).list(experiment=spec["experiment"])}
    rows, effective = [], []
    problems: list[str] = []
    for job, folder in jobs:
        try:
            if kind.validate is not None:
                kind.validate(job)
            text, settings = _settings(job)
        except EmbedlabError as e:
            if str(e) not in problems:
                problems.append(str(e))
            continue
        effective.append(settings)
        known = existing.get((job.config_hash(), job.seed))
        rows.append({"name": job.name, "kind": job.kind, "model": job.model, "tasks": list(job.tasks),
                     "seed": job.seed, "folder": str(folder), "settings": text, "config": job.config,
                     "label": job.row_label, "existing": None if known is None else
                     {"id": known["id"], "status": known["status"]}})
    if problems:
        raise MatrixError(problems[:10])
    warnings = []
    if matrix.form.kind == "vqa-train":
        batchings = {s.get("batching") for s in effective}
        if "batch_size" in matrix.params and "image" in batchings:
            warnings.append("Batch sizes have no effect with image batching (this profile's default): choose "
                            "per-sample batching, or vary images per batch.")
        if "batch_images" in matrix.params and "per-sample" in batchings:
            warnings.append("Images per batch have no effect with per-sample batching: vary batch sizes instead.")
    known_count = sum(1 for r in rows if r["existing"] and r["existing"]["status"] == "done")
    if known_count:
        warnings.append(f"{known_count} job(s) of this matrix are already done in experiment {spec['experiment']}: "
                        "they are not run again (change the experiment name for fresh runs).")
    return Preview(matrix, spec, jobs, rows, digest_of(spec), warnings)


# ------------------------------------------------------------------------------------------ running the jobs
class JobLauncher:
    """Runs launched jobs in the background: one daemon thread per launch drives an executor (``make_executor``,
    exactly as `embedlab jobs submit` does) until that launch's jobs end. The request that launches returns at once.

    Each launch has its own executor, as two `embedlab jobs submit` would: two launches at once share the machine's
    cores between them. Stopping the server lets the running jobs finish (the worker processes end after their job);
    jobs still queued stay queued for the job page's Run button or `embedlab jobs run`."""

    def __init__(self, store_url: str, executor: str = "local", address: str | None = None,
                 cpus: int | None = None, log_dir: Path | None = None):
        self.store_url, self.executor, self.address, self.cpus = store_url, executor, address, cpus
        self.log_dir = Path(log_dir) if log_dir else None
        self._lock = threading.Lock()
        self._threads: dict[threading.Thread, list[str]] = {}

    def watching(self) -> set[str]:
        """The ids an executor of this server is running or waiting to run."""
        with self._lock:
            return {i for t, ids in self._threads.items() if t.is_alive() for i in ids}

    def start(self, ids: list[str]) -> list[str]:
        """Run these jobs in the background (those not already watched); returns the ids handed to an executor."""
        with self._lock:
            busy = {i for t, ids_ in self._threads.items() if t.is_alive() for i in ids_}
            todo = [i for i in dict.fromkeys(ids) if i not in busy]
            if not todo:
                return []
            thread = threading.Thread(target=self._run, args=(todo,), name=f"jobs-{todo[0][:8]}", daemon=True)
            self._threads[thread] = todo
        thread.start()
        return todo

    def _run(self, ids: list[str]) -> None:
        from ..bench.executors import make_executor

        kwargs: dict[str, Any] = {}
        if self.cpus:
            kwargs["cpus"] = self.cpus
        if self.executor == "local" and self.log_dir is not None:
            kwargs["log_dir"] = self.log_dir
        if self.executor == "ray" and self.address:
            kwargs["address"] = self.address
        try:
            with _executor_start_lock:  # two launches at once must not both start a local Ray instance
                executor = make_executor(self.executor, self.store_url, **kwargs)
            states = executor.run(ids)
            log.info("jobs %s: %s", ", ".join(i[:8] for i in ids), states)
        except Exception:  # the jobs stay in the store (queued or failed); the server must go on
            log.exception("the executor of jobs %s stopped", ", ".join(i[:8] for i in ids))
        finally:
            with self._lock:
                self._threads.pop(threading.current_thread(), None)


_launcher_lock = threading.Lock()
_executor_start_lock = threading.Lock()


def get_launcher(request: Request) -> JobLauncher:
    """The app's launcher, made at first use from its config (``app.state.job_cpus``, when set, caps the cores each
    launch's local executor fills; default all)."""
    state = request.app.state
    with _launcher_lock:
        launcher = getattr(state, "job_launcher", None)
        if launcher is None:
            cfg = state.config
            launcher = JobLauncher(state.store.url, cfg.executor, cfg.ray_address, getattr(state, "job_cpus", None),
                                   Path(cfg.web_dir) / "job-logs")
            state.job_launcher = launcher
    return launcher


LauncherDep = Annotated[JobLauncher, Depends(get_launcher)]


def launch(preview: Preview, user: User, store, accounts, launcher: JobLauncher) -> tuple[list[str], int]:
    """Submit the previewed jobs (``JobQueue.submit``: all or nothing), record them as the user's, and start the
    queued ones in the background. Returns (job ids, how many were new)."""
    queue = JobQueue(store)
    for row in preview.rows:  # a job already owned by somebody else is never handed to this user
        if row["existing"]:
            owner = accounts.owner_of("job", row["existing"]["id"])
            if owner is not None and owner.id != user.id:
                raise Conflict(f"job {row['name']} (seed {row['seed']}) belongs to another user; choose another "
                               "experiment name")
    before = {r["existing"]["id"] for r in preview.rows if r["existing"]}
    ids = queue.submit([j for j, _ in preview.jobs], [f for _, f in preview.jobs], max_attempts=MAX_ATTEMPTS,
                       requeue_failed=True)
    for job_id in ids:
        accounts.own("job", job_id, user)
    jobs = queue.snapshot(ids)
    launcher.start([i for i in ids if jobs[i]["status"] == "queued"])
    return ids, len(set(ids) - before)


# -------------------------------------------------------------------------------------------- reading a job
def _visible_job(job_id: str, user: User, accounts, store) -> dict[str, Any]:
    """The job if this user may see it (owner, or admin); another user's job is the same 404 as a missing one."""
    if not JOB_ID.match(job_id):  # full ids only: JobQueue.get would also take a prefix
        raise NotFound(f"no such job {job_id[:40]}")
    accounts.require_owner("job", job_id, user)
    try:
        return JobQueue(store).get(job_id)
    except ConfigError:
        raise NotFound(f"no such job {job_id}") from None


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def job_view(job: dict[str, Any], watching: set[str]) -> dict[str, Any]:
    """A job row as the pages and the API show it."""
    spec = job.get("spec") or {}
    status = job["status"]
    shown = status
    if status == "running" and job.get("heartbeat_at") is not None:
        quiet = (_now() - job["heartbeat_at"]).total_seconds()
        if quiet > STALE_AFTER_S:  # its worker is probably gone; the next executor reaps it (as `jobs list` says)
            shown = f"running? (no heartbeat for {quiet / 60:.0f} min)"
    if status == "running" and job.get("cancel_requested"):
        shown = "cancelling"
    seconds = None
    if job.get("started_at") is not None:
        end = job.get("finished_at") or (_now() if status == "running" else None)
        if end is not None and end >= job["started_at"]:
            seconds = (end - job["started_at"]).total_seconds()
    progress = job.get("progress")
    return {
        "id": job["id"], "short": job["id"][:8], "name": job["name"], "kind": job["kind"], "domain": job["domain"],
        "experiment": job["experiment"], "model": spec.get("model"), "tasks": list(spec.get("tasks") or []),
        "seed": job["seed"], "label": spec.get("label") or job["name"], "config": spec.get("config") or {},
        "threads": job.get("threads"), "status": status, "shown_status": shown,
        "cancel_requested": bool(job.get("cancel_requested")),
        "progress": None if progress is None else round(100 * float(progress), 1),
        "progress_text": job.get("progress_text") or "", "attempts": job["attempts"],
        "max_attempts": job["max_attempts"], "worker": job.get("worker"), "executor": job.get("executor"),
        "output_dir": job.get("output_dir"), "error": job.get("error"), "created_at": job["created_at"],
        "started_at": job.get("started_at"), "heartbeat_at": job.get("heartbeat_at"),
        "finished_at": job.get("finished_at"), "seconds": seconds,
        "live": status in LIVE,
        "can_cancel": status in LIVE and not job.get("cancel_requested"),
        "can_retry": status in ("failed", "cancelled"),
        # queued with no executor of this server on it (e.g. the server was restarted): offer to run it
        "can_run": status == "queued" and job["id"] not in watching,
    }


def _tail_bytes(path: Path, limit: int) -> str:
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - limit))
        data = f.read()
    text = data.decode("utf-8", "replace")
    return text.split("\n", 1)[1] if size > limit and "\n" in text else text  # drop the cut first line


def training_curves(job: dict[str, Any]) -> list[dict[str, Any]]:
    """The per-epoch training log(s) of a job: ``<folder>/train_log.jsonl`` and ``<folder>/<task>/train_log.jsonl``
    (a Med-VQA job trains one model per task), as series of {epoch (1-based), loss, seconds, lr}."""
    out = job.get("output_dir")
    if not out or not Path(out).is_dir():
        return []
    root = Path(out)
    series = []
    for path in [root / "train_log.jsonl", *sorted(root.glob("*/train_log.jsonl"))]:
        if not path.is_file():
            continue
        points: dict[int, dict[str, Any]] = {}
        try:
            text = _tail_bytes(path, 2 * 1024 * 1024)
        except OSError:
            continue
        for line in text.splitlines():
            try:
                row = json.loads(line)
            except ValueError:  # the line being written right now
                continue
            if not isinstance(row, dict):
                continue
            epoch, loss = row.get("epoch"), row.get("loss")
            if isinstance(epoch, int) and not isinstance(epoch, bool) and isinstance(loss, (int, float)) \
                    and math.isfinite(loss):
                # A resumed run may log an epoch again (stopped between its log line and its checkpoint): keep the last.
                points[epoch] = {"epoch": epoch + 1, "loss": float(loss), "seconds": row.get("seconds"),
                                 "lr": row.get("lr")}
        if points:
            series.append({"label": path.parent.name if path.parent != root else job["name"],
                           "points": [points[k] for k in sorted(points)]})
    return series


PALETTE = ("#2456a6", "#c2410c", "#15803d", "#7e22ce", "#b91c1c", "#0e7490", "#a16207", "#4b5563")


def curve_chart(series: list[dict[str, Any]], width: int = 640, height: int = 240) -> dict[str, Any] | None:
    """Geometry of an SVG line chart of loss per epoch (drawn by templates/jobs/_curve.html): no script, so it works
    under the strict Content-Security-Policy and is simply swapped in by each HTMX refresh. A log scale when the loss
    spans more than a factor of 20 (a first epoch's loss dwarfs the rest)."""
    points = [p for s in series for p in s["points"]]
    if not points:
        return None
    left, right, top, bottom = 60, 16, 14, 40
    plot_w, plot_h = width - left - right, height - top - bottom
    xs = [p["epoch"] for p in points]
    ys = [p["loss"] for p in points]
    use_log = min(ys) > 0 and max(ys) / min(ys) > 20
    f = math.log10 if use_log else (lambda v: v)
    lo, hi = f(min(ys)), f(max(ys))
    if hi - lo < 1e-12:
        lo, hi = lo - 0.5, hi + 0.5
    pad = 0.06 * (hi - lo)
    lo, hi = lo - pad, hi + pad
    x0, x1 = min(xs), max(xs)
    if x0 == x1:
        x0, x1 = x0 - 1, x1 + 1

    def sx(x: float) -> float:
        return round(left + (x - x0) / (x1 - x0) * plot_w, 1)

    def sy(y: float) -> float:
        return round(top + (1 - (f(y) - lo) / (hi - lo)) * plot_h, 1)

    step = max(1, math.ceil((max(xs) - min(xs)) / 8))
    xticks = [{"x": sx(e), "label": str(e)} for e in range(min(xs), max(xs) + 1, step)]
    values = [10 ** (lo + (hi - lo) * k / 4) if use_log else lo + (hi - lo) * k / 4 for k in range(5)]
    for digits in range(3, 9):  # as few digits as keep the tick labels apart
        labels = [f"{v:.{digits}g}" for v in values]
        if len(set(labels)) == len(labels):
            break
    yticks = [{"y": round(top + (1 - k / 4) * plot_h, 1), "label": labels[k]} for k in range(5)]
    drawn = []
    for i, s in enumerate(series):
        color = PALETTE[i % len(PALETTE)]
        dots = [{"x": sx(p["epoch"]), "y": sy(p["loss"]), "title": f"{s['label']} epoch {p['epoch']}: loss "
                 f"{p['loss']:.4g}"} for p in s["points"]]
        drawn.append({"label": s["label"], "color": color, "dots": dots,
                      "points": " ".join(f"{d['x']},{d['y']}" for d in dots)})
    return {"width": width, "height": height, "left": left, "top": top, "plot_w": plot_w, "plot_h": plot_h,
            "xticks": xticks, "yticks": yticks, "series": drawn, "log": use_log, "n": len(points)}


def log_tail(job: dict[str, Any], log_dir: Path, lines: int = LOG_LINES) -> str:
    """The last lines of the job's log file (the local executor writes ``<log dir>/<id>.log``, every attempt), else
    the tail its worker stored with the job (Ray, or another machine's executor)."""
    path = Path(log_dir) / f"{job['id']}.log"
    if path.is_file():
        try:
            text = _tail_bytes(path, 256 * 1024)
        except OSError:
            text = ""
        # The store's migration check logs a dozen alembic lines each time a worker opens it: not the job's story.
        kept = [line for line in text.splitlines() if " alembic." not in line]
        if kept:
            return "\n".join(kept[-lines:])
    return "\n".join((job.get("log_tail") or "").splitlines()[-lines:])


KEY_METRICS = ("main_score", "overall", "closed", "open", "blank_overall", "shuffled_overall", "image_reliance")


def result_table(store, job_id: str) -> dict[str, Any]:
    """The job's result rows (the newest per task and metric): a short table of the key metrics, and all rows."""
    rows = store.query(job_id=job_id, latest_only=True)
    by_task: dict[tuple[str, str], dict[str, float | None]] = {}
    for r in rows:
        by_task.setdefault((r["task"], r["split"]), {})[r["metric"]] = r["value"]
    columns = [m for m in KEY_METRICS if any(m in v for v in by_task.values())]
    return {"columns": columns,
            "tasks": [{"task": t, "split": s, "cells": [v.get(m) for m in columns]} for (t, s), v in by_task.items()],
            "rows": [{"task": r["task"], "split": r["split"], "metric": r["metric"], "value": r["value"],
                      "model": r["model"], "run_id": r["run_id"]} for r in rows]}


def _visible_jobs(user: User, accounts, store, status: str | None = None,
                  experiment: str | None = None) -> list[dict[str, Any]]:
    ids = accounts.owned_ids("job", user)
    if not ids:
        return []
    jobs = JobQueue(store).list(experiment=experiment or None, status=status or None, ids=ids)
    return list(reversed(jobs))  # newest first


def _check_filters(status: str | None, experiment: str | None) -> None:
    if status and status not in JOB_STATES:
        raise ConfigError(f"status must be one of {', '.join(JOB_STATES)}; got {status[:20]!r}")
    if experiment and len(experiment) > 256:
        raise ConfigError("experiment: too long")


# ------------------------------------------------------------------------------------------------------ pages
def _defaults(form: KindForm) -> dict[str, Any]:
    return {"kind": form.kind, "experiment": "practice", "name": form.base_name, "models": [], "extra_models": "",
            "tasks": [], "profile": form.default_profile or "", "batching": "", "seeds": "0", "threads": "1",
            "limit": "", "params": {a.key: "" for a in form.axes}}


def _form_values(form_data) -> dict[str, Any]:
    """The builder's form fields as the same dict the API takes (the text fields kept as typed, to show them again)."""
    kind = str(form_data.get("kind") or DEFAULT_KIND)
    form = KINDS.get(kind, KINDS[DEFAULT_KIND])
    values = _defaults(form)
    values["kind"] = kind
    for key in ("experiment", "name", "extra_models", "profile", "batching", "seeds", "threads", "limit"):
        if key in form_data:
            values[key] = str(form_data.get(key))
    values["models"] = [str(m) for m in form_data.getlist("models")][:MAX_JOBS]
    values["tasks"] = [str(t) for t in form_data.getlist("tasks")][:MAX_JOBS]
    values["params"] = {a.key: str(form_data.get(f"p_{a.key}") or "") for a in form.axes}
    values["digest"] = str(form_data.get("digest") or "")
    return values


def _matrix_input(values: dict[str, Any]) -> dict[str, Any]:
    data = {k: v for k, v in values.items() if k not in ("extra_models", "digest")}
    extra = [line.strip() for line in str(values.get("extra_models") or "").splitlines() if line.strip()]
    data["models"] = list(values.get("models") or []) + extra
    return data


def _builder(request: Request, values: dict[str, Any], errors: list[str] | None = None,
             preview: Preview | None = None, status: int = 200, notice: str | None = None) -> Response:
    form = KINDS.get(values.get("kind"), KINDS[DEFAULT_KIND])
    try:
        models, tasks = form.models(), form.tasks()
    except EmbedlabError as e:  # e.g. an unreadable registry: the page still opens, with the reason
        models, tasks, errors = [], [], [*(errors or []), str(e)]
    extra_known = {c.name for c in models}
    return render(request, "jobs/new.html", {
        "kinds": list(KINDS.values()), "form": form, "values": values, "errors": errors or [], "preview": preview,
        "models": models, "tasks": tasks, "max_jobs": MAX_JOBS, "notice": notice,
        "extra_listed": [m for m in values.get("models", []) if m not in extra_known]}, status)



@router.get("/jobs", include_in_schema=False)
def jobs_page(request: Request, user: CurrentUser, accounts: AccountsDep, store: StoreDep,
              status: Annotated[str | None, Query(max_length=20)] = None,
              experiment: Annotated[str | None, Query(max_length=300)] = None) -> Response:
    _check_filters(status, experiment)
    return render(request, "jobs/list.html", _list_context(request, user, accounts, store, status, experiment))


@router.get("/jobs/table", include_in_schema=False)
def jobs_table(request: Request, user: CurrentUser, accounts: AccountsDep, store: StoreDep,
               status: Annotated[str | None, Query(max_length=20)] = None,
               experiment: Annotated[str | None, Query(max_length=300)] = None) -> Response:
    """The job table alone: what the list page's HTMX polling swaps in."""
    _check_filters(status, experiment)
    return render(request, "jobs/_table.html", _list_context(request, user, accounts, store, status, experiment))


def _list_context(request, user, accounts, store, status, experiment) -> dict[str, Any]:
    watching = get_launcher(request).watching()
    everything = _visible_jobs(user, accounts, store)
    jobs = [j for j in everything if (not status or j["status"] == status)
            and (not experiment or j["experiment"] == experiment)]
    counts = {s: sum(1 for j in everything if j["status"] == s) for s in JOB_STATES}
    experiments = list(dict.fromkeys(j["experiment"] for j in everything if j["experiment"]))
    views = [job_view(j, watching) for j in jobs[:LIST_LIMIT]]
    return {"jobs": views, "total": len(jobs), "shown": len(views), "counts": counts, "experiments": experiments,
            "status": status or "", "experiment": experiment or "", "states": JOB_STATES,
            "polling": any(v["live"] for v in views), "can_launch": user.is_admin or user.role == "researcher"}


@router.get("/jobs/new", include_in_schema=False)
def new_page(request: Request, user: Researcher,
             kind: Annotated[str, Query(max_length=40)] = DEFAULT_KIND) -> Response:
    form = KINDS.get(kind)
    if form is None:
        return _builder(request, _defaults(KINDS[DEFAULT_KIND]),
                        [f"unknown job kind {kind[:40]!r}; the builder offers {', '.join(KINDS)}"], status=400)
    return _builder(request, _defaults(form))


def _preview_or_errors(request: Request, user: User, values: dict[str, Any]) -> tuple[Preview | None, Response | None]:
    cfg, store = request.app.state.config, request.app.state.store
    try:
        matrix = read_matrix(_matrix_input(values))
        return build_preview(matrix, user, cfg.web_dir, store), None
    except MatrixError as e:
        return None, _builder(request, values, e.messages, status=400)
    except EmbedlabError as e:
        return None, _builder(request, values, [str(e)], status=400)


@router.post("/jobs/preview", include_in_schema=False)
async def preview_page(request: Request, user: Researcher) -> Response:
    values = _form_values(await request.form())

    def work() -> Response:
        preview, failed = _preview_or_errors(request, user, values)
        return failed or _builder(request, values, preview=preview)

    return await run_in_threadpool(work)


@router.post("/jobs", include_in_schema=False)
async def launch_page(request: Request, user: Researcher) -> Response:
    values = _form_values(await request.form())

    def work() -> Response:
        preview, failed = _preview_or_errors(request, user, values)
        if failed is not None:
            return failed
        if values.get("digest") != preview.digest:
            # Launch submits exactly the matrix the page showed: fields changed after the preview show it again.
            return _builder(request, values, preview=preview, status=409, notice=(
                "The matrix changed since its preview (or was never previewed): check it below and launch again."))
        try:
            ids, new = launch(preview, user, request.app.state.store, request.app.state.accounts,
                              get_launcher(request))
        except EmbedlabError as e:
            return _builder(request, values, [str(e)], preview=preview, status=400)
        experiment = preview.spec["experiment"]
        return redirect(request, f"/jobs?experiment={_quote(experiment)}",
                        f"Launched {len(ids)} job(s) in {experiment}: {new} new, {len(ids) - new} already known.",
                        "success")

    return await run_in_threadpool(work)


def _quote(text: str) -> str:
    from urllib.parse import quote

    return quote(text, safe="")


def _job_context(request: Request, job: dict[str, Any], store, user: User) -> dict[str, Any]:
    cfg = request.app.state.config
    view = job_view(job, get_launcher(request).watching())
    series = training_curves(job)
    return {"job": view, "chart": curve_chart(series), "series": series,
            "log": log_tail(job, Path(cfg.web_dir) / "job-logs"),
            "results": result_table(store, job["id"]) if job.get("result_run_ids") else None,
            "can_act": user.is_admin or user.role == "researcher"}


@router.get("/jobs/{job_id}", include_in_schema=False)
def job_page(request: Request, job_id: str, user: CurrentUser, accounts: AccountsDep, store: StoreDep) -> Response:
    job = _visible_job(job_id, user, accounts, store)
    ctx = _job_context(request, job, store, user)
    owner = accounts.owner_of("job", job["id"]) if user.is_admin else None
    visible = set(accounts.owned_ids("job", user))
    siblings = [job_view(j, set()) for j in JobQueue(store).list(experiment=job["experiment"])
                if j["id"] in visible and j["id"] != job["id"]] if job["experiment"] else []
    return render(request, "jobs/job.html", {**ctx, "owner": owner, "siblings": siblings[:100],
                                             "spec_json": json.dumps(job["spec"], indent=2, default=str)})


@router.get("/jobs/{job_id}/live", include_in_schema=False)
def job_live(request: Request, job_id: str, user: CurrentUser, accounts: AccountsDep, store: StoreDep) -> Response:
    """The changing part of the job page (status, progress, curve, log, results): what its HTMX polling swaps in."""
    job = _visible_job(job_id, user, accounts, store)
    return render(request, "jobs/_live.html", _job_context(request, job, store, user))


@router.get("/jobs/{job_id}/log", include_in_schema=False)
def job_log(request: Request, job_id: str, user: CurrentUser, accounts: AccountsDep, store: StoreDep,
            config: ConfigDep) -> Response:
    job = _visible_job(job_id, user, accounts, store)
    path = Path(config.web_dir) / "job-logs" / f"{job['id']}.log"
    text = _tail_bytes(path, 5 * 1024 * 1024) if path.is_file() else (job.get("log_tail") or "(no log yet)")
    return PlainTextResponse(text)


def _cancel(job: dict[str, Any], store) -> str:
    if job["status"] not in LIVE:
        raise Conflict(f"job {job['id'][:8]} is {job['status']}: only queued or running jobs can be cancelled")
    return JobQueue(store).cancel(job["id"])  # queued: cancelled now; running: stops at its next heartbeat


def _retry(job: dict[str, Any], store, launcher: JobLauncher) -> str:
    if job["status"] not in ("failed", "cancelled"):
        raise Conflict(f"job {job['id'][:8]} is {job['status']}: only failed or cancelled jobs are retried")
    state = JobQueue(store).retry(job["id"])  # a training job resumes from its last checkpoint
    launcher.start([job["id"]])
    return state


def _run(job: dict[str, Any], launcher: JobLauncher) -> str:
    if job["status"] != "queued":
        raise Conflict(f"job {job['id'][:8]} is {job['status']}: only a queued job can be started")
    launcher.start([job["id"]])
    return "queued"


_DONE_TEXT = {"cancelled": "Job cancelled.", "cancelling": "Cancelling: the job stops at its next heartbeat.",
              "queued": "Job queued; it starts as soon as a worker is free."}


@router.post("/jobs/{job_id}/{action}", include_in_schema=False)
def job_action(request: Request, job_id: str, action: str, user: Researcher, accounts: AccountsDep,
               store: StoreDep, launcher: LauncherDep) -> Response:
    if action not in ("cancel", "retry", "run"):
        raise NotFound(f"page not found: {request.url.path}")
    job = _visible_job(job_id, user, accounts, store)
    try:
        state = (_cancel(job, store) if action == "cancel" else _retry(job, store, launcher) if action == "retry"
                 else _run(job, launcher))
    except Conflict as e:
        return redirect(request, f"/jobs/{job['id']}", str(e), "error")
    return redirect(request, f"/jobs/{job['id']}", _DONE_TEXT.get(state, f"Job {state}."), "success")


# ------------------------------------------------------------------------------------------------------ API
class MatrixBody(BaseModel):
    """A job matrix for the builder's API: the same fields as the page's form."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "kind": "vqa-train", "experiment": "practice", "models": ["cnn-ban", "mevf-ban"], "tasks": ["vqa-rad-val"],
        "profile": "tiny", "params": {"epochs": [1, 2], "batch_images": "4, 8"}, "seeds": [0, 1]}]})

    kind: str = Field(DEFAULT_KIND, max_length=40, description="vqa-train | vqa-baseline | evaluate")
    experiment: str = Field("practice", max_length=64, description="stored as <experiment>@<your user name>")
    name: str | None = Field(None, max_length=40, description="the jobs' base name (default: vqa, baseline or "
                                                               "evaluate)")
    models: list[str] = Field(default_factory=list, max_length=MAX_JOBS)
    tasks: list[str] = Field(default_factory=list, max_length=MAX_JOBS)
    profile: str | None = Field(None, max_length=20, description="vqa-train: paper | cpu | tiny")
    batching: str | None = Field(None, max_length=20, description="vqa-train: per-sample | image (default: the "
                                                                  "profile's)")
    params: dict[str, list[int | float | str] | str] = Field(
        default_factory=dict, description="hyper-parameter lists (GET /api/jobs/kinds names them): one job per value")
    seeds: list[int | float | str] | str = Field([0], description="one job per seed")
    threads: int = Field(1, ge=1, description="CPU threads per job")
    limit: int | None = Field(None, ge=1, description="evaluate: score a seeded sample of N pairs/queries per task")
    digest: str | None = Field(None, max_length=64, description="launch only if the matrix still has this digest "
                                                                "(from the preview)")


def _api_matrix(body: MatrixBody) -> Matrix:
    data = body.model_dump(exclude={"digest"})
    return read_matrix(data)


@router.get("/api/jobs", tags=["jobs"], summary="List your jobs")
def api_jobs(request: Request, user: CurrentUser, accounts: AccountsDep, store: StoreDep,
             status: Annotated[str | None, Query(max_length=20)] = None,
             experiment: Annotated[str | None, Query(max_length=300)] = None) -> dict:
    """Your jobs (an admin: every job launched from the web app), newest first; filter by status or experiment."""
    _check_filters(status, experiment)
    watching = get_launcher(request).watching()
    jobs = _visible_jobs(user, accounts, store, status, experiment)
    return {"jobs": jsonable_encoder([job_view(j, watching) for j in jobs])}


@router.get("/api/jobs/kinds", tags=["jobs"], summary="What the job matrix builder offers")
def api_kinds(user: Researcher) -> dict:
    """Each job kind the builder launches: its models, tasks, profiles and hyper-parameter lists."""
    out = {}
    for form in KINDS.values():
        out[form.kind] = {
            "label": form.label, "description": form.description, "free_models": form.free_models,
            "models": [c.__dict__ for c in form.models()], "tasks": [c.__dict__ for c in form.tasks()],
            "profiles": list(form.profiles), "default_profile": form.default_profile,
            "params": [{"key": a.key, "label": a.label, "config": a.path, "type": a.number.__name__,
                        "min": a.low, "max": a.high} for a in form.axes],
            "batching": form.batching, "limit": form.limit}
    return {"kinds": out, "max_jobs": MAX_JOBS}


@router.post("/api/jobs/preview", tags=["jobs"], summary="Preview a job matrix")
def api_preview(request: Request, body: MatrixBody, user: Researcher, store: StoreDep, config: ConfigDep) -> dict:
    """The jobs a matrix makes (as `embedlab jobs submit --show` lists them), each checked as submit will, with the
    state of any already known; nothing is submitted. 400 with ``{"error": ...}`` for bad input."""
    preview = build_preview(_api_matrix(body), user, config.web_dir, store)
    return jsonable_encoder(preview.json())


@router.post("/api/jobs", tags=["jobs"], status_code=201, summary="Launch a job matrix")
def api_launch(request: Request, body: MatrixBody, user: Researcher, accounts: AccountsDep, store: StoreDep,
               config: ConfigDep, launcher: LauncherDep) -> dict:
    """Submit the matrix's jobs (idempotent: jobs already known are not added again; failed or cancelled ones are
    queued again) and run them in the background. With ``digest`` (from the preview) a changed matrix is a 409."""
    preview = build_preview(_api_matrix(body), user, config.web_dir, store)
    if body.digest and body.digest != preview.digest:
        raise Conflict("the matrix differs from the previewed one (digest mismatch); preview it again")
    ids, new = launch(preview, user, store, accounts, launcher)
    watching = launcher.watching()
    jobs = JobQueue(store).snapshot(ids)
    return jsonable_encoder({"experiment": preview.spec["experiment"], "digest": preview.digest, "ids": ids,
                             "new": new, "jobs": [job_view(jobs[i], watching) for i in ids]})


@router.get("/api/jobs/{job_id}", tags=["jobs"], summary="One job")
def api_job(request: Request, job_id: str, user: CurrentUser, accounts: AccountsDep, store: StoreDep,
            config: ConfigDep) -> dict:
    """The job: config, status, progress, training curve (per-epoch loss), log tail, error and result rows."""
    job = _visible_job(job_id, user, accounts, store)
    view = job_view(job, get_launcher(request).watching())
    results = result_table(store, job["id"])["rows"]
    return jsonable_encoder({**view, "curve": training_curves(job), "results": results,
                             "log_tail": log_tail(job, Path(config.web_dir) / "job-logs"),
                             "timings": job.get("timings")})


@router.post("/api/jobs/{job_id}/cancel", tags=["jobs"], summary="Cancel a job")
def api_cancel(job_id: str, user: Researcher, accounts: AccountsDep, store: StoreDep) -> dict:
    """A queued job is cancelled at once; a running one stops at its next heartbeat (``cancelling``). 409 for a job
    that has ended."""
    job = _visible_job(job_id, user, accounts, store)
    return {"id": job["id"], "status": _cancel(job, store)}


@router.post("/api/jobs/{job_id}/retry", tags=["jobs"], summary="Retry a failed or cancelled job")
def api_retry(job_id: str, user: Researcher, accounts: AccountsDep, store: StoreDep,
              launcher: LauncherDep) -> dict:
    """Back to the queue with fresh attempts, and run (a training job resumes from its last checkpoint)."""
    job = _visible_job(job_id, user, accounts, store)
    return {"id": job["id"], "status": _retry(job, store, launcher)}


@router.post("/api/jobs/{job_id}/run", tags=["jobs"], summary="Run a queued job no executor is running")
def api_run(job_id: str, user: Researcher, accounts: AccountsDep, store: StoreDep, launcher: LauncherDep) -> dict:
    """Start an executor for a queued job (e.g. one left queued when the server stopped)."""
    job = _visible_job(job_id, user, accounts, store)
    return {"id": job["id"], "status": _run(job, launcher)}


