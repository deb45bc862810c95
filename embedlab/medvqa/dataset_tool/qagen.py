"""QA generation: reviewed concepts of each case -> question-answer pairs of VQA-RAD's types, one per case image.

    config = QAConfig(variants=2, negatives=2, closed_share=0.6, seed=0)
    pairs = generate(project.cases(), effective_concepts(project), config)     # pure: no files
    summary = generate_into(project, config)                                   # writes qa.jsonl, marks "generate"

What it does:

- reads concepts with their review status: rejected ones are never used, edited ones are used as edited (the caller
  passes ``review.effective_concepts``, which applies the edits), pending ones only with ``use_pending`` (default);
  a positive mention under ``min_confidence`` (default 0.55, the extractor's presence threshold: "possible
  pneumonia", "may represent atelectasis" are 0.5) answers nothing, and it makes "no" about its finding unclear (no
  PRES "no", no generated negative of its group, no "is this normal?" -> no); negated mentions are used whatever
  their confidence ("no findings to suggest pneumonia" is a "no");
- per case, builds facts from the concepts and turns each into questions of the 8 types (``QUESTION_TYPES``):
  MODALITY, PLANE and ORGAN (open "What imaging modality is this?" -> "ct"; closed "Is this a CT scan?" -> yes, and
  the same template with a modality, plane or region the image certainly is not -> no), PRES (closed, per finding:
  yes for a mention that is not negated, no for a finding only mentioned negated, and ``negatives`` generated
  NEGATIVES per case -> no, ``negative=True``), ABN (open "What abnormality is seen?" -> the findings in report
  order, devices left out; closed "Is there an abnormality?" -> yes, or no when the report has only negated findings
  or a "normal" finding and nothing speculative or vague), POS (open "Where is the effusion?" -> "left lower lobe";
  closed "Is the effusion on the left?" -> yes / "... on the right?" -> no), SIZE ("How large is the nodule?" -> "3
  mm" / "small") and COUNT ("How many nodules are there?" -> "2"; "Is there more than one nodule?");
- which findings (QAConfig fields, data with chest-radiograph defaults, ``DEFAULT_*`` below): ``non_findings``
  ("disease"/"process", "contrast", "lung markings", "limited study") are never asked or named; ``need_site``
  ("lucency", "elevation") only with the site the extractor gives (``attributes["site"]``) and named with it
  ("elevation of the hemidiaphragm"); ``devices`` (pacemaker, catheter, tube, stent, clips, ...) are asked as PRES
  but are not abnormalities; generated negatives ask only about ``negative_findings`` (an allow-list: findings a
  chest radiograph report mentions when present: pneumothorax, effusion, consolidation, pneumonia, edema,
  cardiomegaly, mass, pacemaker, ...) that other cases of the same region mention, and never when the report
  mentions the finding, a written form of it, its head noun, or (positively, even speculatively) a finding of its
  group (``RELATED_FINDINGS``: an opacity may be the consolidation or the effusion a "no" would deny);
- phrases each question with ``variants`` templates of its type (several per type, see ``TEMPLATES``), chosen by a
  seeded draw per case and fact, so the output is deterministic given the seed; each pair names its template and
  links its concepts (ids and report spans);
- makes one pair per image of the case (questions are about the case's images); an image whose file is missing
  (``format == "missing"``, IU X-ray reports without images) or a case without images gives pairs flagged
  ``no-image``. The image's metadata wins over report mentions: its plane (DICOM ViewPosition, IU's
  ``projection``) answers the PLANE questions ("frontal" refined to the report's PA or AP when it names one) and a
  lateral image gets no question naming left, right or both sides (they overlap on a lateral projection); its
  modality (DICOM Modality, else the study description: IU's "Xray Chest PA and Lateral") answers MODALITY, not a
  comparison study the report mentions. Without metadata, a case naming several modalities or planes skips the
  question as ambiguous (counted);
- ``organ`` is VQA-RAD's image_organ (CHEST / HEAD / ABD): from the case's metadata (a region key such as DICOM
  BodyPartExamined, else the study description) when it names one, and then it is the ORGAN open answer; else when
  the case's organ concepts map to one region; else "";
- with ``closed_share`` set, subsamples closed or open pairs (seeded) towards that share and reports the achieved one.

How modifiers attach to a finding: the finding's own ``attributes`` (``laterality`` and ``location``, a value or a
list; ``size`` (a word) and/or ``size_mm`` with ``size_text``; ``count``) when no modifier concept names the
finding (hand-made concepts); a laterality/location/size/count concept whose ``attributes["of"]`` (or
``["finding"]``) names the finding's value (the nearest mention of it) or concept id (concepts.py's output: it
also copies these into the finding's attributes, which are then not read); else (no link given) the nearest finding
in the same sentence of the report. A linked modifier counts only within the finding's phrase (``_in_phrase``:
inside it, or at most ``MAX_PHRASE_GAP`` words away with no punctuation, conjunction or other finding between;
"a large geode ... degenerative changes" does not size the changes); a side word naming a heart chamber or a film
("tip in the right atrium", "left lateral decubitus film") is no side. Where a side or location was linked from
outside the phrase, the position is not fully known: no open POS question and no "no" to the other side. Sizes
compare in millimetres, so the routes agree; an organ concept's region is its ``attributes["organ_group"]``, else a
built-in map of organ names.

What it does not do: it does not extract concepts (concepts.py), review anything (review.py), paraphrase
(paraphrase.py) or split and export (export.py). Generated "no" answers for findings a report does not mention are an
assumption (reports do not list everything): they are marked ``negative=True`` so review and export can tell them.
"""
from __future__ import annotations

import bisect
import hashlib
import random
import re
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Iterable

from ...errors import ConfigError
from .types import QUESTION_TYPES, Case, CaseImage, Concept, Progress, QAPair

CLOSED, OPEN = "CLOSED", "OPEN"
LOW_CONFIDENCE = 0.7  # pairs built on a concept below this get the flag "low-confidence" (for the reviewer)

# The defaults of QAConfig's finding lists (data: a user changes them in the config, not here). Values are the
# lexicon's canonical finding terms, lower-case; the defaults fit chest radiograph reports (IU X-ray).
#
# Generated negatives ask only about these: findings a chest radiograph report states when they are present (and
# whose absence "lungs are clear" / "no acute cardiopulmonary abnormality" covers). Left out on purpose: what reports
# routinely leave unsaid (stents, clips, degenerative change, kyphosis, granulomas, nipple shadows, old fractures)
# and vague values.
DEFAULT_NEGATIVE_FINDINGS = ("pneumothorax", "pleural effusion", "consolidation", "airspace disease", "pneumonia",
                             "pulmonary edema", "cardiomegaly", "mass", "pacemaker", "widened mediastinum",
                             "pneumoperitoneum", "hydropneumothorax")
# not findings: "disease" / "process" (generic: "no acute cardiopulmonary process"), "contrast", "lung markings"
# (normal markings; the report's own term says more), "limited study" (image quality)
DEFAULT_NON_FINDINGS = ("disease", "contrast", "lung markings", "limited study")
# meaningless without their site: "lucency", "elevation" (of the hemidiaphragm)
DEFAULT_NEED_SITE = ("lucency", "elevation")
DEFAULT_DEVICES = ("pacemaker", "catheter", "tube", "stent", "surgical clips", "sutures", "monitor leads",
                   "breast implant", "spinal fusion")
