"""Schema migrations of the results store (Alembic): a store written by the schema before revisions existed (one
``results`` table, revision 0001's columns, no ``alembic_version``) is stamped and upgraded in place without losing a
row, on SQLite and on PostgreSQL; downgrade and upgrade again keep the rows; a foreign ``results`` table is refused."""
from __future__ import annotations

import datetime as dt
import itertools

import pytest
import sqlalchemy as sa

from embedlab.bench.store import COLUMNS_0001, HEAD, ResultsStore, migrate
from embedlab.errors import ConfigError

_names = (f"db{i}" for i in itertools.count())


def _old_store(url: str) -> list[dict]:
    """A store as the code before revision 0002 wrote it: its DDL, frozen here, and three rows."""
    meta = sa.MetaData()
    table = sa.Table(
        "results", meta,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("model", sa.String(512), nullable=False, index=True),
        sa.Column("model_path", sa.String(1024)), sa.Column("model_hash", sa.String(128)),
        sa.Column("task", sa.String(256), nullable=False, index=True), sa.Column("task_type", sa.String(64)),
        sa.Column("dataset", sa.String(256)), sa.Column("split", sa.String(64)),
        sa.Column("metric", sa.String(128), index=True), sa.Column("value", sa.Float),
        sa.Column("embedlab_version", sa.String(64)), sa.Column("git_commit", sa.String(64)),
        sa.Column("created_at", sa.DateTime, index=True), sa.Column("duration_s", sa.Float),
        sa.Column("run_id", sa.String(36), index=True), sa.Column("extra", sa.JSON))
    assert tuple(c.name for c in table.columns) == COLUMNS_0001
    rows = [{"model": "m", "model_path": "/x", "model_hash": "h", "task": t, "task_type": "sts", "dataset": t,
             "split": "test", "metric": "main_score", "value": v, "embedlab_version": "0.1.0", "git_commit": None,
             "created_at": dt.datetime(2026, 11, 1, 12, i), "duration_s": 1.5, "run_id": "r1",
             "extra": {"max_length": 256, "pairs": 1379} if i == 0 else None}
            for i, (t, v) in enumerate([("stsb", 82.03), ("sts12", 72.37), ("sts13", None)])]
    engine = sa.create_engine(url)
    meta.create_all(engine)
    with engine.begin() as conn:
        conn.execute(sa.insert(table), rows)
    engine.dispose()
    return rows


def _check_upgraded(url: str, rows: list[dict]) -> None:
    with ResultsStore(url) as store:
        assert store.revision_found is None  # recognised as a pre-revision store, stamped 0001, upgraded
        got = store.query()
        assert len(got) == len(rows)
        for old, new in zip(rows, got):
            for key in COLUMNS_0001[1:]:
                if key == "created_at":
                    assert new[key] == old[key].replace(tzinfo=dt.timezone.utc)
                else:
                    assert new[key] == old[key], key
            assert new["domain"] == "text" and new["status"] == "ok" and new["job_id"] is None
        engine = store.engine
        assert sa.inspect(engine).has_table("jobs")
        from alembic.runtime.migration import MigrationContext

        with engine.connect() as conn:
            assert MigrationContext.configure(conn).get_current_revision() == HEAD
        # The upgraded store takes new rows with the new columns.
        store.add_run([{"model": "m2", "task": "stsb", "task_type": "sts", "dataset": "stsb", "split": "test",
                        "metric": "main_score", "value": 80.0, "domain": "medvqa", "seed": 3,
                        "config": {"a": 1}, "config_hash": "c" * 64}])
        assert store.query(model="m2")[0]["domain"] == "medvqa"
    with ResultsStore(url) as again:  # opening again: already at head, nothing to do
        assert again.revision_found == HEAD and len(again.query()) == len(rows) + 1


def test_a_pre_revision_sqlite_store_is_upgraded_without_losing_a_row(tmp_path):
    url = f"sqlite:///{tmp_path / 'old.sqlite'}"
    _check_upgraded(url, _old_store(url))


def test_a_pre_revision_postgresql_store_is_upgraded_without_losing_a_row(postgres_server):
    url = postgres_server.create_database(next(_names))
    _check_upgraded(url, _old_store(url))


def test_downgrade_and_upgrade_keep_the_rows(tmp_path):
    from alembic import command
    from alembic.config import Config

    from embedlab.bench.store import MIGRATIONS

    url = f"sqlite:///{tmp_path / 's.sqlite'}"
    rows = _old_store(url)
    ResultsStore(url).close()
    engine = sa.create_engine(url)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0001")
    assert not sa.inspect(engine).has_table("jobs")
    assert migrate(engine) == "0001"
    engine.dispose()
    assert len(ResultsStore(url).query()) == len(rows)


def test_a_foreign_results_table_is_refused(tmp_path):
    url = f"sqlite:///{tmp_path / 'other.sqlite'}"
    engine = sa.create_engine(url)
    sa.Table("results", sa.MetaData(), sa.Column("id", sa.Integer, primary_key=True),
             sa.Column("score", sa.Float)).create(engine)
    engine.dispose()
    with pytest.raises(ConfigError, match="lacks the column"):
        ResultsStore(url)
