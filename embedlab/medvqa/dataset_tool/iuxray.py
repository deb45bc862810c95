"""Measured concept extraction on IU X-ray: the findings a report states as present vs the report's MeSH headings.

    dev, acceptance = split_uids(uids)                 # once, by uid, seed 20261202
    evaluate(reports, ConceptExtractor())              # micro P/R/F1 + per heading
    run("dev", out="docs/results/iuxray_concepts.json")

Data: ``<data root>/medvqa/iu-xray/indiana_reports.csv`` (3851 chest X-ray reports; ``EMBEDLAB_DATA``). The text of a
report is its *findings* and *impression* joined by a blank line (the sentence breaks there); *indication* and
*comparison* are left out (they state why the study was done, not what it shows). The labels are the MeSH field:
``;``-separated ``heading/qualifier/...`` strings; a report's label set is its lower-cased headings, and ``normal``
and ``No Indexing`` mean no heading. The prediction is the set of headings of the non-negated findings with
confidence >= 0.55 (``PRESENT_CONFIDENCE``): probable mentions ("probable", "X versus Y") count, speculative ones
("may represent", "possibly") do not, which is how IU's MeSH indexing treats them on the development half.

The split (``split_uids``): the uids sorted (numerically when all are integers), shuffled by
``random.Random(seed)``, the first half (``n // 2``) is the development half, the rest the acceptance half. The
lexicon and the triggers were built looking only at the development half; the acceptance half is for a single,
final measurement (each acceptance run is logged in the output with the lexicon's sha, so a later rerun shows).

Scores (``evaluate``): micro precision / recall / F1 over (report, heading) pairs. The headline is over ALL MeSH
headings that occur in the labels: a heading the lexicon cannot produce counts as missed. Next to it, the same over
the headings the lexicon covers (``covered``), which is higher and flatters the method; both are reported, the
headline is ``micro``. Per heading: support, tp, fp, fn, P, R, F1, and whether the lexicon covers it.
"""
from __future__ import annotations

import csv
import os
import platform
import random
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ... import settings
from ...atomic import write_json
from ...errors import ConfigError, DataError
from .concepts import ConceptExtractor, Lexicon, load_lexicon, normalize_heading
from .types import Concept

SEED = 20261202
REPORTS = Path("medvqa") / "iu-xray" / "indiana_reports.csv"
DEFAULT_OUT = Path("docs") / "results" / "iuxray_concepts.json"
NO_HEADING = {"normal", "no indexing"}
# a finding counts as present from this confidence on: IU's MeSH indexing (development half) leaves out speculative
# mentions ("may represent atelectasis", "possibly pneumonia": the lexicon's hedges give them 0.5) and keeps probable
# ones ("probable", "X versus Y": 0.7)
PRESENT_CONFIDENCE = 0.55
HALVES = ("dev", "acceptance")


def reports_file() -> Path:
    root = settings.data_root()
    if root is None:
        raise DataError("no local data root: set EMBEDLAB_DATA to the folder that holds medvqa/iu-xray/")
    path = Path(root) / REPORTS
    if not path.is_file():
        raise DataError("IU X-ray reports not found (expected indiana_reports.csv from the IU X-ray release)", path)
    return path


def report_text(findings: str, impression: str) -> str:
    """The evaluated text: findings and impression, joined by a blank line (either may be empty)."""
    parts = [p.strip() for p in (findings or "", impression or "") if p and p.strip()]
    return "\n\n".join(parts)


def read_reports(path: str | Path | None = None) -> list[dict[str, str]]:
    """The reports as ``{"uid", "mesh", "findings", "impression", "text"}`` (``text`` = findings + impression)."""
    path = Path(path) if path is not None else reports_file()
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        missing = {"uid", "MeSH", "findings", "impression"} - set(reader.fieldnames or [])
        if missing:
            raise DataError(f"missing column(s) {', '.join(sorted(missing))}", path)
        rows = []
        for line, row in enumerate(reader, 2):
            if not (row.get("uid") or "").strip():
                raise DataError("empty uid", path, line)
            rows.append({"uid": row["uid"].strip(), "mesh": row["MeSH"] or "", "findings": row["findings"] or "",
                         "impression": row["impression"] or "",
                         "text": report_text(row["findings"], row["impression"])})
    return rows


def _uid_key(uids: Sequence[str]):
    if all(str(u).isdigit() for u in uids):
        return lambda u: int(u)
    return str


def split_uids(uids: Iterable[str], seed: int = SEED) -> tuple[list[str], list[str]]:
    """(development half, acceptance half): sorted uids shuffled with ``random.Random(seed)``; dev = first n // 2.

    Duplicates are dropped first; both halves come back sorted. The same uids and seed give the same split.
    """
    unique = list({str(u) for u in uids})
    key = _uid_key(unique)
    unique.sort(key=key)
    shuffled = list(unique)
    random.Random(seed).shuffle(shuffled)
    half = len(shuffled) // 2
    return sorted(shuffled[:half], key=key), sorted(shuffled[half:], key=key)


def mesh_headings(mesh_field: str) -> set[str]:
    """``"Opacity/lung/base/left;Pleural Effusion/right"`` -> ``{"opacity", "pleural effusion"}``."""
    out = set()
    for part in (mesh_field or "").split(";"):
        heading = normalize_heading(part.split("/")[0])
        if heading and heading not in NO_HEADING:
            out.add(heading)
    return out


def concept_headings(concept: Concept) -> list[str]:
    headings = concept.attributes.get("headings") or ([concept.heading] if concept.heading else [])
    return [normalize_heading(h) for h in headings]


