"""Experiments: a YAML list of runs (recipe x seeds, or an untrained model) -> train, evaluate, record, tabulate.

    embedlab experiment experiments/codiemb.yaml            # resumable: finished runs and evaluations are skipped

Each run trains with the embedlab trainer (``output_dir = <workdir>/<run>-s<seed>``; an existing ``final/`` is reused,
a partial run resumes from its newest checkpoint), is evaluated on the experiment's tasks, and every score becomes one
record ``{name, task, split, metric, value, seed, steps, train_seconds, ...}`` in the experiment's JSON (written
atomically after each evaluation, so an interrupted experiment keeps what it finished). The Markdown table is rendered
from that JSON alone (``render_table``), so a reader can check every cell against the records. With ``dev_tasks``
every row is scored on dev splits too (the table's "dev" column), so choices between rows are made on dev data.
Spec keys: docs/experiments.md.

It does not define losses or tasks; it calls the trainer and the evaluation runner.
"""
from __future__ import annotations

import json
import logging
import os
import statistics
import time
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..atomic import write_json, write_text
from ..config import read_config_text
from ..errors import ConfigError

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
    eval_batch_size: int = 32
    # One evaluation length for every row, whatever each model was trained at (a model saves its training length,
    # which would otherwise truncate trained rows' documents: 98 % of SciFact's are longer than 128 tokens).
    eval_max_length: int = Field(256, gt=0)
    # One instruction setting for every row: true puts each task's instruction before its queries and both STS
    # sides (CoDiEmb's "Instruction: {instruction} Query: "; documents none) for every model, trained or not, and
    # leaves the instruction tokens out of the mean (CoDiEmb's pooling); false evaluates every row without
    # instructions. Recorded in every record.
    instructions: bool = True
    reference: str | None = None  # a main run repeated at the top of every other group's table (its same seeds)
    # Scores besides the main score to record and tabulate, per task: e.g. {geometry: [uniformity, anisotropy]}
    extra_metrics: dict[str, list[str]] = Field(default_factory=dict)
    # Dev tasks (dev splits only) scored for every row besides the test tasks: the table gets a "dev" column (mean
    # main score over them, x100), so a choice made among rows (a default, a variant) is visibly made on dev data.
    dev_tasks: list[str] = Field(default_factory=list)
    runs: list[RunSpec]

    @field_validator("dev_tasks")
    @classmethod
    def _dev_splits_only(cls, tasks: list[str]) -> list[str]:
        from ..evaluate.tasks import TASKS

        for name in tasks:
            if name not in TASKS:
                raise ValueError(f"unknown task {name!r}")
            if TASKS.get(name).split == "test":
                raise ValueError(f"{name} is a test split; dev_tasks must be dev (or train) splits")
        return tasks


def load_experiment(path: str | Path) -> ExperimentSpec:
    path = Path(path)
    try:
        # read_config_text: a folder or binary file is a ConfigError naming the path, like a missing file
        raw = yaml.safe_load(read_config_text(path, "experiment"))
        return ExperimentSpec.model_validate(raw)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from None
    except ValidationError as e:
        raise ConfigError("\n".join(f"{path}: {'.'.join(map(str, x['loc']))}: {x['msg']}" for x in e.errors())) from None


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


