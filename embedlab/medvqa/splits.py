"""Fixed splits carved from VQA-RAD's train file (MEVF layout, 3064 questions), shipped as qid lists.

The standard test split is kept back, and choosing anything on it is a leak, so models are selected on splits
carved from train. Two are shipped in ``embedlab/medvqa/split_lists/`` (package data) and reproduced exactly by the
generators here (a test checks it):

``vqa-rad-val.json`` -- a validation split that behaves like the test (``val-train`` / ``val``):
  1. the candidates are train's freeform and paraphrased questions (the test has no templated ``frame`` rows);
  2. 20 % of them are held out, stratified by answer type (CLOSED/OPEN), each question ranked by
     ``sha256("<seed>:<qid>")`` (no RNG: the same on every platform and Python version);
  3. twins of a held-out question -- other rows on the same image whose question is the same text up to case,
     punctuation and white space (mostly identical frames; the train file has 493 duplicate (image, question) rows)
     -- are kept out of ``val-train`` (they go to ``dropped``, in neither part), so a held-out question is never
     answered by its own copy. Frames and paraphrases worded differently stay in ``val-train``, as the test's do in
     the standard train file.
``vqa-rad-image-disjoint.json`` -- a harder benchmark (``image-train`` / ``image-val``): 20 % of the 314 images,
  stratified by organ and ranked by ``sha256("<seed>:<image>")``, are held out; ``image-val`` is their freeform and
  paraphrased questions, ``image-train`` every row on the other images; frames on held-out images are dropped. No
  image is in both parts.

Each file records the method, seed, fraction, the three qid lists and the measured properties (counts, closed/open,
fraction of validation answers unseen in the training part, fraction of (image, answer) pairs seen). Regenerate with
``python -m embedlab.medvqa.regenerate_splits`` (only needed if the method changes; ``--check`` compares without
writing).

It does not read data files (datasets.py loads ``trainset.json`` and calls ``apply_split``; regenerate_splits.py
reads it for the generators), and it does not split other datasets (they ship their own validation splits).
"""
from __future__ import annotations

import functools
import hashlib
import json
import re
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Iterable

from ..errors import DataError, UnknownChoiceError
from .normalize import normalize_answer
from .records import CLOSED, VQARecord

SPLITS_DIR = Path(__file__).resolve().parent / "split_lists"
SPLIT_FILES = {"val": "vqa-rad-val.json", "image": "vqa-rad-image-disjoint.json"}
# split name -> (which shipped file, which part)
DERIVED_SPLITS = {"val-train": ("val", "train"), "val": ("val", "val"),
                  "image-train": ("image", "train"), "image-val": ("image", "val")}
HELD_OUT_PHRASES = ("freeform", "para")
FRACTION, SEED = 0.2, 0


def question_key(question: str) -> str:
    """The question up to case, punctuation and white space (what makes two rows twins)."""
    return " ".join(re.sub(r"[^\w]+", " ", question.lower()).split())


def twin_key(record: VQARecord) -> tuple[str, str]:
    return record.image, question_key(record.question)


def _rank(seed: int, key: str) -> str:
    return hashlib.sha256(f"{seed}:{key}".encode("utf-8")).hexdigest()


def _qid_order(qid: str) -> tuple[int, int | str]:
    return (0, int(qid)) if qid.isdigit() else (1, qid)


def _sorted_qids(records: Iterable[VQARecord]) -> list[str]:
    return sorted((r.qid for r in records), key=_qid_order)


def _take(items: list, fraction: float) -> list:
    return items[:round(fraction * len(items))]


def split_properties(train: list[VQARecord], val: list[VQARecord], dropped: list[VQARecord] = ()) -> dict:
    """Counts and the two numbers that say whether a validation split behaves like the test: the fraction of
    validation answers (normalised) never seen in the training part, and the fraction of validation (image, answer)
    pairs that occur in the training part."""
    def part(records: list[VQARecord]) -> dict:
        closed = sum(r.answer_type == CLOSED for r in records)
        return {"questions": len(records), "closed": closed, "open": len(records) - closed,
                "images": len({r.image for r in records}),
                "phrase_types": dict(sorted(Counter(r.phrase_type for r in records).items()))}

    answers = {normalize_answer(r.answer) for r in train}
    pairs = {(r.image, normalize_answer(r.answer)) for r in train}
    n = max(len(val), 1)
    return {
        "train": part(train), "val": part(val), "dropped": part(list(dropped)),
        "shared_images": len({r.image for r in val} & {r.image for r in train}),
        "val_answers_unseen_in_train": round(sum(normalize_answer(r.answer) not in answers for r in val) / n, 4),
        "val_image_answer_pairs_seen_in_train":
            round(sum((r.image, normalize_answer(r.answer)) in pairs for r in val) / n, 4),
        "val_yes_no_answers": sum(normalize_answer(r.answer) in ("yes", "no") for r in val),
    }


def _check_unique(records: list[VQARecord]) -> None:
    counts = Counter(r.qid for r in records)
    dup = [q for q, c in counts.items() if c > 1]
    if dup:
        raise DataError(f"qids must be unique to carve a split; duplicated: {', '.join(dup[:5])}")


