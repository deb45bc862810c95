"""The results store: one row per (evaluation run, task, metric), in any SQLAlchemy database (SQLite by default).

    store = ResultsStore()                      # at embedlab.settings.results_db_url()
    store = ResultsStore("postgresql://host/db")  # any SQLAlchemy URL
    run_id = store.add_run(rows)                # one transaction: all rows of a run land, or none
    store.query(model="all-MiniLM-L6-v2", task="stsb", latest_only=True)
    store.to_csv(rows, "results.csv")

Table ``results``:

| column            | meaning                                                                                   |
|-------------------|-------------------------------------------------------------------------------------------|
| id                | integer primary key                                                                       |
| model             | the model's name as the user gave it (label)                                              |
| model_path        | where it was loaded from (local path or hub id), if known                                 |
| model_hash        | content hash of the weights, if known (tells two checkpoints with one name apart)         |
| task, task_type   | embedlab task name ("stsb", "scifact", ...) and its type ("sts", "retrieval", "geometry")  |
| dataset, split    | the data the task ran on                                                                  |
| metric            | MTEB key name ("cosine_spearman", "ndcg_at_10", "main_score", "uniformity", ...)          |
| value             | the number **on the display scale**: metrics that are fractions (every STS and retrieval |
|                   | metric: correlations, nDCG, MAP, MRR, recall, precision) are stored x100, as tables and   |
|                   | papers show them (``display_value``); other metrics (geometry: alignment, uniformity,     |
|                   | ratios, ranks) are stored as computed. NULL when the metric was undefined (NaN).          |
|                   | MTEB-format JSON files keep MTEB's 0-1 scale; only this column is x100.                   |
| embedlab_version  | ``embedlab.__version__`` of the code that computed the value                              |
| git_commit        | ``git rev-parse HEAD`` of the embedlab checkout, NULL outside a git checkout              |
| created_at        | when the run was stored, timezone-aware UTC                                               |
| duration_s        | wall time of the task's evaluation, seconds                                               |
| run_id            | one uuid per evaluation run (all tasks of one ``embedlab eval``)                          |
| extra             | JSON: anything else worth keeping (max_length, counts, recipe, ...)                       |

Values are stored verbatim: ``add_run`` does not rescale, so callers convert with ``display_value`` once.
It does not run evaluations, draw plots or migrate schemas (a changed schema needs a new database file).
"""
from __future__ import annotations

from ..errors import ConfigError

import csv
import datetime as dt
import json
import math
import subprocess
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import IO, Any

from sqlalchemy import (JSON, DateTime, Float, Integer, String, TypeDecorator, create_engine, func, inspect,
                        select)
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import NoSuchModuleError, SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column
from sqlalchemy.pool import StaticPool

import embedlab
from embedlab.atomic import atomic_path
from embedlab.settings import PROJECT_ROOT, results_db_url

FRACTION_TASK_TYPES = ("sts", "retrieval")
COLUMNS = (
    "id", "model", "model_path", "model_hash", "task", "task_type", "dataset", "split", "metric", "value",
    "embedlab_version", "git_commit", "created_at", "duration_s", "run_id", "extra",
)
REQUIRED = ("model", "task", "task_type", "dataset", "split", "metric", "value")


def display_value(task_type: str, value: float) -> float:
    """A score on the store's display scale: x100 for STS and retrieval metrics (fractions), unchanged otherwise."""
    return value * 100.0 if task_type in FRACTION_TASK_TYPES else value


def current_git_commit(path: str | Path | None = None) -> str | None:
    """The HEAD commit of the git checkout holding ``path`` (default: embedlab's source), or None when it is not a
    git checkout, has no commit yet, or git is not installed."""
    where = Path(path) if path is not None else PROJECT_ROOT
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--verify", "--quiet", "HEAD"],
            cwd=where, capture_output=True, text=True, timeout=10, check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and commit else None


class _UTCDateTime(TypeDecorator):
    """Datetimes stored as naive UTC and returned timezone-aware: SQLite keeps no time zone, PostgreSQL does."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("created_at must be timezone-aware")
        return value.astimezone(dt.timezone.utc).replace(tzinfo=None)

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        return value.replace(tzinfo=dt.timezone.utc) if value.tzinfo is None else value.astimezone(dt.timezone.utc)


class _Base(DeclarativeBase):
    pass


class Result(_Base):
    __tablename__ = "results"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model: Mapped[str] = mapped_column(String(512), index=True)
    model_path: Mapped[str | None] = mapped_column(String(1024))
    model_hash: Mapped[str | None] = mapped_column(String(128))
    task: Mapped[str] = mapped_column(String(256), index=True)
    task_type: Mapped[str] = mapped_column(String(64))
    dataset: Mapped[str] = mapped_column(String(256))
    split: Mapped[str] = mapped_column(String(64))
    metric: Mapped[str] = mapped_column(String(128), index=True)
    value: Mapped[float | None] = mapped_column(Float)
    embedlab_version: Mapped[str] = mapped_column(String(64))
    git_commit: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(_UTCDateTime, index=True)
    duration_s: Mapped[float | None] = mapped_column(Float)
    run_id: Mapped[str] = mapped_column(String(36), index=True)
    extra: Mapped[dict | None] = mapped_column(JSON)

    def to_dict(self) -> dict[str, Any]:
        return {c: getattr(self, c) for c in COLUMNS}


def _sqlite_file(url: str) -> Path | None:
    """The database file of a SQLite URL, or None for other backends and in-memory / URI-style SQLite."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    database = parsed.database or ""
    if database in ("", ":memory:") or database.startswith("file:"):
        return None
    return Path(database).expanduser()