# A generated negative is never asked when the report mentions (positively, even speculatively) the finding or one of
# its group: an opacity may be the consolidation or the effusion a "no" would deny.
RELATED_FINDINGS = (
    ("opacity", "airspace disease", "consolidation", "infiltrate", "pneumonia", "atelectasis", "lung density",
     "pulmonary edema", "pulmonary congestion", "heart failure", "interstitial lung disease", "lung markings",
     "pulmonary fibrosis", "tuberculosis", "cavitation", "scarring", "granulomatous disease", "mass", "tumor",
     "nodule"),
    ("pleural effusion", "blunting", "hydropneumothorax", "hemothorax", "hemopneumothorax", "pleural thickening",
     "pneumothorax", "opacity", "lung density", "airspace disease", "atelectasis"),
    ("cardiomegaly", "enlarged cardiac silhouette", "pericardial effusion", "heart failure", "atrial enlargement",
     "pulmonary edema", "pulmonary congestion"),
    ("widened mediastinum", "mediastinal shift", "lymphadenopathy", "hilar prominence", "aortic aneurysm", "mass",
     "tortuous aorta"),
    ("mass", "nodule", "tumor", "cyst", "granuloma", "calcified granuloma", "lucency"),
    ("pacemaker", "catheter", "tube", "monitor leads", "stent", "foreign body"),
    ("pneumoperitoneum", "bowel obstruction", "lucency"),
)


# --------------------------------------------------------------------------------------------------- the config


@dataclass(frozen=True)
class QAConfig:
    """What to generate. Recorded in project.json (stage "generate") and in the export's dataset card."""

    question_types: tuple[str, ...] = QUESTION_TYPES
    variants: int = 1  # phrasing templates per question (capped by the templates the type has)
    negatives: int = 2  # generated PRES negatives per case (findings the report does not mention -> "no")
    closed_share: float | None = None  # target share of CLOSED pairs (None: keep what the facts give)
    seed: int = 0
    use_pending: bool = True  # use concepts nobody has reviewed yet (rejected ones are never used)
    # a positive mention under this is not used for any answer (the extractor's own presence threshold: hedged,
    # speculative mentions are 0.5); it still blocks "no" answers about its finding (see the module docstring)
    min_confidence: float = 0.55
    # the only findings a generated negative asks about (lower-case lexicon values): findings a report of the
    # region reliably mentions when present. () generates none; edit for another region or report style
    negative_findings: tuple[str, ...] = DEFAULT_NEGATIVE_FINDINGS
    # values that are not findings: never asked or named as answers, whatever the type
    non_findings: tuple[str, ...] = DEFAULT_NON_FINDINGS
    # findings asked only with their site (the extractor's attributes["site"]) and named with it
    # ("elevation of the hemidiaphragm"); without one they are left out like non_findings
    need_site: tuple[str, ...] = DEFAULT_NEED_SITE
    # devices and postsurgical material: asked as PRES, never named as (or counted as evidence of) an abnormality
    devices: tuple[str, ...] = DEFAULT_DEVICES

    def __post_init__(self):
        types = (self.question_types,) if isinstance(self.question_types, str) else self.question_types
        types = tuple(dict.fromkeys(str(t).strip().upper() for t in types))
        unknown = [t for t in types if t not in QUESTION_TYPES]
        if unknown or not types:
            raise ConfigError(f"question types must be among {', '.join(QUESTION_TYPES)}, got "
                              f"{', '.join(unknown) or 'none'}")
        object.__setattr__(self, "question_types", types)
        for name in ("negative_findings", "non_findings", "need_site", "devices"):
            value = getattr(self, name)
            if isinstance(value, str) or not isinstance(value, (list, tuple, set, frozenset)) \
                    or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{name} must be a list of finding values (strings), got {value!r}")
            object.__setattr__(self, name, tuple(dict.fromkeys(" ".join(v.lower().split()) for v in value
                                                                if v.strip())))
        for name in ("variants", "negatives", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"{name} must be an integer, got {value!r}")
        if self.variants < 1:
            raise ConfigError(f"variants must be at least 1, got {self.variants}")
        if self.negatives < 0:
            raise ConfigError(f"negatives must be 0 or more, got {self.negatives}")
        if self.closed_share is not None and not (0.0 <= float(self.closed_share) <= 1.0):
            raise ConfigError(f"closed_share must be between 0 and 1 (or None), got {self.closed_share}")
        if not (0.0 <= float(self.min_confidence) <= 1.0):
            raise ConfigError(f"min_confidence must be between 0 and 1, got {self.min_confidence}")

    def to_json(self) -> dict[str, Any]:
        row = asdict(self)
        for name in ("question_types", "negative_findings", "non_findings", "need_site", "devices"):
            row[name] = list(getattr(self, name))
        return row

    @classmethod
    def from_json(cls, row: dict[str, Any]) -> QAConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(row) - known
        if unknown:
            raise ConfigError(f"unknown QA generation option(s) {', '.join(sorted(unknown))}; valid: "
                              f"{', '.join(sorted(known))}")
        return cls(**row)


# --------------------------------------------------------------------------------------------------- templates


@dataclass(frozen=True)
class Template:
    name: str
    text: str
    invert: bool = False  # a closed template phrased the other way round ("Is this image normal?"): answer flips


def _t(prefix: str, *texts: str) -> tuple[Template, ...]:
    return tuple(Template(f"{prefix}-{i}", text) for i, text in enumerate(texts, 1))


# slot -> templates; a slot is one question shape (type + open/closed + what it asks about)
TEMPLATES: dict[str, tuple[Template, ...]] = {
    "modality-open": _t("modality-open", "What imaging modality is this?", "What type of imaging is this?",
                        "How was this image taken?", "What imaging technique was used?"),
    "modality-closed": _t("modality-closed", "Is this {a_modality}?", "Was this image taken with {modality}?",
                          "Is this image {a_modality}?"),
    "plane-open": _t("plane-open", "In what plane is this image taken?", "What plane is this image in?",
                     "Which plane is shown?", "What is the imaging plane?"),
    "plane-closed": _t("plane-closed", "Is this {a_plane} image?", "Is this image taken in {a_plane} view?",
                       "Is this {a_plane} view?"),
    "organ-open": _t("organ-open", "What organ system is shown?", "What part of the body is this?",
                     "Which organ system is imaged?", "What body region does this image show?"),
    "organ-closed": _t("organ-closed", "Is this an image of the {organ}?", "Does this image show the {organ}?",
                       "Is the {organ} shown in this image?"),
    "pres": _t("pres", "Is there {a_finding}?", "Is {a_finding} present?", "Does this image show {a_finding}?",
               "Is there evidence of {a_finding}?"),
    "abn-open": _t("abn-open", "What abnormality is seen?", "What is abnormal in this image?",
                   "What abnormality is shown?"),
    "abn-closed": (*_t("abn-closed", "Is there an abnormality?", "Is this image abnormal?",
                       "Is anything abnormal in this image?"),
                   Template("abn-closed-normal", "Is this image normal?", invert=True)),
    "pos-open": _t("pos-open", "Where is the {finding}?", "Where is the {finding} located?",
                   "What is the location of the {finding}?"),
    "pos-side": _t("pos-side", "Is the {finding} on the {side}?", "Is the {finding} on the {side} side?"),
    "pos-bilateral": _t("pos-bilateral", "Is the {finding} bilateral?", "Is the {finding} on both sides?"),
    "pos-location": _t("pos-location", "Is the {finding} in the {location}?", "Is the {finding} located in the "
                                                                              "{location}?"),
    "size-open": _t("size-open", "How large is the {finding}?", "What is the size of the {finding}?",
                    "How big is the {finding}?"),
    "size-closed": _t("size-closed", "Is the {finding} {size}?", "Is the {finding} {size} in size?"),
    "count-open": _t("count-open", "How many {findings} are there?", "How many {findings} are seen?",
                     "What is the number of {findings}?"),
    "count-closed": _t("count-closed", "Is there more than one {finding}?", "Are there multiple {findings}?"),
}

