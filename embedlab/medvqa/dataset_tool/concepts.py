"""Report text -> concepts: a lexicon (data, YAML) + spaCy rules + NegEx, one Concept per mention with its exact span.

    lexicon = load_lexicon()                                  # the shipped lexicon/radiology.yaml
    lexicon = load_lexicon("our_terms.yaml")                  # ... extended / overridden by a user file
    extractor = ConceptExtractor(lexicon)                     # builds the spaCy pipeline once
    extractor.extract("Small left pleural effusion. No pneumothorax.", case_id="case7")
    extract_into(project)                                     # every case of a project -> concepts.jsonl

What it does. The lexicon (``lexicon/radiology.yaml``; its comments document the YAML schema) lists, per category
(modality, plane, organ, finding, laterality, location, size, count), canonical terms with synonyms (matched
case-insensitively, plurals added) and optional spaCy token patterns; findings carry the MeSH heading they map to
(``heading``, or ``heading_at`` when the heading depends on the organ named next to them, e.g. degenerative change
of the thoracic spine -> "Thoracic Vertebrae"; a mention that implies several headings lists them all in
``attributes["headings"]``). The pipeline is ``spacy.blank("en")`` + sentencizer (line breaks end a sentence too) +
an entity ruler built from the lexicon + negspacy's ``negex`` with the ``en_clinical`` termset plus the lexicon's
own negation, pseudo-negation and termination triggers (and minus the en_clinical triggers it removes, e.g.
"versus"). Negation scope over lists: a preceding trigger ("no", "clear of", "negative for") negates every finding
after it in its sentence up to a termination term ("but", "however", ...), so "clear of focal airspace disease,
pneumothorax, or pleural effusion" negates all three; a following trigger ("not seen", "has resolved") negates the
findings before it back to the sentence start or a termination term (termination terms include "seen ,": in "no
effusion seen, hilar calcifications" the calcifications are not negated). Hedges ("possible", "may represent",
"probable", "X versus Y") lower a finding's confidence to the hedge's (the finding is not negated; iuxray.py counts
it as present from 0.55, i.e. probable yes, speculative no). Sizes ("3 mm", "2.5 x 3 cm", small / moderate / large)
and counts ("two nodules", "multiple") become concepts and attributes of the nearest finding in the sentence;
laterality, location and organ mentions do too. Every concept carries its exact span (``report[start:end] ==
text``), negation, confidence (lexicon synonym 0.9, token pattern 0.8 unless the entry says otherwise; hedged lower)
and the rule that produced it. Concept ids are ``<case_id>-c<n>`` in text order, so a rerun gives the same ids.

What it does not do. No statistical model: no parsing, no coreference ("it has resolved" does not find "it"), no
sections, no temporal reasoning (a finding "unchanged from prior" is present; "previously seen ... has resolved" is
negated only through the trigger). Words not in the lexicon are not found. It does not decide what the image shows:
the concepts are what the report says, for a person to review (review.py). ``iuxray.py`` measures it.
"""
from __future__ import annotations

import copy
import hashlib
import json
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ...errors import ConfigError
from .types import CATEGORIES, Concept, Progress

DEFAULT_LEXICON = Path(__file__).with_name("lexicon") / "radiology.yaml"

TOP_KEYS = {"version", "description", "confidence", "negation", "hedges", *CATEGORIES}
ENTRY_KEYS = {"term", "synonyms", "patterns", "heading", "also_headings", "heading_at", "group", "confidence",
              "attributes", "value", "plurals", "replace", "remove", "note"}
HEDGE_KEYS = {"term", "synonyms", "confidence", "position", "replace", "remove", "note"}
NEGATION_KEYS = ("preceding", "following", "pseudo", "termination", "remove")
NEGEX_KEYS = {"preceding": "preceding_negations", "following": "following_negations",
              "pseudo": "pseudo_negations", "termination": "termination"}
DEFAULT_CONFIDENCE = {"synonym": 0.9, "pattern": 0.8, "measurement": 0.9}

# numeric sizes: "3 mm", "2.5 x 3 cm", "2.5cm x 1.9 cm", "1 by 2 cm"
_NUM = r"\d+(?:\.\d+)?"
_UNIT = r"(?:mm|cm|millimeters?|millimetres?|centimeters?|centimetres?)"
SIZE_RE = re.compile(rf"(?<![\w.])({_NUM})(?:\s*{_UNIT})?(?:\s*(?:x|×|by)\s*({_NUM})(?:\s*{_UNIT})?)?"
                     rf"(?:\s*(?:x|×|by)\s*({_NUM}))?\s*({_UNIT})\b", re.IGNORECASE)