def presence(concepts: Iterable[Concept], min_confidence: float = 0.0) -> set[str]:
    """The headings (lower-cased) of the non-negated findings (with confidence >= ``min_confidence``)."""
    out = set()
    for c in concepts:
        if c.category == "finding" and not c.negated and c.confidence >= min_confidence:
            out.update(concept_headings(c))
    return out


def _prf(tp: int, fp: int, fn: int) -> dict[str, float | int]:
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * p * r / (p + r) if p + r else 0.0
    return {"p": round(p, 4), "r": round(r, 4), "f1": round(f1, 4), "tp": tp, "fp": fp, "fn": fn}


def score(gold: Sequence[set[str]], pred: Sequence[set[str]], covered: set[str]) -> dict[str, Any]:
    """Micro scores over (report, heading) pairs: over all headings, and over the covered ones; per heading."""
    tp, fp, fn = Counter(), Counter(), Counter()
    support = Counter()
    for g, p in zip(gold, pred, strict=True):
        support.update(g)
        tp.update(g & p)
        fp.update(p - g)
        fn.update(g - p)
    headings = sorted(set(support) | set(fp), key=lambda h: (-support[h], h))

    def micro(keep) -> dict[str, float | int]:
        return _prf(sum(tp[h] for h in headings if keep(h)), sum(fp[h] for h in headings if keep(h)),
                    sum(fn[h] for h in headings if keep(h)))

    per = {h: {"support": support[h], **_prf(tp[h], fp[h], fn[h]), "covered": h in covered} for h in headings}
    in_labels = set(support)
    return {
        "micro": micro(lambda h: True),
        "covered": {"micro": micro(lambda h: h in covered), "headings_in_labels": len(in_labels),
                    "covered_in_labels": len(in_labels & covered),
                    "label_share_covered": round(sum(support[h] for h in in_labels & covered)
                                                 / max(1, sum(support.values())), 4)},
        "per_heading": per,
    }


def evaluate(reports: Sequence[dict[str, str]], extractor: ConceptExtractor,
             min_confidence: float = PRESENT_CONFIDENCE) -> dict[str, Any]:
    """Compare each report's predicted heading set with its MeSH heading set (``reports`` as ``read_reports``).

    ``micro`` is the headline (all MeSH headings that occur; one the lexicon lacks counts as missed); ``covered``
    the same restricted to the headings the lexicon maps to.
    """
    concepts = extractor.extract_many((r["text"], r["uid"]) for r in reports)
    gold = [mesh_headings(r["mesh"]) for r in reports]
    pred = [presence(c, min_confidence) for c in concepts]
    result = score(gold, pred, extractor.lexicon.headings())
    return {
        "headline": "micro over all MeSH headings that occur (a heading the lexicon lacks counts as missed)",
        "micro": result["micro"],
        "covered": result["covered"],
        "per_heading": result["per_heading"],
        "present_from_confidence": min_confidence,
        "n_reports": len(reports),
        "n_reports_without_text": sum(1 for r in reports if not r["text"]),
        "n_reports_without_heading": sum(1 for g in gold if not g),
    }


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    return f"{platform.node() or 'unknown host'}: {platform.system()} {platform.release()}, {cpu}, " \
           f"{os.cpu_count()} CPUs, Python {platform.python_version()}"


def run(half: str = "dev", out: str | Path | None = DEFAULT_OUT, *, lexicon: Lexicon | None = None,
        reports_path: str | Path | None = None, seed: int = SEED) -> dict[str, Any]:
    """Evaluate one half and write the result into ``out`` (JSON, atomic; the other half's entry is kept).

    ``out=None`` only returns the result. Every acceptance run is appended to ``acceptance_log`` (time, lexicon sha,
    micro scores), so a rerun after tuning is visible in the file.
    """
    if half not in HALVES:
        raise ConfigError(f"half must be one of {', '.join(HALVES)}, got {half!r}")
    reports = read_reports(reports_path)
    dev, acceptance = split_uids([r["uid"] for r in reports], seed)
    chosen = set(dev if half == "dev" else acceptance)
    selected = [r for r in reports if r["uid"] in chosen]
    lexicon = lexicon or load_lexicon()
    extractor = ConceptExtractor(lexicon)
    started = datetime.now(timezone.utc)
    result = evaluate(selected, extractor)
    result.update({
        "half": half,
        "split": {"seed": seed, "n_uids": len(dev) + len(acceptance), "dev": len(dev), "acceptance": len(acceptance),
                  "rule": "sorted uids, random.Random(seed).shuffle, dev = first n // 2"},
        "text": "findings + impression",
        "lexicon": {"version": lexicon.version, "sha": lexicon.sha, "files": [Path(f).name for f in lexicon.files]},
        "time": started.isoformat(timespec="seconds"),
        "seconds": round((datetime.now(timezone.utc) - started).total_seconds(), 1),
        "machine": _machine(),
    })
    if out is not None:
        out = Path(out)
        doc: dict[str, Any] = {}
        if out.is_file():
            import json
            try:
                doc = json.loads(out.read_text(encoding="utf-8"))
            except ValueError:
                raise DataError("not valid JSON (remove it or pick another --out)", out) from None
            if not isinstance(doc, dict):
                raise DataError("expected a JSON object", out)
        doc["description"] = ("IU X-ray concept extraction vs MeSH headings (embedlab.medvqa.dataset_tool.iuxray); "
                              "headline: micro over all headings")
        doc[half] = result
        if half == "acceptance":
            doc.setdefault("acceptance_log", []).append(
                {"time": result["time"], "lexicon_sha": lexicon.sha, "micro": result["micro"]})
        write_json(out, doc)
    return result
