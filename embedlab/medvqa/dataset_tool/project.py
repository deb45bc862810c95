"""A dataset-tool project: one folder that holds a build from upload to export, so that work survives restarts.

    project = Project.create("runs/vqa-data/cases", name="our chest cases")
    project = Project.open("runs/vqa-data/cases")
    project.cases(); project.concepts(); project.qa_pairs(); project.decisions()

Layout (every file written by embedlab; the folder carries embedlab's owner marker):

    project.json        name, created, the lexicon file and version used, stage timestamps
    images/             the ingested images under names embedlab chose (``<image_id>.<ext>``)
    cases.jsonl         one Case per line (types.py)
    concepts.jsonl      one Concept per line (the extractor's output; replaced when extraction reruns)
    qa.jsonl            one QAPair per line (the generator's output; replaced when generation reruns)
    decisions.jsonl     the review log: one Decision per line, appended, never rewritten (the latest per item counts)

Stage outputs are replaced atomically (temp file + rename); the review log is appended one line per decision with a
flush and fsync, and a torn last line (a write killed mid-way) is ignored with a warning. Writers hold the folder's
lock (``Project.writing()``), so two processes never write one project at once. It runs no pipeline stage itself.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ...atomic import write_json, write_text
from ...errors import ConfigError, DataError
from ...outputs import claim_folder, lock_folder
from .types import Case, Concept, Decision, QAPair

log = logging.getLogger(__name__)

PROJECT_FILE = "project.json"
KIND = "Med-VQA dataset-tool project"


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class Project:
    def __init__(self, root: Path, info: dict[str, Any]):
        self.root = root
        self.info = info

    # -- opening ----------------------------------------------------------------------------------------------
    @classmethod
    def create(cls, root: str | Path, name: str | None = None) -> Project:
        """A new project in ``root`` (a new or empty folder, or an existing project: then opened unchanged)."""
        root = Path(root)
        if (root / PROJECT_FILE).is_file():
            return cls.open(root)
        claim_folder(root, "project folder", KIND)
        info = {"name": name or root.name, "created": now(), "stages": {}}
        write_json(root / PROJECT_FILE, info)
        (root / "images").mkdir(exist_ok=True)
        return cls(root, info)

    @classmethod
    def open(cls, root: str | Path) -> Project:
        root = Path(root)
        file = root / PROJECT_FILE
        if not file.is_file():
            raise ConfigError(f"{root} is not a dataset-tool project (no {PROJECT_FILE}); create one with "
                              f"`embedlab vqa-data ingest <cases> --project {root}`")
        try:
            info = json.loads(file.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DataError(f"not valid JSON: {exc}", file) from None
        if not isinstance(info, dict):
            raise DataError("expected a JSON object", file)
        return cls(root, info)

    @property
    def images_dir(self) -> Path:
        return self.root / "images"

    @contextlib.contextmanager
    def writing(self) -> Iterator[Project]:
        """Hold the project's lock while writing (a second writer gets a ConfigError naming the holder)."""
        handle = lock_folder(self.root, "project", "embedlab dataset-tool step")
        try:
            yield self
        finally:
            handle.close()

    def mark_stage(self, stage: str, **details: Any) -> None:
        """Record that a stage finished (time + details) in project.json."""
        self.info.setdefault("stages", {})[stage] = {"time": now(), **details}
        write_json(self.root / PROJECT_FILE, self.info)

    # -- stage outputs ------------------------------------------------------------------------------------------
    def _read_jsonl(self, name: str, cls, *, tolerate_torn_tail: bool = False) -> list:
        file = self.root / name
        if not file.is_file():
            return []
        text = file.read_text(encoding="utf-8")
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        elif lines and tolerate_torn_tail:  # the last append was killed before its newline
            log.warning("%s: ignoring an incomplete last line (an interrupted write)", file)
            lines.pop()
        out = []
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                out.append(cls.from_json(json.loads(line)))
            except (json.JSONDecodeError, TypeError, ValueError) as exc:
                raise DataError(f"line {number}: not a valid {cls.__name__} record ({exc})", file) from None
        return out

    def _write_jsonl(self, name: str, rows) -> None:
        write_text(self.root / name, "".join(json.dumps(r.to_json(), ensure_ascii=False) + "\n" for r in rows))

    def cases(self) -> list[Case]:
        return self._read_jsonl("cases.jsonl", Case)

    def write_cases(self, cases: list[Case]) -> None:
        self._write_jsonl("cases.jsonl", cases)

    def concepts(self) -> list[Concept]:
        return self._read_jsonl("concepts.jsonl", Concept)

    def write_concepts(self, concepts: list[Concept]) -> None:
        self._write_jsonl("concepts.jsonl", concepts)

    def qa_pairs(self) -> list[QAPair]:
        return self._read_jsonl("qa.jsonl", QAPair)

    def write_qa_pairs(self, pairs: list[QAPair]) -> None:
        self._write_jsonl("qa.jsonl", pairs)

    # -- the review log -------------------------------------------------------------------------------------------
    def decisions(self) -> list[Decision]:
        return self._read_jsonl("decisions.jsonl", Decision, tolerate_torn_tail=True)

    def append_decision(self, decision: Decision) -> None:
        file = self.root / "decisions.jsonl"
        line = json.dumps(decision.to_json(), ensure_ascii=False) + "\n"
        if file.is_file() and file.stat().st_size:
            data = file.read_bytes()
            if not data.endswith(b"\n"):  # a torn tail (killed mid-append) is cut before this decision goes on
                log.warning("%s: removing an incomplete last line (an interrupted write)", file)
                with open(file, "r+b") as f:
                    f.truncate(data.rfind(b"\n") + 1)
        with open(file, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
