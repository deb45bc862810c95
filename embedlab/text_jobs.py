"""The text domain's job kinds: ``evaluate``, ``train+evaluate`` and ``fuse+evaluate`` (embedlab.jobkinds).

Each kind gets a ``JobSpec`` and returns result rows; it never opens the results store (the runner writes the rows).
The job's ``config`` keys, shared by the three kinds::

    eval:      {max_length: 256, batch_size: 32, bf16: true, instructions: false | true | null,
                template: null, slots: null, pooling: null, limit: null}   # limit: a seeded sample (tests)
    recipe:    recipes/codiemb.yaml           # train+evaluate: the recipe and its overrides; the run folder is the
    overrides: [train.lr=2e-5, ...]           #   job's output_dir (a rerun resumes from its last checkpoint)
    evaluate:  final | best                   # which model of a training run is scored
    fuse:      {method, models, base, weights, params, sweep, select_on}   # fuse+evaluate (FuseSpec's keys)

``eval.instructions``: true gives every row the task instructions (CoDiEmb's "Instruction: ... Query: ", instruction
tokens out of the mean), false none, null keeps the prompts the model saved. Per-item outputs (for paired bootstrap
intervals) are written to ``<output_dir>/items/<task>.json`` and listed in the outcome's ``info["items"]``.

It does not define losses, tasks or merge methods; it calls the trainer, the fusion driver and the evaluation runner.
"""
from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from .atomic import write_json
from .errors import ConfigError
from .evaluate import tasks as _tasks  # noqa: F401 - registers the text task types when the domain is loaded
from .jobkinds import JOB_KINDS, JobContext, JobKind, JobOutcome, JobSpec
from .results import software

log = logging.getLogger("embedlab.jobs.text")
DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
EVAL_KEYS = {"max_length", "batch_size", "bf16", "instructions", "template", "slots", "pooling", "limit", "backend",
             "precision"}


def _eval_config(spec: JobSpec) -> dict[str, Any]:
    cfg = dict(spec.config.get("eval") or {})
    unknown = set(cfg) - EVAL_KEYS
    if unknown:
        raise ConfigError(f"job {spec.name}: config.eval: unknown key(s) {', '.join(sorted(unknown))} (known: "
                          f"{', '.join(sorted(EVAL_KEYS))})")
    return cfg


def _validate(spec: JobSpec) -> None:
    from .evaluate.tasks import parse_tasks

    if not spec.tasks:
        raise ConfigError(f"job {spec.name}: no tasks")
    parse_tasks(list(spec.tasks))
    cfg = _eval_config(spec)
    if "backend" in cfg or "precision" in cfg:
        from .text.backends import check_backend

        check_backend(cfg.get("backend", "torch"), cfg.get("precision", "fp32"))
    if spec.kind == "train+evaluate" and not spec.config.get("recipe"):
        raise ConfigError(f"job {spec.name}: config.recipe is required for train+evaluate")
    if spec.kind == "fuse+evaluate" and not spec.config.get("fuse"):
        raise ConfigError(f"job {spec.name}: config.fuse is required for fuse+evaluate")
    if spec.model is not None and spec.kind == "evaluate":
        from .pretrained import resolve

        resolve(spec.model)  # a typo in a path fails at submit, not minutes later in a worker (reads no weights)


def _load_for_eval(model_path: str, cfg: dict[str, Any]):
    """The model as the job's protocol evaluates it: template, instruction setting and pooling applied."""
    from dataclasses import replace

    from .text import Embedder, PoolingConfig

    model = Embedder.load(model_path)
    if cfg.get("template") is not None:
        model.set_template(cfg["template"], cfg.get("slots"))
    instructions = cfg.get("instructions")
    if model.template is None and instructions is not None:  # one instruction setting, whatever the model saved
        from .evaluate.tasks import instruction_prompts

        model.prompts, model.default_prompt_name = (instruction_prompts() if instructions else {}), None
    if cfg.get("pooling") is not None:
        model.pooling = PoolingConfig(cfg["pooling"])
    if model.template is None and instructions:
        # CoDiEmb's convention: the instruction conditions the text but its tokens are not averaged into the
        # embedding (an untrained model would otherwise mostly embed the instruction).
        model.pooling = replace(model.pooling, include_prompt=False)
    return model