COUNT_WINDOW = 3  # a count word counts a finding at most this many tokens after it (no punctuation between)


# ---------------------------------------------------------------------------------------------------------------
# the lexicon
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class Entry:
    """One canonical term of one category (see the schema in lexicon/radiology.yaml)."""
    category: str
    term: str
    synonyms: list[str] = field(default_factory=list)
    patterns: list[list[dict[str, Any]]] = field(default_factory=list)
    heading: str = ""
    also_headings: list[str] = field(default_factory=list)
    heading_at: dict[str, list[str]] = field(default_factory=dict)
    group: str = ""
    confidence: float | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    value: Any = None
    plurals: bool = True
    note: str = ""

    def phrases(self) -> list[str]:
        return _unique([self.term, *self.synonyms])

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v not in ("", [], {}, None) or k == "plurals"}


@dataclass
class Hedge:
    term: str
    synonyms: list[str] = field(default_factory=list)
    confidence: float = 0.6
    position: str = "preceding"  # preceding: hedges findings after it; following: before it; both
    note: str = ""

    def phrases(self) -> list[str]:
        return _unique([self.term, *self.synonyms])


@dataclass
class Lexicon:
    version: str
    sha: str
    files: list[str]
    entries: dict[str, dict[str, Entry]]  # category -> lower-cased term -> entry
    negation: dict[str, list[str]]  # preceding / following / pseudo / termination (the lexicon's own) + remove
    hedges: dict[str, Hedge]
    confidence: dict[str, float]

    def headings(self) -> set[str]:
        """The MeSH headings (lower-cased) the findings map to: what the lexicon can predict."""
        out: set[str] = set()
        for entry in self.entries.get("finding", {}).values():
            out.update(h for h in [entry.heading, *entry.also_headings] if h)
            for hs in entry.heading_at.values():
                out.update(hs)
        return {normalize_heading(h) for h in out}

    def content(self) -> dict[str, Any]:
        """The merged lexicon as plain data (what ``sha`` is computed over)."""
        return {
            "version": self.version,
            "confidence": self.confidence,
            "negation": self.negation,
            "hedges": [h.__dict__ for h in self.hedges.values()],
            **{cat: [e.to_json() for e in self.entries.get(cat, {}).values()] for cat in CATEGORIES},
        }


def normalize_heading(heading: str) -> str:
    return " ".join(heading.lower().split())


def _unique(items: Iterable[str]) -> list[str]:
    seen, out = set(), []
    for item in items:
        key = " ".join(item.lower().split())
        if key and key not in seen:
            seen.add(key)
            out.append(item)
    return out


def _phrase_key(text: str) -> str:
    return " ".join(text.lower().split())


class _Checker:
    """Type checks of one lexicon file that name the file and the field at fault."""

    def __init__(self, path: Path):
        self.path = path

    def fail(self, where: str, problem: str):
        raise ConfigError(f"lexicon {self.path}: {where}: {problem}")

    def string(self, value, where: str, *, empty: bool = False) -> str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            self.fail(where, f"expected a string, got {type(value).__name__} {value!r}")
        value = str(value)
        if not empty and not value.strip():
            self.fail(where, "must not be empty")
        return value

    def strings(self, value, where: str) -> list[str]:
        if isinstance(value, str) or not isinstance(value, list):
            self.fail(where, f"expected a list of strings, got {type(value).__name__} {value!r}")
        return [self.string(v, f"{where}[{i}]") for i, v in enumerate(value)]

    def number(self, value, where: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
            self.fail(where, f"expected a number from 0 to 1, got {value!r}")
        return float(value)

    def boolean(self, value, where: str) -> bool:
        if not isinstance(value, bool):
            self.fail(where, f"expected true or false, got {value!r}")
        return value

    def mapping(self, value, where: str) -> dict:
        if not isinstance(value, dict):
            self.fail(where, f"expected a mapping, got {type(value).__name__} {value!r}")
        return value

    def keys(self, value: dict, allowed: set[str], where: str) -> None:
        unknown = set(value) - allowed
        if unknown:
            self.fail(where, f"unknown key(s) {', '.join(sorted(map(str, unknown)))} (allowed: "
                             f"{', '.join(sorted(allowed))})")

    def patterns(self, value, where: str) -> list[list[dict[str, Any]]]:
        if not isinstance(value, list):
            self.fail(where, "expected a list of spaCy token patterns (each a list of token mappings)")
        for i, pattern in enumerate(value):
            if not isinstance(pattern, list) or not pattern or not all(isinstance(t, dict) for t in pattern):
                self.fail(f"{where}[{i}]", f"expected a non-empty list of token mappings like "
                                           f"[{{LOWER: heart}}, {{LOWER: enlarged}}], got {pattern!r}")
        return value


def _read_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"lexicon {path}: file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"lexicon {path}: not UTF-8 text ({exc.reason})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"lexicon {path}:{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"lexicon {path}: expected a YAML mapping at the top (version, finding, ...), "
                          f"got {type(data).__name__}")
    check = _Checker(path)
    check.keys(data, TOP_KEYS, "top level")
    return data


