"""The record types of the dataset tool: a case, its images, the concepts found in its report, and the QA pairs.

Every type is a plain dataclass that round-trips through JSON (``to_json`` / ``from_json``), so that a project
folder (project.py) stores them as JSON lines and the web app sends them as they are. Review status lives in the
review log (review.py), not in these records: a record is what the pipeline produced, a decision is what a person
made of it. It does not read images or run any NLP.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Callable

# A step's progress callback: (items done, items in all), called after each item (case, image); never raises here.
Progress = Callable[[int, int], None]

# concept categories the extractor emits and the QA generator reads
CATEGORIES = ("modality", "plane", "organ", "finding", "laterality", "location", "size", "count")
# question types of generated QA pairs (VQA-RAD's canonical names, so that per-type tables line up)
QUESTION_TYPES = ("MODALITY", "PLANE", "ORGAN", "PRES", "ABN", "POS", "SIZE", "COUNT")
STATUSES = ("pending", "accepted", "edited", "rejected")


class _JSON:
    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, row: dict[str, Any]):
        known = {f.name for f in fields(cls)}
        unknown = set(row) - known
        if unknown:
            raise ValueError(f"{cls.__name__}: unknown field(s) {', '.join(sorted(unknown))}")
        return cls(**row)


@dataclass
class CaseImage(_JSON):
    image_id: str  # unique within the project, e.g. "case7-1"
    file: str  # path relative to the project's images/ folder (a name embedlab chose, never the upload's path)
    source: str  # where it came from: the original name inside the upload (for people, never used as a path)
    format: str  # "png", "jpeg", "dicom"
    width: int = 0
    height: int = 0
    metadata: dict[str, Any] = field(default_factory=dict)  # DICOM: Modality, BodyPartExamined, ... (no PHI)


@dataclass
class Case(_JSON):
    case_id: str  # unique within the project
    report: str  # report / EMR text (UTF-8)
    images: list[CaseImage] = field(default_factory=list)
    patient: str = ""  # patient id when given (export can split by patient)
    source: str = ""  # upload it came from
    metadata: dict[str, Any] = field(default_factory=dict)  # from the metadata CSV/JSON (and IU X-ray: MeSH, ...)

    @classmethod
    def from_json(cls, row: dict[str, Any]) -> Case:
        row = dict(row)
        row["images"] = [CaseImage.from_json(i) if isinstance(i, dict) else i for i in row.get("images", [])]
        return super().from_json(row)


@dataclass
class Concept(_JSON):
    concept_id: str  # unique within the project, e.g. "case7-c3"
    case_id: str
    category: str  # one of CATEGORIES
    value: str  # the canonical lexicon term, e.g. "pleural effusion", "ct", "left"
    text: str  # the words as written in the report
    start: int  # character offsets of ``text`` in the case's report
    end: int
    negated: bool = False
    confidence: float = 1.0  # 0..1: how sure the rules are (lexicon synonym vs. pattern; hedged mentions lower)
    attributes: dict[str, Any] = field(default_factory=dict)  # e.g. {"laterality": "left", "size_mm": 12.0}
    rule: str = ""  # which lexicon entry or pattern produced it (for review and debugging)
    heading: str = ""  # for findings: the MeSH heading it maps to (IU X-ray evaluation), when the lexicon has one


@dataclass
class QAPair(_JSON):
    qa_id: str  # unique within the project
    case_id: str
    image_id: str
    question: str
    answer: str
    answer_type: str  # "CLOSED" or "OPEN"
    question_type: str  # one of QUESTION_TYPES
    concept_ids: list[str] = field(default_factory=list)  # the concepts it was generated from
    spans: list[list[int]] = field(default_factory=list)  # [start, end] of those concepts in the report
    template: str = ""  # which template / variant produced the question
    generated_by: str = "template"  # "template", or "paraphrase:<model>" after the paraphrase hook
    negative: bool = False  # a presence question about a finding the report does not mention (answer "no")
    organ: str = ""  # VQA-RAD's image_organ (HEAD, CHEST, ABD, ...) when known
    flags: list[str] = field(default_factory=list)  # e.g. "no-image": generated from text where no image exists


@dataclass
class Decision(_JSON):
    """One reviewer's decision on one concept or QA pair (review.py appends these; the latest one counts)."""
    kind: str  # "concept" or "qa"
    item_id: str
    status: str  # accepted / edited / rejected
    reviewer: str
    time: str  # ISO 8601, UTC
    edit: dict[str, Any] = field(default_factory=dict)  # for "edited": the changed fields and their new values
    note: str = ""
