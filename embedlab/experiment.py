"""Experiments: a YAML list of runs (recipe x seeds, an untrained model, or a fusion) -> jobs -> store -> table.

    embedlab experiment experiments/codiemb.yaml            # resumable: finished jobs are not run again

Each (run, seed) becomes one job of the job runner (embedlab.bench.jobs; kinds from embedlab.text_jobs):
``train+evaluate`` with ``output_dir = <workdir>/<run>-s<seed>`` (an existing ``final/`` of the same recipe is
reused, a partial run resumes from its newest checkpoint), ``evaluate`` for a model as it is, ``fuse+evaluate`` for a
fused row (run after the others, whose models it reads). ``run_experiment`` submits them and waits (an executor:
local worker processes by default). Every score is a row in the results store (experiment = the spec's name, model
= the run's name, seed); the records JSON (``results:``) is an export of a query over the store and the Markdown
table is rendered from those records alone (``render_table``), so a reader can check every cell against the JSON.
Records the store lacks are imported from the JSON first, so a fresh checkout continues where the JSON left off.
With ``dev_tasks`` every row is scored on dev splits too (the table's "dev" column), so choices between rows are made
on dev data. Spec keys: docs/experiments.md.

It does not define losses or tasks, and runs nothing itself: the job kinds call the trainer and the evaluation
runner.
"""
from __future__ import annotations

import json
import logging
import os
import statistics
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .atomic import write_json, write_text
from .configfile import load_config
from .errors import ConfigError
from .jobkinds import JobSpec

log = logging.getLogger("embedlab.experiment")


class FuseSpec(BaseModel):
    """A fused model as a row: ``embedlab fuse`` on other runs' models, optionally sweeping parameters on dev data.

    ``models`` may use ``{workdir}`` (e.g. ``{workdir}/../codiemb/codiemb-s49/final``). With ``sweep`` (parameter ->
    values), every combination is fused and scored on ``select_on`` (dev tasks only; mean main score) and the best
    is kept and evaluated; the scores go to ``<run folder>/sweep.json``."""

    model_config = ConfigDict(extra="forbid")
    method: str
    models: list[str]
    base: str | None = None
    weights: list[float] | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    sweep: dict[str, list[Any]] = Field(default_factory=dict)
    select_on: list[str] = Field(default_factory=lambda: ["stsb-dev", "scifact-dev"])


class RunSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[^,]+$")  # no comma: ``--only`` takes a comma-separated list of names
    recipe: str | None = None  # None: evaluate ``model`` as it is (a baseline row), or the ``fuse`` result
    model: str | None = None
    fuse: FuseSpec | None = None
    # An untrained decoder evaluated through a prompt template (e.g. prompteol, or csesfp_llama with slots [rep2])
    template: str | None = None
    slots: list[str] | None = None
    pooling: str | None = None  # an untrained model evaluated with another pooling (e.g. mean for a decoder)
    # Removed (issue 13): a per-row evaluation length made rows incomparable; the experiment's eval_max_length
    # applies to every row. Kept as a field only to refuse it with a message that says so.
    max_length: int | None = None

    @field_validator("max_length")
    @classmethod
    def _no_row_length(cls, v):
        if v is not None:
            raise ValueError("a row's max_length is no longer accepted: every row is evaluated at the experiment's "
                             "eval_max_length (one protocol for every row of a table)")
        return v
    seeds: list[int] = Field(default_factory=lambda: [49])
    overrides: list[str] = Field(default_factory=list)
    group: str = "main"  # one table per group (e.g. "loss ablation"); groups appear in the order of their first run
    # Which model of a trained run is evaluated: "final" (the last step) or "best" (the step the trainer selected on
    # its dev tasks: needs train.eval_every and train.select_on in the recipe or overrides).
    evaluate: Literal["final", "best"] = "final"


class ExperimentSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    workdir: str = "runs/experiments/{name}"
    results: str  # JSON records
    table: str  # generated Markdown
    tasks: list[str]
    averages: dict[str, list[str]] = Field(default_factory=dict)
    common_overrides: list[str] = Field(default_factory=list)
    eval_bf16: bool = False
    # The inference path of every row (embedlab/text/backends.py); torch fp32 unless set. Part of the protocol.
    eval_backend: str = "torch"
    eval_precision: str = "fp32"
    eval_batch_size: int = 32
    # Threads each job uses (default: all cores, so jobs run one at a time, as one training run wants them).
    threads: int | None = Field(None, gt=0)
    # One evaluation length for every row, whatever each model was trained at (a model saves its training length,
    # which would otherwise truncate trained rows' documents: 98 % of SciFact's are longer than 128 tokens).
    eval_max_length: int = Field(256, gt=0)
    # One instruction setting for every row: true puts each task's instruction before its queries and both STS
    # sides (CoDiEmb's "Instruction: {instruction} Query: "; documents none) for every model, trained or not, and
    # leaves the instruction tokens out of the mean (CoDiEmb's pooling); false evaluates every row without
    # instructions. Recorded in every record.
    instructions: bool = True
    reference: str | None = None  # a main run repeated at the top of every other group's table (its same seeds)
    # A group that is its own comparison (e.g. a second fusion batch on other inputs): its rows are compared with
    # this run of the group rather than with ``reference``, and ``reference`` is not repeated in its table.
    group_references: dict[str, str] = Field(default_factory=dict)
    # Further comparisons, each [reference, row], rendered like the others (reference − row with its interval): a
    # pair that no reference gives, e.g. a method at equal training time against a baseline of another group.
    comparisons: list[tuple[str, str]] = Field(default_factory=list)
    # Scores besides the main score to record and tabulate, per task: e.g. {geometry: [uniformity, anisotropy]}
    extra_metrics: dict[str, list[str]] = Field(default_factory=dict)
    # Dev tasks (dev splits only) scored for every row besides the test tasks: the table gets a "dev" column (mean
    # main score over them, x100), so a choice made among rows (a default, a variant) is visibly made on dev data.
    dev_tasks: list[str] = Field(default_factory=list)
    runs: list[RunSpec]

    @model_validator(mode="after")
    def _references_are_runs(self) -> ExperimentSpec:
        group_of = {run.name: run.group for run in self.runs}
        if self.reference is not None and self.reference not in group_of:
            raise ValueError(f"reference {self.reference!r} is not one of the runs")
        for group, name in self.group_references.items():
            if group_of.get(name) != group:
                raise ValueError(f"group_references.{group}: {name!r} is not a run of group {group!r} "
                                 f"(runs of that group: {sorted(n for n, g in group_of.items() if g == group)})")
        for i, pair in enumerate(self.comparisons):
            for name in pair:
                if name not in group_of:
                    raise ValueError(f"comparisons.{i}: {name!r} is not one of the runs")
            if pair[0] == pair[1]:
                raise ValueError(f"comparisons.{i}: a run compared with itself ({pair[0]!r})")
        return self

    def reference_of(self, name: str) -> str | None:
        """The run that ``name``'s row is compared with: its group's reference, else the experiment's."""
        group = next((run.group for run in self.runs if run.name == name), "main")
        return self.group_references.get(group, self.reference)

    @field_validator("dev_tasks")
    @classmethod
    def _dev_splits_only(cls, tasks: list[str]) -> list[str]:
        from .evaluate.tasks import TASKS

        for name in tasks:
            if name not in TASKS:
                raise ValueError(f"unknown task {name!r}")
            if TASKS.get(name).split == "test":
                raise ValueError(f"{name} is a test split; dev_tasks must be dev (or train) splits")
        return tasks


def load_experiment(path: str | Path) -> ExperimentSpec:
    return load_config(path, ExperimentSpec, "experiment")


