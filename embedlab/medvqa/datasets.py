"""Med-VQA datasets: a registry (name -> layout, folder under the data root, splits) and one reader per layout.

Every reader returns ``list[VQARecord]`` (records.py); answers are kept as released (normalize.py gives the scored
form), labels are canonicalised (answer type stripped and upper-cased, question type's first token with typos mapped).

| name               | under ``<data root>/medvqa/`` | layout (reader)                                                 |
|--------------------|-------------------------------|-----------------------------------------------------------------|
| `vqa-rad`          | `vqa-rad/`                    | MEVF JSON: `trainset.json`, `testset.json` (kept back from the  |
|                    |                               | shared mirror), `images/` (``read_mevf_json``)                  |
| `vqa-rad-official` | `vqa-rad/`                    | the official release JSON (``read_vqa_rad_official``)           |
| `slake`            | `slake/`                      | SLAKE 1.0 JSON, English subset by default, `imgs/`              |
| `pathvqa`          | `pathvqa/`                    | `qas/<split>/<split>_qa.pkl` (or `.json`), `images/<split>/`    |
| `vqa-med-2019`     | `vqa-med-2019/`               | ImageCLEF pipe files `QAPairsByCategory/C1_Modality_train.txt`  |

VQA-RAD (`vqa-rad`) also has derived splits carved from its train file (splits.py): `val-train`/`val` (a validation
split that behaves like the test) and `image-train`/`image-val` (image-disjoint). A folder written by the dataset
tool (an export in the MEVF JSON layout: `<split>set.json` + `images/`) loads with ``load_export`` or by passing its
path as the dataset name to ``load_dataset``.

Bad input: a missing or unreadable file is always a ``DataError`` naming the file. A bad record (a required field
missing or empty, an answer type other than CLOSED/OPEN, a duplicate qid, an image file that is not there) is a
``DataError`` naming the file, the record (qid and position, or line) and the field; with ``skip_bad_rows=True`` it
is skipped and counted instead (one warning per file on the ``embedlab.medvqa`` logger; pass your own
``BadRows(skip=True)`` to read the counts). A file with no usable record is a ``DataError``.

Images are checked when ``check_images`` is True, or (the default, None) when the dataset's image folder exists:
SLAKE's images are not in the offline mirror, so its records load image-free. This module does not decode images
(images.py), normalise answers (normalize.py) or choose evaluation conventions (metrics.py takes them).
"""
from __future__ import annotations

import json
import logging
import os
import pickle
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Collection

from ..badrows import BadRow, BadRows
from ..errors import DataError, UnknownChoiceError
from .. import settings
from ..registry import Registry
from .export_registry import registered_export_path, registered_folder
from .normalize import canonical_answer_type, canonical_question_type, normalize_answer
from .records import CLOSED, OPEN, VQARecord

log = logging.getLogger("embedlab.medvqa")


# --------------------------------------------------------------------------------------------------- bad records


def _require_records(records: list, path: Path, bad: BadRows) -> None:
    if records:
        return
    skipped = bad.by_file.get(str(path), 0)
    why = f"all {skipped} record(s) were skipped as bad" if skipped else "the file holds no records"
    raise DataError(f"no Med-VQA records to load ({why})", path)


# --------------------------------------------------------------------------------------------------- field checks


def _text(row: dict, name: str, *, required: bool = True, aliases: tuple[str, ...] = ()) -> str:
    """A string field (ints and floats are cast: VQA-RAD has integer answers); required ones must be non-empty."""
    for key in (name, *aliases):
        if key in row:
            value = row[key]
            break
    else:
        if required:
            raise BadRow("is missing", name)
        return ""
    if value is None or isinstance(value, bool) or not isinstance(value, (str, int, float)):
        if required:
            raise BadRow(f"must be a string, got {type(value).__name__}", name)
        return ""
    text = str(value)
    if required and not text.strip():
        raise BadRow("is empty", name)
    return text