def _parse_entry(check: _Checker, category: str, raw, where: str) -> tuple[Entry, dict]:
    raw = check.mapping(raw, where)
    check.keys(raw, ENTRY_KEYS, where)
    if "term" not in raw:
        check.fail(where, "missing the field 'term'")
    entry = Entry(category=category, term=check.string(raw["term"], f"{where}.term").strip())
    if "synonyms" in raw:
        entry.synonyms = check.strings(raw["synonyms"], f"{where}.synonyms")
    if "patterns" in raw:
        entry.patterns = check.patterns(raw["patterns"], f"{where}.patterns")
    for key in ("heading", "group", "note"):
        if key in raw:
            setattr(entry, key, check.string(raw[key], f"{where}.{key}", empty=key == "note"))
    if "also_headings" in raw:
        entry.also_headings = check.strings(raw["also_headings"], f"{where}.also_headings")
    if "heading_at" in raw:
        at = check.mapping(raw["heading_at"], f"{where}.heading_at")
        entry.heading_at = {_phrase_key(check.string(k, f"{where}.heading_at")):
                            ([check.string(v, f"{where}.heading_at.{k}")] if isinstance(v, str)
                             else check.strings(v, f"{where}.heading_at.{k}")) for k, v in at.items()}
    if raw.get("confidence") is not None:
        entry.confidence = check.number(raw["confidence"], f"{where}.confidence")
    if "attributes" in raw:
        entry.attributes = dict(check.mapping(raw["attributes"], f"{where}.attributes"))
    if "value" in raw:
        entry.value = raw["value"]
    if "plurals" in raw:
        entry.plurals = check.boolean(raw["plurals"], f"{where}.plurals")
    if (entry.heading or entry.also_headings or entry.heading_at) and category != "finding":
        check.fail(where, "only findings map to MeSH headings (heading, also_headings, heading_at)")
    flags = {k: check.boolean(raw[k], f"{where}.{k}") for k in ("replace", "remove") if k in raw}
    return entry, {**flags, "given": set(raw)}


def _merge_entry(old: Entry, new: Entry, given: set[str]) -> Entry:
    merged = copy.deepcopy(old)
    merged.synonyms = _unique([*old.synonyms, *new.synonyms])
    merged.patterns = [*old.patterns, *[p for p in new.patterns if p not in old.patterns]]
    merged.also_headings = _unique([*old.also_headings, *new.also_headings])
    merged.heading_at = {**old.heading_at, **new.heading_at}
    merged.attributes = {**old.attributes, **new.attributes}
    for key in ("heading", "group", "confidence", "value", "plurals", "note"):
        if key in given:
            setattr(merged, key, getattr(new, key))
    return merged


