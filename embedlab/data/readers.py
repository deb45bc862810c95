"""Low-level row readers with line-exact errors, and the bad-row policy every loader shares.

What it does:
- ``iter_lines``: UTF-8 text lines of a file, numbered from 1, with the line terminator (``\\n`` or ``\\r\\n``) removed
  and nothing else touched. A byte-order mark at the very start of the file is dropped (it marks the encoding, it is
  not text). Bytes that are not UTF-8 are a bad row naming the file, line and byte offset.
- ``read_delimited``: rows of a TSV or CSV file as lists of strings, each with the 1-based line it starts on. Tab-
  separated files are split on the tab only, with quoting off: STS sentences contain quote characters that mean
  nothing to the format. Comma-separated files go through the ``csv`` module with standard quoting.
- ``read_jsonl``: one JSON object per line; blank lines are ignored (they carry no record).
- ``BadRows`` (embedlab.badrows, shared with every domain, re-exported here): what to do with a malformed row. Off
  (the default), the first bad row raises ``DataError`` with the file, the line and what was expected. On, bad rows
  are skipped and counted.

How skipped rows are reported (one design, used by every loader): loaders take ``skip_bad_rows: bool | BadRows``.
``True`` skips; after each file that had skipped rows, one warning is logged on the ``embedlab.data`` logger with the
count and the first few reasons. To read the counts in code, pass your own ``BadRows(skip=True)`` and inspect
``.count``, ``.by_file`` and ``.reasons`` after the load; the record classes stay free of bookkeeping.

Zero usable rows (an empty file, a header alone, every row skipped) is a ``DataError`` naming the file, raised by each
loader through ``require_rows`` as soon as the file is read: an empty evaluation set must fail before any model runs,
not turn into a score.

What it does not do: it never strips, normalises or re-encodes text, never guesses encodings, and knows nothing about
what the columns mean (the loaders in sts.py, retrieval.py and pairs.py do).
"""
from __future__ import annotations

import codecs
import contextlib
import csv
import json
import logging
import math
from pathlib import Path
from typing import Any, Iterator

from ..badrows import BadRow, BadRows  # noqa: F401 - the shared policy, re-exported for the text loaders
from ..errors import DataError

log = logging.getLogger("embedlab.data")

_DELIMITER_NAMES = {"\t": "tab", ",": "comma", ";": "semicolon", "|": "pipe"}


def require_rows(count: int, path: str | Path, what: str, bad: BadRows | None = None) -> None:
    """DataError naming ``path`` when a file gave no usable ``what`` (e.g. "pairs"); says whether rows were skipped."""
    if count:
        return
    skipped = bad.by_file.get(str(path), 0) if bad is not None else 0
    why = (f"all {skipped} row(s) were skipped as bad" if skipped
           else "the file is empty or holds only a header or blank lines")
    raise DataError(f"no {what} to load ({why})", path)


# --------------------------------------------------------------------------------------------------- lines


