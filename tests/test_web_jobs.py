"""The model-practice pages and API (embedlab/web/routes_jobs.py): the matrix builder and its preview (the same jobs
`embedlab jobs submit --show` lists), launching, the job list and page, cancel / retry / run, and the refusals:
another user's job is a 404 for reading, cancelling and retrying; reviewers cannot launch; CSRF; bad input is a
message, never a traceback.

Most tests use a recording launcher (nothing runs, so queued jobs stay queued). Two run real jobs with the local
executor on the ``tiny`` profile (seconds each): one through the API (a job that finishes with its curve and results,
and one that fails with its error), and one in a real browser (Playwright + Debian's Chromium, tests/web_server.py):
build a two-seed matrix, preview, launch, watch both finish, open a job with its training curve. Screenshots go to
tmp, or to docs/web/screenshots/jobs-*.png with EMBEDLAB_SCREENSHOTS=1.
"""
from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest
from web_server import (  # noqa: F401  (fixtures)
    LiveServer, api_token, browser, browser_login, csrf_from, make_app, page, signed_in, watch_errors,
)

from embedlab.bench.jobs import JobQueue
from embedlab.bench.jobspec import expand, load_job_matrix
from embedlab.jobkinds import JobSpec
from embedlab.web.routes_jobs import MAX_JOBS, curve_chart, training_curves

ROOT = Path(__file__).resolve().parents[1]
PW = "a long passphrase"
TINY = {"kind": "vqa-train", "models": ["cnn-ban"], "tasks": ["vqa-rad-val"], "profile": "tiny",
        "params": {"epochs": [1]}, "seeds": [0]}
REAL_TIMEOUT_S = 240


class RecordingLauncher:
    """Stands in for JobLauncher: remembers what it was asked to run and runs nothing."""

    def __init__(self):
        self.started: list[list[str]] = []

    def start(self, ids):
        self.started.append(list(ids))
        return list(ids)

    def watching(self) -> set[str]:
        return set()


@pytest.fixture
def app(tmp_path):
    app = make_app(tmp_path)
    for name, role in (("ada", "admin"), ("rita", "researcher"), ("rob", "researcher"), ("vera", "reviewer")):
        app.state.accounts.create_user(name, PW, role)
    app.state.job_launcher = RecordingLauncher()
    return app


def _client(app, name):
    client = signed_in(app, name, PW)
    return client, api_token(client)


