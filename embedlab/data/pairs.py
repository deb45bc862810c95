"""Loaders for training data: IR examples, C-MTEB sentence-pair files and unlabelled sentences.

- IR training examples, FlagEmbedding JSONL layout: ``{"query": str, "pos": [str, ...], "neg": [str, ...],
  "prompt": str?}`` -> ``IRExample``. ``pos`` must be a non-empty list of non-empty strings; ``neg`` may be absent or
  empty; other keys (FlagEmbedding's ``pos_scores``/``neg_scores``/``type``) are ignored.
- C-MTEB pair files -> ``STSPair`` (label 0/1 or a 0-5 score as the score): JSONL with sentence1, sentence2 and label
  or score; TSV/CSV with or without a header, where 3 columns are (sentence1, sentence2, label) and 4 columns are
  (id, sentence1, sentence2, label) as in ATEC's training file.
- Unlabelled sentences, one a line -> ``SentenceSet``, or streamed with ``iter_sentences`` for files too large to
  hold. A blank line is a bad row (it would become an empty training example).

Text is kept exactly as stored (only the line terminator and a leading byte-order mark of the file are removed; a
few C-MTEB files carry stray byte-order marks inside lines, which are kept). It does not deduplicate, shuffle, mine
negatives or tokenise.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

from .readers import (
    BadRow,
    BadRows,
    check_file,
    delimiter_for,
    first_line,
    iter_lines,
    read_jsonl,
    require_field,
    require_rows,
    require_text,
)
from .records import IRExample, SentenceSet, STSPair
from .sts import load_pairs_table
from ..errors import DataError

# --------------------------------------------------------------------------------------------------- IR examples


def _text_list(value: Any, what: str, allow_empty: bool) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise BadRow(f"{what} must be a list of strings, got {type(value).__name__}")
    if not value and not allow_empty:
        raise BadRow(f"{what} is empty (expected at least one passage)")
    return tuple(require_text(item, f"{what}[{i}]") for i, item in enumerate(value))


def ir_example_from_dict(obj: dict[str, Any]) -> IRExample:
    """Validate one FlagEmbedding record; raises BadRow naming the field at fault."""
    query = require_text(require_field(obj, "query"), "query")
    pos = _text_list(require_field(obj, "pos"), "pos", allow_empty=False)
    neg = _text_list(obj.get("neg", []), "neg", allow_empty=True)
    prompt = obj.get("prompt")
    if prompt is not None and not isinstance(prompt, str):
        raise BadRow(f"prompt must be a string, got {type(prompt).__name__}")
    return IRExample(query=query, pos=pos, neg=neg, prompt=prompt)


def iter_ir_examples(path: str | Path, skip_bad_rows: bool | BadRows = False) -> Iterator[IRExample]:
    """Stream IR examples from a FlagEmbedding JSONL file."""
    bad = BadRows.coerce(skip_bad_rows)
    n = 0
    for line, obj in read_jsonl(path, bad):
        example = None
        with bad.guard(path, line):
            example = ir_example_from_dict(obj)
        if example is not None:
            n += 1
            yield example
    bad.report(path)
    require_rows(n, path, "IR examples", bad)  # nothing was yielded, so no work was done on an empty file


def load_ir_examples(path: str | Path, skip_bad_rows: bool | BadRows = False) -> list[IRExample]:
    return list(iter_ir_examples(path, skip_bad_rows))


# --------------------------------------------------------------------------------------------------- C-MTEB pairs

_JSON_SCORE_KEYS = ("score", "label")


def load_cmteb_pairs(path: str | Path, skip_bad_rows: bool | BadRows = False) -> list[STSPair]:
    """A C-MTEB-style pair file in any of the layouts in the module docstring."""
    path = check_file(path)
    if path.suffix.lower() in (".jsonl", ".json"):
        return load_pairs_table(path, "sentence1", "sentence2", _json_score_key(path), skip_bad_rows=skip_bad_rows)
    if path.stat().st_size == 0:  # said plainly, not as "expected 3 or 4 columns, got 1" on a line that is not there
        require_rows(0, path, "sentence pairs")
    first = first_line(path)
    delimiter = delimiter_for(path, first)
    width = len(first.split(delimiter))
    if width == 3:
        columns = (0, 1, 2)
    elif width == 4:  # ATEC training file: a running id first
        columns = (1, 2, 3)
    else:
        raise DataError(f"expected 3 (sentence1, sentence2, label) or 4 (id, sentence1, sentence2, label) columns, "
                        f"got {width}", path, 1)
    return load_pairs_table(path, *columns, delimiter=delimiter, skip_bad_rows=skip_bad_rows)


def _json_score_key(path: Path) -> str:
    # Files use either "label" (0/1) or "score" (graded); decide from the first record so every row is read alike.
    for line, obj in read_jsonl(path):
        for key in _JSON_SCORE_KEYS:
            if key in obj:
                return key
        raise DataError(f"expected a 'score' or 'label' field, found {', '.join(sorted(obj))}", path, line)
    return "score"


# --------------------------------------------------------------------------------------------------- sentences


def iter_sentences(path: str | Path, skip_bad_rows: bool | BadRows = False) -> Iterator[str]:
    """Stream one sentence per line, exactly as stored; blank lines are bad rows."""
    bad = BadRows.coerce(skip_bad_rows)
    n = 0
    for line, text in iter_lines(path, bad):
        if not text.strip():
            bad.reject("empty line (expected one sentence per line)", path, line)
            continue
        n += 1
        yield text
    bad.report(path)
    require_rows(n, path, "sentences", bad)


def load_sentences(path: str | Path, name: str | None = None, skip_bad_rows: bool | BadRows = False) -> SentenceSet:
    return SentenceSet(name=name or Path(path).stem, sentences=list(iter_sentences(path, skip_bad_rows)))
