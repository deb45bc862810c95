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
| domain            | the domain whose task this is ("text", "medvqa"); rows before revision 0002: "text"       |
| experiment        | the experiment the row belongs to (its spec's name), NULL for a plain ``embedlab eval``   |
| job_id            | the job that produced the row (table ``jobs``), NULL outside the job runner               |
| seed              | the seed of the configuration (training seed), NULL when none applies                     |
| config, config_hash | JSON of what produced the model and the score (recipe, overrides, protocol) and its      |
|                   | sha256 (embedlab.results.config_hash): the seeds of one configuration share it            |
| status            | "ok", or "failed" / "skipped" for a task that produced no number                          |

Table ``jobs`` (one row per job of the job runner; embedlab.bench.jobs reads and writes it): id, kind, domain,
experiment, name, spec (JSON) with its config_hash and seed (unique together: the same spec is never run twice),
status (queued, running, done, failed, cancelled), attempts / max_attempts, threads and resources, output_dir,
executor and worker, cancel_requested, progress and progress_text, log_tail, error, result_run_ids, timings,
created_at / started_at / heartbeat_at / finished_at.

Values are stored verbatim: ``add_run`` does not rescale; rows come from ``embedlab.results.make_rows``, which applies
each task type's display scale once. The schema is versioned with Alembic (``embedlab/bench/migrations``): opening a
store upgrades it to the newest revision, keeping every row (a store from before revisions existed is recognised by
its columns and stamped first). It does not run evaluations or draw plots.
"""
from __future__ import annotations

from ..errors import ConfigError

import csv
import datetime as dt
import json
import math
import os
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import IO, Any

from sqlalchemy import (JSON, Boolean, DateTime, Float, Integer, String, Text, TypeDecorator, UniqueConstraint,
                        create_engine, func, inspect, select)
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import NoSuchModuleError, SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column
from sqlalchemy.pool import StaticPool

import embedlab
from embedlab.atomic import atomic_path
from embedlab.results import current_git_commit, json_safe
from embedlab.settings import results_db_url

COLUMNS = (
    "id", "model", "model_path", "model_hash", "task", "task_type", "dataset", "split", "metric", "value",
    "embedlab_version", "git_commit", "created_at", "duration_s", "run_id", "extra",
    "domain", "experiment", "job_id", "seed", "config", "config_hash", "status",
)
# The columns of revision 0001: a table with exactly these is a store from before Alembic, stamped and upgraded.
COLUMNS_0001 = COLUMNS[:16]
REQUIRED = ("model", "task", "task_type", "dataset", "split", "metric", "value")
HEAD = "0002"


class UTCDateTime(TypeDecorator):
    """Datetimes stored as naive UTC and returned timezone-aware: SQLite keeps no time zone, PostgreSQL does."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("datetimes must be timezone-aware")
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
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, index=True)
    duration_s: Mapped[float | None] = mapped_column(Float)
    run_id: Mapped[str] = mapped_column(String(36), index=True)
    extra: Mapped[dict | None] = mapped_column(JSON)
    domain: Mapped[str] = mapped_column(String(32), index=True, default="text", server_default="text")
    experiment: Mapped[str | None] = mapped_column(String(256), index=True)
    job_id: Mapped[str | None] = mapped_column(String(32), index=True)
    seed: Mapped[int | None] = mapped_column(Integer)
    config: Mapped[dict | None] = mapped_column(JSON)
    config_hash: Mapped[str | None] = mapped_column(String(64), index=True)
    status: Mapped[str] = mapped_column(String(16), default="ok", server_default="ok")

    def to_dict(self) -> dict[str, Any]:
        return {c: getattr(self, c) for c in COLUMNS}


JOB_STATES = ("queued", "running", "done", "failed", "cancelled")


class Job(_Base):
    """One job of the job runner (embedlab.bench.jobs): the source of truth any process reads its state from."""

    __tablename__ = "jobs"
    __table_args__ = (UniqueConstraint("config_hash", "seed", name="uq_jobs_config_seed"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(64))
    domain: Mapped[str] = mapped_column(String(32))
    experiment: Mapped[str | None] = mapped_column(String(256), index=True)
    name: Mapped[str] = mapped_column(String(256))
    spec: Mapped[dict] = mapped_column(JSON)
    config_hash: Mapped[str] = mapped_column(String(64))
    seed: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    max_attempts: Mapped[int] = mapped_column(Integer, default=2, server_default="2")
    threads: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    resources: Mapped[dict | None] = mapped_column(JSON)
    output_dir: Mapped[str | None] = mapped_column(String(1024))
    executor: Mapped[str | None] = mapped_column(String(32))
    worker: Mapped[str | None] = mapped_column(String(256))
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    progress: Mapped[float | None] = mapped_column(Float)
    progress_text: Mapped[str | None] = mapped_column(String(512))
    log_tail: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    result_run_ids: Mapped[list | None] = mapped_column(JSON)
    timings: Mapped[dict | None] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, index=True)
    started_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    heartbeat_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    def to_dict(self) -> dict[str, Any]:
        return {c.name: getattr(self, c.key) for c in self.__table__.columns}


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


