"""Review: a person accepts, edits or rejects each concept and then each QA pair; decisions are logged, never lost.

    decide(project, "concept", "case7-c3", "rejected", reviewer="dr.lee", note="not in the image")
    decide(project, "qa", "case7-q2", "edited", reviewer="dr.lee", edit={"answer": "left lower lobe"})
    effective_concepts(project)   # the concepts with their latest decision applied (edits merged, status set)
    effective_qa(project)         # the same for QA pairs
    review_stats(project)         # counts per kind and status, reviewers (for the dataset card)

Each decision is one line appended to the project's review log (project.py) with the reviewer and the time; the
latest decision per item counts, so a review can stop at any item and continue later, and a changed mind is a new
line, not a rewrite. Editable fields are checked here (a typo in a field name is an error, not a silent no-op).
``review_terminal`` is the interactive terminal loop behind ``embedlab vqa-data review``. It does not extract or
generate anything.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from ...errors import ConfigError
from .project import Project, now
from .types import QUESTION_TYPES, STATUSES, Concept, Decision, QAPair

EDITABLE = {
    "concept": {"value", "category", "negated", "attributes", "heading"},
    "qa": {"question", "answer", "answer_type", "question_type"},
}


def _items(project: Project, kind: str) -> dict[str, Concept | QAPair]:
    if kind == "concept":
        return {c.concept_id: c for c in project.concepts()}
    if kind == "qa":
        return {q.qa_id: q for q in project.qa_pairs()}
    raise ConfigError(f"review kind must be 'concept' or 'qa', got {kind!r}")


def check_edit(kind: str, edit: dict[str, Any]) -> dict[str, Any]:
    unknown = set(edit) - EDITABLE[kind]
    if unknown:
        raise ConfigError(f"cannot edit {', '.join(sorted(unknown))} of a {kind} (editable: "
                          f"{', '.join(sorted(EDITABLE[kind]))})")
    if kind == "qa" and "answer_type" in edit and edit["answer_type"] not in ("CLOSED", "OPEN"):
        raise ConfigError(f"answer_type must be CLOSED or OPEN, got {edit['answer_type']!r}")
    if kind == "qa" and "question_type" in edit and edit["question_type"] not in QUESTION_TYPES:
        raise ConfigError(f"question_type must be one of {', '.join(QUESTION_TYPES)}, got {edit['question_type']!r}")
    for key in ("question", "answer", "value"):
        if key in edit and not str(edit[key]).strip():
            raise ConfigError(f"an edited {key} must not be empty")
    return edit


def decide(project: Project, kind: str, item_id: str, status: str, *, reviewer: str,
           edit: dict[str, Any] | None = None, note: str = "") -> Decision:
    """Log one decision (the item must exist; ``edited`` needs an edit, the others must not carry one)."""
    if status not in STATUSES[1:]:
        raise ConfigError(f"a decision is one of {', '.join(STATUSES[1:])}, got {status!r}")
    if not reviewer.strip():
        raise ConfigError("a decision needs the reviewer's name")
    items = _items(project, kind)
    if item_id not in items:
        raise ConfigError(f"no {kind} with id {item_id!r} in project {project.root}")
    edit = dict(edit or {})
    if (status == "edited") != bool(edit):
        raise ConfigError("an 'edited' decision needs the changed fields (and only an edited one carries them)")
    decision = Decision(kind, item_id, status, reviewer.strip(), now(), check_edit(kind, edit), note)
    project.append_decision(decision)
    return decision


def latest_decisions(project: Project, kind: str) -> dict[str, Decision]:
    return {d.item_id: d for d in project.decisions() if d.kind == kind}


def _effective(project: Project, kind: str) -> list[tuple[Concept | QAPair, str]]:
    latest = latest_decisions(project, kind)
    out = []
    for item_id, item in _items(project, kind).items():
        d = latest.get(item_id)
        if d is None:
            out.append((item, "pending"))
        else:
            out.append((replace(item, **d.edit) if d.edit else item, d.status))
    return out


def effective_concepts(project: Project) -> list[tuple[Concept, str]]:
    """Every concept with its latest decision's edits applied, and its status (pending when undecided)."""
    return _effective(project, "concept")


