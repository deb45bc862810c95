"""The Med-VQA domain's job kinds (embedlab.jobkinds): baselines, library models, trained models, zero-shot VLMs.

``vqa-baseline``: fit a registered baseline (``model``: majority, question-only, image-identity) on each task's
training split and score it on the task's evaluation split. The job's ``config``::

    closed_by: field | yesno      # closed/open by the dataset's answer_type field (default) or by a yes/no answer
    questions: all | freeform     # score every question (default) or the freeform ones only (MEVF's convention)

Both conventions change numbers, so they are part of the job's configuration and recorded with every row. Rows are
``task_type = "vqa"`` (x100 on display), one per score (closed, open, overall = main_score, per type and organ, open
token recall / F1 / BLEU-1, unseen fraction), with the counts in ``extra``; per-item correctness goes to
``<output_dir>/items/<task>.json``.

``vqa-train``: train a library model (``model``: mevf-ban, cr, ...) on each task's training split and score the
task's evaluation split with real, blank and shuffled images (recipe.py's ``run_recipe``). ``config``::

    profile: cpu                 # paper | cpu | tiny
    model_settings: {...}        # over the profile
    train: {...}                 # over the profile (epochs, vqamix, bf16, ...)
    eval: {closed_by: field, questions: all, conditions: [real, blank, shuffled]}

The model is written to ``<output_dir>/<task>/`` (a rerun of a stopped job resumes from its last epoch); rows add
``blank_overall``, ``shuffled_overall`` and ``image_reliance`` to the scores above.

``vqa-eval``: score an already trained model (``model``: its folder) on each task's evaluation split (``config.eval``
as above). ``vqa-zeroshot``: a Hugging Face LLaVA-style model (``model``: folder or hub id; zeroshot.py), ``config``:
``dtype`` (fp32 | bf16), ``prompt_template``, ``max_new_tokens``, ``candidates`` (``yesno``: closed questions choose
between yes and no; ``train``: between the closed answers of the training split; default ``train``), ``limit``
(score only the first N questions, for smoke runs; recorded). It never imports the text domain.
"""
from __future__ import annotations

import logging

from ..atomic import write_json
from ..errors import ConfigError
from ..jobkinds import JOB_KINDS, JobContext, JobKind, JobOutcome, JobSpec
from ..results import make_rows
from . import tasks as _tasks  # noqa: F401 - registers the "vqa" task type when the domain is loaded

log = logging.getLogger("embedlab.jobs.medvqa")
CONFIG_KEYS = {"closed_by", "questions"}


def _check_tasks(spec: JobSpec) -> None:
    from .tasks import TASKS, resolve_task

    if not spec.tasks:
        raise ConfigError(f"job {spec.name}: no tasks (Med-VQA tasks: {', '.join(TASKS.names())}, or a registered "
                          f"dataset-tool export)")
    for name in spec.tasks:
        resolve_task(name)


def _check_keys(spec: JobSpec, known) -> None:
    unknown = set(spec.config) - set(known)
    if unknown:
        raise ConfigError(f"job {spec.name}: config: unknown key(s) {', '.join(sorted(unknown))} (known: "
                          f"{', '.join(sorted(known))})")


def _validate(spec: JobSpec) -> None:
    from .baselines import BASELINES

    _check_tasks(spec)
    BASELINES.get(spec.model or "")
    _check_keys(spec, CONFIG_KEYS)
    if spec.config.get("closed_by", "field") not in ("field", "yesno"):
        raise ConfigError(f"job {spec.name}: config.closed_by must be field or yesno")
    if spec.config.get("questions", "all") not in ("all", "freeform"):
        raise ConfigError(f"job {spec.name}: config.questions must be all or freeform")