def _engine(url: str, create: bool = True) -> Engine:
    try:
        parsed = make_url(url)
    except Exception as e:  # sqlalchemy.exc.ArgumentError and friends: a user typo, not a bug
        raise ConfigError(f"results store URL {url!r} is not a valid SQLAlchemy URL ({e}); give a URL such as "
                          f"sqlite:///results.sqlite or postgresql://user@host/db, or a plain file path") from None
    if parsed.get_backend_name() != "sqlite":
        try:
            return create_engine(url)
        except (NoSuchModuleError, ImportError) as e:  # foo://x, or a driver that is not installed
            shown = parsed.render_as_string(hide_password=True)
            raise ConfigError(f"results store URL {shown!r}: cannot load its database driver ({e}); give a SQLite "
                              f"file or a URL whose driver is installed (e.g. postgresql://user@host/db)") from None
    database = _sqlite_file(url)
    if database is None:
        # One shared connection, or every new connection would see a fresh empty in-memory database.
        return create_engine(url, poolclass=StaticPool, connect_args={"check_same_thread": False})
    if database.is_dir():
        raise ConfigError(f"results store {database} is a folder, not a SQLite file; give a file path "
                          f"(--db or EMBEDLAB_RESULTS_DB)")
    if not create and not database.is_file():
        # A read-only command must not leave an empty database behind (sqlite creates the file on connect).
        raise ConfigError(f"no results store at {database}: nothing has been evaluated into it yet; choose another "
                          f"with --db or EMBEDLAB_RESULTS_DB")
    if create:
        try:
            database.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:  # a parent is a file, or a folder we may not write to
            raise ConfigError(f"results store {database}: cannot create its folder {database.parent} "
                              f"({e.strerror or e})") from None
    # Several evaluation processes may write at once: wait for the lock instead of failing at once.
    return create_engine(url, connect_args={"timeout": 60})


def _create_tables(engine: Engine) -> None:
    """create_all, safe when several processes open a new store at once: SQLite's "CREATE TABLE" of the loser of
    that race fails with "table results already exists" although the table is there and usable. Then look again."""
    for attempt in range(3):
        try:
            _Base.metadata.create_all(engine)
            return
        except SQLAlchemyError as e:
            if "already exists" not in str(getattr(e, "orig", e)) or attempt == 2:
                raise