def effective_qa(project: Project) -> list[tuple[QAPair, str]]:
    """Every QA pair with its latest decision's edits applied, and its status (pending when undecided)."""
    return _effective(project, "qa")


def review_stats(project: Project) -> dict[str, Any]:
    stats: dict[str, Any] = {}
    for kind in ("concept", "qa"):
        statuses = Counter(status for _, status in _effective(project, kind))
        stats[kind] = {s: statuses.get(s, 0) for s in STATUSES}
    stats["reviewers"] = sorted({d.reviewer for d in project.decisions()})
    stats["decisions"] = len(project.decisions())
    return stats


# -- the terminal loop ------------------------------------------------------------------------------------------
PROMPT = "[a]ccept  [e]dit  [r]eject  [s]kip  [q]uit > "


def review_terminal(project: Project, kind: str, reviewer: str, *, ask: Callable[[str], str] = input,
                    say: Callable[[str], None] = print, redo: bool = False) -> Counter:
    """Walk the undecided items of ``kind`` (all of them with ``redo``), showing each with its report context, and
    log a decision per answer. Quitting (or end of input) keeps every decision made so far."""
    from .types import Case

    cases: dict[str, Case] = {c.case_id: c for c in project.cases()}
    latest = latest_decisions(project, kind)
    todo = [item for item, _ in _effective(project, kind) if redo or _id(item) not in latest]
    done: Counter = Counter()
    say(f"{len(todo)} {kind}s to review ({len(latest)} decided before)")
    for n, item in enumerate(todo, 1):
        say(f"\n[{n}/{len(todo)}] " + _show(item, cases.get(item.case_id)))
        while True:
            try:
                answer = ask(PROMPT).strip().lower()
            except EOFError:
                answer = "q"
            if answer in ("q", "quit"):
                say(f"stopped; {sum(done.values())} decisions logged this time")
                return done
            if answer in ("s", "skip", ""):
                break
            if answer in ("a", "r"):
                decide(project, kind, _id(item), "accepted" if answer == "a" else "rejected", reviewer=reviewer)
                done["accepted" if answer == "a" else "rejected"] += 1
                break
            if answer == "e":
                edit = _ask_edit(kind, ask, say)
                if edit:
                    try:
                        decide(project, kind, _id(item), "edited", reviewer=reviewer, edit=edit)
                    except ConfigError as exc:
                        say(f"not logged: {exc}")
                        continue
                    done["edited"] += 1
                    break
                continue
            say("answer a, e, r, s or q")
    return done


def _id(item: Concept | QAPair) -> str:
    return item.concept_id if isinstance(item, Concept) else item.qa_id


def _context(case, start: int, end: int, width: int = 60) -> str:
    if case is None or not (0 <= start <= end <= len(case.report)):
        return ""
    text = case.report
    shown = text[max(0, start - width): start] + "[" + text[start:end] + "]" + text[end: end + width]
    return shown.replace("\n", " ")


def _show(item: Concept | QAPair, case) -> str:
    if isinstance(item, Concept):
        neg = " NEGATED" if item.negated else ""
        return (f"{item.case_id} {item.category}: {item.value!r}{neg} (confidence {item.confidence:.2f})\n    "
                f"{_context(case, item.start, item.end)}")
    spans = "; ".join(_context(case, s, e, 40) for s, e in item.spans[:2])
    return (f"{item.case_id} / {item.image_id} {item.question_type} {item.answer_type}\n    Q: {item.question}\n    "
            f"A: {item.answer}" + (f"\n    from: {spans}" if spans else ""))


def _ask_edit(kind: str, ask: Callable[[str], str], say: Callable[[str], None]) -> dict[str, Any]:
    fields = sorted(EDITABLE[kind] - {"attributes"})
    say(f"edit which field ({', '.join(fields)})? empty to go back")
    try:
        name = ask("field > ").strip()
        if not name:
            return {}
        if name not in fields:
            say(f"unknown field {name!r}")
            return {}
        value: Any = ask(f"new {name} > ").strip()
    except EOFError:
        return {}
    if name == "negated":
        value = value.lower() in ("1", "true", "yes", "y")
    return {name: value}