def _append_record(path: Path, spec: ExperimentSpec, record: dict[str, Any]) -> list[dict[str, Any]]:
    """Add one record to the JSON under an exclusive lock, re-reading the file first: several experiment processes
    (e.g. two runs side by side, one core each) may write the same file."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        records = [r for r in _load_records(path)
                   if _key(r) != _key(record)]
        records.append(record)
        write_json(path, {"experiment": spec.name, "tasks": spec.tasks, "records": records})
    return records


def _key(r: dict[str, Any]) -> tuple:
    return r["name"], r["seed"], r["task"], r.get("metric", "main_score")


def run_experiment(spec_path: str | Path, only: list[str] | None = None, show_progress: bool = True,
                   seeds: list[int] | None = None) -> Path:
    """Run (or finish) the experiment's runs — only those named in ``only`` and the ``seeds`` given, if set."""
    import torch

    from ..config import load_recipe
    from ..evaluate.cache import EmbeddingCache
    from ..evaluate.runner import EvalSettings, evaluate
    from ..text import Embedder
    from ..train import train_recipe
    from ..train.run_folder import finished_model

    spec = load_experiment(spec_path)
    unknown = sorted(set(only or []) - {run.name for run in spec.runs})
    if unknown:  # a typo (or a name split at its comma) must not silently run nothing
        raise ConfigError(f"{spec_path}: no run named {', '.join(map(repr, unknown))}; runs: "
                          f"{', '.join(run.name for run in spec.runs)}")
    # Every path and task is checked before the first training run, not after it.
    try:
        workdir = Path(spec.workdir.format(name=spec.name))
    except (KeyError, IndexError, ValueError) as e:
        raise ConfigError(f"{spec_path}: workdir {spec.workdir!r}: only {{name}} may be filled in ({e})") from None
    from ..evaluate.tasks import parse_tasks

    parse_tasks([*spec.tasks, *spec.dev_tasks])
    for key in ("results", "table"):
        where = Path(getattr(spec, key))
        if where.exists() and not where.is_file():
            raise ConfigError(f"{spec_path}: {key} {where} is a folder, device or pipe; expected a file path")
    results_path = Path(spec.results)
    records = _load_records(results_path)
    # A record counts as done only under this experiment's protocol (records without eval_max_length predate it).
    # A test task also needs its per-item file (the paired bootstrap reads it); a record without one is re-evaluated.
    done = {(r["name"], r["seed"], r["task"]) for r in records if r.get("metric", "main_score") == "main_score"
            and same_protocol(spec, r)
            and (r["task"] not in spec.tasks or items_path(spec, r["name"], r["seed"], r["task"]).is_file())}
    settings = EvalSettings(batch_size=spec.eval_batch_size, show_progress=show_progress,
                            autocast_dtype=torch.bfloat16 if spec.eval_bf16 else None,
                            max_length=spec.eval_max_length)
    for run in spec.runs:
        if only and run.name not in only:
            continue
        for seed in run.seeds:
            if seeds and seed not in seeds:
                continue
            todo = [t for t in [*spec.tasks, *spec.dev_tasks] if (run.name, seed, t) not in done]
            if not todo:
                continue
            info: dict[str, Any] = {"steps": 0, "train_seconds": 0.0}
            if run.fuse is not None:
                model_path, info = _fused_model(run, seed, workdir, spec.eval_bf16)
            elif run.recipe is None:
                model_path = run.model or "sentence-transformers/all-MiniLM-L6-v2"
            else:
                out = workdir / f"{run.name}-s{seed}"
                overrides = [*spec.common_overrides, *run.overrides, f"seed={seed}", f"output_dir={out}"]
                if run.model:
                    overrides.append(f"model.name={run.model}")
                recipe = load_recipe(run.recipe, overrides)
                if finished_model(out, recipe) is None:  # a final model of another recipe is refused, not reused
                    t0 = time.perf_counter()
                    _, steps = train_recipe(recipe, show_progress=show_progress)
                    write_json(out / "train_time.json", {"seconds": time.perf_counter() - t0, "steps": steps,
                                                         "resumed_from": None})
                timing = json.loads((out / "train_time.json").read_text()) if (out / "train_time.json").is_file() \
                    else {}
                info = {"steps": timing.get("steps"), "train_seconds": timing.get("seconds"),
                        "recipe": run.recipe, "overrides": overrides}
                model_path = str(out / run.evaluate)
                if run.evaluate == "best":
                    if not (out / "best" / "modules.json").is_file():
                        raise ConfigError(f"run {run.name!r}: evaluate: best, but {out / 'best'} was not written; "
                                          "set train.eval_every and train.select_on (dev tasks) for this run")
                    info["best"] = json.loads((out / "best.json").read_text()) if (out / "best.json").is_file() \
                        else None
            model = Embedder.load(model_path)
            if run.template is not None:
                model.set_template(run.template, run.slots)
            if model.template is None:  # the experiment's one instruction setting, whatever the model saved
                from ..evaluate.tasks import instruction_prompts

                model.prompts, model.default_prompt_name = (instruction_prompts() if spec.instructions else {}), None
            if run.pooling is not None:
                from ..text import PoolingConfig

                model.pooling = PoolingConfig(run.pooling)
            if model.template is None and spec.instructions:
                # CoDiEmb's convention for every row: the instruction conditions the text but its tokens are not
                # averaged into the embedding (an untrained model would otherwise mostly embed the instruction).
                from dataclasses import replace

                model.pooling = replace(model.pooling, include_prompt=False)
            for task in todo:
                result = evaluate(model, [task], settings=settings, cache=EmbeddingCache(),
                                  model_label=f"{run.name}-s{seed}")[0]
                scale = 100.0 if result.task.type in ("sts", "retrieval") else 1.0
                for metric in spec.extra_metrics.get(task, []):  # before the main score: it marks the task done
                    if metric not in result.scores:
                        raise ConfigError(f"extra_metrics: task {task} has no score {metric!r} (it has: "
                                          f"{', '.join(sorted(result.scores))})")
                    _append_record(results_path, spec, {
                        "name": run.name, "seed": seed, "task": task, "split": result.task.split, "metric": metric,
                        "value": float(result.scores[metric]), "eval_bf16": spec.eval_bf16,
                        "eval_max_length": spec.eval_max_length, "instructions": spec.instructions,
                        "instruction_tokens_pooled": not spec.instructions, **info})
                if result.items is not None:  # before the record that marks the task done
                    write_json(items_path(spec, run.name, seed, task), result.items)
                records = _append_record(results_path, spec, {
                    "name": run.name, "seed": seed, "task": task, "split": result.task.split, "metric": "main_score",
                    "value": result.main_score * scale, "eval_bf16": spec.eval_bf16,
                    "eval_max_length": spec.eval_max_length, "instructions": spec.instructions,
                        "instruction_tokens_pooled": not spec.instructions, **info})
                log.info("%s seed %s %s: %.2f", run.name, seed, task, result.main_score * scale)
    write_text(Path(spec.table), render_table(spec, records, load_items(spec)))
    return results_path