def run_baseline(spec: JobSpec, ctx: JobContext) -> JobOutcome:
    from .baselines import BASELINES
    from .datasets import load_dataset
    from .metrics import score
    from .tasks import resolve_task

    closed_by = spec.config.get("closed_by", "field")
    questions = spec.config.get("questions", "all")
    rows, items = [], {}
    for i, name in enumerate(spec.tasks):
        task = resolve_task(name)
        ctx.progress(i / len(spec.tasks), f"{spec.model} on {name}")
        train = load_dataset(task.dataset, task.train_split)
        test = load_dataset(task.dataset, task.eval_split)
        model = BASELINES.get(spec.model)(seed=spec.seed).fit(train)
        result = score(test, model.predict(test), closed_by=closed_by, questions=questions,
                       train_answers=[r.answer for r in train])
        path = ctx.output_dir / "items" / f"{name}.json"
        write_json(path, result["items"])
        items[name] = str(path)
        rows += make_rows(domain="medvqa", model=spec.row_label, task=name, task_type=task.type,
                          dataset=task.dataset, split=task.eval_split, scores=result["scores"],
                          extra={"counts": result["counts"], "options": result["options"],
                                 "baseline": model.config()})
        log.info("%s on %s: overall %.2f", spec.model, name, 100 * result["scores"]["overall"])
    ctx.progress(1.0, "done")
    return JobOutcome(rows=rows, info={"items": items})


def _eval_options(spec: JobSpec) -> dict:
    from .recipe import EvalOptions

    try:
        return EvalOptions(**spec.config.get("eval", {})).model_dump()
    except ValueError as e:
        raise ConfigError(f"job {spec.name}: config.eval: {e}") from None


def _recipe(spec: JobSpec, task: str, output_dir=None):
    from .recipe import VQARecipe

    cfg = spec.config
    _check_keys(spec, ("profile", "model_settings", "train", "eval"))
    try:
        recipe = VQARecipe(model=spec.model or "", profile=cfg.get("profile", "cpu"), task=task, seed=spec.seed,
                           output_dir=None if output_dir is None else str(output_dir),
                           model_settings=cfg.get("model_settings", {}), train=cfg.get("train", {}),
                           eval=cfg.get("eval", {}))
    except ValueError as e:
        raise ConfigError(f"job {spec.name}: config: {e}") from None
    return recipe.check()


def _validate_train(spec: JobSpec) -> None:
    _check_tasks(spec)
    for task in spec.tasks:
        _recipe(spec, task)


def _rows(spec: JobSpec, ctx: JobContext, task_name: str, result: dict, extra: dict) -> list:
    from .tasks import resolve_task

    task = resolve_task(task_name)
    path = ctx.output_dir / "items" / f"{task_name}.json"
    write_json(path, result["items"])
    return make_rows(domain="medvqa", model=spec.row_label, task=task_name, task_type=task.type,
                     dataset=task.dataset, split=task.eval_split, scores=result["scores"],
                     extra={"counts": result["counts"], "options": result["options"], **extra})


def run_train(spec: JobSpec, ctx: JobContext) -> JobOutcome:
    from .recipe import run_recipe

    rows, items = [], {}
    for i, name in enumerate(spec.tasks):
        recipe = _recipe(spec, name, ctx.output_dir / name)

        def progress(fraction, text, i=i):
            ctx.progress(None if fraction is None else (i + fraction) / len(spec.tasks), text)

        trained, result = run_recipe(recipe, progress=progress, threads=ctx.threads)
        rows += _rows(spec, ctx, name, result, {"model_settings": trained.settings, "train": trained.train,
                                               "profile": trained.profile, "conditions": result["conditions"],
                                               "selected_epoch": trained.info.get("selected_epoch"),
                                               "model_dir": str(recipe.resolved_output_dir())})
        items[name] = str(ctx.output_dir / "items" / f"{name}.json")
        log.info("%s on %s: overall %.2f, blank %.2f", spec.model, name, 100 * result["scores"]["overall"],
                 100 * result["scores"].get("blank_overall", float("nan")))
    ctx.progress(1.0, "done")
    return JobOutcome(rows=rows, info={"items": items})


def _validate_eval(spec: JobSpec) -> None:
    from pathlib import Path

    from .models import model_folder_has

    _check_tasks(spec)
    _eval_options(spec)
    if not spec.model or not model_folder_has(Path(spec.model)):
        raise ConfigError(f"job {spec.name}: model {spec.model!r} is not a trained Med-VQA model folder "
                          f"(model.json + model.safetensors, from `embedlab vqa train`)")


