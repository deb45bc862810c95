"""Result rows as a committed JSON file: the export of one experiment's rows from a store, and its import back.

    export_rows(store, "medvqa_models", "docs/results/medvqa.json")   # every row of the experiment, every metric
    import_rows(store, "docs/results/medvqa.json")                     # the rows the store lacks; returns how many

The file is ``{"experiment": name, "format": 1, "rows": [row, ...]}`` with each row's columns as the store holds them
(``id`` left out, ``created_at`` as ISO 8601 UTC), sorted by creation time — so a table or report rendered from a
fresh checkout's store equals the one rendered where the runs happened. A row is identified by (run_id, model, task,
split, metric): importing twice adds nothing, and rows already in the store are never changed. Rows of one run go in
through ``add_run`` (one transaction per run). A file that is not such a JSON, or rows that miss a column, is a
``ConfigError`` naming the file and the row. This is the domain-neutral export for job matrices
(``embedlab jobs submit``); the text experiments' records (experiment.py) keep their own, per-item, format.
"""
from __future__ import annotations

import datetime as dt
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from ..atomic import check_output_file, write_json
from ..errors import ConfigError
from .store import COLUMNS, ResultsStore

FORMAT = 1
_KEY = ("run_id", "model", "task", "split", "metric")


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in row.items() if k != "id"}
    created = out.get("created_at")
    if isinstance(created, dt.datetime):
        out["created_at"] = created.astimezone(dt.timezone.utc).isoformat()
    return out


def _is_row_file(path: Path) -> bool:
    try:
        read_rows(path)
        return True
    except ConfigError:
        return False


def export_rows(store: ResultsStore, experiment: str, path: str | Path, *, overwrite: bool = False) -> int:
    """Write every row of ``experiment`` to ``path`` (atomically); returns the number of rows. An existing file is
    replaced only when it is such a results file (an earlier export) or with ``overwrite``."""
    path = Path(path)
    check_output_file(path, overwrite=overwrite, owned=path.is_file() and _is_row_file(path),
                      what="results file")
    rows = store.query(experiment=experiment)
    if not rows:
        raise ConfigError(f"no rows of experiment {experiment!r} in {store.display_url}")
    write_json(path, {"experiment": experiment, "format": FORMAT, "rows": [_jsonable(r) for r in rows]})
    return len(rows)


def read_rows(path: str | Path) -> tuple[str, list[dict[str, Any]]]:
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: results file not found") from None
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ConfigError(f"{path}: not a results JSON file ({type(e).__name__}: {e})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("rows"), list):
        raise ConfigError(f"{path}: expected {{\"experiment\", \"format\": {FORMAT}, \"rows\": [...]}} (written by "
                          f"`embedlab results --format json`)")
    rows = []
    for n, row in enumerate(data["rows"]):
        if not isinstance(row, dict):
            raise ConfigError(f"{path}: rows[{n}]: expected an object")
        unknown = set(row) - set(COLUMNS)
        missing = [k for k in (*_KEY, "task_type", "dataset", "value") if k not in row]
        if unknown or missing:
            raise ConfigError(f"{path}: rows[{n}]: " + (f"unknown column(s) {sorted(unknown)}" if unknown else
                                                        f"missing column(s) {missing}"))
        row = dict(row)
        if isinstance(row.get("created_at"), str):
            try:
                row["created_at"] = dt.datetime.fromisoformat(row["created_at"])
            except ValueError:
                raise ConfigError(f"{path}: rows[{n}].created_at: not an ISO 8601 time") from None
        rows.append(row)
    return str(data.get("experiment") or ""), rows


def import_rows(store: ResultsStore, path: str | Path) -> int:
    """Add the rows of ``path`` that ``store`` lacks (by run, model, task, split and metric); returns how many."""
    experiment, rows = read_rows(path)
    have = {tuple(r[k] for k in _KEY) for r in store.query(experiment=experiment or None)}
    by_run: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        if tuple(row[k] for k in _KEY) not in have:
            by_run[row["run_id"]].append(row)
    for run_rows in by_run.values():
        store.add_run(run_rows)
    return sum(len(v) for v in by_run.values())
