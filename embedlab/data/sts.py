"""Loaders for semantic-textual-similarity files, returning ``list[STSPair]``.

Formats:
- STS Benchmark (``sts-{train,dev,test}.csv``): tab-separated despite the name; columns genre, file, year, id, score,
  sentence1, sentence2, then on some rows source columns that we ignore. No header.
- SentEval STS12-16 (``STS.input.<subset>.txt``: sentence1 TAB sentence2; ``STS.gs.<subset>.txt``: one score a line,
  an empty line meaning the pair was not scored). A year is all its subsets concatenated in sorted subset order: the
  "all" setting of SentEval/SimCSE and the test split of MTEB's STS12-16.
- SICK (``SICK_train.txt``, ``SICK_trial.txt``, ``SICK_test_annotated.txt``, ``SICK.txt``): tab-separated with a header;
  columns are found by name (pair_ID, sentence_A, sentence_B, relatedness_score, ...).
- Generic pair tables: CSV/TSV/JSONL with a column mapping (names or 0-based indices).

Texts are passed through exactly as stored, with only the line terminator removed: published scores (MTEB's
all-MiniLM-L6-v2 numbers) are computed on the stored text, and some STS-B sentences end in spaces.
Scores keep the source's scale (0-5 for STS, 1-5 for SICK). Nothing here tokenises, lowercases or rescales.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .readers import (
    BadRow,
    BadRows,
    check_file,
    count_lines,
    delimiter_for,
    iter_lines,
    parse_score,
    read_delimited,
    read_jsonl,
    require_field,
    require_rows,
    require_text,
)
from .records import STSPair
from ..errors import DataError

Column = str | int


def _pair(s1: Any, s2: Any, score: Any) -> STSPair:
    return STSPair(require_text(s1, "sentence1"), require_text(s2, "sentence2"), parse_score(score))


# --------------------------------------------------------------------------------------------------- STS-B


def load_stsb(path: str | Path, skip_bad_rows: bool | BadRows = False) -> list[STSPair]:
    """One STS Benchmark file: the first 7 tab-separated columns (score is the 5th, the sentences the 6th and 7th)."""
    bad = BadRows.coerce(skip_bad_rows)
    pairs: list[STSPair] = []
    for line, row in read_delimited(path, columns=7, delimiter="\t", extra_columns_ok=True, bad=bad):
        with bad.guard(path, line):
            pairs.append(_pair(row[5], row[6], row[4]))
    bad.report(path)
    require_rows(len(pairs), path, "sentence pairs", bad)
    return pairs


# --------------------------------------------------------------------------------------------------- SentEval


def senteval_subsets(directory: str | Path) -> list[str]:
    """Subset names present in a SentEval STS folder (from the ``STS.input.<subset>.txt`` files), sorted."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError("folder not found (expected a SentEval STS folder with STS.input.*.txt files)", directory)
    prefix, suffix = "STS.input.", ".txt"
    names = sorted(p.name[len(prefix):-len(suffix)] for p in directory.glob(f"{prefix}*{suffix}"))
    if not names:
        raise DataError("no STS.input.<subset>.txt files in this folder", directory)
    return names


def load_senteval_subset(directory: str | Path, subset: str, skip_bad_rows: bool | BadRows = False) -> list[STSPair]:
    """One subset: pairs whose gold line is non-empty, in file order."""
    bad = BadRows.coerce(skip_bad_rows)
    directory = Path(directory)
    input_path = check_file(directory / f"STS.input.{subset}.txt")
    gold_path = check_file(directory / f"STS.gs.{subset}.txt")
    n_input, n_gold = count_lines(input_path), count_lines(gold_path)
    if n_input != n_gold:  # a shifted file would silently pair every sentence with the wrong score
        raise DataError(
            f"has {n_input} lines but {gold_path.name} has {n_gold}; input and gold files must align line by line",
            input_path,
        )
    sentences = dict(read_delimited(input_path, columns=2, delimiter="\t", bad=bad))
    pairs: list[STSPair] = []
    for line, gold in iter_lines(gold_path, bad):
        if not gold.strip() or line not in sentences:  # unscored pair (SentEval drops these), or a skipped row
            continue
        s1, s2 = sentences[line]
        with bad.guard(input_path, line):
            s1, s2 = require_text(s1, "sentence1"), require_text(s2, "sentence2")
            with bad.guard(gold_path, line):
                pairs.append(STSPair(s1, s2, parse_score(gold)))
    bad.report(input_path)
    bad.report(gold_path)
    if not pairs:  # the gold file decides which pairs are scored: name it unless the input rows were skipped
        skipped_in = bad.by_file.get(str(input_path), 0)
        require_rows(0, input_path if skipped_in else gold_path, "scored sentence pairs", bad)
    return pairs


def load_senteval_subsets(
    directory: str | Path, subsets: list[str] | None = None, skip_bad_rows: bool | BadRows = False
) -> dict[str, list[STSPair]]:
    """Every subset (or the named ones) of a SentEval STS folder, keyed by subset, in sorted order."""
    bad = BadRows.coerce(skip_bad_rows)
    names = sorted(subsets) if subsets is not None else senteval_subsets(directory)
    return {name: load_senteval_subset(directory, name, bad) for name in names}