# --------------------------------------------------------------------------------------------------- vocabularies

# modality value -> (family key, name in a question, with its article); the family tells which "no" is plausible
MODALITIES = {
    "ct": ("ct", "CT", "a CT scan"), "computed tomography": ("ct", "CT", "a CT scan"), "cta": ("ct", "CT", "a CT scan"),
    "mri": ("mri", "MRI", "an MRI"), "mr": ("mri", "MRI", "an MRI"),
    "magnetic resonance imaging": ("mri", "MRI", "an MRI"),
    "x-ray": ("x-ray", "x-ray", "an x-ray"), "xray": ("x-ray", "x-ray", "an x-ray"),
    "radiograph": ("x-ray", "x-ray", "an x-ray"), "plain film": ("x-ray", "x-ray", "an x-ray"),
    "ultrasound": ("ultrasound", "ultrasound", "an ultrasound"), "us": ("ultrasound", "ultrasound", "an ultrasound"),
    "pet": ("pet", "PET", "a PET scan"), "mammography": ("mammography", "mammography", "a mammogram"),
    "fluoroscopy": ("fluoroscopy", "fluoroscopy", "a fluoroscopy image"),
    "angiography": ("angiography", "angiography", "an angiogram"),
}
MODALITY_ALTERNATIVES = ("ct", "mri", "x-ray", "ultrasound")  # the "no" answers: common, unambiguous
DICOM_MODALITY = {"CT": "ct", "MR": "mri", "CR": "x-ray", "DX": "x-ray", "RG": "x-ray", "US": "ultrasound",
                  "PT": "pet", "MG": "mammography", "XA": "angiography", "RF": "fluoroscopy"}
# plane -> planes an image of that plane certainly is not (the "no" answers; a frontal film may be PA or AP)
PLANE_OPPOSITES = {"pa": ("ap", "lateral"), "ap": ("pa", "lateral"), "lateral": ("frontal",), "frontal": ("lateral",),
                   "axial": ("coronal", "sagittal"), "coronal": ("axial", "sagittal"),
                   "sagittal": ("axial", "coronal")}
PLANE_NAMES = {"pa": "PA", "ap": "AP"}
VIEW_POSITIONS = {"pa": "pa", "ap": "ap", "ll": "lateral", "rl": "lateral", "lat": "lateral", "lateral": "lateral",
                  "frontal": "frontal", "axial": "axial", "coronal": "coronal", "sagittal": "sagittal"}
REGIONS = {  # organ concept value -> VQA-RAD image_organ
    **dict.fromkeys(("chest", "thorax", "lung", "lungs", "heart", "cardiac", "mediastinum", "pleura", "rib", "ribs",
                     "trachea", "pulmonary", "thoracic", "cardiopulmonary", "hilum", "hila"), "CHEST"),
    **dict.fromkeys(("head", "brain", "skull", "cerebral", "cerebellum", "cranial", "intracranial", "orbit",
                     "orbits", "sinus", "sinuses", "ventricles", "face"), "HEAD"),
    **dict.fromkeys(("abdomen", "abdominal", "liver", "kidney", "kidneys", "renal", "spleen", "pancreas", "bowel",
                     "small bowel", "colon", "stomach", "gallbladder", "bladder", "pelvis", "appendix", "adrenal",
                     "adrenals", "hepatic"), "ABD"),
}
REGION_NAMES = {"CHEST": "chest", "HEAD": "head", "ABD": "abdomen"}
GENERIC_FINDINGS = {"abnormality", "abnormalities"}  # evidence for ABN closed only (not a finding to ask about)
NORMAL_FINDINGS = {"normal", "no acute disease", "no acute cardiopulmonary abnormality", "no abnormality",
                   "unremarkable", "within normal limits", "no acute abnormality"}
SIDES = {"left": "left", "l": "left", "right": "right", "r": "right", "bilateral": "bilateral",
         "bilaterally": "bilateral", "both": "bilateral"}
SIZE_OPPOSITES = {"small": "large", "large": "small", "tiny": "large", "big": "small", "massive": "small",
                  "huge": "small"}
