"""The model evaluation pages (embedlab/web/routes_results.py): every endpoint through FastAPI's TestClient, with its
refusals, and the leaderboard in a real browser (Chromium through Playwright: the table and the Vega chart drawn).

The store is seeded with embedlab.results.make_rows, as evaluations write it: a text experiment (2 models x 3 seeds,
two configurations of one model, two tasks) and a Med-VQA experiment (2 models x 2 seeds with closed / open,
question-type and blank / shuffled metrics). The numbers are checked against the leaderboard's definition (mean and
std with ddof=1 over seeds), not against the page's own output.

Screenshots go to tmp_path; with EMBEDLAB_SCREENSHOTS=1 to docs/web/screenshots/results-*.png.
"""
from __future__ import annotations

import csv
import io
import json
import os
import statistics
import uuid
from pathlib import Path

import pytest
from web_server import (  # noqa: F401  (fixtures)
    LiveServer, api_token, browser, browser_login, make_app, page, signed_in, watch_errors,
)

from embedlab.jobkinds import load_domains
from embedlab.results import make_rows

ROOT = Path(__file__).resolve().parents[1]
PW = "correct horse battery"
TEXT_EXP, VQA_EXP = "exp-text", "exp-vqa"
# model -> (base score, config); model-a also has a worse second configuration that must not be chosen
TEXT_MODELS = {"model-a": 70.0, "model-b": 60.0}


def _text_score(model: str, task: str, seed: int, worse: bool = False) -> float:
    return TEXT_MODELS[model] + (4.0 if task == "stsb" else 0.0) + 1.5 * seed - (20.0 if worse else 0.0)


def seed_store(store, job_id: str | None = None) -> dict[str, list[str]]:
    """Rows as evaluations write them; returns model -> run ids (one run per model, configuration and seed)."""
    load_domains()
    runs: dict[str, list[str]] = {}
    for model in TEXT_MODELS:
        for worse in ((False, True) if model == "model-a" else (False,)):
            config = {"model": model, "lr": 1e-4 if worse else 2e-5}
            for seed in range(3):
                run = uuid.uuid4().hex
                rows = []
                for task, ttype in (("stsb", "sts"), ("scifact", "retrieval")):
                    main = _text_score(model, task, seed, worse) / 100  # computed scale: make_rows shows x100
                    rows += make_rows(domain="text", model=model, task=task, task_type=ttype, dataset=task,
                                      split="test", scores={"main_score": main, "extra_metric": main / 2},
                                      experiment=TEXT_EXP, seed=seed, config=config, run_id=run,
                                      job_id=job_id if (model == "model-a" and not worse) else None,
                                      extra={"model_dir": f"/runs/{model}/s{seed}"}, duration_s=1.5)
                store.add_run(rows)
                runs.setdefault(model, []).append(run)
    for model, base in (("cnn-ban", 0.6), ("majority", 0.4)):
        for seed in range(2):
            run = uuid.uuid4().hex
            scores = {"main_score": base + 0.01 * seed, "overall": base + 0.01 * seed, "closed": base + 0.1,
                      "open": base - 0.1, "type/PRES": base + 0.05, "type/ABN": base - 0.05,
                      "blank_overall": base - (0.2 if model == "cnn-ban" else 0.0),
                      "shuffled_overall": base - 0.1, "image_reliance": 0.2 if model == "cnn-ban" else 0.0}
            store.add_run(make_rows(domain="medvqa", model=model, task="vqa-rad-val", task_type="vqa",
                                    dataset="vqa-rad", split="val", scores=scores, experiment=VQA_EXP, seed=seed,
                                    config={"model": model}, run_id=run))
            runs.setdefault(model, []).append(run)
    return runs


def add_job(store, job_id: str, output_dir: str = "/runs/jobs/x", kind: str = "text-train") -> None:
    """A finished job row as the job runner leaves it (with the provenance it records)."""
    import datetime as dt

    from sqlalchemy.orm import Session

    from embedlab.bench.store import Job

    now = dt.datetime.now(dt.timezone.utc)
    with Session(store.engine) as session, session.begin():
        session.add(Job(id=job_id, kind=kind, domain="text", experiment=TEXT_EXP, name="model-a", spec={},
                        config_hash="c" * 64, seed=0, status="done", attempts=1, max_attempts=2, threads=1,
                        output_dir=output_dir, cancel_requested=False, created_at=now, started_at=now,
                        finished_at=now, timings={"provenance": {"python": "3.11.2", "machine": "x86_64",
                                                                 "host": "lab1", "cpus": 2,
                                                                 "packages": {"torch": "2.13.0"}}}))