def _document(name: str, method: str, seed: int, fraction: float, records: list[VQARecord], val_ids: set[str],
              dropped_ids: set[str]) -> dict:
    val = [r for r in records if r.qid in val_ids]
    dropped = [r for r in records if r.qid in dropped_ids]
    train = [r for r in records if r.qid not in val_ids and r.qid not in dropped_ids]
    return {"name": name, "dataset": "vqa-rad", "source": f"trainset.json (MEVF layout, {len(records)} questions)",
            "method": method, "seed": seed, "fraction": fraction,
            "properties": split_properties(train, val, dropped),
            "val": _sorted_qids(val), "train": _sorted_qids(train), "dropped": _sorted_qids(dropped)}


def validation_split(records: list[VQARecord], *, fraction: float = FRACTION, seed: int = SEED) -> dict:
    """The test-like validation split of VQA-RAD train (module docstring): a document with ``val``, ``train``,
    ``dropped`` qid lists and the measured ``properties``."""
    _check_unique(records)
    candidates = [r for r in records if r.phrase_type in HELD_OUT_PHRASES]
    val_ids: set[str] = set()
    for answer_type in sorted({r.answer_type for r in candidates}):
        stratum = sorted((r for r in candidates if r.answer_type == answer_type), key=lambda r: _rank(seed, r.qid))
        val_ids.update(r.qid for r in _take(stratum, fraction))
    held_keys = {twin_key(r) for r in records if r.qid in val_ids}
    dropped_ids = {r.qid for r in records if r.qid not in val_ids and twin_key(r) in held_keys}
    method = (f"hold out {fraction:.0%} of the freeform+para questions, stratified by answer type, ranked by "
              f"sha256('<seed>:<qid>'); rows on the same image with the same question text (case, punctuation and "
              f"white space ignored) as a held-out question are dropped from train")
    return _document("vqa-rad-val", method, seed, fraction, records, val_ids, dropped_ids)


def image_disjoint_split(records: list[VQARecord], *, fraction: float = FRACTION, seed: int = SEED) -> dict:
    """The image-disjoint split (module docstring): no image in both parts."""
    _check_unique(records)
    organ_of: dict[str, str] = {}
    for r in records:
        organ_of.setdefault(r.image, r.organ)
    held: set[str] = set()
    for organ in sorted(set(organ_of.values())):
        images = sorted((i for i, o in organ_of.items() if o == organ), key=lambda i: _rank(seed, i))
        held.update(_take(images, fraction))
    val_ids = {r.qid for r in records if r.image in held and r.phrase_type in HELD_OUT_PHRASES}
    dropped_ids = {r.qid for r in records if r.image in held and r.qid not in val_ids}
    method = (f"hold out {fraction:.0%} of the images, stratified by organ, ranked by sha256('<seed>:<image>'); "
              f"val = their freeform+para questions, train = every row on the other images, frames on held-out "
              f"images dropped")
    return _document("vqa-rad-image-disjoint", method, seed, fraction, records, val_ids, dropped_ids)


GENERATORS = {"val": validation_split, "image": image_disjoint_split}


def generate(records: list[VQARecord]) -> dict[str, dict]:
    """Both shipped documents, computed from VQA-RAD's train records (kind -> document)."""
    return {kind: make(records) for kind, make in GENERATORS.items()}


@functools.lru_cache(maxsize=None)
def _shipped_text(kind: str) -> str:
    path = SPLITS_DIR / SPLIT_FILES[kind]
    if not path.is_file():
        raise DataError("the shipped split file is missing from the package (reinstall embedlab)", path)
    return path.read_text(encoding="utf-8")


def shipped_split(kind: str) -> dict:
    """The shipped document of ``kind`` (``val`` or ``image``)."""
    if kind not in SPLIT_FILES:
        raise UnknownChoiceError("shipped VQA-RAD split", kind, SPLIT_FILES)
    return json.loads(_shipped_text(kind))


def apply_split(records: list[VQARecord], split: str, *, source: str | Path | None = None) -> list[VQARecord]:
    """The records of a derived split (``val-train``, ``val``, ``image-train``, ``image-val``) of VQA-RAD's train
    records, relabelled with that split name, in file order. DataError when the records are not the train file
    the split was carved from (a qid it lists is missing, or the counts differ)."""
    if split not in DERIVED_SPLITS:
        raise UnknownChoiceError("derived VQA-RAD split", split, DERIVED_SPLITS)
    kind, part = DERIVED_SPLITS[split]
    doc = shipped_split(kind)
    listed = set(doc["val"]) | set(doc["train"]) | set(doc["dropped"])
    have = {r.qid for r in records}
    missing = listed - have
    if missing or len(listed) != len(have):
        raise DataError(f"split {split!r} was carved from VQA-RAD's standard trainset.json ({len(listed)} "
                        f"questions); these records differ ({len(have)} questions"
                        + (f", {len(missing)} listed qids missing, e.g. {sorted(missing, key=_qid_order)[:3]}"
                           if missing else "") + ")", source or SPLITS_DIR / SPLIT_FILES[kind])
    keep = set(doc[part])
    return [replace(r, split=split) for r in records if r.qid in keep]