def _evaluate(spec: JobSpec, ctx: JobContext, model_path: str, info: dict[str, Any]) -> JobOutcome:
    import torch

    from .evaluate.cache import EmbeddingCache
    from .evaluate.runner import EvalSettings, evaluate, result_rows

    cfg = _eval_config(spec)
    settings = EvalSettings(batch_size=cfg.get("batch_size", 32), max_length=cfg.get("max_length"),
                            autocast_dtype=torch.bfloat16 if cfg.get("bf16") else None,
                            show_progress=ctx.show_progress, num_threads=ctx.threads, limit=cfg.get("limit"),
                            backend=cfg.get("backend"), precision=cfg.get("precision"))
    model = _load_for_eval(model_path, cfg)
    rows, items = [], {}
    made_by = software()  # once per job: it asks git for the commit
    protocol = {"eval_bf16": bool(cfg.get("bf16")), "eval_max_length": cfg.get("max_length"),
                "instructions": cfg.get("instructions"),
                "instruction_tokens_pooled": not cfg.get("instructions")}
    if "backend" in cfg or "precision" in cfg:  # recorded only when not torch fp32 (older records have neither)
        protocol.update(eval_backend=cfg.get("backend", "torch"), eval_precision=cfg.get("precision", "fp32"))
    for i, task in enumerate(spec.tasks):
        ctx.progress(i / len(spec.tasks), f"evaluating {task} ({i + 1}/{len(spec.tasks)})")
        result = evaluate(model, [task], settings=settings, cache=EmbeddingCache(), model_label=spec.row_label)[0]
        if result.items is not None:
            path = ctx.output_dir / "items" / f"{task}.json"
            write_json(path, result.items)
            items[task] = str(path)
        rows += result_rows(model, spec.row_label, result, settings,
                            extra={**protocol, **info, "software": made_by})
        log.info("%s seed %s %s: %.2f", spec.name, spec.seed, task, result.display())
    ctx.progress(1.0, "done")
    return JobOutcome(rows=rows, info={**info, "items": items, "protocol": protocol})


def run_evaluate(spec: JobSpec, ctx: JobContext) -> JobOutcome:
    """Score a model as it is (an untrained baseline, a downloaded or local model)."""
    return _evaluate(spec, ctx, spec.model or DEFAULT_MODEL, {"steps": 0, "train_seconds": 0.0})


def train_overrides(spec: JobSpec, output_dir: Path) -> list[str]:
    """The overrides a ``train+evaluate`` job applies to its recipe: the spec's, then its seed, folder and model."""
    overrides = [*spec.config.get("overrides", []), f"seed={spec.seed}", f"output_dir={output_dir}"]
    if spec.model:
        overrides.append(f"model.name={spec.model}")
    return overrides


def train_settings(recipe) -> dict[str, Any]:
    """The resolved settings a reader of a results record asks about first (the recipe path and overrides say the
    rest, and the run folder's recipe.json all of it): model, length, dropout, LoRA, objective, sampler, batch, lr,
    steps, precision, instructions."""
    m, t = recipe.model, recipe.train
    lora = m.lora.model_dump() if m.lora is not None else None
    return {"model": m.name, "max_length": m.max_length, "model_dropout": m.dropout,
            "lora": {k: lora[k] for k in ("r", "alpha", "dropout")} if lora else None,
            "objective": recipe.objective.kind, "sampler": f"{recipe.sampler.kind}/{recipe.sampler.policy}",
            "batch_size": dict(recipe.sampler.batch_size), "lr": t.lr, "max_steps": t.max_steps,
            "epochs": t.epochs, "warmup_ratio": t.warmup_ratio, "mixed_precision": t.mixed_precision,
            "instructions": recipe.data.instructions}


def run_train_evaluate(spec: JobSpec, ctx: JobContext) -> JobOutcome:
    """Train ``config.recipe`` (with ``config.overrides``, the job's seed, output_dir = the job's folder), then score
    its final (or dev-selected best) model. A finished run folder of the same recipe is reused; a partial one
    resumes from its newest checkpoint (a retried job continues where the killed one stopped)."""
    from .config import load_recipe
    from .train import train_recipe
    from .train.run_folder import finished_model

    out = ctx.output_dir
    overrides = train_overrides(spec, out)
    recipe = load_recipe(spec.config["recipe"], overrides)
    if finished_model(out, recipe) is None:  # a final model of another recipe is refused, not reused
        ctx.progress(0.0, "training")
        t0 = time.perf_counter()
        first_step: list[int] = []  # the first step this process trains: > 1 when it resumed a checkpoint

        def on_step(step: int, total: int) -> None:
            if not first_step:
                first_step.append(step)
            ctx.progress(0.9 * step / max(total, 1), f"training step {step}/{total}")

        _, steps = train_recipe(recipe, show_progress=ctx.show_progress, on_step=on_step)
        resumed = first_step[0] - 1 if first_step and first_step[0] > 1 else None
        # seconds cover only the steps this process trained (from ``resumed_from`` on), not the whole run
        write_json(out / "train_time.json", {"seconds": time.perf_counter() - t0, "steps": steps,
                                             "resumed_from": resumed})
    timing = json.loads((out / "train_time.json").read_text()) if (out / "train_time.json").is_file() else {}
    info = {"steps": timing.get("steps"), "train_seconds": timing.get("seconds"),
            "resumed_from": timing.get("resumed_from"), "recipe": spec.config["recipe"],
            "overrides": overrides, "train_settings": train_settings(recipe)}
    which = spec.config.get("evaluate", "final")
    if which == "best":
        if not (out / "best" / "modules.json").is_file():
            raise ConfigError(f"job {spec.name}: evaluate: best, but {out / 'best'} was not written; set "
                              "train.eval_every and train.select_on (dev tasks) for this run")
        info["best"] = json.loads((out / "best.json").read_text()) if (out / "best.json").is_file() else None
    return _evaluate(spec, ctx, str(out / which), info)