JOB = "job0000000000000000000000000001"


@pytest.fixture
def app(tmp_path):
    app = make_app(tmp_path)
    accounts = app.state.accounts
    accounts.create_user("ada", PW, "admin")
    accounts.create_user("rita", PW, "researcher")
    accounts.create_user("rob", PW, "reviewer")
    app.state.runs = seed_store(app.state.store, job_id=JOB)
    add_job(app.state.store, JOB)
    accounts.own("job", JOB, accounts.get_by_name("rita"))
    return app


@pytest.fixture
def rita(app):
    return signed_in(app, "rita", PW)


def _table(data: dict, table_id: str) -> dict:
    return next(t for t in data["tables"] if t["id"] == table_id)


# -- the leaderboard ---------------------------------------------------------------------------------------------

def test_pages_need_a_login(app):
    from fastapi.testclient import TestClient

    client = TestClient(app)
    for path in ("/results", "/results/compare?run=a&run=b", f"/results/runs/{app.state.runs['model-a'][0]}",
                 "/results/cell?model=model-a"):
        response = client.get(path, follow_redirects=False)
        assert response.status_code == 303 and response.headers["location"].startswith("/login?next=")
    for path in ("/api/results/leaderboard", f"/api/results/runs/{app.state.runs['model-a'][0]}",
                 "/api/results/compare?run=a&run=b", "/api/results/cell?model=x"):
        assert client.get(path).status_code == 401
    assert client.get("/results/leaderboard.csv", follow_redirects=False).status_code == 303


def test_leaderboard_numbers_match_the_definition(app, rita):
    data = rita.get("/api/results/leaderboard", params={"experiment": TEXT_EXP}).json()
    assert data["selection"] == {"experiment": TEXT_EXP, "domain": "text", "split": "test", "dataset": ""}
    overall = _table(data, "leaderboard")
    assert [r["key"]["model"] for r in overall["rows"]] == ["model-a", "model-b"]
    for row in overall["rows"]:
        model = row["key"]["model"]
        per_seed = [statistics.fmean(_text_score(model, t, s) for t in ("stsb", "scifact")) for s in range(3)]
        avg = row["cells"][4]
        assert avg["mean"] == pytest.approx(statistics.fmean(per_seed))
        assert avg["std"] == pytest.approx(statistics.stdev(per_seed))
        assert avg["n"] == 3 and avg["seeds"] == [0, 1, 2]
        assert avg["text"] == f"{statistics.fmean(per_seed):.2f} ± {statistics.stdev(per_seed):.2f}"
        assert avg["href"].startswith("/results/cell?")
    assert overall["rows"][0]["cells"][5]["text"] == "2"  # model-a: two configurations tried, the better chosen
    assert overall["rows"][0]["cells"][4].get("best") is True
    tasks = _table(data, "tasks")
    assert tasks["columns"] == ["model", "stsb", "scifact"]
    stsb = tasks["rows"][1]["cells"][1]
    assert stsb["mean"] == pytest.approx(statistics.fmean(_text_score("model-b", "stsb", s) for s in range(3)))
    assert _table(data, "categories")["columns"] == ["model", "sts", "retrieval"]
    assert not [t for t in data["tables"] if t["id"] in ("closed-open", "question-types")]
    chart = data["charts"][0]["spec"]
    assert chart["$schema"].startswith("https://vega.github.io/schema/vega-lite/v6")
    bars = chart["data"]["values"]
    assert {(d["model"], d["group"]) for d in bars} == {(m, g) for m in TEXT_MODELS for g in ("stsb", "scifact",
                                                                                               "average")}
    import altair as alt

    alt.LayerChart.from_dict(chart, validate=True)  # the page builds it unvalidated (speed): a valid Vega-Lite spec
    a_avg = next(d for d in bars if d["model"] == "model-a" and d["group"] == "average")
    assert a_avg["mean"] == pytest.approx(overall["rows"][0]["cells"][4]["mean"]) and a_avg["n"] == 3
    # the runs behind it: 2 models x 3 seeds of the chosen configurations, plus the other configuration's 3
    assert len(data["runs"]) == 9 and sum(r["chosen"] for r in data["runs"]) == 6