def _answer_type(row: dict, name: str = "answer_type") -> str:
    value = canonical_answer_type(_text(row, name))
    if value not in (CLOSED, OPEN):
        raise BadRow(f"must be CLOSED or OPEN, got {row.get(name)!r}", name)
    return value


def _yes_no_type(answer: str) -> str:
    """CLOSED for yes/no answers: for layouts without an answer-type field (PathVQA, VQA-Med-2019)."""
    return CLOSED if normalize_answer(answer) in ("yes", "no") else OPEN


class _Images:
    """Resolves image references against one folder and (optionally) checks that each file exists."""

    def __init__(self, folder: Path | None, check: bool | None):
        self.folder = Path(folder) if folder is not None else None
        self.check = bool(check) if check is not None else bool(self.folder is not None and self.folder.is_dir())

    def require(self, name: str, field_name: str) -> None:
        if not self.check:
            return
        path = Path(name) if os.path.isabs(name) or self.folder is None else self.folder / name
        if not path.is_file():
            raise BadRow(f"image file {path} not found", field_name)

    def extra(self) -> dict[str, str]:
        return {"image_dir": str(self.folder)} if self.folder is not None else {}


def image_path(record: VQARecord, image_dir: str | Path | None = None) -> Path:
    """Where the record's image file is: absolute references as given, else under ``image_dir`` or the folder the
    loader recorded in ``record.extra["image_dir"]``."""
    if os.path.isabs(record.image):
        return Path(record.image)
    folder = image_dir if image_dir is not None else record.extra.get("image_dir")
    return Path(folder) / record.image if folder is not None else Path(record.image)


