"""The bad-row policy every loader of every domain shares: raise on the first malformed row, or skip and count.

    bad = BadRows.coerce(skip_bad_rows)          # loaders take ``skip_bad_rows: bool | BadRows``
    for line, row in rows:
        with bad.guard(path, line):                 # or guard(path, where="record 3 (qid 8)") for records
            out.append(make_record(row))            # a BadRow raised inside is raised as DataError or skipped
    bad.report(path)                                # one warning per file that had skipped rows

Off (the default) the first bad row raises ``DataError`` naming the file, the line (or record) and the field with what
was expected; on, bad rows are skipped and counted in ``.count``, ``.by_file`` and the first ``keep_reasons``
messages in ``.reasons``. It reads no files and knows no formats (the domains' readers do).
"""
from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Iterator

from .errors import DataError

log = logging.getLogger("embedlab.data")


class BadRow(Exception):
    """Raised by row validators with what was expected (and the field, when one is to blame); ``BadRows.guard``
    turns it into a DataError or a skip."""

    def __init__(self, message: str, field_name: str | None = None):
        self.field_name = field_name
        super().__init__(message)


class BadRows:
    """The bad-row policy and its tally for one load (which may span several files)."""

    def __init__(self, skip: bool = False, keep_reasons: int = 5):
        self.skip = skip
        self.keep_reasons = keep_reasons
        self.count = 0
        self.by_file: dict[str, int] = {}
        self.reasons: list[str] = []  # the first `keep_reasons` messages, each "path[:line]: message"
        self._reported: dict[str, int] = {}

    @classmethod
    def coerce(cls, value: bool | BadRows | None) -> BadRows:
        """Accept what loaders accept for ``skip_bad_rows``: a bool or a caller-owned BadRows."""
        return value if isinstance(value, BadRows) else cls(skip=bool(value))

    def reject(self, message: str, path: str | Path, line: int | None = None) -> None:
        """A row is bad: raise DataError when not skipping, otherwise count it and go on."""
        if not self.skip:
            raise DataError(message, path, line)
        key = str(path)
        self.count += 1
        self.by_file[key] = self.by_file.get(key, 0) + 1
        if len(self.reasons) < self.keep_reasons:
            self.reasons.append(f"{key}{f':{line}' if line is not None else ''}: {message}")

    @contextlib.contextmanager
    def guard(self, path: str | Path, line: int | None = None, where: str | None = None) -> Iterator[None]:
        """Run one row's validation; a ``BadRow`` inside is rejected (raised or skipped) and suppressed. ``where``
        names the row when a line number does not (a JSON record: "record 3 (qid 8)")."""
        try:
            yield
        except BadRow as exc:
            field = f"field {exc.field_name!r}: " if exc.field_name else ""
            self.reject(f"{where + ': ' if where else ''}{field}{exc}", path, line)

    def report(self, path: str | Path, what: str = "row") -> int:
        """Log one warning if rows of ``path`` were skipped since the last report; return that number."""
        key = str(path)
        new = self.by_file.get(key, 0) - self._reported.get(key, 0)
        if new > 0:
            self._reported[key] = self.by_file[key]
            first = [r for r in self.reasons if r.startswith(key)][:3]
            log.warning("skipped %d bad %s(s) in %s; first: %s", new, what, key, "; ".join(first) or "(not kept)")
        return max(new, 0)
