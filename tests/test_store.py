"""Results store: SQLite file and in-memory URLs, one transaction per run, latest-only queries, CSV export."""
from __future__ import annotations

import csv
import datetime as dt
import io
import subprocess
import uuid

import pytest
from sqlalchemy.exc import IntegrityError

import embedlab
from embedlab.bench import store as store_mod
from embedlab.bench.store import ResultsStore
import embedlab.evaluate.tasks  # noqa: F401 - registers the text task types' display scales
from embedlab.results import current_git_commit, display_value


def _row(metric="main_score", value=81.5, **kw):
    return {"model": "minilm", "task": "stsb", "task_type": "sts", "dataset": "stsb", "split": "test",
            "metric": metric, "value": value, **kw}


@pytest.fixture(params=["file", "memory"])
def store(request, tmp_path, monkeypatch):
    monkeypatch.setattr(store_mod, "current_git_commit", lambda path=None: "c0ffee")
    url = f"sqlite:///{tmp_path / 'sub' / 'results.sqlite'}" if request.param == "file" else "sqlite://"
    with ResultsStore(url) as s:
        yield s


def test_add_run_fills_provenance(store):
    run_id = store.add_run([_row(), _row("cosine_pearson", 80.0, duration_s=1.5, extra={"max_length": 128})])
    uuid.UUID(run_id)
    rows = store.query()
    assert [r["metric"] for r in rows] == ["main_score", "cosine_pearson"]
    for r in rows:
        assert r["run_id"] == run_id and r["git_commit"] == "c0ffee"
        assert r["embedlab_version"] == embedlab.__version__
        assert r["created_at"].tzinfo is not None and r["created_at"].utcoffset() == dt.timedelta(0)
        assert abs(r["created_at"] - dt.datetime.now(dt.timezone.utc)) < dt.timedelta(minutes=5)
    assert rows[1]["extra"] == {"max_length": 128} and rows[1]["duration_s"] == 1.5
    given = store.add_run([_row(run_id="abc", git_commit=None, model_path="models/m", model_hash="h1")])
    assert given == "abc" and store.query(run_id="abc")[0]["git_commit"] is None
    assert store.query(run_id="abc")[0]["model_path"] == "models/m"


def test_add_run_is_one_transaction(store):
    store.add_run([_row()])
    with pytest.raises(IntegrityError):
        store.add_run([_row("a"), _row("b"), _row("c", model=None)])  # NOT NULL fails at the third row
    assert [r["metric"] for r in store.query()] == ["main_score"]
    with pytest.raises(ValueError):
        store.add_run([_row(), {"model": "m"}])  # missing columns
    with pytest.raises(ValueError):
        store.add_run([_row(colour="blue")])  # unknown column
    with pytest.raises(ValueError):
        store.add_run([_row(run_id="a"), _row(run_id="b")])
    with pytest.raises(TypeError):
        store.add_run([_row(extra={"x": object()})])
    assert len(store.query()) == 1


def test_nan_is_stored_as_null(store):
    store.add_run([_row(value=float("nan"))])
    assert store.query()[0]["value"] is None


def test_query_filters_and_latest_only(store):
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    store.add_run([_row(value=70.0, created_at=t0), _row("cosine_pearson", 69.0, created_at=t0)])
    store.add_run([_row(value=75.0, created_at=t0 + dt.timedelta(days=1))])
    store.add_run([_row(value=60.0, model="other", created_at=t0 + dt.timedelta(days=2))])
    # Stored later but dated earlier (e.g. an import of old results): not the latest.
    store.add_run([_row(value=1.0, created_at=t0 - dt.timedelta(days=1))])

    assert [r["value"] for r in store.query(model="minilm", metric="main_score")] == [1.0, 70.0, 75.0]
    latest = store.query(latest_only=True)
    assert sorted((r["model"], r["metric"], r["value"]) for r in latest) == [
        ("minilm", "cosine_pearson", 69.0), ("minilm", "main_score", 75.0), ("other", "main_score", 60.0)]
    assert [r["value"] for r in store.query(model="minilm", metric="main_score", latest_only=True)] == [75.0]
    assert store.query(task="nope") == []


def test_file_store_persists_and_default_url(tmp_path, monkeypatch):
    monkeypatch.setattr(store_mod, "current_git_commit", lambda path=None: None)
    monkeypatch.setenv("EMBEDLAB_RESULTS_DB", str(tmp_path / "default.sqlite"))
    with ResultsStore() as s:
        assert s.url == f"sqlite:///{tmp_path / 'default.sqlite'}"
        s.add_run([_row()])
    with ResultsStore(f"sqlite:///{tmp_path / 'default.sqlite'}") as s:
        assert len(s.query()) == 1


def test_to_csv_path_and_stream(store, tmp_path):
    store.add_run([_row(extra={"b": 2, "a": 1}), _row("ndcg_at_10", 65.25, task="scifact", task_type="retrieval")])
    rows = store.query()
    buf = io.StringIO()
    ResultsStore.to_csv(rows, buf)
    path = tmp_path / "out" / "results.csv"
    ResultsStore.to_csv(rows, path)
    assert path.read_bytes().decode("utf-8") == buf.getvalue()
    assert [p.name for p in path.parent.iterdir()] == ["results.csv"]
    back = list(csv.DictReader(io.StringIO(buf.getvalue())))
    assert list(back[0]) == list(store_mod.COLUMNS)
    assert back[0]["extra"] == '{"a": 1, "b": 2}' and float(back[1]["value"]) == 65.25
    assert dt.datetime.fromisoformat(back[0]["created_at"]) == rows[0]["created_at"]


def test_display_value():
    assert display_value("sts", 0.8123) == pytest.approx(81.23)
    assert display_value("retrieval", 0.5) == 50.0
    assert display_value("geometry", -3.2) == -3.2
    assert display_value("sts", float("nan")) is None


def test_current_git_commit(tmp_path):
    assert current_git_commit(tmp_path) is None  # not a checkout
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "init.defaultBranch=main"]
    subprocess.run([*git, "init", "-q", str(tmp_path)], check=True)
    assert current_git_commit(tmp_path) is None  # a checkout without commits
    subprocess.run([*git, "-C", str(tmp_path), "commit", "-q", "--allow-empty", "-m", "x"], check=True)
    head = subprocess.run(["git", "-C", str(tmp_path), "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    assert current_git_commit(tmp_path) == head.strip()