def load_senteval_sts(
    directory: str | Path, subsets: list[str] | None = None, skip_bad_rows: bool | BadRows = False
) -> list[STSPair]:
    """A SentEval STS year as one list: all subsets concatenated in sorted subset order (the "all" setting)."""
    by_subset = load_senteval_subsets(directory, subsets, skip_bad_rows)
    return [pair for pairs in by_subset.values() for pair in pairs]


# --------------------------------------------------------------------------------------------------- SICK

SICK_COLUMNS = ("sentence_A", "sentence_B", "relatedness_score")


def load_sick(path: str | Path, skip_bad_rows: bool | BadRows = False) -> list[STSPair]:
    """A SICK file (train, trial, test_annotated or the full SICK.txt): columns found by header name."""
    bad = BadRows.coerce(skip_bad_rows)
    rows = read_delimited(path, columns=None, delimiter="\t", bad=bad)
    first = next(rows, None)
    if first is None:
        raise DataError(f"empty file (expected a header with {', '.join(SICK_COLUMNS)})", path, 1)
    header_line, header = first
    missing = [c for c in SICK_COLUMNS if c not in header]
    if missing:
        raise DataError(f"header lacks column(s) {', '.join(missing)} (expected pair_ID, sentence_A, sentence_B, "
                        f"relatedness_score, ...)", path, header_line)
    i1, i2, isc = (header.index(c) for c in SICK_COLUMNS)
    pairs: list[STSPair] = []
    for line, row in rows:
        with bad.guard(path, line):
            if len(row) != len(header):
                raise BadRow(f"expected {len(header)} tab-separated columns, got {len(row)}")
            pairs.append(_pair(row[i1], row[i2], row[isc]))
    bad.report(path)
    require_rows(len(pairs), path, "sentence pairs", bad)
    return pairs


# --------------------------------------------------------------------------------------------------- generic


def load_pairs_table(
    path: str | Path,
    sentence1: Column = "sentence1",
    sentence2: Column = "sentence2",
    score: Column = "score",
    *,
    delimiter: str | None = None,
    header: bool | None = None,
    skip_bad_rows: bool | BadRows = False,
) -> list[STSPair]:
    """Sentence pairs with a score from a CSV, TSV or JSONL file, by column mapping.

    JSONL (``.jsonl``/``.json`` lines): the mapping names keys; string scores such as "1" are accepted.
    CSV/TSV: the mapping names header columns (then the first row must be a header) or gives 0-based indices.
    ``header=None`` with indices means: the first row is a header when its score cell is not a number.
    ``delimiter=None``: tab for .tsv/.txt/.data, and for .csv whatever the first line uses (tab or comma).
    Rows may have more columns than the mapping uses, but every row must have as many cells as the first.
    """
    path = check_file(path)
    bad = BadRows.coerce(skip_bad_rows)
    if path.suffix.lower() in (".jsonl", ".json"):
        pairs = _pairs_from_jsonl(path, (sentence1, sentence2, score), bad)
    else:
        pairs = _pairs_from_table(path, (sentence1, sentence2, score), delimiter, header, bad)
    bad.report(path)
    require_rows(len(pairs), path, "sentence pairs", bad)
    return pairs


def _pairs_from_jsonl(path: Path, mapping: tuple[Column, ...], bad: BadRows) -> list[STSPair]:
    if not all(isinstance(key, str) for key in mapping):
        raise DataError(f"JSONL columns must be field names, got {mapping!r}", path)
    pairs = []
    for line, obj in read_jsonl(path, bad):
        with bad.guard(path, line):
            pairs.append(_pair(*(require_field(obj, key) for key in mapping)))
    return pairs


def _pairs_from_table(
    path: Path, mapping: tuple[Column, ...], delimiter: str | None, header: bool | None, bad: BadRows
) -> list[STSPair]:
    delimiter = delimiter or delimiter_for(path)
    rows = read_delimited(path, columns=None, delimiter=delimiter, bad=bad)
    first = next(rows, None)
    if first is None:
        return []
    first_line, first_row = first
    by_name = any(isinstance(c, str) for c in mapping)
    if header is None:
        header = by_name or not _is_number(_cell(first_row, mapping[2]))
    if by_name and not header:
        raise DataError(f"columns given by name {mapping!r} need a header row", path, first_line)
    width = len(first_row)
    if by_name:
        missing = [c for c in mapping if isinstance(c, str) and c not in first_row]
        if missing:
            raise DataError(f"header lacks column(s) {', '.join(map(repr, missing))}; it has "
                            f"{', '.join(map(repr, first_row))}", path, first_line)
    indices = [first_row.index(c) if isinstance(c, str) else c for c in mapping]
    if max(indices) >= width:
        raise DataError(f"column index {max(indices)} is out of range: the first row has {width} columns", path,
                        first_line)
    body = rows if header else _chain_first(first, rows)
    pairs = []
    for line, row in body:
        with bad.guard(path, line):
            if len(row) != width:
                name = "tab" if delimiter == "\t" else "comma" if delimiter == "," else repr(delimiter)
                raise BadRow(f"expected {width} {name}-separated columns, got {len(row)}")
            pairs.append(_pair(*(row[i] for i in indices)))
    return pairs


def _chain_first(first, rest):
    yield first
    yield from rest


def _cell(row: list[str], column: Column) -> str | None:
    return row[column] if isinstance(column, int) and column < len(row) else None


def _is_number(text: str | None) -> bool:
    try:
        parse_score(text)
        return True
    except BadRow:
        return False