def load_lexicon(*extra_paths: str | Path, default: bool = True) -> Lexicon:
    """The shipped lexicon merged with ``extra_paths`` in order (a later file extends and overrides an earlier one).

    Merge rules (also in the YAML's header): an entry whose term (case-insensitive) already exists in its category
    is merged into it (synonyms and patterns added, scalar fields replaced); ``replace: true`` replaces it whole,
    ``remove: true`` drops it. A synonym a later file lists is taken away from every other entry, so a user file can
    re-map a phrase to another term. Negation triggers and hedges are added; ``negation.remove`` drops triggers
    (also en_clinical's). ``default=False`` starts from nothing (a user file that stands alone).
    """
    paths = ([DEFAULT_LEXICON] if default else []) + [Path(p) for p in extra_paths]
    if not paths:
        raise ConfigError("load_lexicon: no lexicon file given")
    entries: dict[str, dict[str, Entry]] = {cat: {} for cat in CATEGORIES}
    negation: dict[str, list[str]] = {k: [] for k in NEGATION_KEYS}
    hedges: dict[str, Hedge] = {}
    confidence = dict(DEFAULT_CONFIDENCE)
    versions: list[str] = []
    for path in paths:
        data = _read_file(path)
        check = _Checker(path)
        versions.append(check.string(data["version"], "version") if "version" in data else path.stem)
        if "confidence" in data:
            conf = check.mapping(data["confidence"], "confidence")
            check.keys(conf, set(DEFAULT_CONFIDENCE), "confidence")
            confidence.update({k: check.number(v, f"confidence.{k}") for k, v in conf.items()})
        file_phrases: dict[str, tuple[str, str]] = {}  # phrase -> (category, term) claimed by this file
        touched: set[tuple[str, str]] = set()
        for cat in CATEGORIES:
            if cat not in data or data[cat] is None:
                continue
            if not isinstance(data[cat], list):
                check.fail(cat, f"expected a list of entries (each with a term), got {type(data[cat]).__name__}")
            for i, raw in enumerate(data[cat]):
                entry, flags = _parse_entry(check, cat, raw, f"{cat}[{i}]")
                key = entry.term.lower()
                if flags.get("remove"):
                    entries[cat].pop(key, None)
                    continue
                if key in entries[cat] and not flags.get("replace"):
                    entries[cat][key] = _merge_entry(entries[cat][key], entry, flags["given"])
                else:
                    entries[cat][key] = entry
                touched.add((cat, key))
                for phrase in entry.phrases():
                    owner = file_phrases.setdefault(_phrase_key(phrase), (cat, key))
                    if owner != (cat, key):
                        check.fail(f"{cat}[{i}]", f"the phrase {phrase!r} is also listed under "
                                                  f"{owner[0]} {owner[1]!r} in this file (a phrase can mean one "
                                                  f"thing; use an entry's attributes for more)")
        # a phrase this file lists belongs to this file's entry alone: earlier files' entries lose it
        for cat, by_term in entries.items():
            for key, entry in by_term.items():
                if (cat, key) not in touched:
                    entry.synonyms = [s for s in entry.synonyms if _phrase_key(s) not in file_phrases]
        if "negation" in data:
            neg = check.mapping(data["negation"], "negation")
            check.keys(neg, set(NEGATION_KEYS), "negation")
            for kind in NEGATION_KEYS:
                if kind in neg:
                    negation[kind] = _unique([*negation[kind], *check.strings(neg[kind], f"negation.{kind}")])
        if "hedges" in data:
            if not isinstance(data["hedges"], list):
                check.fail("hedges", "expected a list of entries (term, synonyms, confidence, position)")
            for i, raw in enumerate(data["hedges"]):
                where = f"hedges[{i}]"
                raw = check.mapping(raw, where)
                check.keys(raw, HEDGE_KEYS, where)
                if "term" not in raw:
                    check.fail(where, "missing the field 'term'")
                term = check.string(raw["term"], f"{where}.term").strip()
                if raw.get("remove"):
                    hedges.pop(term.lower(), None)
                    continue
                hedge = Hedge(term=term)
                old = hedges.get(term.lower())
                if old is not None and not raw.get("replace"):
                    hedge = copy.deepcopy(old)
                if "synonyms" in raw:
                    hedge.synonyms = _unique([*hedge.synonyms, *check.strings(raw["synonyms"], f"{where}.synonyms")])
                if "confidence" in raw:
                    hedge.confidence = check.number(raw["confidence"], f"{where}.confidence")
                if "position" in raw:
                    hedge.position = check.string(raw["position"], f"{where}.position")
                    if hedge.position not in ("preceding", "following", "both"):
                        check.fail(f"{where}.position", f"expected preceding, following or both, "
                                                        f"got {hedge.position!r}")
                if "note" in raw:
                    hedge.note = check.string(raw["note"], f"{where}.note", empty=True)
                hedges[term.lower()] = hedge
    removed = {_phrase_key(t) for t in negation["remove"]}
    for kind in NEGEX_KEYS:
        negation[kind] = [t for t in negation[kind] if _phrase_key(t) not in removed]
    version = "+".join(versions)
    lexicon = Lexicon(version=version, sha="", files=[str(p) for p in paths], entries=entries, negation=negation,
                      hedges=hedges, confidence=confidence)
    blob = json.dumps(lexicon.content(), sort_keys=True, ensure_ascii=False, default=str)
    lexicon.sha = hashlib.sha256(blob.encode("utf-8")).hexdigest()
    return lexicon


