"""Result rows as a committed JSON file: the export of one experiment's rows from a store, and its import back.

    export_rows(store, "medvqa_models", "docs/results/medvqa.json")   # every row of the experiment, every metric
    import_rows(store, "docs/results/medvqa.json")                     # the rows the store lacks; returns how many

The file is ``{"experiment": name, "format": 2, "runs": [{"shared": {...}, "groups": [{"shared": {...}, "rows":
[{...}, ...]}, ...]}, ...]}``: one entry per run (one line each, so a new run is a one-line diff) holding the columns
every row of the run has in common (model, config, provenance) once; in it one group per task and split holding that
evaluation's common columns (its ``extra`` record: kilobytes) once; and per row only the columns that differ (metric,
value). Merged, a row has every column as the store holds it (``id`` left out,
``created_at`` as ISO 8601 UTC), in creation order — so a table or report rendered from a fresh checkout's store equals
the one rendered where the runs happened. Format 1 (``"rows": [row, ...]``, every column in every row: 16.7 MB for
the Med-VQA leaderboard, 0.46 MB as format 2) is still read. A row is identified by (run_id, model, task,
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

from ..atomic import check_output_file, write_text
from ..errors import ConfigError
from .store import COLUMNS, ResultsStore

FORMAT = 2
READ_FORMATS = (1, 2)
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


def _split_shared(rows: list[dict[str, Any]]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The columns every row has with one value, and each row without them."""
    first = rows[0]
    shared = {k: v for k, v in first.items() if all(k in r and r[k] == v for r in rows[1:])}
    return shared, [{k: v for k, v in r.items() if k not in shared} for r in rows]


def _grouped(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows (in creation order) as runs, and a run's rows as groups of one task and split (a group's rows share the
    evaluation's ``extra``): at each level the shared columns once, then each row's own columns."""
    runs: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        runs[row["run_id"]].append(row)
    out = []
    for run_rows in runs.values():
        shared, rest = _split_shared(run_rows)
        by_task: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
        for row in rest:
            by_task[(row.get("task"), row.get("split"))].append(row)
        groups = []
        for task_rows in by_task.values():
            g_shared, g_rows = _split_shared(task_rows)
            groups.append({"shared": g_shared, "rows": g_rows})
        out.append({"shared": shared, "groups": groups})
    return out


def export_rows(store: ResultsStore, experiment: str, path: str | Path, *, overwrite: bool = False) -> int:
    """Write every row of ``experiment`` to ``path`` (atomically); returns the number of rows. An existing file is
    replaced only when it is such a results file (an earlier export) or with ``overwrite``."""
    path = Path(path)
    check_output_file(path, overwrite=overwrite, owned=path.is_file() and _is_row_file(path),
                      what="results file")
    rows = store.query(experiment=experiment)
    if not rows:
        raise ConfigError(f"no rows of experiment {experiment!r} in {store.display_url}")
    runs = _grouped([_jsonable(r) for r in rows])
    head = json.dumps({"experiment": experiment, "format": FORMAT}, ensure_ascii=False)[:-1]
    lines = ",\n".join(json.dumps(run, ensure_ascii=False, separators=(",", ":")) for run in runs)
    write_text(path, f"{head}, \"runs\": [\n{lines}\n]}}\n")
    return len(rows)


def _merged(path: Path, runs: list) -> list:
    rows = []
    for n, run in enumerate(runs):
        groups = run.get("groups") if isinstance(run, dict) else None
        if not isinstance(groups, list) or not isinstance(run.get("shared"), dict) or not all(
                isinstance(g, dict) and isinstance(g.get("shared"), dict) and isinstance(g.get("rows"), list)
                for g in groups):
            raise ConfigError(f"{path}: runs[{n}]: expected {{\"shared\": {{...}}, \"groups\": [{{\"shared\": "
                              f"{{...}}, \"rows\": [...]}}, ...]}}")
        for g in groups:
            rows.extend({**run["shared"], **g["shared"], **row} if isinstance(row, dict) else row for row in g["rows"])
    return rows


def read_rows(path: str | Path) -> tuple[str, list[dict[str, Any]]]:
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: results file not found") from None
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ConfigError(f"{path}: not a results JSON file ({type(e).__name__}: {e})") from None
    fmt = data.get("format") if isinstance(data, dict) else None
    if fmt not in READ_FORMATS or not isinstance(data.get("runs" if fmt == 2 else "rows"), list):
        raise ConfigError(f"{path}: expected {{\"experiment\", \"format\": {FORMAT}, \"runs\": [...]}} (written by "
                          f"`embedlab results --format json`)")
    raw = data["rows"] if fmt == 1 else _merged(path, data["runs"])
    rows = []
    for n, row in enumerate(raw):
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
