"""Loader for retrieval benchmarks in the BEIR layout, returning a ``RetrievalSet``.

    <folder>/corpus.jsonl        {"_id", "title"?, "text", ...}   one document a line
    <folder>/queries.jsonl       {"_id", "text", ...}             one query a line
    <folder>/qrels/<split>.tsv   query-id TAB corpus-id TAB score  graded integer relevance

What it checks, each failure naming the file and line: malformed JSON, missing or non-string fields, duplicate ids,
empty query text, qrels rows that are not 3 columns, non-integer grades, duplicate judgements, and judgements whose
query or document id is unknown. The qrels header row is recognised by content rather than assumed, because some
files (our msmarco-sample) have none and dropping their first row would lose a judgement.

Documents whose id is judged but absent from the corpus are an error by default. A dataset whose corpus is known to
lack judged documents can be loaded with ``allow_missing_docs=True``: those judgements are then kept, so an
evaluator that builds the ideal ranking from the qrels (pytrec_eval, as MTEB and BEIR use it) still counts them, and
the number is logged and available from ``missing_judged_docs``. With ``skip_bad_rows`` instead they are dropped and
counted like any other bad row.

Queries are limited to those judged in the split, as BEIR's GenericDataLoader does. Document text and titles are
kept as stored; empty document text is allowed (BEIR corpora contain title-only documents).
It does not load MTEB/HF-hub parquet, TREC run files, or qrels in the 4-column TREC format.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from .readers import (
    BadRow,
    BadRows,
    check_file,
    parse_int,
    read_delimited,
    read_jsonl,
    require_field,
    require_rows,
    require_text,
)
from .records import Document, RetrievalSet
from ..errors import DataError

log = logging.getLogger("embedlab.data")

QRELS_HEADER = ("query-id", "corpus-id", "score")
_GRADE_LIMIT = 2**31  # relevance grades must fit a 32-bit signed integer (pytrec_eval)
_WORD = re.compile(r"[A-Za-z][A-Za-z_\- ]*")


def _id(obj: dict[str, Any]) -> str:
    value = require_field(obj, "_id")
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise BadRow(f"_id must be a string, got {type(value).__name__}")
    value = str(value)  # ids are compared with the qrels' text ids
    if not value:
        raise BadRow("empty _id")
    return value


def _optional_str(obj: dict[str, Any], key: str) -> str:
    value = obj.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise BadRow(f"{key} must be a string, got {type(value).__name__}")
    return value


def load_corpus(path: str | Path, skip_bad_rows: bool | BadRows = False) -> dict[str, Document]:
    bad = BadRows.coerce(skip_bad_rows)
    corpus: dict[str, Document] = {}
    first_seen: dict[str, int] = {}
    for line, obj in read_jsonl(path, bad):
        with bad.guard(path, line):
            doc_id = _id(obj)
            if doc_id in corpus:
                raise BadRow(f"duplicate document _id {doc_id!r} (first on line {first_seen[doc_id]})")
            text = require_field(obj, "text")
            if not isinstance(text, str):
                raise BadRow(f"text must be a string, got {type(text).__name__}")
            corpus[doc_id] = Document(id=doc_id, text=text, title=_optional_str(obj, "title"))
            first_seen[doc_id] = line
    bad.report(path)
    require_rows(len(corpus), path, "documents", bad)
    return corpus


def load_queries(path: str | Path, skip_bad_rows: bool | BadRows = False) -> dict[str, str]:
    bad = BadRows.coerce(skip_bad_rows)
    queries: dict[str, str] = {}
    first_seen: dict[str, int] = {}
    for line, obj in read_jsonl(path, bad):
        with bad.guard(path, line):
            query_id = _id(obj)
            if query_id in queries:
                raise BadRow(f"duplicate query _id {query_id!r} (first on line {first_seen[query_id]})")
            queries[query_id] = require_text(require_field(obj, "text"), "query text")
            first_seen[query_id] = line
    bad.report(path)
    require_rows(len(queries), path, "queries", bad)
    return queries


def load_qrels(
    path: str | Path,
    queries: dict[str, str] | None = None,
    corpus: dict[str, Document] | None = None,
    *,
    allow_missing_docs: bool = False,
    skip_bad_rows: bool | BadRows = False,
) -> dict[str, dict[str, int]]:
    """query id -> {doc id: grade}. Ids are checked against ``queries``/``corpus`` when given."""
    path = check_file(path)
    bad = BadRows.coerce(skip_bad_rows)
    qrels: dict[str, dict[str, int]] = {}
    first_seen: dict[tuple[str, str], int] = {}
    missing_docs = 0
    for line, row in read_delimited(path, columns=3, delimiter="\t", bad=bad):
        if line == 1 and _is_header(row):
            continue
        with bad.guard(path, line):
            query_id, doc_id, grade_text = row
            grade = parse_int(grade_text, "score")
            if not -_GRADE_LIMIT <= grade < _GRADE_LIMIT:  # pytrec_eval keeps grades in a C int: larger fails deep
                raise BadRow(f"score {grade} is out of range (expected a relevance grade such as 0, 1 or 2)")
            if queries is not None and query_id not in queries:
                raise BadRow(f"query-id {query_id!r} is not in queries.jsonl (expected a known query id)")
            if corpus is not None and doc_id not in corpus:
                if not allow_missing_docs:
                    raise BadRow(f"corpus-id {doc_id!r} is not in corpus.jsonl (expected a known document id)")
                missing_docs += 1
            if (query_id, doc_id) in first_seen:
                raise BadRow(f"duplicate judgement for query {query_id!r}, document {doc_id!r} "
                             f"(first on line {first_seen[query_id, doc_id]})")
            first_seen[query_id, doc_id] = line
            qrels.setdefault(query_id, {})[doc_id] = grade
    bad.report(path)
    # Checked here, before anything is embedded: a split without judgements cannot be scored, and the corpus is the
    # expensive half of an evaluation.
    require_rows(len(qrels), path, "relevance judgements", bad)
    if missing_docs:
        log.warning("%s: %d judgement(s) reference documents absent from the corpus; kept as judged (they count in "
                    "the ideal ranking)", path, missing_docs)
    return qrels


def _is_header(row: list[str]) -> bool:
    # BEIR writes "query-id corpus-id score"; some files have no header at all. A first row whose grade cell is a
    # word rather than a number is a header; a first row with a malformed number stays data and fails as such.
    return tuple(c.strip().lower() for c in row) == QRELS_HEADER or bool(_WORD.fullmatch(row[2].strip()))


def load_beir(
    folder: str | Path,
    split: str = "test",
    *,
    name: str | None = None,
    allow_missing_docs: bool = False,
    skip_bad_rows: bool | BadRows = False,
) -> RetrievalSet:
    """A BEIR-layout folder and one qrels split. Queries are restricted to those judged in the split."""
    folder = Path(folder)
    bad = BadRows.coerce(skip_bad_rows)
    qrels_path = folder / "qrels" / f"{split}.tsv"
    for path in (folder / "corpus.jsonl", folder / "queries.jsonl", qrels_path):
        if not path.is_file():
            raise DataError(f"file not found (expected the BEIR layout: corpus.jsonl, queries.jsonl, "
                            f"qrels/{split}.tsv)", path)
    corpus = load_corpus(folder / "corpus.jsonl", bad)
    queries = load_queries(folder / "queries.jsonl", bad)
    qrels = load_qrels(qrels_path, queries, corpus, allow_missing_docs=allow_missing_docs, skip_bad_rows=bad)
    judged = {qid: queries[qid] for qid in qrels}
    return RetrievalSet(name=name or folder.name, split=split, corpus=corpus, queries=judged, qrels=qrels)


def missing_judged_docs(dataset: RetrievalSet) -> dict[str, list[str]]:
    """Judged documents absent from the corpus, per query (empty when the corpus is complete)."""
    missing = {}
    for qid, judged in dataset.qrels.items():
        absent = sorted(doc_id for doc_id in judged if doc_id not in dataset.corpus)
        if absent:
            missing[qid] = absent
    return missing