def _launch(client, headers, **changes) -> dict:
    response = client.post("/api/jobs", json={**TINY, **changes}, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


def _no_traceback(text: str) -> None:
    assert "Traceback" not in text and 'File "' not in text


# ------------------------------------------------------------------------------------------------ the builder
def test_builder_offers_the_registries_and_only_researchers_open_it(app):
    from embedlab.medvqa.models import MODELS
    from embedlab.medvqa.tasks import TASKS

    rita, _ = _client(app, "rita")
    page_ = rita.get("/jobs/new")
    assert page_.status_code == 200
    for name in MODELS.names() + TASKS.names() + ["paper", "cpu", "tiny"]:
        assert f'value="{name}"' in page_.text
    assert re.search(r'<form method="post" action="/jobs/preview" id="matrix">\s*<input type="hidden" '
                     r'name="csrf_token"', page_.text)  # the CSRF field comes first
    assert "sentence-transformers/all-MiniLM-L6-v2" in rita.get("/jobs/new?kind=evaluate").text
    assert "majority" in rita.get("/jobs/new?kind=vqa-baseline").text
    bad = rita.get("/jobs/new?kind=fuse%2Bevaluate")
    assert bad.status_code == 400 and "unknown job kind" in bad.text
    assert '<a href="/jobs"' in rita.get("/").text  # the nav and the home card

    kinds = rita.get("/api/jobs/kinds").json()
    assert set(kinds["kinds"]) == {"vqa-train", "vqa-baseline", "evaluate"} and kinds["max_jobs"] == MAX_JOBS
    assert [p["key"] for p in kinds["kinds"]["vqa-train"]["params"]] == ["batch_size", "batch_images", "epochs", "lr"]

    vera, vera_h = _client(app, "vera")
    assert '<a href="/jobs"' not in vera.get("/").text
    for path in ("/jobs/new", "/api/jobs/kinds"):
        assert vera.get(path).status_code == 403
    assert vera.post("/api/jobs/preview", json=TINY, headers=vera_h).status_code == 403
    refused = vera.post("/api/jobs", json=TINY, headers=vera_h)
    assert refused.status_code == 403 and "researcher" in refused.json()["error"]
    form = vera.post("/jobs/preview", data={"csrf_token": csrf_from(vera.get("/").text), "kind": "vqa-train"})
    assert form.status_code == 403
    assert vera.get("/jobs").status_code == 200  # reading is for everybody: a reviewer simply owns no jobs
    from fastapi.testclient import TestClient

    outsider = TestClient(app)
    assert outsider.get("/jobs/new", follow_redirects=False).headers["location"].startswith("/login")
    assert outsider.get("/api/jobs").status_code == 401


def test_registered_dataset_tool_exports_are_offered_and_previewed_as_tasks(app, tmp_path, monkeypatch):
    """An export registered by the data pages (or `embedlab vqa-data export --register`) is a task of the Med-VQA
    kinds: listed in the builder and the kinds API, accepted by preview; an export without val is not offered."""
    import json

    from embedlab.medvqa.dataset_tool.export import register_export

    monkeypatch.setenv("EMBEDLAB_REGISTRY", str(tmp_path / "registry.json"))
    row = {"qid": 1, "image_name": "a.png", "question": "is this a chest?", "answer": "yes", "answer_type": "CLOSED",
           "question_type": "ORGAN", "image_organ": "CHEST", "phrase_type": "freeform"}
    for name, splits in (("our-cases", ("train", "val")), ("only-test", ("test",))):
        folder = tmp_path / name
        folder.mkdir()
        for split in splits:
            (folder / f"{split}set.json").write_text(json.dumps([row]))
        register_export(name, folder)
    rita, headers = _client(app, "rita")
    assert 'value="our-cases"' in rita.get("/jobs/new").text
    assert 'value="only-test"' not in rita.get("/jobs/new").text
    tasks = {t["name"] for t in rita.get("/api/jobs/kinds").json()["kinds"]["vqa-train"]["tasks"]}
    assert {"vqa-rad-val", "our-cases"} <= tasks and "only-test" not in tasks
    preview = rita.post("/api/jobs/preview", json={**TINY, "tasks": ["our-cases"]}, headers=headers)
    assert preview.status_code == 200, preview.text
    assert [j["tasks"] for j in preview.json()["jobs"]] == [["our-cases"]]
    refused = rita.post("/api/jobs/preview", json={**TINY, "tasks": ["only-test"]}, headers=headers)
    assert refused.status_code == 400 and "only-test" in refused.json()["error"]


def test_the_preview_is_the_matrix_jobs_submit_show_lists(app, tmp_path):
    rita, headers = _client(app, "rita")
    body = {**TINY, "models": ["cnn-ban", "mevf-ban"], "params": {"epochs": "1, 2", "batch_images": [4]},
            "seeds": "0 1", "experiment": "grid"}
    preview = rita.post("/api/jobs/preview", json=body, headers=headers)
    assert preview.status_code == 200, preview.text
    got = preview.json()
    assert got["experiment"] == "grid@rita" and got["count"] == 8 and not got["warnings"]

    # The matrix file the page shows, through the CLI's own loader and expander: the same jobs, in the same order.
    path = tmp_path / "grid.yaml"
    path.write_text(got["yaml"])
    cli = [(j.name, j.model, list(j.tasks), j.seed, str(f)) for j, f in expand(load_job_matrix(path), str(path))]
    web = [(r["name"], r["model"], r["tasks"], r["seed"], r["folder"]) for r in got["jobs"]]
    assert web == cli
    assert web[0][0] == "vqa-model=cnn-ban-tasks=vqa-rad-val-batch_images=4-epochs=1"
    assert all(r["folder"].startswith(str((tmp_path / "web" / "jobs" / "rita" / "grid").resolve()))
               for r in got["jobs"])
    assert got["jobs"][0]["settings"].startswith("1 epochs · 4 images/batch")
    assert app.state.job_launcher.started == [] and JobQueue(app.state.store).list() == []  # nothing submitted

    # The page's preview lists the same jobs, with the Launch button carrying the digest.
    token = csrf_from(rita.get("/jobs/new").text)
    form = {"csrf_token": token, "kind": "vqa-train", "experiment": "grid", "name": "vqa",
            "models": ["cnn-ban", "mevf-ban"], "tasks": ["vqa-rad-val"], "profile": "tiny", "p_epochs": "1, 2",
            "p_batch_images": "4", "seeds": "0, 1", "threads": "1"}
    shown = rita.post("/jobs/preview", data=form)
    assert shown.status_code == 200
    assert re.findall(r"<td><code>([^<]+)</code></td>", shown.text) == [r[0] for r in web]
    assert f'name="digest" value="{got["digest"]}"' in shown.text and 'id="launch"' in shown.text

    # Varying a setting the profile does not use is said, not silently ignored.
    warned = rita.post("/api/jobs/preview", json={**TINY, "params": {"batch_size": [16, 32]}}, headers=headers)
    assert "no effect with image batching" in warned.json()["warnings"][0]


BAD_MATRICES = [
    ({"models": ["gpt-9"]}, "unknown model 'gpt-9'"),
    ({"models": []}, "models: choose at least one"),
    ({"tasks": []}, "tasks: choose at least one"),
    ({"tasks": ["vqa-rad-train"]}, "unknown task 'vqa-rad-train'"),
    ({"seeds": []}, "seeds: give at least one seed"),
    ({"seeds": "0, one"}, "seeds: 'one' is not a whole number"),
    ({"params": {"batch_size": "16, 3x"}}, "batch sizes (questions): '3x' is not a whole number"),
    ({"params": {"epochs": [1.5]}}, "epochs: '1.5' is not a whole number"),
    ({"params": {"lr": "0.01, fast"}}, "learning rates: 'fast' is not a number"),
    ({"params": {"lr": [0]}}, "learning rates: 0.0 is out of range"),
    ({"params": {"epochs": ", ,"}}, "epochs: give values or leave it empty"),
    ({"params": {"dropout": [0.1]}}, "'dropout' is not a hyper-parameter of vqa-train"),
    ({"profile": "huge"}, "profile: 'huge' is not one of paper, cpu, tiny"),
    ({"experiment": "../etc"}, "experiment: 1-64 letters"),
    ({"kind": "fuse+evaluate"}, "cannot be launched from the web app"),
    ({"seeds": list(range(50)), "params": {"epochs": [1, 2, 3, 4, 5]}}, f"makes 250 jobs; at most {MAX_JOBS}"),
    ({"seeds": list(range(51))}, "seeds: at most 50 values"),
    ({"kind": "evaluate", "models": ["/nonexistent/model"], "tasks": ["stsb"], "profile": None, "params": {}},
     "/nonexistent/model"),
]


def test_bad_matrices_are_messages_on_the_page_and_400_in_the_api(app):
    rita, headers = _client(app, "rita")
    token = headers["X-CSRF-Token"]
    for change, message in BAD_MATRICES:
        answer = rita.post("/api/jobs/preview", json={**TINY, **change}, headers=headers)
        assert answer.status_code == 400, (change, answer.text)
        assert message in answer.json()["error"], change
        assert rita.post("/api/jobs", json={**TINY, **change}, headers=headers).status_code == 400

        form = {"csrf_token": token, "kind": change.get("kind", "vqa-train"),
                "experiment": change.get("experiment", "practice"), "models": change.get("models", TINY["models"]),
                "tasks": change.get("tasks", TINY["tasks"]), "profile": change.get("profile") or "tiny",
                "seeds": ", ".join(map(str, change["seeds"])) if isinstance(change.get("seeds"), list)
                else change.get("seeds", "0")}
        for key, value in change.get("params", {"epochs": [1]}).items():
            form[f"p_{key}"] = ", ".join(map(str, value)) if isinstance(value, list) else value
        shown = rita.post("/jobs/preview", data=form)
        if "dropout" not in change.get("params", {}):  # the form has no field for an unknown parameter
            assert shown.status_code == 400 and 'id="matrix-errors"' in shown.text, change
            assert message.replace("'", "&#39;") in shown.text, change
            assert 'value="practice"' in shown.text or "experiment" in change  # what was typed is kept
        _no_traceback(shown.text)
    assert JobQueue(app.state.store).list() == []
    malformed = rita.post("/api/jobs/preview", json={**TINY, "threads": "many"}, headers=headers)
    assert malformed.status_code == 422 and "threads" in malformed.json()["error"]


# ------------------------------------------------------------------------------------------------- launching
def test_launch_from_the_page_submits_owns_and_starts_the_previewed_jobs(app):
    rita, _ = _client(app, "rita")
    launcher = app.state.job_launcher
    form = {"csrf_token": csrf_from(rita.get("/jobs/new").text), "kind": "vqa-train", "experiment": "practice",
            "name": "vqa", "models": ["cnn-ban"], "tasks": ["vqa-rad-val", "vqa-rad-image"], "profile": "tiny",
            "p_epochs": "1", "seeds": "0, 1", "threads": "1"}

    unseen = rita.post("/jobs", data=form)  # launch without a preview: the preview is shown first
    assert unseen.status_code == 409 and 'id="matrix-notice"' in unseen.text and 'id="preview"' in unseen.text
    digest = re.search(r'name="digest" value="([^"]+)"', unseen.text).group(1)
    changed = rita.post("/jobs", data={**form, "seeds": "0, 1, 2", "digest": digest})
    assert changed.status_code == 409 and "changed since its preview" in changed.text
    assert JobQueue(app.state.store).list() == [] and launcher.started == []

    done = rita.post("/jobs", data={**form, "digest": digest}, follow_redirects=False)
    assert done.status_code == 303 and done.headers["location"] == "/jobs?experiment=practice%40rita"
    listed = rita.get(done.headers["location"])
    assert "Launched 4 job(s) in practice@rita: 4 new, 0 already known." in listed.text
    jobs = JobQueue(app.state.store).list()
    assert len(jobs) == 4 and {j["status"] for j in jobs} == {"queued"}
    assert launcher.started == [[j["id"] for j in jobs]]
    assert all(app.state.accounts.owner_of("job", j["id"]).username == "rita" for j in jobs)
    assert all(f'id="job-{j["id"]}"' in listed.text for j in jobs)
    assert 'hx-trigger="every 3s"' in listed.text  # queued jobs: the table refreshes itself

    again = rita.post("/jobs", data={**form, "digest": digest})  # the same matrix again: nothing new
    assert "0 new, 4 already known" in again.text and len(JobQueue(app.state.store).list()) == 4

    # Another user's identical matrix is another experiment: their own jobs, never rita's.
    rob, rob_h = _client(app, "rob")
    theirs = _launch(rob, rob_h, tasks=["vqa-rad-val", "vqa-rad-image"], seeds=[0, 1])
    assert theirs["experiment"] == "practice@rob" and theirs["new"] == 4
    assert not set(theirs["ids"]) & {j["id"] for j in jobs}


def test_api_launch_list_show_cancel_retry_and_run(app):
    rita, headers = _client(app, "rita")
    launcher = app.state.job_launcher
    preview = rita.post("/api/jobs/preview", json={**TINY, "seeds": [0, 1]}, headers=headers).json()
    stale = rita.post("/api/jobs", json={**TINY, "seeds": [0, 1, 2], "digest": preview["digest"]}, headers=headers)
    assert stale.status_code == 409 and "digest" in stale.json()["error"]
    launched = _launch(rita, headers, seeds=[0, 1], digest=preview["digest"])
    first, second = launched["ids"]
    assert launched["new"] == 2 and [j["status"] for j in launched["jobs"]] == ["queued", "queued"]
    assert launcher.started == [[first, second]]

    listed = rita.get("/api/jobs").json()["jobs"]
    assert [j["id"] for j in listed] == [second, first]  # newest first
    assert rita.get("/api/jobs?status=done").json()["jobs"] == []
    assert len(rita.get("/api/jobs?experiment=practice%40rita").json()["jobs"]) == 2
    assert rita.get("/api/jobs?status=lost").status_code == 400
    one = rita.get(f"/api/jobs/{first}").json()
    assert one["model"] == "cnn-ban" and one["config"] == {"profile": "tiny", "train": {"epochs": 1}}
    assert one["curve"] == [] and one["results"] == [] and one["can_cancel"] and not one["can_retry"]

    assert rita.post(f"/api/jobs/{first}/retry", headers=headers).status_code == 409  # queued: nothing to retry
    assert rita.post(f"/api/jobs/{first}/run", headers=headers).json() == {"id": first, "status": "queued"}
    assert launcher.started[-1] == [first]
    assert rita.post(f"/api/jobs/{first}/cancel", headers=headers).json() == {"id": first, "status": "cancelled"}
    again = rita.post(f"/api/jobs/{first}/cancel", headers=headers)
    assert again.status_code == 409 and "only queued or running" in again.json()["error"]
    assert rita.post(f"/api/jobs/{first}/run", headers=headers).status_code == 409
    assert rita.post(f"/api/jobs/{first}/retry", headers=headers).json() == {"id": first, "status": "queued"}
    assert launcher.started[-1] == [first] and JobQueue(app.state.store).get(first)["attempts"] == 0

    # A running job is asked to stop: it says "cancelling" until its worker sees the flag.
    queue = JobQueue(app.state.store)
    assert queue.claim(second, "test-worker", "local")
    assert rita.post(f"/api/jobs/{second}/cancel", headers=headers).json()["status"] == "cancelling"
    shown = rita.get(f"/api/jobs/{second}").json()
    assert shown["shown_status"] == "cancelling" and not shown["can_cancel"]

    # The pages' buttons do the same, with a message.
    token = csrf_from(rita.get(f"/jobs/{first}").text)
    cancelled = rita.post(f"/jobs/{first}/cancel", data={"csrf_token": token})
    assert "Job cancelled." in cancelled.text and queue.get(first)["status"] == "cancelled"
    refused = rita.post(f"/jobs/{first}/cancel", data={"csrf_token": token})
    assert refused.status_code == 200 and "only queued or running jobs can be cancelled" in refused.text
    retried = rita.post(f"/jobs/{first}/retry", data={"csrf_token": token})
    assert "Job queued" in retried.text and queue.get(first)["status"] == "queued"
    assert rita.post(f"/jobs/{first}/explode", data={"csrf_token": token}).status_code == 404


def test_another_users_job_is_a_404_for_reading_cancelling_and_retrying(app):
    rita, rita_h = _client(app, "rita")
    job_id = _launch(rita, rita_h)["ids"][0]
    queue = JobQueue(app.state.store)
    rob, rob_h = _client(app, "rob")
    token = rob_h["X-CSRF-Token"]
    for path in (f"/jobs/{job_id}", f"/jobs/{job_id}/live", f"/jobs/{job_id}/log", f"/api/jobs/{job_id}"):
        answer = rob.get(path)
        assert answer.status_code == 404, path
        assert job_id[:8] not in answer.text.replace(job_id, "") or "no such job" in answer.text
    for action in ("cancel", "retry", "run"):
        assert rob.post(f"/api/jobs/{job_id}/{action}", headers=rob_h).status_code == 404
        assert rob.post(f"/jobs/{job_id}/{action}", data={"csrf_token": token}).status_code == 404
    assert queue.get(job_id)["status"] == "queued"
    queue.cancel(job_id)  # cancelled: retry would be allowed for the owner, still not for rob
    assert rob.post(f"/api/jobs/{job_id}/retry", headers=rob_h).status_code == 404
    assert queue.get(job_id)["status"] == "cancelled"
    assert rob.get("/api/jobs").json()["jobs"] == [] and job_id not in rob.get("/jobs").text
    # A missing job looks the same; ids are whole (no prefix look-ups).
    assert rob.get(f"/api/jobs/{'0' * 32}").status_code == 404
    assert rita.get(f"/api/jobs/{job_id[:8]}").status_code == 404
    assert rita.get(f"/api/jobs/{job_id}").status_code == 200

    ada, ada_h = _client(app, "ada")  # an admin reads and acts on every web job
    assert ada.get(f"/jobs/{job_id}").status_code == 200 and "launched by" in ada.get(f"/jobs/{job_id}").text
    assert [j["id"] for j in ada.get("/api/jobs").json()["jobs"]] == [job_id]
    assert ada.post(f"/api/jobs/{job_id}/retry", headers=ada_h).json()["status"] == "queued"
    assert ada.get(f"/api/jobs/{'f' * 32}").status_code == 404


def test_state_changes_need_the_csrf_token(app):
    rita, headers = _client(app, "rita")
    job_id = _launch(rita, headers)["ids"][0]
    assert rita.post("/api/jobs", json=TINY).status_code == 403
    assert rita.post("/api/jobs/preview", json=TINY).status_code == 403
    assert rita.post(f"/api/jobs/{job_id}/cancel").status_code == 403
    assert rita.post(f"/jobs/{job_id}/cancel", data={}).status_code == 403
    assert rita.post("/jobs", data={"kind": "vqa-train"}).status_code == 403
    assert JobQueue(app.state.store).get(job_id)["status"] == "queued"


# --------------------------------------------------------------------------------------- curves and charts
def test_training_curves_read_each_tasks_log_and_chart_them(tmp_path):
    folder = tmp_path / "job"
    (folder / "vqa-rad-val").mkdir(parents=True)
    (folder / "vqa-rad-val" / "train_log.jsonl").write_text(
        '{"epoch": 0, "loss": 120.0, "seconds": 1.5, "lr": 0.0025}\n{"epoch": 1, "loss": 9.0}\n'
        '{"epoch": 1, "loss": 8.0}\n{"epoch": 2, "loss": NaN}\n[1]\n{"epoch": 2, "lo')  # resumed; being written
    (folder / "vqa-rad-image").mkdir()
    (folder / "vqa-rad-image" / "train_log.jsonl").write_text('{"epoch": 0, "loss": 3.0}\n')
    series = training_curves({"output_dir": str(folder), "name": "j"})
    assert [s["label"] for s in series] == ["vqa-rad-image", "vqa-rad-val"]
    assert [(p["epoch"], p["loss"]) for p in series[1]["points"]] == [(1, 120.0), (2, 8.0)]
    chart = curve_chart(series)
    assert chart["log"] and chart["n"] == 3 and len(chart["series"]) == 2
    assert [t["label"] for t in chart["xticks"]] == ["1", "2"]
    assert all(chart["top"] <= d["y"] <= chart["top"] + chart["plot_h"] for s in chart["series"] for d in s["dots"])
    flat = curve_chart([{"label": "a", "points": [{"epoch": 1, "loss": 2.0}]}])
    assert not flat["log"] and flat["n"] == 1
    assert curve_chart([]) is None and training_curves({"output_dir": str(tmp_path / "none"), "name": "x"}) == []


# ------------------------------------------------------------------------------------------ real jobs
def _wait(client, ids: list[str], timeout: float = REAL_TIMEOUT_S) -> dict[str, dict]:
    deadline = time.monotonic() + timeout
    while True:
        jobs = {i: client.get(f"/api/jobs/{i}").json() for i in ids}
        if all(j["status"] in ("done", "failed", "cancelled") for j in jobs.values()):
            return jobs
        assert time.monotonic() < deadline, {i: (j["status"], j["progress_text"]) for i, j in jobs.items()}
        time.sleep(0.5)


def test_a_real_tiny_matrix_runs_in_the_background_and_a_failure_shows_its_error(tmp_path, data_root):
    app = make_app(tmp_path)
    app.state.accounts.create_user("rita", PW, "researcher")
    app.state.job_cpus = 1  # one worker process per launch: light on a shared machine
    rita, headers = _client(app, "rita")

    t0 = time.monotonic()
    launched = _launch(rita, headers, experiment="e2e")
    assert time.monotonic() - t0 < 5  # the request does not wait for the job
    good = launched["ids"][0]
    assert rita.get("/api/health").status_code == 200  # the server answers while the job runs

    # Meanwhile, a job that fails inside its run (a training setting of the wrong type passes the submit checks):
    # put in the store as the CLI would, owned by rita, and run here with the function every worker runs.
    queue = JobQueue(app.state.store)
    bad = queue.submit([JobSpec(kind="vqa-train", name="broken", model="cnn-ban", tasks=("vqa-rad-val",),
                                config={"profile": "tiny", "train": {"epochs": "one"}}, experiment="broken@rita")],
                       [tmp_path / "broken"], max_attempts=1)[0]
    app.state.accounts.own("job", bad, app.state.accounts.get_by_name("rita"))
    from embedlab.bench.jobs import run_job

    assert run_job(app.state.store.url, bad) == "failed"
    jobs = _wait(rita, [good, bad])

    done = jobs[good]
    assert done["status"] == "done", (done["error"], done["log_tail"])
    assert [(s["label"], [p["epoch"] for p in s["points"]]) for s in done["curve"]] == [("vqa-rad-val", [1])]
    metrics = {r["metric"]: r["value"] for r in done["results"]}
    assert 0 <= metrics["main_score"] <= 100 and "blank_overall" in metrics
    assert "cnn-ban on vqa-rad-val: overall" in done["log_tail"]
    shown = rita.get(f"/jobs/{good}")
    assert 'data-points="1"' in shown.text and 'id="job-results"' in shown.text and "main_score" in shown.text
    assert 'hx-trigger="every 2s"' not in shown.text  # ended: the page stops polling
    assert (tmp_path / "web" / "job-logs" / f"{good}.log").is_file()
    assert "cnn-ban" in rita.get(f"/jobs/{good}/log").text

    failed = jobs[bad]
    assert failed["status"] == "failed" and "invalid literal for int()" in failed["error"]
    page_ = rita.get(f"/jobs/{bad}")
    assert 'id="job-error"' in page_.text and "invalid literal for int()" in page_.text
    assert 'aria-label="retry broken seed 0"' in page_.text and 'id="job-log"' in page_.text
    listed = rita.get("/jobs").text
    assert 'data-status="done"' in listed and 'data-status="failed"' in listed


@pytest.fixture
def shots(tmp_path):
    folder = ROOT / "docs" / "web" / "screenshots" if os.environ.get("EMBEDLAB_SCREENSHOTS") == "1" \
        else tmp_path / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_browser_build_preview_launch_and_watch_a_matrix(page, tmp_path, shots, data_root):  # noqa: F811
    from playwright.sync_api import expect

    app = make_app(tmp_path)
    app.state.accounts.create_user("rita", PW, "researcher")
    app.state.job_cpus = 1
    errors = watch_errors(page)
    with LiveServer(app) as base:
        browser_login(page, base, "rita", PW)
        page.get_by_role("navigation", name="main").get_by_role("link", name="Jobs").click()
        expect(page).to_have_url(base + "/jobs")
        page.get_by_role("link", name="New job matrix").click()

        form = page.locator("#matrix")
        form.get_by_label("cnn-ban", exact=True).check()
        form.get_by_label("vqa-rad-val", exact=True).check()
        form.get_by_label("Profile", exact=True).select_option("tiny")
        form.get_by_label("Epochs", exact=True).fill("2")
        form.get_by_label("Seeds", exact=True).fill("0, 1")
        form.get_by_label("Experiment", exact=True).fill("browser")
        page.screenshot(path=shots / "jobs-1-builder.png", full_page=True)
        form.get_by_role("button", name="Preview").click()

        rows = page.locator("#preview-jobs tbody tr")
        expect(rows).to_have_count(2)
        expect(page.locator("#preview h2")).to_have_text("2 jobs in browser@rita")
        expect(rows.nth(1)).to_contain_text("vqa-model=cnn-ban-tasks=vqa-rad-val-epochs=2")
        page.locator("#preview").screenshot(path=shots / "jobs-2-preview.png")
        page.get_by_role("button", name="Launch 2 jobs").click()

        expect(page).to_have_url(base + "/jobs?experiment=browser%40rita")
        expect(page.locator(".flash-success")).to_contain_text("Launched 2 job(s)")
        expect(page.locator("#jobs tbody tr")).to_have_count(2)
        # The table refreshes itself (HTMX polling) until both have finished.
        expect(page.locator('#jobs tbody tr[data-status="done"]')).to_have_count(2, timeout=REAL_TIMEOUT_S * 1000)
        page.screenshot(path=shots / "jobs-3-list.png", full_page=True)

        page.locator("#jobs tbody tr").first.get_by_role("link").first.click()
        expect(page.locator("#job-status")).to_have_text("done")
        expect(page.locator("svg.curve circle")).to_have_count(2)  # one point per epoch
        expect(page.locator("svg.curve polyline")).to_have_count(1)
        expect(page.locator("#job-results")).to_contain_text("main_score")
        page.screenshot(path=shots / "jobs-4-job.png", full_page=True)

        # The experiment's leaderboard: one model, mean +- std over the two seeds, and its chart.
        page.get_by_role("link", name="its leaderboard").click()
        expect(page).to_have_url(base + "/results?experiment=browser%40rita")
        board = page.locator('table[data-table="leaderboard"]')
        expect(board.locator("tbody tr")).to_have_count(1)
        expect(board.locator("tbody tr").first).to_contain_text("cnn-ban")
        expect(board.locator("tbody tr").first).to_contain_text("±")
        expect(page.locator("#chart-scores svg .mark-rect path").first).to_be_attached()  # bars drawn by vega-embed
        page.screenshot(path=shots / "jobs-5-leaderboard.png", full_page=True)
    assert not errors, errors