# ---------------------------------------------------------------------------------------------------------------
# the extractor
# ---------------------------------------------------------------------------------------------------------------
def _plural_forms(word: str) -> list[str]:
    w = word.lower()
    if not w.isalpha() or len(w) < 3:
        return []
    if w.endswith("is"):  # atelectasis -> atelectases
        return [w[:-2] + "es"]
    if w.endswith(("s", "x", "z", "ch", "sh")):
        return [w + "es"]
    if w.endswith("y") and w[-2] not in "aeiou":
        return [w[:-1] + "ies"]
    return [w + "s"]


# categories also looked for inside a finding's span (an organ there only picks the finding's heading_at site)
MODIFIERS = ("laterality", "location", "size", "count", "organ")


def _line_breaks(doc):
    """A token after a line break, or after "..", starts a sentence (findings and impression are joined by a blank
    line; the sentencizer does not split at "effusion.. Right")."""
    for i, token in enumerate(doc):
        prev = doc[i - 1] if i else None
        if prev is None:
            continue
        if (prev.is_space and "\n" in prev.text) or (len(prev.text) > 1 and set(prev.text) == {"."}):
            token.is_sent_start = True
    return doc


class ConceptExtractor:
    """The spaCy pipeline built once from a lexicon; ``extract`` turns one report into concepts."""

    def __init__(self, lexicon: Lexicon | None = None, spacy_model: str | Path | None = None):
        """``spacy_model``: an installed spaCy pipeline (package name or folder) to use instead of the blank English
        one, for users who have one (e.g. a clinical tokenizer/parser); its own NER is left out (the lexicon's
        ruler names the entities), its parser or senter, when it has one, sets the sentences."""
        import spacy
        from negspacy.termsets import termset
        from spacy.language import Language
        from spacy.matcher import PhraseMatcher

        import negspacy.negation  # noqa: F401  (registers the "negex" factory)

        self.lexicon = lexicon or load_lexicon()
        if not Language.has_factory("embedlab_line_breaks"):
            Language.component("embedlab_line_breaks", func=_line_breaks)
        if spacy_model:
            try:
                nlp = spacy.load(spacy_model, exclude=["ner"])
            except OSError as exc:
                raise ConfigError(f"spaCy pipeline {str(spacy_model)!r} is not installed or not a pipeline folder "
                                  f"({exc}); leave it out to use the blank English pipeline") from None
        else:
            nlp = spacy.blank("en")
        self.spacy_model = str(spacy_model or "blank:en")
        if not {"parser", "senter", "sentencizer"} & set(nlp.pipe_names):
            nlp.add_pipe("sentencizer")
        nlp.add_pipe("embedlab_line_breaks")
        ruler = nlp.add_pipe("entity_ruler", config={"phrase_matcher_attr": "LOWER", "overwrite_ents": True})
        patterns = []
        self._entry_by_id: dict[str, tuple[Entry, str]] = {}
        for cat, by_term in self.lexicon.entries.items():
            for key, entry in by_term.items():
                sid, pid = f"{cat}:{key}#synonym", f"{cat}:{key}#pattern"
                self._entry_by_id[sid] = (entry, "synonym")
                self._entry_by_id[pid] = (entry, "pattern")
                for phrase in entry.phrases():
                    forms = [phrase]
                    if entry.plurals:
                        words = phrase.split()
                        forms += [" ".join([*words[:-1], p]) for p in _plural_forms(words[-1])]
                    patterns += [{"label": cat.upper(), "pattern": f, "id": sid} for f in forms]
                patterns += [{"label": cat.upper(), "pattern": p, "id": pid} for p in entry.patterns]
        ruler.add_patterns(patterns)
        # modifiers inside a finding's span ("calcified right lower lobe granuloma" is one finding by a token
        # pattern; "right" and "lower lobe" are still laterality and location)
        from spacy.pipeline import EntityRuler
        self._inner = EntityRuler(nlp, phrase_matcher_attr="LOWER", overwrite_ents=True)
        self._inner.add_patterns([p for p in patterns if p["label"].lower() in MODIFIERS])
        base = termset("en_clinical").get_patterns()
        removed = {_phrase_key(t) for t in self.lexicon.negation.get("remove", [])}
        neg_termset = {}
        for kind, negex_key in NEGEX_KEYS.items():
            terms = [t for t in base[negex_key] if _phrase_key(t) not in removed]
            neg_termset[negex_key] = _unique([*terms, *self.lexicon.negation.get(kind, [])])
        self.termset = neg_termset
        nlp.add_pipe("negex", config={"neg_termset": neg_termset, "ent_types": ["FINDING"]})
        self.nlp = nlp
        self._hedges = PhraseMatcher(nlp.vocab, attr="LOWER")
        self._hedge_by_key: dict[str, Hedge] = {}
        for key, hedge in self.lexicon.hedges.items():
            self._hedge_by_key[key] = hedge
            self._hedges.add(f"hedge:{key}", list(nlp.tokenizer.pipe(hedge.phrases())))
        self._negex = nlp.get_pipe("negex")

    # -- one report ----------------------------------------------------------------------------------------------
    def extract(self, text: str, case_id: str) -> list[Concept]:
        return self._concepts(self.nlp(text or ""), case_id)

    def extract_many(self, items: Iterable[tuple[str, str]], batch_size: int = 64,
                     progress: Progress | None = None) -> list[list[Concept]]:
        """``[(text, case_id), ...]`` -> one concept list per item (spaCy's ``pipe``: faster on many reports);
        ``progress(done, total)`` after each item."""
        items = list(items)
        docs = self.nlp.pipe((t or "" for t, _ in items), batch_size=batch_size)
        found = []
        for doc, (_, case_id) in zip(docs, items):
            found.append(self._concepts(doc, case_id))
            if progress is not None:
                progress(len(found), len(items))
        return found

    def _segments(self, doc) -> list[tuple[int, int]]:
        """Sentences split further at termination terms (the same boundaries negex uses)."""
        _, _, terminating = self._negex.process_negations(doc)
        return self._negex.termination_boundaries(doc, terminating)

    def _concepts(self, doc, case_id: str) -> list[Concept]:
        conf = self.lexicon.confidence
        sent_of = {}
        for sent_id, sent in enumerate(doc.sents):
            for token in sent:
                sent_of[token.i] = sent_id
        segments = self._segments(doc)

        def segment_of(i: int) -> int:
            for n, (a, b) in enumerate(segments):
                if a <= i < b:
                    return n
            return -1

        hedges = []  # (start token, end token, Hedge)
        for match_id, s, e in self._hedges(doc):
            hedges.append((s, e, self._hedge_by_key[self.nlp.vocab.strings[match_id].split(":", 1)[1]]))

        items: list[dict[str, Any]] = []
        for ent in doc.ents:
            entry, kind = self._entry_by_id[ent.ent_id_]
            item = {
                "category": entry.category, "value": entry.term, "text": ent.text, "start": ent.start_char,
                "end": ent.end_char, "tok": (ent.start, ent.end), "sent": sent_of[ent.start],
                "seg": segment_of(ent.start), "negated": bool(ent._.negex) if entry.category == "finding" else False,
                "confidence": entry.confidence if entry.confidence is not None else conf[kind],
                "attributes": dict(entry.attributes), "rule": f"lexicon {entry.category}:{entry.term} ({kind})",
                "entry": entry,
            }
            if entry.category == "organ" and entry.group:
                item["attributes"]["organ_group"] = entry.group
            if entry.category == "count" and entry.value is not None:
                item["attributes"]["count"] = entry.value
            if entry.category == "finding":
                for hs, he, hedge in hedges:
                    same = segment_of(hs) == item["seg"]
                    before = he <= ent.start and hedge.position in ("preceding", "both")
                    after = hs >= ent.end and hedge.position in ("following", "both")
                    if same and (before or after):
                        item["confidence"] = min(item["confidence"], hedge.confidence)
                        item["attributes"]["hedge"] = doc[hs:he].text
            items.append(item)
            if entry.category == "finding" and len(ent) > 1:
                inner = ent.as_doc()
                inner.ents = []
                for sub in self._inner(inner).ents:
                    sub_entry, sub_kind = self._entry_by_id[sub.ent_id_]
                    if sub_entry.category not in MODIFIERS:
                        continue
                    s, e = ent.start + sub.start, ent.start + sub.end
                    attrs = dict(sub_entry.attributes)
                    if sub_entry.category == "organ" and sub_entry.group:
                        attrs["organ_group"] = sub_entry.group
                    if sub_entry.category == "count" and sub_entry.value is not None:
                        attrs["count"] = sub_entry.value
                    items.append({
                        "category": sub_entry.category, "value": sub_entry.term, "text": doc[s:e].text,
                        "start": doc[s].idx, "end": doc[s:e].end_char, "tok": (s, e), "sent": item["sent"],
                        "seg": item["seg"], "negated": False,
                        "confidence": sub_entry.confidence if sub_entry.confidence is not None else conf[sub_kind],
                        "attributes": attrs, "rule": f"lexicon {sub_entry.category}:{sub_entry.term} ({sub_kind}, "
                                                     f"inside a finding)", "entry": sub_entry, "inside": item,
                    })

        # numeric sizes (regex over the text; a match inside an entity is skipped)
        taken = [(i["start"], i["end"]) for i in items]
        for m in SIZE_RE.finditer(doc.text):
            s, e = m.start(), m.end()
            if any(a < e and s < b for a, b in taken):
                continue
            span = doc.char_span(s, e, alignment_mode="expand")
            if span is None:
                continue
            unit = m.group(4).lower()
            scale = 10.0 if unit.startswith("c") else 1.0
            dims = [float(g) * scale for g in m.group(1, 2, 3) if g is not None]
            value = " x ".join(_fmt(float(g)) for g in m.group(1, 2, 3) if g is not None) + \
                    (" cm" if scale == 10.0 else " mm")
            items.append({
                "category": "size", "value": value, "text": m.group(0), "start": s, "end": e,
                "tok": (span.start, span.end), "sent": sent_of[span.start], "seg": segment_of(span.start),
                "negated": False, "confidence": conf["measurement"],
                "attributes": {"size_mm": max(dims), "dimensions_mm": dims}, "rule": "pattern size:measurement",
                "entry": None,
            })

        # numeric counts: "2 nodules" (a small integer right before a finding)
        taken = [(i["start"], i["end"]) for i in items]
        for token in doc:
            if token.is_digit and 1 < int(token.text) <= 20 and token.i + 1 < len(doc):
                nxt = doc[token.i + 1]
                if not nxt.is_punct and not any(a <= token.idx < b for a, b in taken):
                    items.append({
                        "category": "count", "value": token.text, "text": token.text, "start": token.idx,
                        "end": token.idx + len(token.text), "tok": (token.i, token.i + 1), "sent": sent_of[token.i],
                        "seg": segment_of(token.i), "negated": False, "confidence": conf["pattern"],
                        "attributes": {"count": int(token.text)}, "rule": "pattern count:number", "entry": None,
                    })

        findings = [i for i in items if i["category"] == "finding"]
        keep = []
        for item in items:
            cat = item["category"]
            if cat == "count":
                target = item.get("inside") or self._counted(doc, item, findings)
                if target is None:
                    continue  # "two views", "1." of a numbered list: not a count of a finding
                target["attributes"]["count"] = item["attributes"]["count"]
                item["attributes"]["of"] = target["value"]
            elif cat == "organ" and item.get("inside"):
                continue  # "flattening of the diaphragms": the organ names the finding's site, not a concept
            elif cat in ("laterality", "location", "size", "organ"):
                target = item.get("inside") or _nearest(item, findings)
                if target is None and cat == "size" and item["rule"] != "pattern size:measurement":
                    continue  # "small" that sizes no finding
                if target is not None:
                    _attach(target, item)
            keep.append(item)
        for item in findings:
            sites = [i for i in items if i["category"] in ("organ", "location") and i["sent"] == item["sent"]
                     and (i in keep or i.get("inside") is item)]
            self._heading(item, sites)

        keep.sort(key=lambda i: (i["start"], CATEGORIES.index(i["category"]), i["end"]))
        out = []
        for n, item in enumerate(keep, 1):
            attributes = item["attributes"]
            heading = item.get("heading", "")
            out.append(Concept(
                concept_id=f"{case_id}-c{n}", case_id=case_id, category=item["category"], value=item["value"],
                text=item["text"], start=item["start"], end=item["end"], negated=item["negated"],
                confidence=round(float(item["confidence"]), 3), attributes=attributes, rule=item["rule"],
                heading=heading,
            ))
        return out

    def _counted(self, doc, item, findings):
        """The finding a count word counts: the first one starting within COUNT_WINDOW tokens after it."""
        end = item["tok"][1]
        for f in findings:
            fs = f["tok"][0]
            if end <= fs <= end + COUNT_WINDOW and not any(t.is_punct for t in doc[end:fs]):
                return f
        return None

    def _heading(self, item, sites) -> None:
        entry: Entry = item["entry"]
        headings = [entry.heading] if entry.heading else []
        if entry.heading_at and sites:
            near = sorted(sites, key=lambda s: _distance(item, s))
            for site in near:
                for key in (site["value"].lower(), _phrase_key(site["text"])):
                    if key in entry.heading_at:
                        headings = list(entry.heading_at[key])
                        item["attributes"]["site"] = site["value"]
                        break
                else:
                    continue
                break
        headings = _unique([*headings, *entry.also_headings])
        item["heading"] = headings[0] if headings else ""
        if len(headings) > 1:
            item["attributes"]["headings"] = headings


