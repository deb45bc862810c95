"""Med-VQA evaluation tasks: a task is data (name, dataset, the split a model trains on, the split it is scored on).

    TASKS.get("vqa-rad-val")    # train on VQA-RAD's val-train, score on val (the shipped validation split)

Every task pairs a training split with the split it is scored on, so that no model sees its evaluation questions:
``vqa-rad-val`` (the validation split that behaves like the test: model and checkpoint selection), ``vqa-rad-image``
(the image-disjoint split: no evaluation image is seen in training) and ``vqa-rad-test`` (the standard test split,
kept back from the mirror: it loads when a user's data root has it; report it, never tune on it). It does not load
or score anything (datasets.py, metrics.py).
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError
from ..registry import Registry
from ..results import register_task_type
from .export_registry import registered_exports

TASK_TYPE = "vqa"
register_task_type(TASK_TYPE, 100.0)  # accuracies are fractions, shown x100


@dataclass(frozen=True)
class VQATask:
    name: str
    dataset: str  # a name in embedlab.medvqa.datasets.DATASETS
    train_split: str
    eval_split: str
    description: str = ""
    type: str = TASK_TYPE  # the task type of its result rows (display scale x100, registered in metrics.py)


TASKS: Registry[VQATask] = Registry("Med-VQA task")
for _task in (
    VQATask("vqa-rad-val", "vqa-rad", "val-train", "val",
            "VQA-RAD validation split (359 questions held out of train, twins kept out): for selection"),
    VQATask("vqa-rad-image", "vqa-rad", "image-train", "image-val",
            "VQA-RAD image-disjoint split (361 questions on 62 images never seen in training): the harder benchmark"),
    VQATask("vqa-rad-test", "vqa-rad", "train", "test",
            "VQA-RAD standard test (451 questions; kept back from the mirror, loads when present): report only"),
):
    TASKS.add(_task.name, _task)


def export_task(name: str, entry: dict) -> VQATask:
    """The task of a registered export: train on its train split, score its val split (selection happens there;
    its test split is the user's to report)."""
    splits = entry.get("splits") or []
    if "train" not in splits or "val" not in splits:
        raise ConfigError(f"the registered export {name!r} ({entry.get('path')}) has splits "
                          f"{', '.join(splits) or 'none'}; a task needs train and val (export it with a val "
                          f"fraction above 0)")
    return VQATask(name, name, "train", "val", f"dataset-tool export {name}: trained on train, scored on val "
                   f"({entry.get('path')})")


def resolve_task(name: str) -> VQATask:
    """A registered task, else a dataset-tool export registered under ``name``; anything else is refused with the
    names of both."""
    if name in TASKS:
        return TASKS.get(name)
    exports = registered_exports()
    if name in exports:
        return export_task(name, exports[name])
    raise ConfigError(f"unknown Med-VQA task {name!r}; tasks: {', '.join(TASKS.names())}; registered exports: "
                      f"{', '.join(sorted(exports)) or 'none'}")


def all_tasks() -> list[VQATask]:
    """Every registered task, then every registered export that can be one (train and val splits)."""
    found = [t for _, t in TASKS.items()]
    for name, entry in sorted(registered_exports().items()):
        if name not in TASKS:
            try:
                found.append(export_task(name, entry))
            except ConfigError:
                continue  # an export without val: listed by `embedlab vqa-data list`, not trainable as a task
    return found