def _read_json(path: Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise DataError("file not found" if not path.exists() else "not a regular file", path)
    try:
        with open(path, encoding="utf-8-sig") as f:
            return json.load(f)
    except json.JSONDecodeError as exc:
        raise DataError(f"not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})", path, exc.lineno) \
            from None
    except UnicodeDecodeError as exc:
        raise DataError(f"not UTF-8 text: {exc}", path) from None
    except OSError as exc:
        raise DataError(f"cannot read: {exc.strerror or exc}", path) from None


def _json_records(path: Path) -> list:
    data = _read_json(path)
    if not isinstance(data, list):
        raise DataError(f"expected a JSON list of question records, got a JSON {type(data).__name__}", path)
    return data


def _where(index: int, row: Any, qid_field: str = "qid") -> str:
    qid = row.get(qid_field) if isinstance(row, dict) else None
    return f"record {index}" + (f" (qid {qid})" if qid is not None else "")


# --------------------------------------------------------------------------------------------------- readers


def read_mevf_json(path: str | Path, *, split: str = "train", dataset: str = "vqa-rad",
                   image_dir: str | Path | None = None, skip_bad_rows: bool | BadRows = False,
                   check_images: bool | None = None) -> list[VQARecord]:
    """VQA-RAD in the MEVF layout (trainset.json / testset.json; also the dataset tool's exports): a JSON list of
    ``{qid, image_name, image_organ, answer, answer_type, question_type, question, phrase_type}``. Required: qid,
    image_name, question, answer, answer_type; the rest may be absent. ``image_dir`` defaults to ``images/`` next
    to the file."""
    path = Path(path)
    bad = BadRows.coerce(skip_bad_rows)
    images = _Images(Path(image_dir) if image_dir is not None else path.parent / "images", check_images)
    records: list[VQARecord] = []
    seen: set[str] = set()
    for index, row in enumerate(_json_records(path), 1):
        with bad.guard(path, where=_where(index, row)):
            if not isinstance(row, dict):
                raise BadRow(f"expected a JSON object, got {type(row).__name__}")
            qid = _text(row, "qid")
            if qid in seen:
                raise BadRow(f"duplicate qid {qid!r}", "qid")
            image = _text(row, "image_name")
            record = VQARecord(
                qid=qid, image=image, question=_text(row, "question"), answer=_text(row, "answer"),
                answer_type=_answer_type(row), question_type=canonical_question_type(row.get("question_type")),
                organ=_text(row, "image_organ", required=False).strip().upper(),
                phrase_type=_text(row, "phrase_type", required=False).strip().lower(), split=split, dataset=dataset,
                extra={**images.extra(), "raw_question_type": row.get("question_type")})
            images.require(image, "image_name")
            seen.add(qid)
            records.append(record)
    bad.report(path, "record")
    _require_records(records, path, bad)
    return records


OFFICIAL_NULL = "NULL"


def read_vqa_rad_official(path: str | Path, *, split: str = "train", frames: bool = False,
                          image_dir: str | Path | None = None, skip_bad_rows: bool | BadRows = False,
                          check_images: bool | None = None) -> list[VQARecord]:
    """VQA-RAD's official release JSON (``VQA_RAD Dataset Public.json``; the mirror's ``vqa_rad_public_train_rows.json``
    holds its train rows): one row per freeform or paraphrased question with ``qid, phrase_type, qid_linked_id,
    image_case_url, image_name, image_organ, evaluation, question, question_rephrase, question_relation,
    question_frame, question_type, answer, answer_type`` ("NULL" for absent texts).

    The split is in ``phrase_type``: ``freeform``/``para`` are train, ``test_freeform``/``test_para`` are the
    standard 451-question test; records carry the phrase type without the ``test_`` prefix. ``split="all"`` keeps
    both. ``frames=True`` adds each row's templated ``question_frame`` as a record of phrase type ``frame`` (qid
    ``<qid>-frame``), as MEVF's trainset.json does. The row's links (``qid_linked_id``, rephrase, relation, frame,
    evaluation, case URL) go to ``extra``."""
    path = Path(path)
    if split not in ("train", "test", "all"):
        raise DataError(f"split must be train, test or all, got {split!r}", path)
    bad = BadRows.coerce(skip_bad_rows)
    images = _Images(Path(image_dir) if image_dir is not None else _official_image_dir(path.parent), check_images)
    records: list[VQARecord] = []
    seen: set[str] = set()
    for index, row in enumerate(_json_records(path), 1):
        with bad.guard(path, where=_where(index, row)):
            if not isinstance(row, dict):
                raise BadRow(f"expected a JSON object, got {type(row).__name__}")
            qid = _text(row, "qid")
            if qid in seen:
                raise BadRow(f"duplicate qid {qid!r}", "qid")
            phrase = _text(row, "phrase_type").strip().lower()
            row_split = "test" if phrase.startswith("test_") else "train"
            phrase = phrase.removeprefix("test_")
            if phrase not in ("freeform", "para"):
                raise BadRow(f"must be freeform, para, test_freeform or test_para, got {row['phrase_type']!r}",
                                "phrase_type")
            image = _text(row, "image_name")
            answer, answer_type = _text(row, "answer"), _answer_type(row)
            extra = {**images.extra(), "raw_question_type": row.get("question_type")}
            for key in ("qid_linked_id", "question_rephrase", "question_relation", "question_frame", "evaluation",
                        "image_case_url"):
                value = row.get(key)
                if value is not None and value != OFFICIAL_NULL:
                    extra[key] = value
            seen.add(qid)
            if split != "all" and row_split != split:
                continue
            images.require(image, "image_name")
            common = dict(image=image, answer=answer, answer_type=answer_type,
                          question_type=canonical_question_type(row.get("question_type")),
                          organ=_text(row, "image_organ", required=False).strip().upper(), split=row_split,
                          dataset="vqa-rad-official")
            records.append(VQARecord(qid=qid, question=_text(row, "question"), phrase_type=phrase, extra=extra,
                                     **common))
            if frames and extra.get("question_frame", "").strip():
                records.append(VQARecord(qid=f"{qid}-frame", question=extra["question_frame"], phrase_type="frame",
                                         extra={**extra, "frame_of": qid}, **common))
    bad.report(path, "record")
    _require_records(records, path, bad)
    return records


def _official_image_dir(folder: Path) -> Path:
    for name in ("images", "VQA_RAD Image Folder"):
        if (folder / name).is_dir():
            return folder / name
    return folder / "images"


def read_slake_json(path: str | Path, *, split: str = "train", language: str | None = "en",
                    image_dir: str | Path | None = None, skip_bad_rows: bool | BadRows = False,
                    check_images: bool | None = None, drop_qids: Collection[str] = ()) -> list[VQARecord]:
    """SLAKE 1.0 (train.json / validate.json / test.json): a JSON list of ``{img_id, img_name, question, answer,
    q_lang, location, modality, answer_type, base_type, content_type, triple, qid}``. ``language="en"`` keeps the
    English questions (SLAKE-EN; ``None`` keeps all). closed/open from ``answer_type``; question type from
    ``content_type`` (upper-cased); organ from ``location``; modality, base type, triple and image id go to
    ``extra``. ``img_name`` (``xmlab1/source.jpg``) is relative to ``imgs/`` next to the file. ``drop_qids`` are
    left out before any check (the registry passes SLAKE_KNOWN_BAD: the release's known defects)."""
    path = Path(path)
    bad = BadRows.coerce(skip_bad_rows)
    images = _Images(Path(image_dir) if image_dir is not None else path.parent / "imgs", check_images)
    records: list[VQARecord] = []
    seen: set[str] = set()
    for index, row in enumerate(_json_records(path), 1):
        with bad.guard(path, where=_where(index, row)):
            if not isinstance(row, dict):
                raise BadRow(f"expected a JSON object, got {type(row).__name__}")
            qid = _text(row, "qid")
            if qid in seen:
                raise BadRow(f"duplicate qid {qid!r}", "qid")
            if qid in drop_qids:
                seen.add(qid)
                log.info("%s: record %d (qid %s) left out: %s", path, index, qid, drop_qids[qid]
                         if isinstance(drop_qids, dict) else "listed in drop_qids")
                continue
            lang = _text(row, "q_lang").strip().lower()
            seen.add(qid)
            if language is not None and lang != language:
                continue
            image = _text(row, "img_name")
            record = VQARecord(
                qid=qid, image=image, question=_text(row, "question"), answer=_text(row, "answer"),
                answer_type=_answer_type(row), question_type=canonical_question_type(row.get("content_type")),
                organ=_text(row, "location", required=False).strip(), split=split, dataset="slake",
                extra={**images.extra(), "q_lang": lang, "modality": row.get("modality"),
                       "base_type": row.get("base_type"), "triple": row.get("triple"), "img_id": row.get("img_id")})
            images.require(image, "img_name")
            records.append(record)
    bad.report(path, "record")
    _require_records(records, path, bad)
    return records


class _PlainUnpickler(pickle.Unpickler):
    """Unpickles lists, dicts, strings and numbers only: a data file must not be able to run code."""

    def find_class(self, module: str, name: str):  # noqa: D401
        raise pickle.UnpicklingError(f"holds a {module}.{name} object; only lists, dicts, strings and numbers are "
                                     f"read (convert it to JSON)")


def _read_pickle(path: Path) -> Any:
    if not path.is_file():
        raise DataError("file not found" if not path.exists() else "not a regular file", path)
    try:
        with open(path, "rb") as f:
            return _PlainUnpickler(f).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as exc:
        raise DataError(f"not a readable pickle: {exc}", path) from None
    except OSError as exc:
        raise DataError(f"cannot read: {exc.strerror or exc}", path) from None


PATHVQA_TYPES = {"yes/no": CLOSED, "closed": CLOSED, "other": OPEN, "open": OPEN}


def read_pathvqa(path: str | Path, *, split: str = "train", image_dir: str | Path | None = None,
                 image_suffix: str = ".jpg", skip_bad_rows: bool | BadRows = False,
                 check_images: bool | None = None) -> list[VQARecord]:
    """PathVQA's QA files as released (``qas/<split>/<split>_qa.pkl``; a ``.json`` with the same content is read
    too): a list of ``{image, question, answer}`` where ``image`` is a file stem (``train_0422``) under
    ``images/<split>/`` with ``image_suffix``. PathVQA has no answer-type field in that file: yes/no answers are
    CLOSED, the rest OPEN (an ``answer_type`` of ``yes/no``/``other`` or CLOSED/OPEN is used when present). The
    qid is ``<split>-<position>``. Pickles are read with an unpickler that refuses any class (no code runs)."""
    path = Path(path)
    bad = BadRows.coerce(skip_bad_rows)
    default_dir = path.parent.parent.parent / "images" / split
    images = _Images(Path(image_dir) if image_dir is not None else default_dir, check_images)
    rows = _read_pickle(path) if path.suffix == ".pkl" else _read_json(path)
    if not isinstance(rows, list):
        raise DataError(f"expected a list of question records, got {type(rows).__name__}", path)
    records: list[VQARecord] = []
    for index, row in enumerate(rows, 1):
        qid = f"{split}-{index - 1}"
        with bad.guard(path, where=f"record {index} (qid {qid})"):
            if not isinstance(row, dict):
                raise BadRow(f"expected a mapping, got {type(row).__name__}")
            stem = _text(row, "image", aliases=("image_name", "img_id"))
            answer = _text(row, "answer")
            raw_type = str(row.get("answer_type") or "").strip()
            if raw_type:
                answer_type = PATHVQA_TYPES.get(raw_type.lower())
                if answer_type is None:
                    raise BadRow(f"must be yes/no, other, CLOSED or OPEN, got {raw_type!r}", "answer_type")
            else:
                answer_type = _yes_no_type(answer)
            image = stem if Path(stem).suffix else stem + image_suffix
            record = VQARecord(qid=qid, image=image, question=_text(row, "question"), answer=answer,
                               answer_type=answer_type, split=split, dataset="pathvqa",
                               extra={**images.extra(), "answer_type_from": "field" if raw_type else "yes/no"})
            images.require(image, "image")
            records.append(record)
    bad.report(path, "record")
    _require_records(records, path, bad)
    return records


VQA_MED_2019_CATEGORIES = {"C1": ("Modality", "MODALITY"), "C2": ("Plane", "PLANE"), "C3": ("Organ", "ORGAN"),
                           "C4": ("Abnormality", "ABN")}
_VQA_MED_CATEGORY_NAMES = {name.lower(): qtype for name, qtype in VQA_MED_2019_CATEGORIES.values()}


def read_vqa_med_2019(path: str | Path, *, split: str = "train", category: str | None = None,
                      image_dir: str | Path | None = None, image_suffix: str = ".jpg",
                      skip_bad_rows: bool | BadRows = False, check_images: bool | None = None) -> list[VQARecord]:
    """One ImageCLEF VQA-Med 2019 QA file: ``image|question|answer`` lines (``QAPairsByCategory/C1_Modality_train.txt``
    and ``All_QA_Pairs_train.txt``) or ``image|category|question|answer`` lines (the test file with reference
    answers). The question type comes from the category (C1 Modality -> MODALITY, C2 Plane -> PLANE, C3 Organ ->
    ORGAN, C4 Abnormality -> ABN): from the 4-field line, else ``category``, else the file name's ``C<n>_``
    prefix. yes/no answers are CLOSED, the rest OPEN (the release has no answer-type field). The qid is
    ``<file stem>:<line>``. Blank lines are skipped; any other malformed line is a bad record."""
    path = Path(path)
    if not path.is_file():
        raise DataError("file not found" if not path.exists() else "not a regular file", path)
    bad = BadRows.coerce(skip_bad_rows)
    images = _Images(Path(image_dir) if image_dir is not None else None, check_images)
    file_type = _vqa_med_type(category or path.name.split("_")[0])
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as exc:
        raise DataError(f"not UTF-8 text: {exc}", path) from None
    except OSError as exc:
        raise DataError(f"cannot read: {exc.strerror or exc}", path) from None
    records: list[VQARecord] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        qid = f"{path.stem}:{number}"
        with bad.guard(path, number, where=f"record line {number} (qid {qid})"):
            parts = line.split("|")
            if len(parts) == 3:
                stem, question, answer = parts
                qtype = file_type
            elif len(parts) == 4:
                stem, cat, question, answer = parts
                qtype = _vqa_med_type(cat)
            else:
                raise BadRow(f"expected image|question|answer or image|category|question|answer, got "
                                f"{len(parts)} field(s)")
            row = {"image": stem.strip(), "question": question.strip(), "answer": answer.strip()}
            image = _text(row, "image")
            image = image if Path(image).suffix else image + image_suffix
            record = VQARecord(qid=qid, image=image, question=_text(row, "question"), answer=_text(row, "answer"),
                               answer_type=_yes_no_type(row["answer"]), question_type=qtype, split=split,
                               dataset="vqa-med-2019", extra=images.extra())
            images.require(image, "image")
            records.append(record)
    bad.report(path, "record")
    _require_records(records, path, bad)
    return records


def _vqa_med_type(category: str) -> str:
    cat = category.strip()
    if cat.upper() in VQA_MED_2019_CATEGORIES:
        return VQA_MED_2019_CATEGORIES[cat.upper()][1]
    return _VQA_MED_CATEGORY_NAMES.get(cat.lower(), cat.upper())


# --------------------------------------------------------------------------------------------------- the registry


Loader = Callable[..., list[VQARecord]]  # (folder: Path, split: str, *, skip_bad_rows, check_images) -> records


@dataclass(frozen=True)
class MedVQADataset:
    """A dataset in the registry: where it lives under ``<data root>/medvqa/`` and how a split loads."""

    name: str
    folder: str  # relative to <data root>/medvqa/
    splits: tuple[str, ...]
    load: Loader
    layout: str  # one line for `list` and the docs
    kept_back: tuple[str, ...] = ()  # splits the shared mirror does not hold (users will have them)
    source: str = ""
    notes: dict[str, str] = field(default_factory=dict)


DATASETS: Registry[MedVQADataset] = Registry("Med-VQA dataset")


def medvqa_root() -> Path:
    """``<data root>/medvqa``; DataError when there is no data root."""
    root = settings.data_root()
    if root is None:
        raise DataError(f"no local data root: EMBEDLAB_DATA is not set and the default mirror "
                        f"{settings.PROJECT_ROOT.parent / 'shared' / 'data'} does not exist; set EMBEDLAB_DATA to the "
                        f"folder that holds medvqa/")
    return Path(root) / "medvqa"


def dataset_folder(name: str) -> Path:
    return medvqa_root() / DATASETS.get(name).folder


def _kept_back(spec: MedVQADataset, split: str, path: Path) -> None:
    if path.is_file():
        return
    env = os.environ.get("EMBEDLAB_DATA")
    where = f"EMBEDLAB_DATA={env}" if env else "the default mirror"
    kept = (f" The {split} split of {spec.name} is kept back from the shared mirror; it loads when the file is "
            f"present (put the standard file there)." if split in spec.kept_back else "")
    raise DataError(f"dataset {spec.name!r} split {split!r} is not available: file not found (data root: "
                    f"{where}).{kept}" + (f" Source: {spec.source}." if spec.source else ""), path)


def load_dataset(name: str | Path, split: str = "train", *, skip_bad_rows: bool | BadRows = False,
                 check_images: bool | None = None) -> list[VQARecord]:
    """The records of one split of a registered dataset, read from ``<data root>/medvqa/<folder>``. A name that is
    not registered but is an existing folder or JSON file loads as a dataset-tool export (``load_export``), and so
    does a name in the user's export registry (export_registry.py)."""
    if str(name) not in DATASETS and Path(name).exists():
        return load_export(name, split, skip_bad_rows=skip_bad_rows, check_images=check_images)
    if str(name) not in DATASETS and registered_export_path(str(name)) is not None:
        return load_export(registered_folder(str(name)), split, skip_bad_rows=skip_bad_rows,
                           check_images=check_images)
    spec = DATASETS.get(str(name))
    if split not in spec.splits:
        raise UnknownChoiceError(f"split of Med-VQA dataset {spec.name!r}", split, spec.splits)
    return spec.load(dataset_folder(spec.name), split, skip_bad_rows=skip_bad_rows, check_images=check_images)


def load_export(path: str | Path, split: str = "train", *, skip_bad_rows: bool | BadRows = False,
                check_images: bool | None = None) -> list[VQARecord]:
    """A dataset-tool export in the MEVF JSON layout: a folder with ``<split>set.json`` (``trainset.json``,
    ``valset.json``, ``testset.json``) and ``images/``, or one such JSON file. The dataset name is the folder's."""
    path = Path(path)
    file = path if path.is_file() else path / f"{split}set.json"
    if not file.is_file():
        raise DataError(f"no {split} split in this export (expected {file.name})", file)
    return read_mevf_json(file, split=split, dataset=file.parent.name, skip_bad_rows=skip_bad_rows,
                          check_images=check_images)


def _load_vqa_rad(folder: Path, split: str, **options) -> list[VQARecord]:
    spec = DATASETS.get("vqa-rad")
    if split in ("train", "test"):
        path = folder / f"{split}set.json"
        _kept_back(spec, split, path)
        return read_mevf_json(path, split=split, **options)
    from . import splits as carved  # the derived splits: qid lists shipped with the package

    path = folder / "trainset.json"
    _kept_back(spec, "train", path)
    return carved.apply_split(read_mevf_json(path, split="train", **options), split, source=path)


def _load_vqa_rad_official(folder: Path, split: str, **options) -> list[VQARecord]:
    full = folder / "VQA_RAD Dataset Public.json"
    if full.is_file():
        return read_vqa_rad_official(full, split=split, **options)
    rows = folder / "vqa_rad_public_train_rows.json"
    if split == "train" and rows.is_file():
        return read_vqa_rad_official(rows, split=split, **options)
    _kept_back(DATASETS.get("vqa-rad-official"), split, full)  # raises: the full release is not there
    return []


# Known defects of the SLAKE 1.0 release, left out by the registry loader (any other bad record is an error).
SLAKE_KNOWN_BAD = {"train": {"1622": "empty answer to 'Does the picture contain liver?' (English, answer_type OPEN, "
                                     "xmlab281)"}}


def _load_slake(folder: Path, split: str, **options) -> list[VQARecord]:
    path = folder / {"train": "train.json", "val": "validate.json", "test": "test.json"}[split]
    _kept_back(DATASETS.get("slake"), split, path)
    return read_slake_json(path, split=split, drop_qids=SLAKE_KNOWN_BAD.get(split, {}), **options)


def _load_pathvqa(folder: Path, split: str, **options) -> list[VQARecord]:
    base = folder / "qas" / split / f"{split}_qa"
    path = base.with_suffix(".pkl") if base.with_suffix(".pkl").is_file() else base.with_suffix(".json")
    if not path.is_file():
        _kept_back(DATASETS.get("pathvqa"), split, base.with_suffix(".pkl"))
    return read_pathvqa(path, split=split, image_dir=folder / "images" / split, **options)


VQA_MED_2019_FOLDERS = {"train": ("ImageClef-2019-VQA-Med-Training", "Train_images"),
                        "val": ("ImageClef-2019-VQA-Med-Validation", "Val_images"),
                        "test": ("VQAMed2019Test", "VQAMed2019_Test_Images")}
VQA_MED_2019_TEST_FILE = "VQAMed2019_Test_Questions_w_Ref_Answers.txt"


def _load_vqa_med_2019(folder: Path, split: str, **options) -> list[VQARecord]:
    sub, image_folder = VQA_MED_2019_FOLDERS[split]
    base, image_dir = folder / sub, folder / sub / image_folder
    if split == "test":
        path = base / VQA_MED_2019_TEST_FILE
        _kept_back(DATASETS.get("vqa-med-2019"), split, path)
        return read_vqa_med_2019(path, split=split, image_dir=image_dir, **options)
    suffix = "train" if split == "train" else "val"
    files = sorted((base / "QAPairsByCategory").glob(f"C[1-4]_*_{suffix}.txt"))
    if not files:
        _kept_back(DATASETS.get("vqa-med-2019"), split, base / "QAPairsByCategory" / f"C1_Modality_{suffix}.txt")
    bad = BadRows.coerce(options.pop("skip_bad_rows", False))
    records: list[VQARecord] = []
    for path in files:
        records += read_vqa_med_2019(path, split=split, image_dir=image_dir, skip_bad_rows=bad, **options)
    return records


DATASETS.add("vqa-rad", MedVQADataset(
    "vqa-rad", "vqa-rad", ("train", "test", "val-train", "val", "image-train", "image-val"), _load_vqa_rad,
    "MEVF JSON (trainset.json, testset.json) + images/", kept_back=("test",),
    source="VQA-RAD (CC0 1.0), MEVF's data release (data_RAD/testset.json)",
    notes={"val-train": "train minus the validation questions and their twins (splits.py)",
           "val": "20 % of train's freeform+para questions (splits.py)",
           "image-train": "train on 80 % of the images", "image-val": "freeform+para questions on the other 20 %"}))
DATASETS.add("vqa-rad-official", MedVQADataset(
    "vqa-rad-official", "vqa-rad", ("train", "test", "all"), _load_vqa_rad_official,
    "official release JSON (VQA_RAD Dataset Public.json; the mirror: vqa_rad_public_train_rows.json, train rows)",
    kept_back=("test", "all"), source="VQA-RAD official release (OSF), CC0 1.0"))
DATASETS.add("slake", MedVQADataset(
    "slake", "slake", ("train", "val", "test"), _load_slake,
    "SLAKE 1.0 JSON (train.json, validate.json, test.json) + imgs/; English subset", kept_back=("test",),
    source="SLAKE 1.0 (CC BY 4.0)", notes={"images": "not in the offline mirror: image-free use"}))
DATASETS.add("pathvqa", MedVQADataset(
    "pathvqa", "pathvqa", ("train", "val", "test"), _load_pathvqa,
    "qas/<split>/<split>_qa.pkl (list of {image, question, answer}) + images/<split>/<image>.jpg",
    source="PathVQA (MIT), github.com/UCSD-AI4H/PathVQA"))
DATASETS.add("vqa-med-2019", MedVQADataset(
    "vqa-med-2019", "vqa-med-2019", ("train", "val", "test"), _load_vqa_med_2019,
    "ImageCLEF 2019 folders: QAPairsByCategory/C<n>_<Category>_<train|val>.txt (image|question|answer) + "
    "<Train|Val>_images/; test: image|category|question|answer", source="ImageCLEF VQA-Med 2019"))


def with_split(records: list[VQARecord], split: str) -> list[VQARecord]:
    """The same records relabelled with another split name."""
    return [replace(r, split=split) for r in records]
