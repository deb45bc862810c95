"""Training sources: one file, one task type, validated in full before training starts.

A *training source* is one data file with a name, a task type and what the trainer needs to read it:

| task    | file layout (JSONL; STS may also be CSV/TSV with a header)             | extra settings                   |
|---------|------------------------------------------------------------------------|----------------------------------|
| `ir`    | `{"query": str, "pos": [str, ...], "neg": [str, ...], "prompt": str?}` | optional instruction             |
| `sts`   | `{"sentence1": str, "sentence2": str, "score": number}`                | declared `score_range` [lo, hi]; |
|         |                                                                        | optional instruction             |
| `unsup` | plain text, one sentence a line (blank lines skipped), read lazily     | —                                |

STS label scaling (explicit, because losses such as the mid-layer InfoNCE threshold on the label): every score y must
lie in the declared range [lo, hi] and is mapped to [0, 1] by

    y' = (y - lo) / (hi - lo)          e.g. STS-B [0, 5]: 3.8 -> 0.76;  SICK [1, 5]: 3.8 -> 0.70

so sources with different native scales become comparable. A score outside [lo, hi] is a data error, never clipped.

``load_sources`` reads and validates every row of every source before returning, so a bad file stops a run before
the first step. Errors are ``DataError`` with the file, the 1-based line and the field at fault (``path:line: ...``);
an unknown task type is an ``UnknownChoiceError`` listing the valid ones. ``skip_bad_rows`` follows the shared
bad-row policy of ``readers.BadRows``.

It does not tokenise, sample, mine negatives or apply instructions to text (the trainer formats prompts); IR
validation is ``pairs.ir_example_from_dict``, shared with the IR loader.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence, Union

from ..atomic import atomic_path
from ..errors import ConfigError, DataError, UnknownChoiceError
from .pairs import ir_example_from_dict
from .readers import (
    BadRow,
    BadRows,
    check_file,
    delimiter_for,
    parse_score,
    read_delimited,
    read_jsonl,
    require_field,
    require_text,
)
from .records import IRExample, STSPair

log = logging.getLogger("embedlab.data")

TASKS = ("ir", "sts", "unsup")
STS_FIELDS = ("sentence1", "sentence2", "score")

Example = Union[IRExample, STSPair]


def scale_score(score: float, lo: float, hi: float) -> float:
    """Map a score from the declared range [lo, hi] to [0, 1]: (y - lo) / (hi - lo)."""
    return (score - lo) / (hi - lo)


def _check_task(task: Any, name: str, path: Path) -> str:
    if task not in TASKS:
        err = UnknownChoiceError("task type", str(task), TASKS)
        # Keep the exception type (callers catch UnknownChoiceError) but say which source had the bad type.
        err.args = (f"training source {name!r} ({path}): {err}",)
        raise err
    return task


def _check_range(score_range: Any, task: str, name: str) -> tuple[float, float] | None:
    if task != "sts":
        if score_range is not None:
            raise ConfigError(f"training source {name!r}: score_range applies to sts sources only (this one is "
                              f"{task})")
        return None
    if score_range is None:
        raise ConfigError(f"training source {name!r}: an sts source needs score_range [lo, hi] (e.g. [0, 5] for "
                          f"STS-B, [1, 5] for SICK) so that its scores can be scaled to [0, 1]")
    try:
        lo, hi = (float(x) for x in score_range)
    except (TypeError, ValueError):
        raise ConfigError(f"training source {name!r}: score_range must be two numbers [lo, hi], got "
                          f"{score_range!r}") from None
    if not lo < hi:
        raise ConfigError(f"training source {name!r}: score_range needs lo < hi, got [{lo:g}, {hi:g}]")
    return lo, hi


@dataclass(frozen=True)
class TrainingSource:
    """One training file. ``score_range`` is required for ``sts`` and not allowed for ``ir``."""

    name: str
    path: Path
    task: str
    instruction: str | None = None
    score_range: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))
        _check_task(self.task, self.name, self.path)
        object.__setattr__(self, "score_range", _check_range(self.score_range, self.task, self.name))
        if self.instruction is not None and not isinstance(self.instruction, str):
            raise ConfigError(f"training source {self.name!r}: instruction must be a string")

    def scale(self, score: float) -> float:
        lo, hi = self.score_range  # type: ignore[misc]
        return scale_score(score, lo, hi)

    def load(self, skip_bad_rows: bool | BadRows = False) -> LoadedSource:
        if self.task == "ir":
            examples: list = load_ir_source(self.path, skip_bad_rows)
        elif self.task == "unsup":
            examples = SentenceLines(self.path)
        else:
            examples = load_sts_source(self.path, self.score_range, skip_bad_rows, name=self.name)  # type: ignore
        if not examples:
            raise DataError(f"training source {self.name!r} has no examples", self.path)
        return LoadedSource(self, examples)


@dataclass
class LoadedSource:
    """A validated source and its examples (``IRExample`` for ir, scaled ``STSPair`` for sts)."""

    source: TrainingSource
    examples: list = field(repr=False)

    @property
    def name(self) -> str:
        return self.source.name

    @property
    def task(self) -> str:
        return self.source.task

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> Example:
        return self.examples[index]


def load_sources(sources: Sequence[TrainingSource], skip_bad_rows: bool | BadRows = False) -> list[LoadedSource]:
    """Load and validate every source (all rows of all files) before returning; names must be unique."""
    seen: set[str] = set()
    for source in sources:
        if source.name in seen:
            raise ConfigError(f"two training sources are named {source.name!r}; names must be unique")
        seen.add(source.name)
    return [source.load(skip_bad_rows) for source in sources]


# --------------------------------------------------------------------------------------------------- IR


def load_ir_source(path: str | Path, skip_bad_rows: bool | BadRows = False) -> list[IRExample]:
    """FlagEmbedding JSONL rows -> IRExample; each row must have a query and a non-empty ``pos`` list."""
    bad = BadRows.coerce(skip_bad_rows)
    examples: list[IRExample] = []
    for line, obj in read_jsonl(path, bad):
        with bad.guard(path, line):
            examples.append(ir_example_from_dict(obj))
    bad.report(path)
    return examples


# --------------------------------------------------------------------------------------------------- unsup


class SentenceLines:
    """One sentence a line, read lazily: only the byte offsets of the non-blank lines are held (8 bytes a line), and
    ``lines[i]`` seeks and reads that line — a 1M-sentence file costs 8 MB, not its text. The file must be UTF-8 and
    hold at least one non-blank line."""

    def __init__(self, path: str | Path):
        import numpy as np

        self.path = check_file(path)
        offsets, pos = [], 0
        with open(self.path, "rb") as f:
            for number, raw in enumerate(f, 1):
                if raw.strip():
                    try:
                        raw.decode("utf-8")
                    except UnicodeDecodeError as e:
                        raise DataError(f"not UTF-8 text ({e.reason})", self.path, number) from None
                    offsets.append(pos)
                pos += len(raw)
        if not offsets:
            raise DataError("no sentences: the file is empty or blank (expected one sentence a line)", self.path)
        self.offsets = np.asarray(offsets, dtype=np.int64)
        self._file = None

    def __len__(self) -> int:
        return len(self.offsets)

    def __getitem__(self, i: int) -> str:
        if self._file is None:
            self._file = open(self.path, "rb")
        self._file.seek(int(self.offsets[i]))
        return self._file.readline().decode("utf-8").strip()

    def __getstate__(self):  # picklable (DataLoader workers): reopen the file on first use
        return {**self.__dict__, "_file": None}

    def cut(self, n: int) -> "SentenceLines":
        """The first n sentences (``max_examples``)."""
        self.offsets = self.offsets[:n]
        return self


# --------------------------------------------------------------------------------------------------- STS


def _sts_row(values: Sequence[Any], lo: float, hi: float, name: str) -> STSPair:
    s1 = require_text(values[0], "sentence1")
    s2 = require_text(values[1], "sentence2")
    score = parse_score(values[2], "score")
    if not lo <= score <= hi:
        raise BadRow(f"score {score:g} is outside the declared range [{lo:g}, {hi:g}] of source {name!r}")
    return STSPair(s1, s2, scale_score(score, lo, hi))


def _sts_rows(path: Path, bad: BadRows) -> Iterable[tuple[int, dict[str, Any]]]:
    """(line, record) from JSONL, or from a CSV/TSV whose header names sentence1, sentence2 and score; a short table
    row simply lacks the cells it does not have, so the caller reports it as a missing field."""
    if path.suffix.lower() in (".jsonl", ".json"):
        for line, obj in read_jsonl(path, bad):
            yield line, obj
        return
    rows = read_delimited(path, columns=None, delimiter=delimiter_for(path), bad=bad)
    first = next(rows, None)
    if first is None:
        return
    header_line, header = first
    missing = [c for c in STS_FIELDS if c not in header]
    if missing:
        raise DataError(f"header lacks column(s) {', '.join(missing)} (expected {', '.join(STS_FIELDS)})", path,
                        header_line)
    index = [header.index(c) for c in STS_FIELDS]
    for line, row in rows:
        yield line, {c: row[i] for c, i in zip(STS_FIELDS, index) if i < len(row)}


def load_sts_source(
    path: str | Path, score_range: tuple[float, float], skip_bad_rows: bool | BadRows = False, name: str = ""
) -> list[STSPair]:
    """STS rows with scores checked against ``score_range`` and scaled to [0, 1]."""
    path = check_file(path)
    lo, hi = score_range
    bad = BadRows.coerce(skip_bad_rows)
    pairs: list[STSPair] = []
    for line, obj in _sts_rows(path, bad):
        with bad.guard(path, line):
            pairs.append(_sts_row([require_field(obj, c) for c in STS_FIELDS], lo, hi, name or path.stem))
    bad.report(path)
    _warn_narrow(path, pairs)
    return pairs


def _warn_narrow(path: Path, pairs: list[STSPair]) -> None:
    # A [0, 1] file declared as [0, 5] passes the range check but trains on labels squeezed into [0, 0.2].
    if len(pairs) >= 20:
        scores = [p.score for p in pairs]
        if max(scores) - min(scores) < 0.5:
            log.warning("%s: scaled scores span only [%.2f, %.2f]; is the declared score_range right?", path,
                        min(scores), max(scores))


# --------------------------------------------------------------------------------------------------- writing


def ir_example_to_dict(example: IRExample) -> dict[str, Any]:
    obj: dict[str, Any] = {"query": example.query, "pos": list(example.pos), "neg": list(example.neg)}
    if example.prompt is not None:
        obj["prompt"] = example.prompt
    return obj


def _write_jsonl(path: str | Path, rows: Iterable[dict[str, Any]]) -> int:
    n = 0
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    return n


def write_ir_examples(path: str | Path, examples: Iterable[IRExample]) -> int:
    """Write FlagEmbedding JSONL atomically; returns the number of rows."""
    return _write_jsonl(path, (ir_example_to_dict(e) for e in examples))


def write_sts_pairs(path: str | Path, pairs: Iterable[STSPair]) -> int:
    """Write ``{"sentence1", "sentence2", "score"}`` JSONL atomically (scores as given: no scaling)."""
    return _write_jsonl(path, ({"sentence1": p.sentence1, "sentence2": p.sentence2, "score": p.score} for p in pairs))


# --------------------------------------------------------------------------------------------------- manifests


def sources_from_manifest(
    manifest: str | Path, names: Sequence[str] | None = None, *, instructions: bool = True
) -> list[TrainingSource]:
    """Training sources from a ``convert_all`` manifest.json (paths relative to the manifest's folder).

    ``names`` picks and orders sources (default: all, in manifest order); ``instructions=False`` drops the suggested
    instructions (for models trained without prompts).
    """
    manifest = Path(manifest)
    try:
        entries = json.loads(check_file(manifest).read_text(encoding="utf-8"))["sources"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise DataError(f"not a convert_all manifest ({type(exc).__name__}: {exc})", manifest) from None
    missing = [(i, key) for i, e in enumerate(entries) for key in ("name", "task", "path") if key not in e]
    if missing:
        raise DataError(f"source #{missing[0][0] + 1} lacks {missing[0][1]!r} (expected name, task, path)", manifest)
    by_name = {e["name"]: e for e in entries}
    if names is not None:
        unknown = [n for n in names if n not in by_name]
        if unknown:
            raise UnknownChoiceError("training source", unknown[0], by_name)
    chosen = [by_name[n] for n in names] if names is not None else entries
    return [
        TrainingSource(
            name=e["name"], path=manifest.parent / e["path"], task=e["task"],
            instruction=e.get("instruction") if instructions else None,
            score_range=tuple(e["score_range"]) if e.get("score_range") is not None else None,
        )
        for e in chosen
    ]


# --------------------------------------------------------------------------------------------------- dataset


class MultiSourceDataset:
    """Map-style dataset over loaded sources, indexed by the samplers' global ``(source, index)`` pairs.

    ``dataset[(s, i)]`` is ``(s, example)``: the source index travels with the example so a collate function can
    apply that source's instruction. Usable with ``DataLoader(dataset, batch_sampler=sampler)``.
    """

    def __init__(self, sources: Sequence[LoadedSource]):
        self.sources = list(sources)

    def __getitem__(self, key: tuple[int, int]) -> tuple[int, Example]:
        s, i = key
        return s, self.sources[s].examples[i]

    def __len__(self) -> int:
        return sum(len(s) for s in self.sources)