def same_protocol(spec: ExperimentSpec, record: dict[str, Any]) -> bool:
    """True when ``record`` was scored under the experiment's protocol (evaluation length and instruction setting);
    records of another protocol are neither reused nor tabulated."""
    return (record.get("eval_max_length") == spec.eval_max_length
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


def _fused_model(run: RunSpec, seed: int, workdir: Path, bf16: bool) -> tuple[str, dict[str, Any]]:
    """Fuse (sweeping on dev data if asked) into ``<workdir>/<run>-s<seed>``; resumable through sweep.json."""
    import itertools
    import shutil

    from ..fusion import fuse
    from ..fusion.greedy import dev_scorer, greedy_soup

    f = run.fuse
    out = workdir / f"{run.name}-s{seed}"
    # Lexical normalisation: "{workdir}/../x" must resolve before the workdir itself exists (the OS would refuse).
    models = [os.path.normpath(m.format(workdir=workdir)) for m in f.models]
    info: dict[str, Any] = {"steps": 0, "train_seconds": 0.0, "fusion": f.method, "models": models}
    if (out / "fusion.json").is_file():
        record = json.loads((out / "fusion.json").read_text())
        return str(out), {**info, "params": record.get("params"), **record.get("extra", {})}
    if f.method == "greedy_soup":
        result = greedy_soup(models, dev_scorer(f.select_on, bf16), out, seed=seed)
        return str(out), {**info, "params": {}, **result.extra}
    combos = [dict(zip(f.sweep, values)) for values in itertools.product(*f.sweep.values())] or [{}]
    if len(combos) == 1:
        result = fuse(models, f.method, out=out, base=f.base, weights=f.weights, params={**f.params, **combos[0]},
                      seed=seed)
        return str(out), {**info, "params": result.params}
    log_path = workdir / f"{run.name}-s{seed}.sweep.json"
    tried = json.loads(log_path.read_text())["candidates"] if log_path.is_file() else []
    score = dev_scorer(f.select_on, bf16)
    cand = workdir / f".{run.name}-s{seed}.candidate"  # one folder, overwritten by each candidate in turn
    for combo in combos:
        if any(c["params"] == combo for c in tried):
            continue
        fuse(models, f.method, out=cand, base=f.base, weights=f.weights, params={**f.params, **combo}, seed=seed)
        tried.append({"params": combo, "dev": score(str(cand))})
        write_json(log_path, {"select_on": f.select_on, "candidates": tried})
        log.info("%s sweep %s: dev %.4f", run.name, combo, tried[-1]["dev"])
    best = max(tried, key=lambda c: c["dev"])
    result = fuse(models, f.method, out=out, base=f.base, weights=f.weights, params={**f.params, **best["params"]},
                  seed=seed, extra={"sweep": {"select_on": f.select_on, "candidates": tried, "chosen": best}})
    shutil.rmtree(cand, ignore_errors=True)
    return str(out), {**info, "params": result.params, "sweep": result.extra["sweep"]}


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
                and not _other_model(spec, members):
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
    if items and spec.reference and spec.averages:
        out += _comparisons(spec, records, items)
    if other:
        out += ["", f"({len(other)} records scored under another protocol — evaluation length or instruction setting "
                f"— are not shown; running the experiment re-evaluates them under this one.)"]
    return "\n".join(out) + "\n"


def _comparisons(spec: ExperimentSpec, records: list[dict[str, Any]],
                 items: dict[tuple[str, int, str], dict]) -> list[str]:
    """Reference − row on each average, with paired bootstrap intervals over the items of every member task (the
    seeds each run has items for; a row lacking a member task's items gets "-")."""
    from .stats import paired_difference

    seeds_of: dict[str, list[int]] = {}
    for r in records:
        if r["task"] in spec.tasks:
            seeds_of.setdefault(r["name"], [])
            if r["seed"] not in seeds_of[r["name"]]:
                seeds_of[r["name"]].append(r["seed"])
    ref = spec.reference
    if ref not in seeds_of:
        return []
    others = [n for n in seeds_of if n != ref]
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
    secs = [r["train_seconds"] for r in rows if r.get("train_seconds")]
    cells.append("/".join(str(s) for s in sorted(x for x in steps if x is not None)) or "0")
    cells.append(f"{statistics.mean(secs) / 60:.1f}" if secs else "-")
    return cells


def _fmt(vals: list[float], digits: int = 2) -> str:
    if not vals:
        return "-"
    if len(vals) == 1:
        return f"{vals[0]:.{digits}f}"
    return f"{statistics.mean(vals):.{digits}f} ± {statistics.stdev(vals):.{digits}f}"