def test_leaderboard_page_renders_tables_chart_and_csp(app, rita):
    resp = rita.get("/results", params={"experiment": TEXT_EXP})
    assert resp.status_code == 200
    assert "'unsafe-eval'" in resp.headers["content-security-policy"]  # Vega needs eval on this page only
    assert "'unsafe-inline'" not in resp.headers["content-security-policy"].split("script-src")[1].split(";")[0]
    html = resp.text
    assert 'data-table="leaderboard"' in html and 'data-table="tasks"' in html
    assert 'data-vega-spec="chart-scores-spec"' in html and '<script type="application/json"' in html
    assert "/static/vendor/vega-embed.min.js" in html and "/results/charts.js" in html
    assert '<script>' not in html  # no inline script (the CSP would block it)
    assert "model-a" in html and "± " in html
    # the other pages keep the strict policy
    assert "'unsafe-eval'" not in rita.get("/").headers["content-security-policy"]
    js = rita.get("/results/charts.js")
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
    assert "vegaEmbed" in js.text


def test_default_selection_and_choices(app, rita):
    data = rita.get("/api/results/leaderboard").json()
    assert data["selection"]["experiment"] == VQA_EXP  # the newest rows' experiment
    assert data["selection"]["split"] == "val"  # no test split: the most populated one
    assert data["options"]["experiments"] == [TEXT_EXP, VQA_EXP]
    everything = rita.get("/api/results/leaderboard", params={"experiment": "", "domain": "", "split": "test"}).json()
    assert [r["key"]["model"] for r in _table(everything, "leaderboard")["rows"]] == ["model-a", "model-b"]
    one = rita.get("/api/results/leaderboard", params={"experiment": TEXT_EXP, "dataset": "stsb"}).json()
    assert _table(one, "tasks")["columns"] == ["model", "stsb"]
    # the form still holding the previous experiment's split: the default split, with a note
    moved = rita.get("/api/results/leaderboard", params={"experiment": TEXT_EXP, "split": "val"}).json()
    assert moved["selection"]["split"] == "test" and "has no split 'val'" in moved["notes"][0]
    empty = rita.get("/api/results/leaderboard", params={"experiment": "nope"}).json()
    assert empty["tables"] == [] and "No main_score results" in empty["message"]
    resp = rita.get("/results", params={"experiment": "nope"})
    assert resp.status_code == 200 and 'id="results-message"' in resp.text
    assert rita.get("/results", params={"experiment": "x" * 300}).status_code == 422


def test_medvqa_tables(app, rita):
    data = rita.get("/api/results/leaderboard", params={"experiment": VQA_EXP}).json()
    closed_open = _table(data, "closed-open")
    assert closed_open["columns"] == ["model", "closed", "open", "overall"]
    cnn = closed_open["rows"][0]
    assert cnn["key"]["model"] == "cnn-ban" and cnn["cells"][1]["mean"] == pytest.approx(70.0)
    types = _table(data, "question-types")
    assert types["columns"] == ["model", "ABN", "PRES"]
    reliance = _table(data, "image-reliance")
    assert reliance["columns"] == ["model", "overall", "blank overall", "shuffled overall", "image reliance"]
    assert reliance["rows"][0]["cells"][4]["mean"] == pytest.approx(20.0)
    assert reliance["rows"][1]["cells"][4]["mean"] == pytest.approx(0.0)
    assert not reliance["rows"][0]["cells"][4].get("best")  # reliance is not ranked
    assert [c["id"] for c in data["charts"]] == ["chart-scores", "chart-types"]
    html = rita.get("/results", params={"experiment": VQA_EXP}).text
    assert 'data-table="question-types"' in html and 'data-vega-spec="chart-types-spec"' in html
    # a number of the Med-VQA tables links to its rows
    href = types["rows"][0]["cells"][2]["href"]
    cell = rita.get("/api/results/cell?" + href.split("?", 1)[1]).json()
    assert cell["metric"] == "type/PRES" and len(cell["rows"]) == 2