def _fmt(x: float) -> str:
    return str(int(x)) if x == int(x) else str(x)


def _distance(a, b) -> int:
    (s1, e1), (s2, e2) = a["tok"], b["tok"]
    if e1 <= s2:
        return s2 - e1
    if e2 <= s1:
        return s1 - e2
    return 0


def _nearest(item, findings):
    """The finding nearest to a modifier in its sentence (ties: the one after it, "small left effusion")."""
    same = [f for f in findings if f["sent"] == item["sent"]]
    if not same:
        return None
    return min(same, key=lambda f: (_distance(item, f), f["tok"][0] < item["tok"][0]))


def _attach(finding, modifier) -> None:
    cat, attrs = modifier["category"], finding["attributes"]
    if cat == "size":
        if "size_mm" in modifier["attributes"]:
            attrs["size_mm"] = modifier["attributes"]["size_mm"]
            attrs["size_text"] = modifier["text"]
        else:
            attrs["size"] = modifier["value"]
    elif cat == "organ":
        attrs.setdefault("organ", modifier["value"])
        if "organ_group" in modifier["attributes"]:
            attrs.setdefault("organ_group", modifier["attributes"]["organ_group"])
    else:
        existing = attrs.get(cat)
        if existing and existing != modifier["value"]:
            attrs[cat] = existing if isinstance(existing, list) else [existing]
            if modifier["value"] not in attrs[cat]:
                attrs[cat].append(modifier["value"])
        else:
            attrs[cat] = modifier["value"]
        attrs.update({k: v for k, v in modifier["attributes"].items() if k != "of"})  # bibasilar: base, bilateral
    modifier["attributes"]["of"] = finding["value"]


