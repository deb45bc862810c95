"""An experiment's rows exported to a committed JSON and imported into a fresh store give the same rows (values,
provenance, times), a second import adds nothing, and bad files are refused naming the file and the row."""
from __future__ import annotations

import json

import pytest

from embedlab.bench.rowfiles import export_rows, import_rows
from embedlab.bench.store import ResultsStore
from embedlab.errors import ConfigError
from embedlab.jobkinds import load_domains
from embedlab.results import make_rows

load_domains()  # registers the "vqa" task type (display scale) that the rows below use


def _rows(model: str, seed: int, value: float) -> list[dict]:
    return make_rows(domain="medvqa", model=model, task="vqa-rad-val", task_type="vqa", dataset="vqa-rad", split="val",
                     scores={"overall": value, "closed": value + 0.1}, experiment="exp", seed=seed,
                     config={"profile": "cpu"}, extra={"counts": {"n": 359}})


def test_export_then_import_reproduces_the_rows_once(tmp_path):
    src = ResultsStore(f"sqlite:///{tmp_path / 'a.sqlite'}")
    for seed, v in ((0, 0.5), (1, 0.52)):
        src.add_run(_rows("mevf-ban", seed, v))
    src.add_run(make_rows(domain="medvqa", model="other", task="t", task_type="vqa", dataset="d", split="val",
                          scores={"overall": 0.9}, experiment="another"))
    path = tmp_path / "exp.json"
    assert export_rows(src, "exp", path) == 4
    dst = ResultsStore(f"sqlite:///{tmp_path / 'b.sqlite'}")
    assert import_rows(dst, path) == 4
    assert import_rows(dst, path) == 0  # idempotent
    strip = [{k: v for k, v in r.items() if k != "id"} for r in src.query(experiment="exp")]
    assert [{k: v for k, v in r.items() if k != "id"} for r in dst.query(experiment="exp")] == strip
    assert dst.query(experiment="another") == []


def test_a_runs_shared_columns_are_written_once_and_the_old_format_still_reads(tmp_path):
    src = ResultsStore(f"sqlite:///{tmp_path / 'a.sqlite'}")
    src.add_run(_rows("mevf-ban", 0, 0.5))
    path = tmp_path / "exp.json"
    export_rows(src, "exp", path)
    data = json.loads(path.read_text())
    assert data["format"] == 2 and len(data["runs"]) == 1 and path.read_text().count('"counts"') == 1
    run = data["runs"][0]
    assert run["shared"]["extra"] == {"counts": {"n": 359}}
    assert [set(r) for g in run["groups"] for r in g["rows"]] == [{"metric", "value"}] * 2
    # format 1: every column in every row (the files committed before format 2)
    old = tmp_path / "old.json"
    flat = [{**run["shared"], **g["shared"], **r} for g in run["groups"] for r in g["rows"]]
    old.write_text(json.dumps({"experiment": "exp", "format": 1, "rows": flat}))
    dst = ResultsStore(f"sqlite:///{tmp_path / 'b.sqlite'}")
    assert import_rows(dst, old) == 2
    strip = [{k: v for k, v in r.items() if k != "id"} for r in src.query(experiment="exp")]
    assert [{k: v for k, v in r.items() if k != "id"} for r in dst.query(experiment="exp")] == strip


def test_bad_row_files_are_refused_naming_file_and_row(tmp_path):
    store = ResultsStore(f"sqlite:///{tmp_path / 's.sqlite'}")
    bad = tmp_path / "bad.json"
    with pytest.raises(ConfigError, match="not found"):
        import_rows(store, bad)
    bad.write_text("[1, 2]")
    with pytest.raises(ConfigError, match=r"bad\.json: expected"):
        import_rows(store, bad)
    bad.write_text(json.dumps({"experiment": "e", "format": 1, "rows": [{"model": "m"}]}))
    with pytest.raises(ConfigError, match=r"bad\.json: rows\[0\]: missing column"):
        import_rows(store, bad)
    group = {"shared": {}, "rows": [{"model": "m"}]}
    bad.write_text(json.dumps({"experiment": "e", "format": 2, "runs": [{"shared": {}, "groups": [group]}]}))
    with pytest.raises(ConfigError, match=r"bad\.json: rows\[0\]: missing column"):
        import_rows(store, bad)
    bad.write_text(json.dumps({"experiment": "e", "format": 2, "runs": [{"shared": {}, "rows": []}]}))
    with pytest.raises(ConfigError, match=r"bad\.json: runs\[0\]: expected"):
        import_rows(store, bad)
    with pytest.raises(ConfigError, match="no rows of experiment"):
        export_rows(store, "nothing", tmp_path / "x.json")
    assert not (tmp_path / "x.json").exists()


def test_an_export_replaces_an_earlier_export_but_never_a_users_file(tmp_path):
    store = ResultsStore(f"sqlite:///{tmp_path / 's.sqlite'}")
    store.add_run(_rows("cr", 0, 0.6))
    out = tmp_path / "r.json"
    assert export_rows(store, "exp", out) == 2
    assert export_rows(store, "exp", out) == 2  # an earlier export is replaced
    notes = tmp_path / "notes.json"
    notes.write_text('{"mine": true}')
    with pytest.raises(ConfigError, match="already exists"):
        export_rows(store, "exp", notes)
    assert notes.read_text() == '{"mine": true}'
    assert export_rows(store, "exp", notes, overwrite=True) == 2


def test_the_cli_exports_and_imports_an_experiment(tmp_path):
    from typer.testing import CliRunner

    from embedlab.cli import app

    src = ResultsStore(f"sqlite:///{tmp_path / 'a.sqlite'}")
    src.add_run(_rows("cr", 0, 0.6))
    out = tmp_path / "r.json"
    res = CliRunner().invoke(app, ["results", "--db", str(tmp_path / "a.sqlite"), "--experiment", "exp",
                                   "--format", "json", "--out", str(out)])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(app, ["results-import", str(out), "--db", str(tmp_path / "b.sqlite")])
    assert res.exit_code == 0 and "2 rows imported" in res.output
    assert len(ResultsStore(f"sqlite:///{tmp_path / 'b.sqlite'}").query(experiment="exp")) == 2