def test_csv_download_is_what_is_shown(app, rita):
    response = rita.get("/results/leaderboard.csv", params={"experiment": TEXT_EXP})
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
    assert 'attachment; filename="leaderboard-exp-text-text-test.csv"' == response.headers["content-disposition"]
    lines = list(csv.DictReader(io.StringIO(response.text)))
    data = rita.get("/api/results/leaderboard", params={"experiment": TEXT_EXP}).json()
    shown = [c for t in data["tables"] for r in t["rows"] for c in r["cells"] if "mean" in c]
    assert len(lines) == len(shown)
    avg = next(x for x in lines if x["table"] == "leaderboard" and x["model"] == "model-a")
    assert float(avg["mean"]) == pytest.approx(_table(data, "leaderboard")["rows"][0]["cells"][4]["mean"])
    assert avg["n"] == "3" and avg["seeds"] == "0 1 2"
    vqa = list(csv.DictReader(io.StringIO(rita.get("/results/leaderboard.csv",
                                                    params={"experiment": VQA_EXP}).text)))
    assert {x["column"] for x in vqa if x["table"] == "question-types"} == {"type/ABN", "type/PRES"}


def test_cell_page_lists_the_rows_behind_a_number(app, rita):
    data = rita.get("/api/results/leaderboard", params={"experiment": TEXT_EXP}).json()
    avg_href = _table(data, "leaderboard")["rows"][0]["cells"][4]["href"]
    cell = rita.get("/api/results/cell?" + avg_href.split("?", 1)[1]).json()
    assert cell["averaged"] and sorted(cell["tasks"]) == ["scifact", "stsb"] and len(cell["rows"]) == 6
    assert cell["stat"]["mean"] == pytest.approx(_table(data, "leaderboard")["rows"][0]["cells"][4]["mean"])
    assert {r["run_id"] for r in cell["rows"]} == set(app.state.runs["model-a"][:3])
    resp = rita.get(avg_href)
    assert resp.status_code == 200 and 'id="cell-rows"' in resp.text and "/results/runs/" in resp.text
    task_href = _table(data, "tasks")["rows"][1]["cells"][2]["href"]
    assert len(rita.get("/api/results/cell?" + task_href.split("?", 1)[1]).json()["rows"]) == 3
    missing = rita.get("/results/cell", params={"model": "nobody", "experiment": TEXT_EXP, "split": "test"})
    assert missing.status_code == 404 and "no stored value" in missing.text
    assert rita.get("/api/results/cell", params={"model": "nobody"}).status_code == 404
    assert rita.get("/api/results/cell").status_code == 422  # model is required


# -- runs: provenance, ownership of the job link, comparison -----------------------------------------------------------

def test_run_page_shows_provenance(app, rita):
    run_id = app.state.runs["model-a"][0]
    data = rita.get(f"/api/results/runs/{run_id}").json()
    assert data["model"] == "model-a" and data["seed"] == 0 and data["experiment"] == TEXT_EXP
    assert data["config"] == {"model": "model-a", "lr": 2e-5} and len(data["config_hash"]) == 64
    assert data["model_dirs"] == ["/runs/model-a/s0"] and data["embedlab_version"]
    assert data["duration_s"] == pytest.approx(3.0)  # two tasks of 1.5 s (each repeated on two metric rows)
    assert len(data["rows"]) == 4 and {r["metric"] for r in data["rows"]} == {"main_score", "extra_metric"}
    assert data["job"]["href"] == "/jobs/job0000000000000000000000000001"  # rita owns the job
    html = rita.get(f"/results/runs/{run_id}").text
    assert 'id="provenance"' in html and "/runs/model-a/s0" in html and 'href="/jobs/job0000' in html
    assert "torch 2.13.0" in html and "lab1" in html  # the job's recorded provenance
    assert "&#34;lr&#34;" in html or '"lr"' in html  # the config JSON, escaped
    csv_text = rita.get(f"/results/runs/{run_id}.csv").text
    assert csv_text.splitlines()[0].startswith("id,model,") and len(csv_text.splitlines()) == 5