def _load_records(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    try:
        records = json.loads(path.read_text(encoding="utf-8"))["records"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"{path}: not an experiment's records file ({type(e).__name__}: {e}); it was not written "
                          f"by embedlab, or was cut short: move it away to start the records anew") from None
    if not isinstance(records, list):
        raise ConfigError(f"{path}: 'records' must be a list")
    return records


# The record fields besides (name, seed, task, split, metric, value): the protocol and what made the model.
RECORD_KEYS = ("eval_bf16", "eval_backend", "eval_precision", "eval_max_length", "instructions",
               "instruction_tokens_pooled", "steps", "train_seconds", "resumed_from", "recipe", "overrides", "best",
               "train_settings", "train_settings_source", "fusion", "models", "params", "sweep", "update",
               "greedy_soup", "software")
_BASE_KEYS = ("name", "seed", "task", "split", "metric", "value")


def experiment_jobs(spec: ExperimentSpec, workdir: Path, only: list[str] | None = None,
                    seeds: list[int] | None = None) -> list[tuple[RunSpec, JobSpec, Path]]:
    """The experiment as jobs: one per (run, seed), in spec order — ``evaluate`` for a model as it is,
    ``train+evaluate`` for a recipe, ``fuse+evaluate`` for a fused row (its ``{workdir}`` filled in)."""
    out = []
    eval_cfg = {"max_length": spec.eval_max_length, "batch_size": spec.eval_batch_size, "bf16": spec.eval_bf16,
                "instructions": spec.instructions}
    if (spec.eval_backend, spec.eval_precision) != ("torch", "fp32"):  # absent by default: older jobs keep their keys
        eval_cfg.update(backend=spec.eval_backend, precision=spec.eval_precision)
    for run in spec.runs:
        if only and run.name not in only:
            continue
        row_eval = {**eval_cfg, **{k: getattr(run, k) for k in ("template", "slots", "pooling")
                                   if getattr(run, k) is not None}}
        for seed in run.seeds:
            if seeds and seed not in seeds:
                continue
            folder = workdir / f"{run.name}-s{seed}"
            config: dict[str, Any] = {"eval": row_eval}
            if run.fuse is not None:
                kind = "fuse+evaluate"
                fuse = run.fuse.model_dump()
                # Lexical normalisation: "{workdir}/../x" must resolve before the workdir itself exists.
                fuse["models"] = [os.path.normpath(m.format(workdir=workdir)) for m in run.fuse.models]
                config["fuse"] = fuse
                model = None
            elif run.recipe is None:
                kind, model = "evaluate", run.model or "sentence-transformers/all-MiniLM-L6-v2"
            else:
                kind, model = "train+evaluate", run.model
                config.update(recipe=run.recipe, overrides=[*spec.common_overrides, *run.overrides],
                              evaluate=run.evaluate)
            job = JobSpec(kind=kind, name=run.name, model=model, tasks=tuple([*spec.tasks, *spec.dev_tasks]),
                          config=config, seed=seed, experiment=spec.name, threads=_threads(spec, run, config))
            out.append((run, job, folder))
    return out


def _threads(spec: ExperimentSpec, run: RunSpec, config: dict[str, Any]) -> int:
    """Threads a job of ``run`` declares: the spec's ``threads``, else the recipe's ``train.num_threads`` (a training
    job then leaves the other cores to other jobs), else all cores."""
    if spec.threads:
        return spec.threads
    if run.recipe is not None:
        from .config import load_recipe

        recipe = load_recipe(run.recipe, config["overrides"])  # also checks every recipe before anything runs
        if recipe.train.num_threads:
            return recipe.train.num_threads
    return os.cpu_count() or 1


def _check_spec_paths(spec: ExperimentSpec, spec_path: str | Path, only: list[str] | None) -> Path:
    if only is not None and not [name for name in only if name]:
        raise ConfigError(f"{spec_path}: --only names no run (an empty value); runs: "
                          f"{', '.join(run.name for run in spec.runs)}")
    unknown = sorted(set(only or []) - {run.name for run in spec.runs})
    if unknown:  # a typo (or a name split at its comma) must not silently run nothing
        raise ConfigError(f"{spec_path}: no run named {', '.join(map(repr, unknown))}; runs: "
                          f"{', '.join(run.name for run in spec.runs)}")
    try:
        workdir = Path(spec.workdir.format(name=spec.name))
    except (KeyError, IndexError, ValueError) as e:
        raise ConfigError(f"{spec_path}: workdir {spec.workdir!r}: only {{name}} may be filled in ({e})") from None
    from .evaluate.tasks import parse_tasks

    parse_tasks([*spec.tasks, *spec.dev_tasks])
    for key in ("results", "table"):
        where = Path(getattr(spec, key))
        if where.exists() and not where.is_file():
            raise ConfigError(f"{spec_path}: {key} {where} is a folder, device or pipe; expected a file path")
    return workdir


def _check_seeds(spec: ExperimentSpec, spec_path: str | Path, only: list[str] | None,
                 seeds: list[int] | None) -> None:
    """``--seeds`` picks among each run's own seeds: a seed that no selected run has, or a named run that has none of
    them, would silently run nothing (a typo, or a row whose seeds list lacks it)."""
    if not seeds:
        return
    runs = [run for run in spec.runs if not only or run.name in only]
    where = "; ".join(f"{run.name}: {', '.join(map(str, run.seeds))}" for run in runs)
    missing = sorted(set(seeds) - {seed for run in runs for seed in run.seeds})
    if missing:
        raise ConfigError(f"{spec_path}: --seeds {', '.join(map(str, missing))}: no selected run has "
                          f"{'this seed' if len(missing) == 1 else 'these seeds'} (the runs' seeds: {where})")
    for run in runs if only else []:
        if not set(seeds) & set(run.seeds):
            raise ConfigError(f"{spec_path}: run {run.name!r} has none of --seeds {', '.join(map(str, seeds))} "
                              f"(its seeds: {', '.join(map(str, run.seeds))})")


def run_experiment(spec_path: str | Path, only: list[str] | None = None, show_progress: bool = True,
                   seeds: list[int] | None = None, db: str | None = None, executor: str = "local",
                   cpus: int | None = None, address: str | None = None, rerun: bool = False) -> Path:
    """Run (or finish) the experiment's runs — only those named in ``only`` and the ``seeds`` given, if set — as
    jobs on ``executor``, their results in the store at ``db``; then export the records JSON and the table.
    ``rerun`` runs the selected rows again even where they are done (it needs ``only``): see ``JobQueue.rerun``.

    Submit-and-wait: jobs already done (same configuration and seed) are not run again; records of the committed
    JSON that the store lacks are imported first (a fresh checkout continues where the JSON left off). Fused rows
    run after every other job of the call, since they read those jobs' models."""
    from .bench.executors import make_executor
    from .bench.jobs import JobQueue
    from .bench.store import ResultsStore

    spec = load_experiment(spec_path)
    if rerun and not only:
        # Running every row of an experiment again is hours of work and replaces every committed number: the rows
        # to run again are named, never implied.
        raise ConfigError(f"{spec_path}: --rerun needs --only: name the runs to run again (and --seeds to narrow "
                          "them to some seeds)")
    workdir = _check_spec_paths(spec, spec_path, only)
    _check_seeds(spec, spec_path, only, seeds)
    for run in spec.runs:  # ``evaluate: best`` needs the trainer's dev selection: say so before anything runs
        if run.evaluate == "best" and run.recipe is None:
            raise ConfigError(f"{spec_path}: run {run.name!r}: evaluate: best needs a recipe")
    _load_records(Path(spec.results))  # a damaged records file is refused now, not after the first job
    jobs = experiment_jobs(spec, workdir, only, seeds)  # every recipe loaded and checked
    store = ResultsStore(db)  # opened (created) only once the spec holds together
    queue = JobQueue(store)
    import_records(spec, queue, jobs)
    ex = make_executor(executor, store.url, show_progress=show_progress,
                       **({"cpus": cpus} if cpus and executor in ("local", "ray") else {}),
                       **({"address": address} if address and executor == "ray" else {}))
    failed = []
    ran = False  # did any job of this call run here (or was every one done before it)?
    for stage in (False, True):  # models first, then the rows that fuse them
        batch = [(run, job, folder) for run, job, folder in jobs if (job.kind == "fuse+evaluate") == stage]
        if not batch:
            continue
        ids = queue.submit([j for _, j, _ in batch], [f for _, _, f in batch], requeue_failed=True)
        _refuse_stale_trained_jobs(spec_path, queue, batch, ids)
        if rerun:
            for (run, job, _), job_id in zip(batch, ids):
                if queue.get(job_id)["status"] == "done":
                    queue.rerun(job_id)
                    log.info("job %s %s seed %s: done before; queued to run again (--rerun)", job_id[:8],
                             run.name, job.seed)

        by_id = {job_id: job for (_, job, _), job_id in zip(batch, ids)}
        done_before = {job_id for job_id in ids if queue.get(job_id)["status"] == "done"}

        def said(job: dict) -> None:
            log.info("job %s %s seed %s: %s%s", job["id"][:8], job["name"], job["seed"], job["status"],
                     f" ({job['error'].splitlines()[-1]})" if job["status"] == "failed" and job["error"] else "")
            if job["status"] == "done" and job["id"] in by_id and job["id"] not in done_before:
                # Each job that finishes is exported at once (records, items, table), so a call of many hours that
                # is stopped half-way has written every row it finished, not none.
                _copy_items(spec, queue.get(job["id"]), by_id[job["id"]])
                write_text(Path(spec.table), render_table(spec, export_records(spec, store), load_items(spec)))

        ran = ran or len(done_before) < len(ids)
        states = ex.run(ids, on_change=said)
        for (run, job, folder), job_id in zip(batch, ids):
            if states[job_id] == "done":
                _copy_items(spec, queue.get(job_id), job)
            else:
                last = (queue.get(job_id)["error"] or "").strip().splitlines()[-1:]
                failed.append(f"{run.name} seed {job.seed}: {states[job_id]}" + (f" ({last[0]})" if last else ""))
    if ran or not (Path(spec.results).exists() and Path(spec.table).exists()):
        records = export_records(spec, store)
        write_text(Path(spec.table), render_table(spec, records, load_items(spec)))
    else:
        # Every job was done before this call: the records file and the table were written when each finished (or
        # came with the checkout). Rendering the table again costs ~15 s of bootstrap on a large experiment, which a
        # script replaying its finished rows paid once per row; `--table-only` re-renders on purpose.
        log.info("every job of this call was done before it: %s and %s left as they are", spec.results, spec.table)
    if failed:
        raise ConfigError(f"{len(failed)} job(s) did not finish: " + "; ".join(failed)
                          + f" — `embedlab jobs list --experiment {spec.name}` shows them; `embedlab jobs retry ID`")
    return Path(spec.results)


def refresh(spec_path: str | Path, db: str | None = None) -> Path:
    """Import the records JSON into the store (where it lacks them), export it again and render the table — all
    through the store, running no job (``embedlab experiment --table-only``). Returns the table's path."""
    from .bench.jobs import JobQueue
    from .bench.store import ResultsStore

    spec = load_experiment(spec_path)
    workdir = _check_spec_paths(spec, spec_path, None)
    with ResultsStore(db) as store:
        import_records(spec, JobQueue(store), experiment_jobs(spec, workdir))
        records = export_records(spec, store)
    return write_text(Path(spec.table), render_table(spec, records, load_items(spec)))


def _refuse_stale_trained_jobs(spec_path: str | Path, queue, batch: list[tuple[RunSpec, JobSpec, Path]],
                               ids: list[str]) -> None:
    """A job is keyed by its recipe's path and overrides, not the recipe's contents: a recipe file edited after a
    row trained would leave that row's records standing for a recipe that no longer says what trained it. Compare
    each done training job's saved recipe (``<folder>/recipe.json``) with what its recipe resolves to today and
    stop, naming the differences, before anything runs. (Rows whose folders are not on this machine — imported
    records — cannot be checked here; their records carry the recipe path and overrides.)"""
    from .config import load_recipe, recipe_to_dict
    from .text_jobs import train_overrides
    from .train.run_folder import recipe_differences

    stale = []
    for (run, job, folder), job_id in zip(batch, ids):
        saved_path = Path(folder) / "recipe.json"
        if job.kind != "train+evaluate" or not saved_path.is_file() or queue.get(job_id)["status"] != "done":
            continue
        try:
            saved = json.loads(saved_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # not a recipe embedlab wrote completely: the trainer refuses such a folder when it runs
        current = recipe_to_dict(load_recipe(job.config["recipe"], train_overrides(job, Path(folder))))
        diffs = recipe_differences(saved, current) if isinstance(saved, dict) else []
        if diffs:
            shown = "; ".join(diffs[:6]) + (f"; and {len(diffs) - 6} more" if len(diffs) > 6 else "")
            stale.append(f"{run.name} seed {job.seed} ({shown})")
    if stale:
        raise ConfigError(f"{spec_path}: {len(stale)} finished row(s) were trained by a recipe that has changed "
                          f"since: {'; '.join(stale)}. Their records are of the old recipe: restore the recipe, "
                          f"or give the changed recipe a run of its own (a new name) so that both rows stay true")


def _copy_items(spec: ExperimentSpec, job: dict[str, Any], jobspec: JobSpec) -> None:
    """Per-item outputs of a done job, from its folder to the experiment's items folder (for the bootstrap)."""
    items = (job.get("timings") or {}).get("items") or {}
    for task, src in items.items():
        if task in spec.tasks and Path(src).is_file():
            write_text(items_path(spec, jobspec.name, jobspec.seed, task), Path(src).read_text(encoding="utf-8"))


def import_records(spec: ExperimentSpec, queue, jobs: list[tuple[RunSpec, JobSpec, Path]]) -> int:
    """Records of the experiment's JSON that the store lacks become store rows (so a fresh checkout's store holds
    what the committed JSON holds). A (run, seed) whose every task is recorded under this experiment's protocol,
    with its per-item files, by the same recipe and overrides as today's job, is adopted as that job, done: it is
    not run again — also when its rows reached the store earlier without the job (imported before its per-item
    files were committed). Returns the number of rows imported."""
    records = _load_records(Path(spec.results))
    if not records:
        return 0
    # A record is in the store when a row of the same run, seed, task and metric holds its value; another value
    # (the JSON was written by a later run, e.g. under another protocol) is imported as the newer row.
    def key(name, seed, task, metric, value):
        return name, seed, task, metric, None if value is None else round(float(value), 9)

    have = {key(r["model"], r["seed"], r["task"], r["metric"], r["value"])
            for r in queue.store.query(experiment=spec.name)}
    by_run: dict[tuple[str, int], list[dict]] = {}
    for r in records:
        by_run.setdefault((r["name"], r["seed"]), []).append(r)
    jobs_by_key = {(job.name, job.seed): (job, folder) for _, job, folder in jobs}
    n = 0
    for (name, seed), recs in by_run.items():
        todo = [r for r in recs
                if key(name, seed, r["task"], r.get("metric", "main_score"), r.get("value")) not in have]
        job, folder = jobs_by_key.get((name, seed), (None, None))
        adopt = job is not None and queue.find(job) is None and _adoptable(spec, job, folder, recs)
        if not todo and not adopt:
            continue
        rows = _record_rows(spec, name, seed, recs if adopt else todo)
        if adopt:
            queue.adopt(job, folder, rows)
        else:
            queue.store.add_run(rows)
        n += len(todo)
    if n:
        log.info("%s: imported %d record(s) from %s into %s", spec.name, n, spec.results, queue.store.display_url)
    return n


def _record_rows(spec: ExperimentSpec, name: str, seed: int, recs: list[dict]) -> list[dict[str, Any]]:
    """Store rows for records of one (run, seed) of the experiment's JSON."""
    from .evaluate.tasks import TASKS
    from .results import make_rows

    rows = []
    for r in recs:
        if r["task"] not in TASKS:
            raise ConfigError(f"{spec.results}: record of unknown task {r['task']!r}")
        task = TASKS.get(r["task"])
        extra = {k: v for k, v in r.items() if k not in _BASE_KEYS}
        extra["record_keys"] = sorted(extra)
        rows += [{**row, "value": r["value"]} for row in make_rows(
            domain="text", model=name, task=task.name, task_type=task.type, dataset=task.dataset,
            split=r["split"], scores={r.get("metric", "main_score"): 0.0}, extra=extra, experiment=spec.name,
            seed=seed)]
    return rows


def _adoptable(spec: ExperimentSpec, job: JobSpec, folder: Path, recs: list[dict]) -> bool:
    from .evaluate.tasks import TASKS
    from .results import UNRANKED_TYPES

    main = {r["task"]: r for r in recs if r.get("metric", "main_score") == "main_score" and same_protocol(spec, r)
            and r.get("eval_bf16") == spec.eval_bf16}
    if set(main) != set(job.tasks):
        return False
    # Per-item files (the table's paired bootstrap reads them) exist for the ranked task types (STS, retrieval);
    # geometry scores have none, so they are not asked for.
    if any(not items_path(spec, job.name, job.seed, t).is_file() for t in spec.tasks
           if TASKS.get(t).type not in UNRANKED_TYPES):
        return False
    if job.kind == "train+evaluate":
        want = [*job.config["overrides"], f"seed={job.seed}"] + ([f"model.name={job.model}"] if job.model else [])
        for r in main.values():
            got = [o for o in r.get("overrides", []) if not o.startswith("output_dir=")]
            if r.get("recipe") != job.config["recipe"] or got != want:
                return False
    return True


def export_records(spec: ExperimentSpec, store) -> list[dict[str, Any]]:
    """The experiment's records, as a query over the store (newest row per run, seed, task and metric; the
    main score and the spec's extra metrics), written to ``spec.results`` — the committed JSON is an export."""
    rows = store.query(experiment=spec.name)
    latest: dict[tuple, dict] = {}
    for row in rows:  # oldest first: later rows replace earlier ones
        latest[(row["model"], row["seed"], row["task"], row["metric"])] = row
    wanted = {(t, m) for t, ms in spec.extra_metrics.items() for m in ms}
    scored = {task for (_, _, task, metric) in latest if metric == "main_score"}
    for task, metric in sorted(wanted):  # a typo in extra_metrics must not leave a silent "-" column
        if task in scored and not any(k[2] == task and k[3] == metric for k in latest):
            have = sorted({k[3] for k in latest if k[2] == task})
            raise ConfigError(f"extra_metrics: task {task} has no score {metric!r} (it has: {', '.join(have)})")
    records = []
    for (name, seed, task, metric), row in latest.items():
        if metric != "main_score" and (task, metric) not in wanted:
            continue
        extra = row.get("extra") or {}
        keys = list(RECORD_KEYS) + [k for k in extra.get("record_keys", []) if k not in RECORD_KEYS]
        records.append({"name": name, "seed": seed, "task": task, "split": row["split"], "metric": metric,
                        "value": row["value"], **{k: extra[k] for k in keys if k in extra}})
    # A stable order (spec's runs, seeds, tasks, then metrics), so that a re-export diffs only where numbers changed.
    run_order = {run.name: i for i, run in enumerate(spec.runs)}
    task_order = {t: i for i, t in enumerate([*spec.tasks, *spec.dev_tasks])}
    records.sort(key=lambda r: (run_order.get(r["name"], len(run_order)), r["name"], r["seed"],
                                task_order.get(r["task"], len(task_order)), r["task"], r["metric"] != "main_score",
                                r["metric"]))
    write_json(Path(spec.results), {"experiment": spec.name, "tasks": spec.tasks, "records": records})
    return records


def same_protocol(spec: ExperimentSpec, record: dict[str, Any]) -> bool:
    """True when ``record`` was scored under the experiment's protocol (evaluation length and instruction setting);
    records of another protocol are neither reused nor tabulated."""
    return (record.get("eval_max_length") == spec.eval_max_length
            and record.get("eval_backend", "torch") == spec.eval_backend
            and record.get("eval_precision", "fp32") == spec.eval_precision
            and record.get("instructions") == spec.instructions
            and record.get("instruction_tokens_pooled", True) == (not spec.instructions))


def items_dir(spec: ExperimentSpec) -> Path:
    """Where per-item outputs (for the paired bootstrap) live: ``<results without .json>-items/``."""
    results = Path(spec.results)
    return results.with_name(results.stem + "-items")


def items_path(spec: ExperimentSpec, run: str, seed: int, task: str) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_.+" else "_" for c in run)
    return items_dir(spec) / f"{safe}-s{seed}-{task}.json"


def load_items(spec: ExperimentSpec) -> dict[tuple[str, int, str], dict]:
    """(run, seed, task) -> items, for every run, seed and test task whose file exists."""
    out = {}
    for run in spec.runs:
        for seed in run.seeds:
            for task in spec.tasks:
                path = items_path(spec, run.name, seed, task)
                if path.is_file():
                    try:
                        items = json.loads(path.read_text(encoding="utf-8"))
                    except (OSError, ValueError) as e:
                        raise ConfigError(f"{path}: unreadable per-item file ({e}); delete it and run the experiment "
                                          f"again to re-evaluate that task") from None
                    if not isinstance(items, dict):
                        raise ConfigError(f"{path}: expected a JSON object of per-item outputs")
                    out[(run.name, seed, task)] = items
    return out


def render_table(spec: ExperimentSpec, records: list[dict[str, Any]],
                 items: dict[tuple[str, int, str], dict] | None = None) -> str:
    """One Markdown table per run group: mean ± std over seeds per (run, task), the averages, the mean training
    time — computed from the records only. Every group other than "main" starts with the ``reference`` run,
    restricted to the seeds that group's runs used, so ablation rows are compared at equal seeds — except a group
    whose every run starts from another model than the reference (a different backbone: not an ablation of it).

    With ``items`` (per-item outputs, see ``load_items``), a last table compares the reference run with every other
    row on each average: the difference of the seed means and its paired bootstrap 95 % interval
    (embedlab.bench.stats); ``*`` marks a difference whose interval excludes 0."""
    other = [r for r in records if "eval_max_length" in r and not same_protocol(spec, r)]
    records = [r for r in records if r not in other]  # one protocol per table
    extra = [r for r in records if r.get("metric", "main_score") != "main_score"]
    records = [r for r in records if r.get("metric", "main_score") == "main_score"]
    group_of = {run.name: run.group for run in spec.runs}
    names = list(dict.fromkeys(r["name"] for r in records))
    groups = list(dict.fromkeys([group_of.get(n, "main") for n in names]))
    if "main" in groups:
        groups.remove("main")
        groups.insert(0, "main")
    header = ["run", "seeds"] + spec.tasks + list(spec.averages) + (["dev"] if spec.dev_tasks else []) \
        + ["steps", "train min"]
    out: list[str] = []
    for group in groups:
        members = [n for n in names if group_of.get(n, "main") == group]
        rows_of = {n: [r for r in records if r["name"] == n] for n in members}
        if group != "main" and spec.reference and spec.reference not in members \
                and group not in spec.group_references and not _other_model(spec, members):
            seeds = {r["seed"] for n in members for r in rows_of[n]}
            ref_rows = [r for r in records if r["name"] == spec.reference and r["seed"] in seeds]
            if ref_rows:
                rows_of = {spec.reference: ref_rows, **rows_of}
        if out:
            out.append("")
        if len(groups) > 1:
            out += [f"**{group}**", ""]
        out += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        out += ["| " + " | ".join(_row(spec, name, rows)) + " |" for name, rows in rows_of.items()]
    if extra:
        columns = [(task, m) for task, metrics in spec.extra_metrics.items() for m in metrics]
        out += ["", "**other metrics**", "", "| run | " + " | ".join(f"{t}: {m}" for t, m in columns) + " |",
                "|" + "---|" * (len(columns) + 1)]
        for name in dict.fromkeys(r["name"] for r in extra):
            cells = [_fmt([r["value"] for r in extra if r["name"] == name and (r["task"], r["metric"]) == c], 3)
                     for c in columns]
            out.append(f"| {name} | " + " | ".join(cells) + " |")
    if items and spec.averages:
        for ref in dict.fromkeys(filter(None, [spec.reference, *spec.group_references.values()])):
            out += _comparisons(spec, records, items, ref, [n for n in _seeds_of(spec, records)
                                                            if n != ref and spec.reference_of(n) == ref])
        for ref in dict.fromkeys(ref for ref, _ in spec.comparisons):
            out += _comparisons(spec, records, items, ref, [n for r, n in spec.comparisons if r == ref])
    if other:
        out += ["", f"({len(other)} records scored under another protocol — evaluation length or instruction setting "
                f"— are not shown; running the experiment re-evaluates them under this one.)"]
    return "\n".join(out) + "\n"


def _seeds_of(spec: ExperimentSpec, records: list[dict[str, Any]]) -> dict[str, list[int]]:
    """Each recorded run's seeds (those with a test-task record), in record order."""
    seeds_of: dict[str, list[int]] = {}
    for r in records:
        if r["task"] in spec.tasks:
            seeds_of.setdefault(r["name"], [])
            if r["seed"] not in seeds_of[r["name"]]:
                seeds_of[r["name"]].append(r["seed"])
    return seeds_of


def _comparisons(spec: ExperimentSpec, records: list[dict[str, Any]],
                 items: dict[tuple[str, int, str], dict], ref: str, names: list[str]) -> list[str]:
    """``ref`` − row on each average for each of ``names`` that has records, with paired bootstrap intervals over
    the items of every member task (the seeds each run has items for; a row lacking a member task's items gets
    "-"). Nothing while ``ref`` has no records."""
    from .bench.stats import paired_difference

    seeds_of = _seeds_of(spec, records)
    if ref not in seeds_of:
        return []
    others = [n for n in names if n in seeds_of]
    if not others:
        return []
    lines = ["", f"**{ref} − row: difference of the seed means, paired bootstrap 95 % interval over items "
                 f"(1000 resamples; * = the interval excludes 0)**", "",
             "| row | " + " | ".join(spec.averages) + " |", "|" + "---|" * (len(spec.averages) + 1)]
    for name in others:
        cells = []
        for members in spec.averages.values():
            a = [[items[(ref, sd, t)] for sd in seeds_of[ref] if (ref, sd, t) in items] for t in members]
            b = [[items[(name, sd, t)] for sd in seeds_of[name] if (name, sd, t) in items] for t in members]
            if all(a) and all(b):
                try:
                    cells.append(paired_difference(a, b).format())
                except ValueError as e:  # not the same test items: say so in the cell rather than guess
                    cells.append(f"n/a ({e})")
            else:
                cells.append("-")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def _other_model(spec: ExperimentSpec, members: list[str]) -> bool:
    """True when every run in ``members`` names a ``model`` other than the reference run's."""
    runs = {run.name: run for run in spec.runs}
    ref = runs.get(spec.reference)
    chosen = [runs[n].model if n in runs else None for n in members]
    return bool(chosen) and all(m is not None and m != (ref.model if ref else None) for m in chosen)


def _row(spec: ExperimentSpec, name: str, rows: list[dict[str, Any]]) -> list[str]:
    seeds = sorted({r["seed"] for r in rows})
    cells = [name, str(len(seeds))]
    for task in spec.tasks:
        cells.append(_fmt([r["value"] for r in rows if r["task"] == task]))
    for members in [*spec.averages.values(), *([spec.dev_tasks] if spec.dev_tasks else [])]:
        # Per seed first (a seed missing a member task does not count), then mean ± std over seeds.
        per_seed = []
        for seed in seeds:
            vals = [r["value"] for r in rows if r["seed"] == seed and r["task"] in members]
            if len(vals) == len(members):
                per_seed.append(sum(vals) / len(vals))
        cells.append(_fmt(per_seed))
    steps = {r.get("steps") for r in rows}
    # a resumed run's seconds cover only the steps after its checkpoint: no comparable time for that row
    secs = [r["train_seconds"] for r in rows if r.get("train_seconds") and not r.get("resumed_from")]
    resumed = any(r.get("resumed_from") for r in rows)
    cells.append("/".join(str(s) for s in sorted(x for x in steps if x is not None)) or "0")
    cells.append(f"{statistics.mean(secs) / 60:.1f}" if secs else ("resumed" if resumed else "-"))
    return cells


def _fmt(vals: list[float], digits: int = 2) -> str:
    if not vals:
        return "-"
    if len(vals) == 1:
        return f"{vals[0]:.{digits}f}"
    return f"{statistics.mean(vals):.{digits}f} ± {statistics.stdev(vals):.{digits}f}"