def run_fuse_evaluate(spec: JobSpec, ctx: JobContext) -> JobOutcome:
    """Fuse other runs' models (sweeping parameters on dev tasks if asked, resumable), then score the result."""
    model_path, info = fuse_model(spec.config["fuse"], spec.seed, ctx.output_dir,
                                  bool(_eval_config(spec).get("bf16")), show_progress=ctx.show_progress)
    return _evaluate(spec, ctx, model_path, info)


def fuse_model(f: dict[str, Any], seed: int, out: Path, bf16: bool, show_progress: bool = False
               ) -> tuple[str, dict[str, Any]]:
    """Fuse into ``out``; with ``sweep`` every combination is fused and scored on ``select_on`` (dev tasks only) and
    the best kept (candidate scores in ``<out>.sweep.json``, so an interrupted sweep resumes)."""
    import itertools
    import shutil

    from .fusion import fuse
    from .fusion.greedy import dev_scorer, greedy_soup

    out = Path(out)
    models = [os.path.normpath(m) for m in f["models"]]
    select_on = f.get("select_on") or ["stsb-dev", "scifact-dev"]
    params, sweep = dict(f.get("params") or {}), dict(f.get("sweep") or {})
    base, weights = f.get("base"), f.get("weights")
    info: dict[str, Any] = {"steps": 0, "train_seconds": 0.0, "fusion": f["method"], "models": models}
    if (out / "fusion.json").is_file():
        record = json.loads((out / "fusion.json").read_text())
        return str(out), {**info, "params": record.get("params"), **record.get("extra", {})}
    if f["method"] == "greedy_soup":
        result = greedy_soup(models, dev_scorer(select_on, bf16), out, seed=seed, show_progress=show_progress)
        return str(out), {**info, "params": {}, **result.extra}
    combos = [dict(zip(sweep, values)) for values in itertools.product(*sweep.values())] or [{}]
    if len(combos) == 1:
        result = fuse(models, f["method"], out=out, base=base, weights=weights, params={**params, **combos[0]},
                      seed=seed, show_progress=show_progress)
        return str(out), {**info, "params": result.params, **result.extra}
    log_path = out.with_name(out.name + ".sweep.json")
    tried = json.loads(log_path.read_text())["candidates"] if log_path.is_file() else []
    score = dev_scorer(select_on, bf16)
    cand = out.with_name(f".{out.name}.candidate")  # one folder, overwritten by each candidate in turn
    for combo in combos:
        if any(c["params"] == combo for c in tried):
            continue
        fused = fuse(models, f["method"], out=cand, base=base, weights=weights, params={**params, **combo},
                     seed=seed, show_progress=show_progress)
        # the candidate's update size beside its dev score: a sweep shows which setting matches the others' size
        tried.append({"params": combo, "dev": score(str(cand)),
                      "relative_update": (fused.extra.get("update") or {}).get("relative_update")})
        write_json(log_path, {"select_on": select_on, "candidates": tried})
        log.info("%s sweep %s: dev %.4f", out.name, combo, tried[-1]["dev"])
    best = max(tried, key=lambda c: c["dev"])
    result = fuse(models, f["method"], out=out, base=base, weights=weights, params={**params, **best["params"]},
                  seed=seed, extra={"sweep": {"select_on": select_on, "candidates": tried, "chosen": best}},
                  show_progress=show_progress)
    shutil.rmtree(cand, ignore_errors=True)
    return str(out), {**info, "params": result.params, **result.extra}


for _kind in (
    JobKind("evaluate", "text", run_evaluate, "score a model as it is on text tasks", _validate),
    JobKind("train+evaluate", "text", run_train_evaluate, "train a recipe, then score it on text tasks", _validate),
    JobKind("fuse+evaluate", "text", run_fuse_evaluate, "fuse models (optionally sweeping on dev), then score",
            _validate),
):
    JOB_KINDS.add(_kind.name, _kind)