def test_job_links_only_for_owner_and_admin(app, rita):
    run_id = app.state.runs["model-a"][0]
    rob = signed_in(app, "rob", PW)  # a reviewer may read results, not another user's job
    other = rob.get(f"/api/results/runs/{run_id}").json()
    assert other["job"] is None and other["job_produced"] is True
    assert all(r["job_id"] == "(another user's job)" and r["job_href"] is None for r in other["rows"])
    html = rob.get(f"/results/runs/{run_id}").text
    assert "job0000" not in html and "a job of another user" in html
    board = rob.get("/api/results/leaderboard", params={"experiment": TEXT_EXP}).json()
    assert not any(r["job_href"] for r in board["runs"])
    assert "/jobs/job0000" not in rob.get("/results", params={"experiment": TEXT_EXP}).text
    ada = signed_in(app, "ada", PW)
    assert ada.get(f"/api/results/runs/{run_id}").json()["job"]["href"].startswith("/jobs/")
    assert any(r["job_href"] for r in rita.get("/api/results/leaderboard",
                                               params={"experiment": TEXT_EXP}).json()["runs"])


def test_run_refusals(app, rita):
    # (a bare ".." is resolved by the client before it is sent: "/results/runs/.." asks for "/results/")
    for bad in ("nope", "0" * 32, "..x", ".hidden", "a" * 65, "x;drop table results", "%2e%2e%2fx"):
        assert rita.get(f"/api/results/runs/{bad}").status_code == 404, bad
        assert rita.get(f"/results/runs/{bad}").status_code == 404, bad
    for bad in ("../../etc/passwd", "..%2F..%2Fsecret_key", "a/b"):
        assert rita.get(f"/results/runs/{bad}").status_code == 404, bad
        assert rita.get(f"/results/runs/{bad}.csv").status_code == 404, bad
    resp = rita.get("/results/runs/nope")
    assert "Traceback" not in resp.text and "no run nope" in resp.text


def test_compare_runs(app, rita):
    a, b = app.state.runs["model-a"][0], app.state.runs["model-b"][0]
    data = rita.get("/api/results/compare", params={"run": [a, b]}).json()
    assert [r["run_id"] for r in data["runs"]] == [a, b]
    first = data["rows"][0]
    assert (first["task"], first["metric"]) == ("scifact", "main_score")
    assert first["values"][0]["value"] == pytest.approx(70.0) and first["values"][0]["best"]
    assert first["values"][1]["value"] == pytest.approx(60.0) and not first["values"][1]["best"]
    html = rita.get("/results/compare", params={"run": [a, b]}).text
    assert 'id="compare"' in html and a[:8] in html and b[:8] in html
    mixed = rita.get("/api/results/compare", params={"run": [a, app.state.runs["cnn-ban"][0]]}).json()
    assert len(mixed["rows"]) == 4 + 9  # every (task, metric) of either run; "-" where one lacks it
    lines = list(csv.reader(io.StringIO(rita.get("/results/compare.csv", params={"run": [a, b]}).text)))
    assert lines[0] == ["task", "split", "metric", a, b] and lines[1][3:] == ["model-a", "model-b"]
    four = app.state.runs["model-a"][:3] + [b]
    assert rita.get("/api/results/compare", params={"run": four}).status_code == 200
    # refusals: too few, too many, duplicates only, unknown, malformed
    assert rita.get("/api/results/compare", params={"run": [a]}).status_code == 400
    assert rita.get("/api/results/compare").status_code == 400
    assert rita.get("/api/results/compare", params={"run": [a, a]}).status_code == 400
    five = app.state.runs["model-a"][:5]
    too_many = rita.get("/api/results/compare", params={"run": five})
    assert too_many.status_code == 400 and "2 to 4" in too_many.json()["error"]
    assert rita.get("/api/results/compare", params={"run": [a, "0" * 32]}).status_code == 404
    assert rita.get("/api/results/compare", params={"run": [a, "../x"]}).status_code == 404
    resp = rita.get("/results/compare", params={"run": [a]})
    assert resp.status_code == 400 and "choose 2 to 4" in resp.text


def test_no_state_changing_endpoints_and_csrf(app, rita):
    """The pages only read: a POST is refused by the CSRF check first (without a token), then as not allowed."""
    assert rita.post("/results").status_code == 403
    assert rita.post("/results", headers=api_token(rita)).status_code == 405
    assert rita.post("/api/results/leaderboard", headers=api_token(rita)).status_code == 405