def _finite_or_none(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


class ResultsStore:
    """Rows of evaluation results in the database at ``url`` (any SQLAlchemy URL; tables are created if missing).

    create=False opens an existing store for reading: nothing is created (no folder, no SQLite file, no table), and
    a missing store is a ConfigError naming it. Either way the database is connected to here, so a bad URL, a
    missing driver or an unreachable server fails now (before any model loads), not after an evaluation.
    """

    def __init__(self, url: str | None = None, create: bool = True):
        self.url = results_db_url(url)
        self.engine = _engine(self.url, create=create)
        try:
            if create:
                _create_tables(self.engine)
                has_table = True
            else:
                has_table = inspect(self.engine).has_table(Result.__tablename__)
        except (SQLAlchemyError, OSError) as e:  # unreachable server, unwritable file, not a database, ...
            self.engine.dispose()
            reason = getattr(e, "orig", None) or e
            raise ConfigError(f"cannot open results store {self.display_url}: {reason}") from None
        if not has_table:
            self.engine.dispose()
            raise ConfigError(f"results store {self.display_url} has no results table (not an embedlab results "
                              f"store?); choose another with --db or EMBEDLAB_RESULTS_DB")
        # A "results" table of another program (or another schema) would fail at the first read or, worse, at the
        # first write, after an evaluation: check its columns now.
        try:
            present = {c["name"] for c in inspect(self.engine).get_columns(Result.__tablename__)}
        except (SQLAlchemyError, OSError) as e:
            self.engine.dispose()
            raise ConfigError(f"cannot open results store {self.display_url}: {getattr(e, 'orig', None) or e}") \
                from None
        missing = [c for c in COLUMNS if c not in present]
        if missing:
            self.engine.dispose()
            raise ConfigError(f"results store {self.display_url}: its results table lacks the column(s) "
                              f"{', '.join(missing[:4])}{f' and {len(missing) - 4} more' if len(missing) > 4 else ''} (not an embedlab results store, or another schema); choose "
                              f"another with --db or EMBEDLAB_RESULTS_DB")

    @property
    def display_url(self) -> str:
        """The URL to show a user: the password, if any, masked."""
        try:
            return make_url(self.url).render_as_string(hide_password=True)
        except Exception:  # the URL parsed in _engine; this is only a fallback
            return self.url

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> ResultsStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def add_run(self, rows: Iterable[Mapping[str, Any]]) -> str:
        """Insert ``rows`` in one transaction and return the run id.

        Each row needs model, task, task_type, dataset, split, metric and value (already on the display scale).
        Missing provenance is filled in: run_id (a new uuid), created_at (now, UTC), embedlab_version and git_commit
        (this checkout). All rows must end up with one run_id; a run may span several calls (one per task) by
        passing the same run_id. Unknown keys are an error, not silently dropped.
        """
        rows = [dict(r) for r in rows]
        now = dt.datetime.now(dt.timezone.utc)
        default_run = uuid.uuid4().hex
        commit: str | None | bool = False  # looked up at most once, and only if a row needs it
        objects = []
        for n, row in enumerate(rows):
            unknown = set(row) - set(COLUMNS) or ({"id"} & set(row))
            if unknown:
                raise ValueError(f"row {n}: unknown or reserved column(s) {sorted(unknown)}")
            missing = [c for c in REQUIRED if c not in row]
            if missing:
                raise ValueError(f"row {n}: missing column(s) {missing}")
            if "git_commit" not in row:
                if commit is False:
                    commit = current_git_commit()
                row["git_commit"] = commit
            row.setdefault("run_id", default_run)
            row.setdefault("created_at", now)
            row.setdefault("embedlab_version", embedlab.__version__)
            row["value"] = _finite_or_none(row["value"])
            row["duration_s"] = _finite_or_none(row.get("duration_s"))
            if row.get("extra") is not None:
                # JSON-serialisable now, or the whole run is refused before anything is written.
                row["extra"] = json.loads(json.dumps(row["extra"], default=_json_default))
            objects.append(Result(**row))
        run_ids = {row["run_id"] for row in rows}
        if len(run_ids) > 1:
            raise ValueError(f"the rows of one add_run must share one run_id; got {sorted(run_ids)}")
        with Session(self.engine) as session, session.begin():
            session.add_all(objects)
        return run_ids.pop() if run_ids else default_run

    def query(
        self,
        model: str | None = None,
        task: str | None = None,
        metric: str | None = None,
        latest_only: bool = False,
        *,
        run_id: str | None = None,
    ) -> list[dict[str, Any]]:
        """Rows matching every given filter, oldest first, as dicts of the table's columns.

        latest_only: for each (model, task, dataset, split, metric) keep only the most recently stored row.
        """
        filters = []
        for column, wanted in ((Result.model, model), (Result.task, task), (Result.metric, metric),
                               (Result.run_id, run_id)):
            if wanted is not None:
                filters.append(column == wanted)
        stmt = select(Result).where(*filters)
        if latest_only:
            newest_first = func.row_number().over(
                partition_by=(Result.model, Result.task, Result.dataset, Result.split, Result.metric),
                order_by=(Result.created_at.desc(), Result.id.desc()),
            ).label("newest_first")
            ranked = select(Result.id, newest_first).where(*filters).subquery()
            stmt = select(Result).join(ranked, Result.id == ranked.c.id).where(ranked.c.newest_first == 1)
        stmt = stmt.order_by(Result.created_at, Result.id)
        with Session(self.engine) as session:
            return [r.to_dict() for r in session.scalars(stmt)]

    @staticmethod
    def to_csv(rows: Iterable[Mapping[str, Any]], path_or_stream: str | Path | IO[str]) -> None:
        """Write rows (e.g. from ``query``) as CSV with the table's columns; created_at in ISO 8601, extra as JSON.
        A path is written atomically; a stream is written as is."""
        if hasattr(path_or_stream, "write"):
            _write_csv(rows, path_or_stream)  # type: ignore[arg-type]
            return
        with atomic_path(path_or_stream) as tmp:  # type: ignore[arg-type]
            with open(tmp, "w", newline="", encoding="utf-8") as f:
                _write_csv(rows, f)


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy / torch scalars
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def _write_csv(rows: Iterable[Mapping[str, Any]], stream: IO[str]) -> None:
    writer = csv.DictWriter(stream, fieldnames=COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        out = dict(row)
        if isinstance(out.get("created_at"), dt.datetime):
            out["created_at"] = out["created_at"].isoformat()
        if out.get("extra") is not None:
            out["extra"] = json.dumps(out["extra"], sort_keys=True)
        writer.writerow(out)
