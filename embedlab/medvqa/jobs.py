"""The Med-VQA domain's job kinds (embedlab.jobkinds): today ``vqa-baseline``; the model library adds its own.

``vqa-baseline``: fit a registered baseline (``model``: majority, question-only, image-identity) on each task's
training split and score it on the task's evaluation split. The job's ``config``::

    closed_by: field | yesno      # closed/open by the dataset's answer_type field (default) or by a yes/no answer
    questions: all | freeform     # score every question (default) or the freeform ones only (MEVF's convention)

Both conventions change numbers, so they are part of the job's configuration and recorded with every row. Rows are
``task_type = "vqa"`` (x100 on display), one per score (closed, open, overall = main_score, per type and organ, open
token recall / F1 / BLEU-1, unseen fraction), with the counts in ``extra``; per-item correctness goes to
``<output_dir>/items/<task>.json``. It never imports the text domain.
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


def _validate(spec: JobSpec) -> None:
    from .baselines import BASELINES
    from .tasks import TASKS

    if not spec.tasks:
        raise ConfigError(f"job {spec.name}: no tasks (Med-VQA tasks: {', '.join(TASKS.names())})")
    for name in spec.tasks:
        TASKS.get(name)
    BASELINES.get(spec.model or "")
    unknown = set(spec.config) - CONFIG_KEYS
    if unknown:
        raise ConfigError(f"job {spec.name}: config: unknown key(s) {', '.join(sorted(unknown))} (known: "
                          f"{', '.join(sorted(CONFIG_KEYS))})")
    if spec.config.get("closed_by", "field") not in ("field", "yesno"):
        raise ConfigError(f"job {spec.name}: config.closed_by must be field or yesno")
    if spec.config.get("questions", "all") not in ("all", "freeform"):
        raise ConfigError(f"job {spec.name}: config.questions must be all or freeform")


def run_baseline(spec: JobSpec, ctx: JobContext) -> JobOutcome:
    from .baselines import BASELINES
    from .datasets import load_dataset
    from .metrics import score
    from .tasks import TASKS

    closed_by = spec.config.get("closed_by", "field")
    questions = spec.config.get("questions", "all")
    rows, items = [], {}
    for i, name in enumerate(spec.tasks):
        task = TASKS.get(name)
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


JOB_KINDS.add("vqa-baseline", JobKind("vqa-baseline", "medvqa", run_baseline,
                                      "fit a Med-VQA baseline on a task's training split, score its evaluation split",
                                      _validate))