NUMBER_WORDS = {"one": 1, "single": 1, "solitary": 1, "a single": 1, "two": 2, "three": 3, "four": 4, "five": 5,
                "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10}
SEVERAL = {"multiple", "several", "numerous", "many", "few", "a few", "innumerable"}
# findings usually written without an article ("Is there cardiomegaly?", not "a cardiomegaly")
UNCOUNTABLE = {"edema", "emphysema", "atelectasis", "cardiomegaly", "fibrosis", "scarring", "hyperinflation",
               "air", "fluid", "ascites", "hydronephrosis", "pneumoperitoneum", "free air", "calcification",
               "consolidation", "thickening", "hemorrhage", "scoliosis", "osteopenia", "degenerative change",
               "pneumonia", "degenerative changes", "hydrocephalus", "splenomegaly", "hepatomegaly", "lymphadenopathy",
               "elevation", "lucency"}
UNCOUNTABLE_ENDINGS = ("megaly", "osis", "itis", "emia", "edema", "opathy", "rrhage", "changes", "disease",
                       "inflation")


def _article(phrase: str) -> str:
    return "an" if phrase[:1].lower() in "aeiou" else "a"


def _a_finding(value: str) -> str:
    low = value.lower().split(" of the ")[0]  # "elevation of the hemidiaphragm": the head decides
    if low in UNCOUNTABLE or low.endswith(UNCOUNTABLE_ENDINGS) or low.endswith("s") and not low.endswith("ss"):
        return value
    return f"{_article(value)} {value}"


def _plural(value: str) -> str:
    if value.endswith(("s", "x", "ch", "sh")):
        return value + ("es" if value.endswith(("ss", "x", "ch", "sh")) else "")
    if value.endswith("y") and value[-2:-1] not in "aeiou":
        return value[:-1] + "ies"
    return value + "s"


def _modality_names(value: str) -> tuple[str, str, str]:
    key = value.strip().lower()
    if key in MODALITIES:
        return MODALITIES[key]
    return key, value, f"{_article(value)} {value} image"


def _a_plane(value: str) -> str:
    name = PLANE_NAMES.get(value.lower(), value)
    # spoken as letters: "an AP", "a PA"; words take their usual article
    first = name[0].lower() if name.isupper() else None
    if first is not None:
        return f"{'an' if first in 'aefhilmnorsx' else 'a'} {name}"
    return f"{_article(name)} {name}"


def _region(concept: Concept) -> str:
    for key in ("organ_group", "image_organ", "region"):
        value = str(concept.attributes.get(key, "")).strip().upper()
        if value in REGION_NAMES:
            return value
    return REGIONS.get(concept.value.strip().lower(), "")


# --------------------------------------------------------------------------------------------------- facts


@dataclass
class _Finding:
    """One finding value of a case with its mentions and what is known about it."""

    value: str
    positive: list[Concept] = field(default_factory=list)
    negated: list[Concept] = field(default_factory=list)
    sides: dict[str, list[Concept]] = field(default_factory=dict)  # "left" -> concepts saying so
    locations: dict[str, list[Concept]] = field(default_factory=dict)
    sizes: dict[str, list[Concept]] = field(default_factory=dict)  # "3 mm" / "small" -> concepts
    size_display: dict[str, str] = field(default_factory=dict)  # size key -> the answer ("2.5 x 3 cm")
    counts: dict[str, list[Concept]] = field(default_factory=dict)
    device: bool = False  # a device or postsurgical material: not an abnormality
    hidden: bool = False  # a negated non-finding ("no acute disease"): evidence of a normal study, never asked
    speculative: bool = False  # also mentioned positively below min_confidence ("possible ..."): no "no" about it
    side_doubt: bool = False  # a side word was linked to it from outside its phrase: only the sides in it say "yes"
    location_doubt: bool = False  # the same for a location


@dataclass
class _Facts:
    """What the report says about findings: the findings by key (report order), the concepts saying the study is
    normal, those saying it is abnormal without naming a finding, and positive mentions that make "is this study
    normal?" unclear (speculative findings, positive non-findings, findings without their site)."""

    findings: dict[str, _Finding]
    normal: list[Concept]
    abnormal: list[Concept]
    unclear: list[Concept]


@dataclass
class _Question:
    qtype: str
    form: str
    template: Template
    question: str
    answer: str
    concepts: list[Concept]
    negative: bool = False
    sided: bool = False  # names the left / right / both sides: not asked of a lateral image


def _sentence_bounds(report: str) -> list[int]:
    # a sentence ends at ; or a line break, or a period that is not a decimal point ("3.5 mm")
    return [m.end() for m in re.finditer(r"[;\n]|\.(?!\d)", report)]


def _attribute_text(value: Any) -> str:
    if value is None or isinstance(value, bool):
        return ""
    if isinstance(value, float):
        return f"{value:g}"
    return str(value).strip()


def _count_value(text: str) -> int | str | None:
    """An int, "several" for multiple-without-number, or None when it is not a count."""
    low = text.strip().lower()
    if low.isdigit():
        return int(low)
    if low in NUMBER_WORDS:
        return NUMBER_WORDS[low]
    if low in SEVERAL:
        return "several"
    return None


def _values(value: Any) -> list[str]:
    """An attribute as a list of strings (the extractor gives a list when a finding has two lateralities)."""
    items = value if isinstance(value, (list, tuple)) else [value]
    return [t for t in (_attribute_text(v) for v in items) if t]


def _size_key(mm: Any, word: Any) -> str:
    """Sizes compare by millimetres ("0.3 cm" and "3 mm" are one size), words by themselves."""
    if isinstance(mm, (int, float)) and not isinstance(mm, bool):
        return f"{float(mm):g} mm"
    return _attribute_text(word).lower()


MODIFIER_CATEGORIES = ("laterality", "location", "size", "count")
# a side word followed by these does not place a finding: a heart chamber ("tip in the right atrium"), a film
# ("visible on the left lateral decubitus film")
NOT_A_SIDE = re.compile(r"\s*(?:atri(?:um|a|al)\b|ventric\w*|heart\b(?!\s+border)|(?:lateral\s+)?decubitus\b|"
                        r"lateral\s+(?:views?|films?|projections?|radiographs?|images?)\b)", re.IGNORECASE)
# what ends a finding's noun phrase between a modifier and the finding: punctuation, a conjunction, a new clause
PHRASE_BREAK = re.compile(r"[,;:.()\[\]]|\b(?:and|or|with|without|but|which|that|versus|vs|from|than|also|while|"
                          r"whereas|compatible|consistent|likely|suggest\w*|represent\w*|given|after|since)\b",
                          re.IGNORECASE)
MAX_PHRASE_GAP = 4  # words between a modifier and its finding (other modifiers and articles not counted)


def _in_phrase(report: str, m: Concept, f: Concept, modifiers: list[Concept], findings: list[Concept]) -> bool:
    """Whether modifier ``m`` is in finding ``f``'s phrase: inside it, or next to it with at most a few words between
    ("small left pleural effusion", "opacity in the right lower lobe", "nodule measuring 3 mm") and no punctuation,
    conjunction or other finding between."""
    if not (0 <= m.start <= m.end <= len(report) and 0 <= f.start <= f.end <= len(report)):
        return True  # offsets the report does not have (hand-made): nothing to check
    if f.start <= m.start and m.end <= f.end:
        return True
    a, b = (m.end, f.start) if m.end <= f.start else (f.end, m.start)
    if a > b:
        return True  # overlapping spans
    if any(a <= c.start and c.end <= b for c in findings if c is not f):
        return False
    gap = list(report[a:b])
    for c in modifiers:
        if a <= c.start and c.end <= b:
            gap[c.start - a:c.end - a] = " " * (c.end - c.start)
    text = "".join(gap)
    if PHRASE_BREAK.search(text):
        return False
    words = [w for w in re.findall(r"[A-Za-z0-9]+", text) if w.lower() not in ("a", "an", "the")]
    return len(words) <= MAX_PHRASE_GAP


def _findings(case: Case, concepts: list[Concept], config: QAConfig,
              speculative: Iterable[Concept] = ()) -> _Facts:
    """The case's findings and normal / abnormal evidence (``_Facts``). ``speculative``: the case's positive finding
    mentions under ``min_confidence`` (they give no answer; they make "no" about their finding unclear)."""
    findings: dict[str, _Finding] = {}
    normal: list[Concept] = []
    abnormal: list[Concept] = []
    unclear: list[Concept] = []
    finding_concepts = []
    key_of: dict[str, str] = {}  # concept id -> finding key
    non_findings, need_site, devices = set(config.non_findings), set(config.need_site), set(config.devices)
    for c in concepts:
        if c.category != "finding":
            continue
        value = c.value.strip()
        low = value.lower()
        if low in NORMAL_FINDINGS or c.heading.strip().lower() == "normal":
            if not c.negated:
                normal.append(c)
            continue
        if low in GENERIC_FINDINGS:
            (normal if c.negated else abnormal).append(c)
            continue
        if low in non_findings or low in need_site and not _attribute_text(c.attributes.get("site")):
            # not a finding to ask about; "no acute cardiopulmonary disease" still says the study is normal (kept,
            # hidden, with the negated findings), a positive "disease" / bare "lucency" makes "normal?" unclear
            if c.negated:
                findings.setdefault(low, _Finding(value, hidden=True)).negated.append(c)
            else:
                unclear.append(c)
            continue
        if low in need_site:
            value = f"{value} of the {_attribute_text(c.attributes.get('site'))}"
        f = findings.setdefault(value.lower(), _Finding(value, device=low in devices))
        key_of[c.concept_id] = value.lower()
        (f.negated if c.negated else f.positive).append(c)
        if not c.negated:
            finding_concepts.append(c)
    for c in speculative:
        low = c.value.strip().lower()
        if c.category != "finding" or c.negated or low in NORMAL_FINDINGS:
            continue
        unclear.append(c)
        for key, f in findings.items():
            if key == low or key.startswith(low + " of the "):
                f.speculative = True

    # modifiers: 1) the finding's own attributes: used only when no modifier concept names the finding (hand-made
    # concepts; concepts.py copies its modifiers into the attributes and names the finding in the modifier's
    # attributes["of"], and those modifier concepts are checked below instead)
    modifiers = [m for m in concepts if m.category in MODIFIER_CATEGORIES and not m.negated]
    named = {_attribute_text(m.attributes.get("of") or m.attributes.get("finding")).lower() for m in modifiers}
    named.discard("")
    for c in finding_concepts:
        if c.concept_id.lower() in named or c.value.strip().lower() in named:
            continue
        f = findings[key_of[c.concept_id]]
        a = c.attributes
        for side in _values(a.get("laterality")):
            f.sides.setdefault(SIDES.get(side.lower(), side.lower()), []).append(c)
        for location in _values(a.get("location")):
            f.locations.setdefault(location.lower(), []).append(c)
        key = _size_key(a.get("size_mm"), a.get("size"))
        if key:
            f.sizes.setdefault(key, []).append(c)
            f.size_display.setdefault(key, _attribute_text(a.get("size_text")) or key)
        for count in _values(a.get("count")):
            f.counts.setdefault(count.lower(), []).append(c)
    # 2) modifier concepts linked by name (attributes "of" or "finding": the finding's id or value; of several
    # mentions of that value, the nearest one), 3) else the nearest positive finding in the same sentence; either
    # way only within the finding's phrase (``_in_phrase``), and a side word naming a heart chamber or a film is no
    # side at all
    bounds = _sentence_bounds(case.report)
    by_id = {c.concept_id: c for c in finding_concepts}

    def sentence(c: Concept) -> int:
        return bisect.bisect_right(bounds, c.start)

    def distance(m: Concept, c: Concept) -> tuple[int, int, int]:
        return (sentence(m) != sentence(c), min(abs(c.start - m.end), abs(m.start - c.end)), c.start)

    for m in modifiers:
        link = _attribute_text(m.attributes.get("of") or m.attributes.get("finding"))
        target = by_id.get(link)
        if target is None and link:
            same = [c for c in finding_concepts if c.value.strip().lower() == link.lower()]
            target = min(same, key=lambda c: distance(m, c)) if same else None
        if target is None and not link and 0 <= m.start <= m.end <= len(case.report):
            same = [c for c in finding_concepts if sentence(c) == sentence(m)]
            if same:
                target = min(same, key=lambda c: (min(abs(c.start - m.end), abs(m.start - c.end)), c.start))
        if target is None:
            continue
        f = findings[key_of[target.concept_id]]
        value = m.value.strip()
        if m.category == "laterality" and m.end <= len(case.report) and NOT_A_SIDE.match(case.report, m.end):
            continue
        if not _in_phrase(case.report, m, target, modifiers, finding_concepts):
            if m.category == "laterality" or m.category == "location" and m.attributes.get("laterality"):
                f.side_doubt = True
            if m.category == "location":
                f.location_doubt = True
            continue
        if m.category == "laterality":
            f.sides.setdefault(SIDES.get(value.lower(), value.lower()), []).append(m)
        elif m.category == "location":
            # a location entry may carry its parts ("bibasilar": location base, laterality bilateral)
            for location in _values(m.attributes.get("location")) or [value]:
                f.locations.setdefault(location.lower(), []).append(m)
            for side in _values(m.attributes.get("laterality")):
                f.sides.setdefault(SIDES.get(side.lower(), side.lower()), []).append(m)
        elif m.category == "size":
            key = _size_key(m.attributes.get("size_mm"), value)
            if key:
                f.sizes.setdefault(key, []).append(m)
                f.size_display[key] = value or key  # the size concept's canonical form ("2.5 x 3 cm") wins
        else:
            count = _attribute_text(m.attributes.get("count")) or value
            if count:
                f.counts.setdefault(count.lower(), []).append(m)
    return _Facts(findings, normal, abnormal, unclear)


def _position(sides: set[str], location: str | None) -> str:
    side = ""
    if sides:
        side = "bilateral" if sides >= {"left", "right"} or "bilateral" in sides else sorted(sides)[0]
    if location is None:
        return side
    if not side or location.startswith((side, "left", "right", "bilateral")):
        return location
    return f"{side} {location}"


# --------------------------------------------------------------------------------------------------- the generator


class _Generator:
    def __init__(self, config: QAConfig):
        self.config = config
        self.skipped: Counter = Counter()

    def rng(self, *key: Any) -> random.Random:
        # a string seed goes through SHA-512 in random.seed: stable across runs and PYTHONHASHSEED
        return random.Random(":".join(map(str, (self.config.seed, *key))))

    def phrase(self, case_id: str, slot: str, fact: str, **slots: str) -> list[tuple[Template, str]]:
        templates = TEMPLATES[slot]
        chosen = self.rng(case_id, slot, fact).sample(templates, min(self.config.variants, len(templates)))
        return [(t, t.text.format(**slots)) for t in chosen]

    def add(self, out: list[_Question], qtype: str, form: str, case_id: str, slot: str, fact: str, answer: str,
            concepts: list[Concept], negative: bool = False, sided: bool = False, **slots: str) -> None:
        if qtype not in self.config.question_types:
            return
        for template, text in self.phrase(case_id, slot, fact, **slots):
            final = answer
            if template.invert:
                final = {"yes": "no", "no": "yes"}[answer]
            out.append(_Question(qtype, form, template, text, final, concepts, negative, sided))

    # -- image-level facts: modality and plane may depend on the image's own metadata -------------------------------
    def modality(self, case: Case, image: CaseImage | None, concepts: list[Concept], out: list[_Question]) -> None:
        mods = [c for c in concepts if c.category == "modality" and not c.negated]
        if not mods:
            return
        families: dict[str, list[Concept]] = defaultdict(list)
        for c in mods:
            families[_modality_names(c.value)[0]].append(c)
        known = _image_modality(case, image)
        if known:  # the image's metadata or the study description says what it is: mentions (comparisons) do not
            used = families.get(known, [])
            value = used[0].value.strip() if used else known
        else:
            if len(families) > 1:
                self.skipped["ambiguous-modality"] += 1
                return
            known, used = next(iter(families.items()))
            value = used[0].value.strip()
        family = known
        _, name, a_name = _modality_names(value)
        self.add(out, "MODALITY", OPEN, case.case_id, "modality-open", family, value, used)
        self.add(out, "MODALITY", CLOSED, case.case_id, "modality-closed", family, "yes", used,
                 modality=name, a_modality=a_name)
        others = [m for m in MODALITY_ALTERNATIVES if m != family]
        other = self.rng(case.case_id, "modality-other").choice(others)
        _, name, a_name = _modality_names(other)
        self.add(out, "MODALITY", CLOSED, case.case_id, "modality-closed", family, "no", used,
                 modality=name, a_modality=a_name)

    def plane(self, case: Case, image: CaseImage | None, concepts: list[Concept], out: list[_Question]) -> None:
        planes: dict[str, list[Concept]] = defaultdict(list)
        for c in concepts:
            if c.category == "plane" and not c.negated:
                planes[c.value.strip().lower()].append(c)
        if not planes:
            return
        view = _image_view(image)
        if view:  # the image's metadata decides whenever it has one; the report's mentions only refine it
            if view == "frontal" and view not in planes:  # a frontal image of a "PA and lateral" report is the PA
                frontal = [p for p in ("pa", "ap") if p in planes]
                view = frontal[0] if len(frontal) == 1 else view
            used = planes.get(view, [])
            key, value = view, (used[0].value.strip() if used else view)
        elif len(planes) > 1:
            self.skipped["ambiguous-plane"] += 1
            return
        else:
            key, used = next(iter(planes.items()))
            value = used[0].value.strip()
        self.add(out, "PLANE", OPEN, case.case_id, "plane-open", key, value, used)
        self.add(out, "PLANE", CLOSED, case.case_id, "plane-closed", key, "yes", used, a_plane=_a_plane(value))
        others = PLANE_OPPOSITES.get(key, ())
        if others:  # a "no" only where it is certain: "Is this a sagittal image?" of an axial CT
            other = self.rng(case.case_id, "plane-other", key).choice(others)
            self.add(out, "PLANE", CLOSED, case.case_id, "plane-closed", key, "no", used, a_plane=_a_plane(other))

    # -- case-level facts -------------------------------------------------------------------------------------
    def organ(self, case: Case, concepts: list[Concept], region: str, out: list[_Question]) -> None:
        organs: dict[str, list[Concept]] = defaultdict(list)
        for c in concepts:
            if c.category == "organ" and not c.negated:
                organs[c.value.strip().lower()].append(c)
        if not organs:
            return
        all_used = [c for cs in organs.values() for c in cs]
        if _study_region(case):  # the study description / metadata names the region: the answer is the region
            answer = REGION_NAMES[region]
        elif len(organs) == 1:
            answer = next(iter(organs.values()))[0].value.strip()
        elif region:  # several organs of one region ("lungs", "heart"): the organ system is the region
            answer = REGION_NAMES[region]
        else:
            answer = ""
            self.skipped["ambiguous-organ"] += 1
        if answer:  # one organ-system question per case, not one per organ named (those are presence questions)
            self.add(out, "ORGAN", OPEN, case.case_id, "organ-open", answer.lower(), answer, all_used)
            self.add(out, "ORGAN", CLOSED, case.case_id, "organ-closed", answer.lower(), "yes", all_used,
                     organ=answer)
        if region:  # "no": an organ of another VQA-RAD region (a chest image does not show the brain)
            other_region = self.rng(case.case_id, "organ-other").choice(
                [r for r in REGION_NAMES if r != region])
            self.add(out, "ORGAN", CLOSED, case.case_id, "organ-closed", "other", "no", all_used,
                     organ={"CHEST": "chest", "HEAD": "brain", "ABD": "abdomen"}[other_region])

    def findings(self, case: Case, facts: _Facts, out: list[_Question]) -> None:
        cid = case.case_id
        findings = facts.findings
        for key, f in findings.items():
            a_finding = _a_finding(f.value)
            if f.hidden:
                continue
            if f.positive:  # a finding mentioned both ways ("no left effusion; right effusion") is present
                self.add(out, "PRES", CLOSED, cid, "pres", key, "yes", f.positive, a_finding=a_finding)
            elif f.speculative:  # "no focal consolidation ... possible consolidation at the left base"
                self.skipped["speculative-no"] += 1
            else:
                self.add(out, "PRES", CLOSED, cid, "pres", key, "no", f.negated, a_finding=a_finding)
        # ABN: devices are not abnormalities; speculative or vague positive mentions leave "normal?" unanswered
        positives = [f for f in findings.values() if f.positive and not f.device]
        devices = [f for f in findings.values() if f.positive and f.device]
        if positives:
            ordered = sorted(positives, key=lambda f: f.positive[0].start)
            names = [f.value for f in ordered]
            answer = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
            used = [f.positive[0] for f in ordered]
            self.add(out, "ABN", OPEN, cid, "abn-open", "abn", answer, used)
            self.add(out, "ABN", CLOSED, cid, "abn-closed", "abn", "yes", used)
        elif facts.abnormal:  # "an abnormality" without a named finding: abnormal, but nothing to name
            self.add(out, "ABN", CLOSED, cid, "abn-closed", "abn", "yes", facts.abnormal)
        elif facts.unclear or devices:
            self.skipped["unclear-abnormality"] += 1
        elif facts.normal or findings:  # a normal study: only negated findings, or a "normal" statement
            used = facts.normal or [c for f in findings.values() for c in f.negated]
            self.add(out, "ABN", CLOSED, cid, "abn-closed", "abn", "no", used)
        for key, f in ((k, f) for k, f in findings.items() if f.positive):
            self.modifiers(cid, key, f, out)

    def modifiers(self, cid: str, key: str, f: _Finding, out: list[_Question]) -> None:
        name = f.value
        base = [f.positive[0]]
        sides = {s for s in f.sides if s in ("left", "right", "bilateral")}
        side_concepts = [c for cs in f.sides.values() for c in cs]
        # POS (a question naming a side is "sided": the per-image step leaves it out of lateral images). Where a
        # side or location word was linked to the finding from outside its phrase, the finding's position is not
        # fully known: no open question and no "no" to the other side
        if len(f.locations) > 1:
            self.skipped["ambiguous-location"] += 1
        doubt = f.side_doubt or f.location_doubt
        if doubt and (f.sides or f.locations):
            self.skipped["doubtful-position"] += 1
        if (f.sides or len(f.locations) == 1) and not doubt:
            location = next(iter(f.locations)) if len(f.locations) == 1 else None
            loc_concepts = [c for cs in f.locations.values() for c in cs] if location else []
            answer = _position(sides or set(f.sides), location)
            self.add(out, "POS", OPEN, cid, "pos-open", key, answer, _uniq(base + side_concepts + loc_concepts),
                     sided=_names_side(answer), finding=name)
        if sides:
            used = _uniq(base + side_concepts)
            if sides >= {"left", "right"} or "bilateral" in sides:
                self.add(out, "POS", CLOSED, cid, "pos-bilateral", key, "yes", used, sided=True, finding=name)
            else:
                side = next(iter(sides))
                other = "right" if side == "left" else "left"
                self.add(out, "POS", CLOSED, cid, "pos-side", key, "yes", used, sided=True, finding=name,
                         side=side)
                if not f.side_doubt:
                    self.add(out, "POS", CLOSED, cid, "pos-side", key, "no", used, sided=True, finding=name,
                             side=other)
        for location, cs in f.locations.items():
            self.add(out, "POS", CLOSED, cid, "pos-location", f"{key}|{location}", "yes", _uniq(base + cs),
                     sided=_names_side(location), finding=name, location=location)
        # SIZE
        # a measurement and a word may both be given ("a small 3 mm nodule"): the open answer is the measurement,
        # the closed question asks the word; two different measurements (or words) are ambiguous
        measured = [k for k in f.sizes if re.fullmatch(r"[\d.]+ mm", k)]
        words = [k for k in f.sizes if k not in measured]
        if len(measured) > 1 or len(words) > 1:
            self.skipped["ambiguous-size"] += 1
        elif f.sizes:
            size = (measured or words)[0]
            used = _uniq(base + f.sizes[size])
            self.add(out, "SIZE", OPEN, cid, "size-open", key, f.size_display.get(size, size), used, finding=name)
            word = words[0] if words else ""
            if word in SIZE_OPPOSITES:
                used = _uniq(base + f.sizes[word])
                self.add(out, "SIZE", CLOSED, cid, "size-closed", key, "yes", used, finding=name, size=word)
                self.add(out, "SIZE", CLOSED, cid, "size-closed", key, "no", used, finding=name,
                         size=SIZE_OPPOSITES[word])
        # COUNT
        counts = {k: (_count_value(k), cs) for k, cs in f.counts.items()}
        counts = {k: v for k, v in counts.items() if v[0] is not None}
        if len(counts) == 1:
            (number, cs), = counts.values()
            used = _uniq(base + cs)
            if isinstance(number, int):
                self.add(out, "COUNT", OPEN, cid, "count-open", key, str(number), used, findings=_plural(name))
            more = "yes" if number == "several" or number > 1 else "no"
            self.add(out, "COUNT", CLOSED, cid, "count-closed", key, more, used, finding=name,
                     findings=_plural(name))
        elif len(counts) > 1:
            self.skipped["ambiguous-count"] += 1

    def negatives(self, case: Case, concepts: list[Concept], region: str, pool: dict[str, _PoolEntry],
                  out: list[_Question]) -> int:
        """``config.negatives`` "no" questions about findings of the allow-list (``config.negative_findings``) that
        other cases of the region mention and this report does not: not the finding, a written form of it, its head
        noun, nor (positively) a finding of its group (``RELATED_FINDINGS``). ``concepts``: all the case's concepts,
        those under ``min_confidence`` included."""
        if self.config.negatives == 0 or "PRES" not in self.config.question_types:
            return 0
        report = case.report.lower()
        mentioned = {c.value.strip().lower() for c in concepts}
        present = {c.value.strip().lower() for c in concepts if c.category == "finding" and not c.negated}
        allowed = set(self.config.negative_findings)
        candidates = [v for v, e in pool.items()
                      if v in allowed and case.case_id not in e.cases and v not in mentioned
                      and not e.mentioned_in(report) and not present & _related(v)]
        if region:  # only findings of cases of the same region: "no" to a brain finding on a chest film is free
            candidates = [v for v in candidates if region in pool[v].regions]
        chosen = self.rng(case.case_id, "negatives").sample(sorted(candidates),
                                                             min(self.config.negatives, len(candidates)))
        for value in chosen:
            self.add(out, "PRES", CLOSED, case.case_id, "pres", f"negative|{value}", "no", [], negative=True,
                     a_finding=_a_finding(pool[value].value))
        return len(chosen)


def _related(value: str) -> set[str]:
    out = {value}
    for group in RELATED_FINDINGS:
        if value in group:
            out.update(group)
    return out


def _names_side(text: str) -> bool:
    return bool(re.search(r"\b(?:left|right|bilateral|both)\b", text, re.IGNORECASE))


@dataclass
class _PoolEntry:
    """A finding some case mentions: the negatives' "lexicon" (only findings seen in these cases are asked about)."""

    value: str
    texts: set[str] = field(default_factory=set)  # the words as written, lower-cased
    cases: set[str] = field(default_factory=set)
    regions: set[str] = field(default_factory=set)

    def mentioned_in(self, report: str) -> bool:
        # conservative: the value, any written form, or the value's head noun anywhere in the report counts as
        # mentioned ("pulmonary nodule" is not asked about a report that says "nodule")
        words = {self.value.lower(), *self.texts, self.value.lower().split()[-1]}
        return any(re.search(r"\b" + re.escape(w) + r"\b", report) for w in words if w)


def _uniq(concepts: Iterable[Concept]) -> list[Concept]:
    seen: dict[str, Concept] = {}
    for c in concepts:
        seen.setdefault(c.concept_id, c)
    return list(seen.values())


def _meta(image: CaseImage | None, key: str) -> str:
    if image is None:
        return ""
    for k, v in image.metadata.items():
        if k.lower() == key.lower() and isinstance(v, (str, int)):
            return str(v).strip()
    return ""


# the study description (IU X-ray: "Xray Chest PA and Lateral"; DICOM StudyDescription / BodyPartExamined) -> region,
# modality family; a text that names two regions or two modalities decides nothing
STUDY_REGIONS = {"CHEST": r"\b(?:chest|thorax|thoracic|cxr|lungs?|ribs?)\b",
                 "HEAD": r"\b(?:head|brain|skull|cranial|orbits?|sinus(?:es)?)\b",
                 "ABD": r"\b(?:abdomen|abdominal|abd|pelvis|kub)\b"}
STUDY_MODALITIES = {"x-ray": r"\bx[- ]?rays?\b|\bx-xxxx\b|\bxray\b|\bxr\b|\bcxr\b|radiograph|\bfilms?\b|\bpa\b|\bap\b|"
                             r"\bportable\b|\bfrontal\b|\b(?:[1-4]|one|two|three)[- ]?views?\b|\b[1-4]v\b",
                    "ct": r"\bct\b|\bcta\b|computed tomography", "mri": r"\bmri?\b|magnetic resonance",
                    "ultrasound": r"ultrasound|sonogra|doppler"}
STUDY_KEYS = ("study", "study_description", "StudyDescription", "description")
REGION_KEYS = ("BodyPartExamined", "body_part", "image_organ", "organ", "region")


def _study_texts(case: Case, image: CaseImage | None = None) -> list[str]:
    texts = []
    for source in ([image.metadata] if image is not None else []) + [case.metadata]:
        for key in STUDY_KEYS:
            for k, v in source.items():
                if k.lower() == key.lower() and isinstance(v, str) and v.strip():
                    # what follows "comparison" names an earlier study ("... comparison CT from 2010")
                    texts.append(re.split(r"\bcompar", v, maxsplit=1, flags=re.IGNORECASE)[0])
    return texts


def _one(found: set[str]) -> str:
    return next(iter(found)) if len(found) == 1 else ""


def _study_region(case: Case) -> str:
    """The case's VQA-RAD region from its metadata (a region key of the case, else of its images, e.g. DICOM
    BodyPartExamined; else the study description), or ""."""
    for source in [case.metadata] + [i.metadata for i in case.images]:
        for key in REGION_KEYS:
            value = next((str(v) for k, v in source.items() if k.lower() == key.lower() and isinstance(v, str)), "")
            region = _one({r for r, rx in STUDY_REGIONS.items() if re.search(rx, value.lower())}) \
                or (value.strip().upper() if value.strip().upper() in REGION_NAMES else "")
            if region:
                return region
    for text in _study_texts(case):
        region = _one({r for r, rx in STUDY_REGIONS.items() if re.search(rx, text.lower())})
        if region:
            return region
    return ""


def _image_modality(case: Case, image: CaseImage | None) -> str:
    """The image's modality family from DICOM Modality, else from the study description, or ""."""
    family = DICOM_MODALITY.get(_meta(image, "Modality").upper(), "")
    if family:
        return family
    for text in _study_texts(case, image):
        family = _one({m for m, rx in STUDY_MODALITIES.items() if re.search(rx, text.lower())})
        if family:
            return family
    return ""


def _image_view(image: CaseImage | None) -> str:
    """The image's plane from its metadata (DICOM ViewPosition, IU X-ray's projection), or ""."""
    return VIEW_POSITIONS.get((_meta(image, "ViewPosition") or _meta(image, "view")
                               or _meta(image, "projection")).lower(), "")


def _case_region(concepts: list[Concept]) -> str:
    regions = Counter(_region(c) for c in concepts if c.category == "organ" and not c.negated)
    regions.pop("", None)
    if not regions:
        return ""
    top = regions.most_common()
    if len(top) > 1 and top[0][1] == top[1][1]:
        return ""  # a tie: the case's region is not clear
    return top[0][0]


def _image_missing(image: CaseImage | None) -> bool:
    return image is None or image.format == "missing" or not image.file


def _qa_id(case_id: str, image_id: str, q: _Question) -> str:
    # content-derived ids: a rerun with another config keeps the ids (and the review decisions) of unchanged pairs
    key = "\x1f".join((image_id, q.template.name, q.question, q.answer, ",".join(c.concept_id for c in q.concepts)))
    return f"{case_id}-q{hashlib.sha1(key.encode('utf-8')).hexdigest()[:10]}"


def _select(concepts_with_status: Iterable[tuple[Concept, str] | Concept], config: QAConfig,
            stats: Counter) -> tuple[list[Concept], list[Concept]]:
    """(usable concepts, positive ones under min_confidence: no answer from them, but they block "no" answers).
    A negated mention is used whatever its confidence: a hedge inside a negation ("no findings to suggest
    pneumonia") does not make the "no" doubtful."""
    usable, held = [], []
    for item in concepts_with_status:
        concept, status = item if isinstance(item, tuple) else (item, "accepted")
        if status == "rejected":
            stats["rejected"] += 1
        elif status == "pending" and not config.use_pending:
            stats["pending-unused"] += 1
        elif concept.confidence < config.min_confidence and not concept.negated:
            stats["low-confidence-unused"] += 1
            held.append(concept)
        else:
            usable.append(concept)
    return usable, held


def generate_with_stats(cases: Iterable[Case], concepts_with_status: Iterable[tuple[Concept, str] | Concept],
                        config: QAConfig | None = None, progress: Progress | None = None,
                        ) -> tuple[list[QAPair], dict[str, Any]]:
    """``generate`` plus what happened: counts per type, closed share, concepts left out and why, skips;
    ``progress(cases done, cases)`` after each case."""
    config = config or QAConfig()
    cases = list(cases)
    concept_stats: Counter = Counter()
    usable, held = _select(concepts_with_status, config, concept_stats)
    by_case: dict[str, list[Concept]] = defaultdict(list)
    held_by_case: dict[str, list[Concept]] = defaultdict(list)
    known = {c.case_id for c in cases}
    for c in usable:
        if c.case_id in known:
            by_case[c.case_id].append(c)
        else:
            concept_stats["unknown-case"] += 1
    for c in held:
        held_by_case[c.case_id].append(c)
    for cs in by_case.values():
        cs.sort(key=lambda c: (c.start, c.end, c.concept_id))

    regions = {case.case_id: _study_region(case) or _case_region(by_case[case.case_id]) for case in cases}
    pool: dict[str, _PoolEntry] = {}
    for case in cases:
        for c in by_case[case.case_id]:
            if c.category == "finding" and c.value.strip() and c.heading.strip().lower() != "normal" \
                    and c.value.strip().lower() not in NORMAL_FINDINGS | GENERIC_FINDINGS:
                e = pool.setdefault(c.value.strip().lower(), _PoolEntry(c.value.strip()))
                e.texts.add(c.text.strip().lower())
                e.cases.add(case.case_id)
                if regions[case.case_id]:
                    e.regions.add(regions[case.case_id])

    gen = _Generator(config)
    pairs: list[QAPair] = []
    seen: set[str] = set()
    negatives = 0
    for done, case in enumerate(sorted(cases, key=lambda c: c.case_id)):
        if progress is not None and done:
            progress(done, len(cases))
        concepts = by_case[case.case_id]
        region = regions[case.case_id]
        case_questions: list[_Question] = []
        gen.organ(case, concepts, region, case_questions)
        gen.findings(case, _findings(case, concepts, config, held_by_case[case.case_id]), case_questions)
        negatives += gen.negatives(case, concepts + held_by_case[case.case_id], region, pool, case_questions)
        images: list[CaseImage | None] = list(case.images) or [None]
        for image in images:
            questions: list[_Question] = []
            gen.modality(case, image, concepts, questions)
            gen.plane(case, image, concepts, questions)
            image_id = image.image_id if image is not None else ""
            flags = ["no-image"] if _image_missing(image) else []
            lateral = _image_view(image) == "lateral"  # left and right overlap on a lateral projection
            for q in questions + case_questions:
                if lateral and q.sided:
                    gen.skipped["side-on-lateral-image"] += 1
                    continue
                qa_id = _qa_id(case.case_id, image_id, q)
                if qa_id in seen:
                    continue
                seen.add(qa_id)
                low = any(c.confidence < LOW_CONFIDENCE for c in q.concepts)
                pairs.append(QAPair(
                    qa_id=qa_id, case_id=case.case_id, image_id=image_id, question=q.question, answer=q.answer,
                    answer_type=q.form, question_type=q.qtype, concept_ids=[c.concept_id for c in q.concepts],
                    spans=[[c.start, c.end] for c in q.concepts], template=q.template.name, generated_by="template",
                    negative=q.negative, organ=region, flags=flags + (["low-confidence"] if low else [])))
    if progress is not None:
        progress(len(cases), len(cases))
    before = len(pairs)
    pairs = balance(pairs, config.closed_share, seed=config.seed)
    closed = sum(p.answer_type == CLOSED for p in pairs)
    stats = {
        "pairs": len(pairs),
        "cases": len(cases),
        "cases_with_pairs": len({p.case_id for p in pairs}),
        "by_type": {t: sum(p.question_type == t for p in pairs) for t in config.question_types},
        "closed": closed,
        "open": len(pairs) - closed,
        "closed_share": round(closed / len(pairs), 4) if pairs else None,
        "target_closed_share": config.closed_share,
        "dropped_for_balance": before - len(pairs),
        "negatives": sum(p.negative for p in pairs),
        "no_image": sum("no-image" in p.flags for p in pairs),
        "concepts_used": len({cid for p in pairs for cid in p.concept_ids}),
        "concepts_left_out": dict(sorted(concept_stats.items())),
        "skipped": dict(sorted(gen.skipped.items())),
        "config": config.to_json(),
    }
    return pairs, stats


def generate(cases: Iterable[Case], concepts_with_status: Iterable[tuple[Concept, str] | Concept],
             config: QAConfig | None = None) -> list[QAPair]:
    """QA pairs for ``cases`` from their concepts, given as (concept, review status) pairs (a bare Concept counts
    as accepted). Deterministic given ``config.seed``; pairs come case by case (sorted by case id), image by image."""
    return generate_with_stats(cases, concepts_with_status, config)[0]


def balance(pairs: list[QAPair], closed_share: float | None, *, seed: int = 0) -> list[QAPair]:
    """Drop closed (or open) pairs, a seeded draw, until the closed share is as close to ``closed_share`` as whole
    pairs allow; the kept pairs stay in their order. ``None`` keeps everything."""
    if closed_share is None or not pairs:
        return pairs
    closed = [i for i, p in enumerate(pairs) if p.answer_type == CLOSED]
    opened = [i for i, p in enumerate(pairs) if p.answer_type != CLOSED]
    share = len(closed) / len(pairs)
    rng = random.Random(f"{seed}:balance")
    if share > closed_share:  # too many closed: keep k with k / (k + open) ~ target
        keep = len(closed) if closed_share >= 1 else round(closed_share * len(opened) / (1 - closed_share))
        drop = set(rng.sample(closed, len(closed) - min(keep, len(closed))))
    elif share < closed_share:
        keep = len(opened) if closed_share <= 0 else round((1 - closed_share) * len(closed) / closed_share)
        drop = set(rng.sample(opened, len(opened) - min(keep, len(opened))))
    else:
        return pairs
    return [p for i, p in enumerate(pairs) if i not in drop]


def generate_into(project, config: QAConfig | None = None, progress: Progress | None = None) -> dict[str, Any]:
    """Generate from the project's concepts with their review decisions applied, replace qa.jsonl (atomically) and
    record the stage. Returns the summary (``generate_with_stats``) plus how many earlier QA review decisions still
    point at a generated pair (ids are content-derived, so unchanged pairs keep their decisions)."""
    from .review import effective_concepts

    config = config or QAConfig()
    with project.writing():
        cases = project.cases()
        if not cases:
            raise ConfigError(f"project {project.root} has no cases; ingest some first (`embedlab vqa-data ingest`)")
        concepts = effective_concepts(project)
        if not concepts:
            raise ConfigError(f"project {project.root} has no concepts; run the extraction first "
                              f"(`embedlab vqa-data extract`)")
        pairs, stats = generate_with_stats(cases, concepts, config, progress=progress)
        ids = {p.qa_id for p in pairs}
        decided = {d.item_id for d in project.decisions() if d.kind == "qa"}
        stats["qa_decisions_kept"] = len(decided & ids)
        stats["qa_decisions_orphaned"] = len(decided - ids)
        project.write_qa_pairs(pairs)
        project.mark_stage("generate", **stats)
    return stats