# ---------------------------------------------------------------------------------------------------------------
# the project stage
# ---------------------------------------------------------------------------------------------------------------
def extract_into(project, lexicon: Lexicon | str | Path | list | tuple | None = None, *,
                 spacy_model: str | Path | None = None, progress: Progress | None = None) -> dict[str, Any]:
    """Extract the concepts of every case of ``project`` into its concepts.jsonl (replaced) and mark the stage.

    ``lexicon``: a Lexicon, a user lexicon file (or a list of them, merged over the shipped one), or None (shipped).
    ``spacy_model``: an installed spaCy pipeline instead of the blank one (``ConceptExtractor``).
    ``progress(cases done, cases)`` after each case.
    Returns a summary: cases, concepts, per category, negated, findings with a heading, lexicon version / sha.
    """
    if lexicon is None:
        lexicon = load_lexicon()
    elif isinstance(lexicon, (str, Path)):
        lexicon = load_lexicon(lexicon)
    elif isinstance(lexicon, (list, tuple)):
        lexicon = load_lexicon(*lexicon)
    extractor = ConceptExtractor(lexicon, spacy_model=spacy_model)
    with project.writing():
        cases = project.cases()
        per_case = extractor.extract_many(((c.report, c.case_id) for c in cases), progress=progress)
        concepts = [c for group in per_case for c in group]
        project.write_concepts(concepts)
        by_category = Counter(c.category for c in concepts)
        summary = {
            "cases": len(cases),
            "concepts": len(concepts),
            "by_category": {cat: by_category.get(cat, 0) for cat in CATEGORIES},
            "negated": sum(c.negated for c in concepts),
            "findings_with_heading": sum(1 for c in concepts if c.category == "finding" and c.heading),
            "cases_without_concepts": sum(1 for group in per_case if not group),
            "lexicon_version": lexicon.version,
            "lexicon_sha": lexicon.sha,
            "lexicon_files": lexicon.files,
            "spacy_pipeline": extractor.spacy_model,
        }
        project.mark_stage("extract", concepts=len(concepts), lexicon_version=lexicon.version,
                           lexicon_sha=lexicon.sha, lexicon_files=lexicon.files, spacy_pipeline=extractor.spacy_model)
    return summary