def test_empty_store(tmp_path):
    app = make_app(tmp_path)
    app.state.accounts.create_user("ada", PW, "admin")
    client = signed_in(app, "ada", PW)
    resp = client.get("/results")
    assert resp.status_code == 200 and "holds no results yet" in resp.text
    assert client.get("/api/results/leaderboard").json()["tables"] == []
    assert client.get("/results/leaderboard.csv").text.startswith("table,model,")


def test_formula_like_names_are_neutralised_in_csv(tmp_path):
    app = make_app(tmp_path)
    app.state.accounts.create_user("ada", PW, "admin")
    load_domains()
    app.state.store.add_run(make_rows(domain="text", model="=HYPERLINK(\"x\")", task="stsb", task_type="sts",
                                      dataset="stsb", split="test", scores={"main_score": 0.5}, experiment="e"))
    client = signed_in(app, "ada", PW)
    lines = list(csv.DictReader(io.StringIO(client.get("/results/leaderboard.csv").text)))
    assert lines and all(x["model"].startswith("'=") for x in lines)
    html = client.get("/results").text
    assert "=HYPERLINK(&#34;x&#34;)" in html  # escaped in the page


# -- the browser -------------------------------------------------------------------------------------------------------

@pytest.fixture
def shots(tmp_path):
    folder = ROOT / "docs" / "web" / "screenshots" if os.environ.get("EMBEDLAB_SCREENSHOTS") == "1" \
        else tmp_path / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_leaderboard_in_a_browser(app, page, shots):  # noqa: F811
    from playwright.sync_api import expect

    errors = watch_errors(page)
    with LiveServer(app) as base:
        browser_login(page, base, "rita", PW, next="/results")
        expect(page).to_have_url(base + "/results")
        # the default is the newest experiment (Med-VQA); choose the text one with the form (its domain and split
        # are then its own defaults, not the Med-VQA ones the form held)
        page.get_by_label("Experiment").select_option(TEXT_EXP)
        page.get_by_role("button", name="Show").click()
        expect(page.get_by_label("Split")).to_have_value("test")
        expect(page.locator(".results-note")).to_have_count(0)
        board = page.locator('table[data-table="leaderboard"]')
        expect(board.locator("tbody tr")).to_have_count(2)
        expect(board.locator("tbody tr").first).to_contain_text("model-a")
        expect(page.locator("#chart-scores svg").first).to_be_visible()  # drawn by vega-embed
        expect(page.locator("#chart-scores svg .mark-rect path").first).to_be_attached()  # bars, not an empty axis
        page.screenshot(path=shots / "results-leaderboard.png", full_page=True)

        board.locator("tbody tr").first.locator("a.num-link").click()
        expect(page.locator("#cell-rows tbody tr")).to_have_count(6)
        page.locator("#cell-rows tbody tr").first.locator("a").first.click()
        expect(page.locator("#provenance")).to_contain_text("model-a")
        page.screenshot(path=shots / "results-run.png", full_page=True)

        page.go_back()
        page.go_back()
        boxes = page.locator('#compare-form input[name="run"]')
        boxes.nth(0).check()
        boxes.nth(5).check()
        page.get_by_role("button", name="Compare selected runs").click()
        expect(page.locator("#compare tbody tr")).to_have_count(4)
        page.screenshot(path=shots / "results-compare.png", full_page=True)

        page.goto(base + f"/results?experiment={VQA_EXP}")
        expect(page.locator('table[data-table="question-types"]')).to_be_visible()
        expect(page.locator("#chart-types svg").first).to_be_visible()
        page.screenshot(path=shots / "results-medvqa.png", full_page=True)
    assert not errors, errors


def test_json_api_in_openapi(app, rita):
    paths = rita.get("/openapi.json").json()["paths"]
    for path in ("/api/results/leaderboard", "/api/results/runs/{run_id}", "/api/results/compare",
                 "/api/results/cell", "/results/leaderboard.csv", "/results/compare.csv",
                 "/results/runs/{run_id}.csv"):
        assert path in paths, path
    json.dumps(paths)