def run_eval(spec: JobSpec, ctx: JobContext) -> JobOutcome:
    from .datasets import load_dataset
    from .evaluate import evaluate_model
    from .models import load_model
    from .tasks import resolve_task

    opts = _eval_options(spec)
    trained = load_model(spec.model)
    rows = []
    for name in spec.tasks:
        task = resolve_task(name)
        train = load_dataset(task.dataset, task.train_split)
        test = load_dataset(task.dataset, task.eval_split)
        result = evaluate_model(trained, test, train_answers=[r.answer for r in train], seed=spec.seed, **opts)
        rows += _rows(spec, ctx, name, result, {"model_dir": spec.model, "conditions": result["conditions"],
                                               "trained_on": trained.info.get("task")})
    return JobOutcome(rows=rows)


ZEROSHOT_KEYS = {"dtype", "prompt_template", "max_new_tokens", "candidates", "limit", "batch_size"}


def _validate_zeroshot(spec: JobSpec) -> None:
    _check_tasks(spec)
    _check_keys(spec, ZEROSHOT_KEYS)
    if spec.config.get("candidates", "train") not in ("train", "yesno"):
        raise ConfigError(f"job {spec.name}: config.candidates must be train or yesno")
    if not spec.model:
        raise ConfigError(f"job {spec.name}: no model (a LLaVA-style folder or hub id)")


def closed_candidates(train, rule: str) -> dict[str, list[str]]:
    """Candidate answers for closed questions per question type: yes/no, or the closed train answers of that type
    (all closed train answers for a type never seen closed in train)."""
    from .normalize import normalize_answer

    if rule == "yesno":
        return {"": ["yes", "no"]}
    by_type: dict[str, set[str]] = {"": set()}
    for r in train:
        if r.closed:
            a = normalize_answer(r.answer)
            by_type.setdefault(r.question_type, set()).add(a)
            by_type[""].add(a)
    return {k: sorted(v) for k, v in by_type.items()}


def run_zeroshot(spec: JobSpec, ctx: JobContext) -> JobOutcome:
    from PIL import Image

    from .datasets import image_path, load_dataset
    from .images import load_image
    from .metrics import score
    from .tasks import resolve_task
    from .zeroshot import ZeroShotVLM

    cfg = spec.config
    model = ZeroShotVLM.load(spec.model, dtype=cfg.get("dtype", "fp32"), prompt_template=cfg.get("prompt_template"),
                             max_new_tokens=int(cfg.get("max_new_tokens", 8)))
    rows = []
    for name in spec.tasks:
        task = resolve_task(name)
        train = load_dataset(task.dataset, task.train_split)
        test = load_dataset(task.dataset, task.eval_split)
        if cfg.get("limit"):
            test = test[: int(cfg["limit"])]
        cands = closed_candidates(train, cfg.get("candidates", "train"))
        images = [Image.fromarray((load_image(image_path(r), grey=False).transpose(1, 2, 0) * 255).astype("uint8"))
                  for r in test]
        preds = model.predict([r.question for r in test], images,
                              [cands.get(r.question_type) or cands[""] if r.closed else None for r in test],
                              batch_size=int(cfg.get("batch_size", 4)),
                              progress=lambda done, total: ctx.progress(done / max(total, 1), f"{name}"))
        result = score(test, [p["answer"] for p in preds], train_answers=[r.answer for r in train])
        rows += _rows(spec, ctx, name, result, {"zeroshot": model.config(), "limit": cfg.get("limit")})
    return JobOutcome(rows=rows)


JOB_KINDS.add("vqa-train", JobKind("vqa-train", "medvqa", run_train,
                                   "train a Med-VQA library model on a task's training split, score its evaluation "
                                   "split with real, blank and shuffled images", _validate_train))
JOB_KINDS.add("vqa-eval", JobKind("vqa-eval", "medvqa", run_eval,
                                  "score a trained Med-VQA model on tasks' evaluation splits", _validate_eval))
JOB_KINDS.add("vqa-zeroshot", JobKind("vqa-zeroshot", "medvqa", run_zeroshot,
                                      "score a Hugging Face LLaVA-style model zero-shot (closed answers constrained "
                                      "to candidates)", _validate_zeroshot))
JOB_KINDS.add("vqa-baseline", JobKind("vqa-baseline", "medvqa", run_baseline,
                                      "fit a Med-VQA baseline on a task's training split, score its evaluation split",
                                      _validate))
