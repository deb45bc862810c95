"""One record type for every Med-VQA dataset: a question about an image, its answer and the labels benchmarks use.

Loaders (datasets.py) turn each layout (VQA-RAD's MEVF JSON and official release JSON, SLAKE, PathVQA, VQA-Med-2019,
the dataset tool's exports) into ``VQARecord`` lists; everything downstream (splits, baselines, models, metrics)
reads only these fields. It does not read files or normalise answers (normalize.py does).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

CLOSED, OPEN = "CLOSED", "OPEN"


@dataclass(frozen=True)
class VQARecord:
    qid: str  # unique within a dataset (across its splits)
    image: str  # image reference: a file name relative to the dataset's image folder (or an absolute path)
    question: str
    answer: str  # as released (not normalised); normalize.normalize_answer gives the scored form
    answer_type: str  # CLOSED or OPEN, from the dataset's field (stripped, upper-cased)
    question_type: str = ""  # canonical type (PRES, POS, ABN, SIZE, ...): first comma token, typos mapped
    organ: str = ""  # e.g. HEAD, CHEST, ABD
    phrase_type: str = ""  # VQA-RAD: freeform, para, frame
    split: str = "train"
    dataset: str = ""
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def closed(self) -> bool:
        return self.answer_type == CLOSED
