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

from ..registry import Registry
from ..results import register_task_type

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