MIGRATIONS = Path(__file__).with_name("migrations")
_PG_LOCK_KEY = 0x656D62656C616221  # pg_advisory_xact_lock key of embedlab's schema migrations ("emblab!")


class _SchemaMismatch(Exception):
    """A "results" table that no revision of embedlab wrote (another program's, or a damaged store)."""


def migrate(engine: Engine) -> str | None:
    """Upgrade the store at ``engine`` to the newest schema revision (HEAD) with Alembic, keeping every row.

    Safe when several processes open one store at once: SQLite stores are serialised with flock(2) on a lock file
    beside the database, PostgreSQL with a transaction-scoped advisory lock; the revision is read again under the
    lock. A store from before revisions existed (no ``alembic_version``, a results table with the
    columns of revision 0001) is stamped 0001 first. Returns the revision found before upgrading (None: new store).
    """
    from alembic import command
    from alembic.config import Config
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:  # the usual case, an up-to-date store: no lock, no lock file
        if MigrationContext.configure(conn).get_current_revision() == HEAD:
            return HEAD
    with _file_lock(engine), engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(select(func.pg_advisory_xact_lock(_PG_LOCK_KEY)))
        found = MigrationContext.configure(conn).get_current_revision()
        if found == HEAD:
            return found
        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        cfg.attributes["connection"] = conn
        if found is None and inspect(conn).has_table(Result.__tablename__):
            present = {c["name"] for c in inspect(conn).get_columns(Result.__tablename__)}
            if present != set(COLUMNS_0001):
                missing = sorted(set(COLUMNS_0001) - present)
                raise _SchemaMismatch(f"lacks the column(s) {', '.join(missing[:4])}" if missing
                                      else f"has unknown column(s) {', '.join(sorted(present - set(COLUMNS))[:4])}")
            command.stamp(cfg, "0001")
        command.upgrade(cfg, "head")
        return found


class _file_lock:
    """flock on ``<database>.migrate.lock`` beside a SQLite store, for the duration of a migration (nothing for other
    backends or in-memory stores). Not on the database file itself: closing any other descriptor of that file would
    drop SQLite's own POSIX locks on it (a "disk I/O error" for the other processes)."""

    def __init__(self, engine: Engine):
        database = _sqlite_file(str(engine.url))
        self.path = database.with_name(database.name + ".migrate.lock") if database is not None else None
        self.fd: int | None = None

    def __enter__(self):
        if self.path is not None:
            import fcntl

            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o664)
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing releases the lock


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
            # Reading never creates: a database without a results table is not a store (an existing store of an
            # older revision is upgraded in place, keeping its rows, for readers and writers alike).
            if not create and not inspect(self.engine).has_table(Result.__tablename__):
                self.engine.dispose()
                raise ConfigError(f"results store {self.display_url} has no results table (not an embedlab results "
                                  f"store?); choose another with --db or EMBEDLAB_RESULTS_DB")
            self.revision_found = migrate(self.engine)
        except _SchemaMismatch as e:
            # A "results" table of another program (or another schema) would fail at the first read or, worse, at
            # the first write, after an evaluation: refuse it now.
            self.engine.dispose()
            raise ConfigError(f"results store {self.display_url}: its results table {e} (not an embedlab results "
                              f"store, or another schema); choose another with --db or EMBEDLAB_RESULTS_DB") from None
        except (SQLAlchemyError, OSError) as e:  # unreachable server, unwritable file, not a database, ...
            self.engine.dispose()
            reason = getattr(e, "orig", None) or e
            raise ConfigError(f"cannot open results store {self.display_url}: {reason}") from None

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
        objects, run_id = self.result_objects(rows)
        with Session(self.engine) as session, session.begin():
            session.add_all(objects)
        return run_id

    @staticmethod
    def result_objects(rows: Iterable[Mapping[str, Any]]) -> tuple[list[Result], str]:
        """Rows checked and completed as ``add_run`` describes -> (ORM objects to add in a session, run id); lets
        the job runner insert results and mark their job done in one transaction."""
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
                row["extra"] = json_safe(row["extra"])
            if row.get("config") is not None:
                row["config"] = json_safe(row["config"])
            objects.append(Result(**row))
        run_ids = {row["run_id"] for row in rows}
        if len(run_ids) > 1:
            raise ValueError(f"the rows of one add_run must share one run_id; got {sorted(run_ids)}")
        return objects, (run_ids.pop() if run_ids else default_run)

    def query(
        self,
        model: str | None = None,
        task: str | None = None,
        metric: str | None = None,
        latest_only: bool = False,
        *,
        run_id: str | None = None,
        experiment: str | None = None,
        domain: str | None = None,
        job_id: str | None = None,
        seed: int | None = None,
        split: str | None = None,
    ) -> list[dict[str, Any]]:
        """Rows matching every given filter, oldest first, as dicts of the table's columns.

        latest_only: for each (model, task, dataset, split, metric) keep only the most recently stored row.
        """
        filters = []
        for column, wanted in ((Result.model, model), (Result.task, task), (Result.metric, metric),
                               (Result.run_id, run_id), (Result.experiment, experiment), (Result.domain, domain),
                               (Result.job_id, job_id), (Result.seed, seed), (Result.split, split)):
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