def check_file(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise DataError("file not found" if not path.exists() else "not a regular file", path)
    return path


def _iter_raw_lines(path: Path, bad: BadRows) -> Iterator[tuple[int, str, str]]:
    """(line number, text, terminator) for each line; undecodable lines are rejected."""
    with open(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            if raw.endswith(b"\r\n"):
                body, term = raw[:-2], "\r\n"
            elif raw.endswith(b"\n"):
                body, term = raw[:-1], "\n"
            else:
                body, term = raw, ""
            if number == 1 and body.startswith(codecs.BOM_UTF8):
                body = body[len(codecs.BOM_UTF8):]
            try:
                text = body.decode("utf-8")  # strict: a wrong encoding must not turn into silent mojibake
            except UnicodeDecodeError as exc:
                bad.reject(
                    f"invalid UTF-8 byte(s) {body[exc.start:exc.end]!r} at byte {exc.start + 1} of the line "
                    f"(expected UTF-8 text)",
                    path,
                    number,
                )
                continue
            yield number, text, term


def iter_lines(path: str | Path, bad: BadRows | None = None) -> Iterator[tuple[int, str]]:
    """(1-based line number, line text without its terminator)."""
    path = check_file(path)
    for number, text, _ in _iter_raw_lines(path, bad or BadRows()):
        yield number, text


def first_line(path: str | Path) -> str:
    """The first line's text ("" for an empty file), closing the file at once."""
    with contextlib.closing(iter_lines(path)) as lines:
        return next(lines, (0, ""))[1]


def count_lines(path: str | Path) -> int:
    """Number of lines as ``iter_lines`` numbers them (a last line without a newline counts)."""
    n, last = 0, b"\n"
    with open(check_file(path), "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            n += chunk.count(b"\n")
            last = chunk[-1:]
    return n + (last != b"\n")


# --------------------------------------------------------------------------------------------------- tables


def delimiter_for(path: str | Path, sample: str | None = None) -> str:
    """Tab for .tsv/.txt/.data; for .csv look at the first line, because STS-B's .csv files are tab-separated."""
    suffix = Path(path).suffix.lower()
    if suffix == ".csv":
        sample = first_line(path) if sample is None else sample
        return "\t" if "\t" in sample else ","
    return "\t"


def _column_error(columns: int, got: int, delimiter: str, extra_ok: bool) -> str:
    name = _DELIMITER_NAMES.get(delimiter, repr(delimiter))
    at_least = "at least " if extra_ok else ""
    return f"expected {at_least}{columns} {name}-separated columns, got {got}"


def read_delimited(
    path: str | Path,
    *,
    columns: int | None,
    delimiter: str = "\t",
    extra_columns_ok: bool = False,
    quoted: bool | None = None,
    bad: BadRows | None = None,
) -> Iterator[tuple[int, list[str]]]:
    """Rows of a delimited file as (line the row starts on, fields).

    ``columns``: how many fields a row must have (``None``: any). With ``extra_columns_ok`` rows may have more and
    the caller reads the first ``columns`` (STS-B rows carry source columns after the pair).
    ``quoted``: honour CSV quoting; default on for commas, off for tabs.
    """
    path = check_file(path)
    bad = bad or BadRows()
    if quoted is None:
        quoted = delimiter != "\t"
    rows = _quoted_rows(path, delimiter, bad) if quoted else _split_rows(path, delimiter, bad)
    for number, row in rows:
        if columns is not None and (len(row) < columns or (len(row) > columns and not extra_columns_ok)):
            bad.reject(_column_error(columns, len(row), delimiter, extra_columns_ok), path, number)
            continue
        yield number, row


def _split_rows(path: Path, delimiter: str, bad: BadRows) -> Iterator[tuple[int, list[str]]]:
    # With quoting off a row is exactly one line split on the delimiter; csv.reader(QUOTE_NONE) would do the same
    # but rejects a stray carriage return inside a field, which we want to pass through untouched.
    for number, text, _ in _iter_raw_lines(path, bad):
        yield number, text.split(delimiter)


def _quoted_rows(path: Path, delimiter: str, bad: BadRows) -> Iterator[tuple[int, list[str]]]:
    # A quoted field may span lines, so feed csv the lines with their terminators and note where each row starts.
    start: list[int] = []

    def feed() -> Iterator[str]:
        for number, text, term in _iter_raw_lines(path, bad):
            if not start:
                start.append(number)
            yield text + term

    reader = csv.reader(feed(), delimiter=delimiter)
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:  # the reader's state is lost: not a row we can skip
            raise DataError(f"malformed CSV: {exc}", path, start[0] if start else None) from None
        number = start.pop() if start else reader.line_num
        yield number, row


# --------------------------------------------------------------------------------------------------- JSON lines


def read_jsonl(path: str | Path, bad: BadRows | None = None) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line; a line that is not a JSON object is a bad row."""
    path = check_file(path)
    bad = bad or BadRows()
    for number, text, _ in _iter_raw_lines(path, bad):
        if not text.strip():
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            bad.reject(f"malformed JSON: {exc.msg} at column {exc.colno} (expected one JSON object per line)", path,
                       number)
            continue
        if not isinstance(obj, dict):
            bad.reject(f"expected a JSON object, got {type(obj).__name__}", path, number)
            continue
        yield number, obj


# --------------------------------------------------------------------------------------------------- field checks
# Each raises BadRow with what was expected; call them inside ``BadRows.guard``.


def parse_score(value: Any, what: str = "score") -> float:
    """A finite number from a string or a JSON number (booleans are not scores)."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise BadRow(f"{what} {value!r} is not a number")
    try:
        score = float(value)
    except ValueError:
        raise BadRow(f"{what} {value!r} is not a number") from None
    if not math.isfinite(score):
        raise BadRow(f"{what} {value!r} is not a finite number")
    return score


def parse_int(value: Any, what: str = "score") -> int:
    """An integer from a string like "2" or a JSON integer (relevance grades)."""
    if isinstance(value, bool):
        raise BadRow(f"{what} {value!r} is not an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise BadRow(f"{what} {value!r} is not an integer")


def require_text(value: Any, what: str = "sentence") -> str:
    """A non-blank string, returned exactly as given (no stripping: evaluation must see the source text)."""
    if not isinstance(value, str):
        raise BadRow(f"{what} must be a string, got {type(value).__name__}")
    if not value.strip():
        raise BadRow(f"empty {what}")
    return value


def require_field(obj: dict[str, Any], key: str) -> Any:
    if key not in obj:
        raise BadRow(f"missing field {key!r} (fields present: {', '.join(sorted(obj)) or 'none'})")
    return obj[key]
