"""The data generation pages (embedlab/web/routes_data.py) through FastAPI's TestClient and in a real browser.

TestClient: every html and /api/data endpoint on the original system's case samples (upload a zip -> extract ->
review concepts -> generate -> review QA -> export + register -> datasets), and the refusals: another user's project
is a 404 everywhere, reviewers cannot upload or export, hostile zips (zip-slip, symlink) are refused with the
ingest's message and leave nothing behind, an upload over the size limit is a 413, bad QAConfig / export values are
messages, CSRF is required, a second start shows "running", a restart shows "interrupted", a failed step shows its
error. The browser test does the whole flow in Chromium with a screenshot per step (docs/web/screenshots/data-*.png
with EMBEDLAB_SCREENSHOTS=1, else tmp_path).
"""
from __future__ import annotations

import json
import os
import re
import stat
import threading
import time
import zipfile
from pathlib import Path

import pytest
from web_server import (  # noqa: F401  (fixtures)
    LiveServer, api_token, browser, browser_login, csrf_from, make_app, page, signed_in, watch_errors,
)

from embedlab.errors import ConfigError
from embedlab.medvqa.dataset_tool import concepts as concepts_module
from embedlab.medvqa.dataset_tool.project import Project
from embedlab.medvqa.dataset_tool.types import Concept
from embedlab.web.routes_data import TASK_FILE, highlight

ROOT = Path(__file__).resolve().parents[1]
PW = "correct horse battery"


@pytest.fixture(autouse=True)
def registry(tmp_path, monkeypatch):
    monkeypatch.setenv("EMBEDLAB_REGISTRY", str(tmp_path / "registry.json"))
    return tmp_path / "registry.json"


@pytest.fixture(scope="module")
def samples_zip(tmp_path_factory, data_root) -> Path:
    """The case samples (case_samples.csv, image/, txt/) zipped inside a wrapping folder, as a user would."""
    folder = data_root / "medvqa" / "case-samples"
    if not (folder / "case_samples.csv").is_file():
        pytest.skip("medvqa/case-samples not in the data mirror")
    target = tmp_path_factory.mktemp("zips") / "case samples.zip"
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in sorted(folder.rglob("*")):
            if f.is_file():
                zf.write(f, "case-samples/" + f.relative_to(folder).as_posix())
    return target


@pytest.fixture
def app(tmp_path):
    app = make_app(tmp_path)
    for name, role in (("ada", "admin"), ("rita", "researcher"), ("ruth", "researcher"), ("vera", "reviewer")):
        app.state.accounts.create_user(name, PW, role)
    return app


def _client(app, name: str):
    client = signed_in(app, name, PW)
    client.token = csrf_from(client.get("/").text)
    return client


def _upload(client, archive: Path | bytes, name: str = "chest cases", filename: str = "cases.zip", **fields):
    data = archive.read_bytes() if isinstance(archive, Path) else archive
    return client.post("/data/upload", data={"csrf_token": client.token, "name": name, **fields},
                       files={"file": (filename, data, "application/zip")}, follow_redirects=False)


def _new_project(client, samples_zip) -> str:
    r = _upload(client, samples_zip)
    assert r.status_code == 303, r.text[-800:]
    return r.headers["location"].rsplit("/", 1)[1]


def _wait(client, pid: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        task = client.get(f"/api/data/projects/{pid}").json()["task"]
        if task["state"] != "running":
            return task
        assert time.monotonic() < deadline, task
        time.sleep(0.1)


def _project(app, pid: str) -> Project:
    return Project.open(app.state.config.web_dir / "projects" / pid)


def _post(client, path: str, **data):
    return client.post(path, data={"csrf_token": client.token, **data}, follow_redirects=False)


def _flash(client, response) -> str:
    """The page a POST redirected to (its flash messages)."""
    assert response.status_code == 303, response.text[-500:]
    return client.get(response.headers["location"]).text


def _png() -> bytes:
    import io

    from PIL import Image

    png = io.BytesIO()
    Image.new("L", (8, 8)).save(png, "PNG")
    return png.getvalue()


def _hostile_zip(path: Path, info: zipfile.ZipInfo | str, data: bytes) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("ok/x.png", _png())
        zf.writestr("ok/r.txt", "a fine case: small left pleural effusion")
        zf.writestr(info, data)
    return path


def _symlink(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.create_system = 3
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


# -- the whole flow through the pages ------------------------------------------------------------------------------

def test_upload_review_generate_export_through_the_pages(app, samples_zip, registry):
    rita = _client(app, "rita")
    home = rita.get("/")
    assert 'href="/data"' in home.text
    resp = rita.get("/data")
    assert resp.status_code == 200 and 'id="upload"' in resp.text and 'id="no-projects"' in resp.text
    form = resp.text[resp.text.index('id="upload"'):]
    assert form.index('name="csrf_token"') < form.index('name="file"')  # the token first: the CSRF scan finds it

    r = _upload(rita, samples_zip, name="chest <cases>", filename="../../evil/case samples.zip")
    assert r.status_code == 303
    pid = r.headers["location"].rsplit("/", 1)[1]
    project_page = rita.get(r.headers["location"]).text
    assert "Imported 3 case(s) with 4 image(s)" in project_page
    assert "chest &lt;cases&gt;" in project_page and "<cases>" not in project_page
    web = app.state.config.web_dir
    uploads = list((web / "uploads").iterdir())
    assert len(uploads) == 1 and re.fullmatch(r"[0-9a-f]{16}\.zip", uploads[0].name)  # never the client's name
    assert not (web.parent / "evil").exists()
    rita_user = app.state.accounts.get_by_name("rita")
    assert app.state.accounts.owned_ids("project", rita_user) == [pid]
    assert app.state.accounts.owned_ids("upload", rita_user) == [uploads[0].stem]
    assert len(_project(app, pid).cases()) == 3
    listing = rita.get("/data").text
    assert f'href="/data/projects/{pid}"' in listing and "chest &lt;cases&gt;" in listing

    # extraction in the background; the panel polls, and asks for a reload once the step has ended
    assert 'id="task"' in project_page and "No step has run" in project_page
    assert "Concept extraction started." in _flash(rita, _post(rita, f"/data/projects/{pid}/extract"))
    assert _wait(rita, pid)["state"] == "done"
    panel = rita.get(f"/data/projects/{pid}/task?was=running", headers={"HX-Request": "true"})
    assert panel.headers.get("hx-refresh") == "true" and "done" in panel.text and "<html" not in panel.text
    assert "hx-refresh" not in rita.get(f"/data/projects/{pid}/task", headers={"HX-Request": "true"}).headers
    project_page = rita.get(f"/data/projects/{pid}").text
    n_concepts = len(_project(app, pid).concepts())
    assert n_concepts > 10 and f'<strong id="n-concepts">{n_concepts}</strong>' in project_page
    assert "every 1s" not in project_page  # nothing running: no polling

    # the case view: the report escaped, concept spans as marks; decisions through HTMX come back as the panel
    case_id = _project(app, pid).cases()[0].case_id
    case_page = rita.get(f"/data/projects/{pid}/cases/{case_id}")
    assert case_page.status_code == 200 and '<mark class="concept cat-' in case_page.text
    assert 'rel="next"' in case_page.text and f"Case <strong>{case_id}</strong> (1 of 3)" in case_page.text
    image_id = _project(app, pid).cases()[0].images[0].image_id
    image = rita.get(f"/data/projects/{pid}/images/{image_id}")
    assert image.status_code == 200 and image.headers["content-type"].startswith("image/")
    assert rita.get(f"/data/projects/{pid}/images/..%2Fproject.json").status_code == 404
    concepts = [c for c in _project(app, pid).concepts() if c.case_id == case_id]
    first, second, third = concepts[:3]
    htmx = {"HX-Request": "true"}
    panel = rita.post(f"/data/projects/{pid}/decisions", headers=htmx, data={
        "csrf_token": rita.token, "kind": "concept", "item_id": first.concept_id, "status": "accepted",
        "view_case": case_id})
    assert panel.status_code == 200 and panel.text.lstrip().startswith('<div id="case-panel"')
    assert "accepted 1" in panel.text
    panel = rita.post(f"/data/projects/{pid}/decisions", headers=htmx, data={
        "csrf_token": rita.token, "kind": "concept", "item_id": second.concept_id, "status": "rejected",
        "view_case": case_id})
    assert "st-rejected" in panel.text and "rejected 1" in panel.text
    edited = _post(rita, f"/data/projects/{pid}/decisions", kind="concept", item_id=third.concept_id,
                   status="edited", value="humerus fracture", category="finding", negated="true", view_case=case_id)
    assert "edited." in _flash(rita, edited)  # without HTMX: back to the case page with a message
    from embedlab.medvqa.dataset_tool.review import effective_concepts
    effective = {c.concept_id: (c, s) for c, s in effective_concepts(_project(app, pid))}
    assert effective[first.concept_id][1] == "accepted" and effective[second.concept_id][1] == "rejected"
    changed, status = effective[third.concept_id]
    assert status == "edited" and changed.value == "humerus fracture" and changed.negated
    assert {d.reviewer for d in _project(app, pid).decisions()} == {"rita"}
    case_page = rita.get(f"/data/projects/{pid}/cases/{case_id}").text
    assert "negated" in case_page and "st-rejected" in case_page

    # QA generation with a config from the form
    started = _post(rita, f"/data/projects/{pid}/generate", question_types=["MODALITY", "ORGAN", "PRES", "ABN"],
                    variants="2", negatives="1", closed_share="", seed="3", use_pending="true")
    assert "QA generation started." in _flash(rita, started)
    assert _wait(rita, pid)["state"] == "done"
    pairs = _project(app, pid).qa_pairs()
    assert pairs and {q.question_type for q in pairs} <= {"MODALITY", "ORGAN", "PRES", "ABN"}
    assert _project(app, pid).info["stages"]["generate"]["config"]["seed"] == 3
    assert all(second.concept_id not in q.concept_ids for q in pairs)  # a rejected concept generates nothing

    # QA review: pending ones paginated, accept / edit / reject through HTMX, counts follow
    qa_page = rita.get(f"/data/projects/{pid}/qa")
    assert qa_page.status_code == 200 and qa_page.text.count('class="item qa-item') == min(20, len(pairs))
    for q in pairs[:3]:
        panel = rita.post(f"/data/projects/{pid}/decisions", headers=htmx, data={
            "csrf_token": rita.token, "kind": "qa", "item_id": q.qa_id, "status": "accepted", "view_status": "pending"})
        assert panel.status_code == 200 and f'data-qa="{q.qa_id}"' not in panel.text  # no longer pending
    panel = rita.post(f"/data/projects/{pid}/decisions", headers=htmx, data={
        "csrf_token": rita.token, "kind": "qa", "item_id": pairs[3].qa_id, "status": "edited",
        "question": pairs[3].question, "answer": "left arm", "answer_type": pairs[3].answer_type,
        "view_status": "pending"})
    assert panel.status_code == 200 and 'st-edited">3' not in panel.text and 'st-edited">1' in panel.text
    rita.post(f"/data/projects/{pid}/decisions", headers=htmx, data={
        "csrf_token": rita.token, "kind": "qa", "item_id": pairs[4].qa_id, "status": "rejected"})
    by_case = rita.get(f"/data/projects/{pid}/qa", params={"case": pairs[0].case_id}).text
    assert f'data-qa="{pairs[0].qa_id}"' in by_case  # a case's pairs: every status
    accepted = rita.get(f"/data/projects/{pid}/qa", params={"status": "accepted"}).text
    assert accepted.count('class="item qa-item') == 3
    assert rita.get(f"/data/projects/{pid}/qa", params={"status": "bogus"}).status_code == 422

    # export with a dataset name: registered, listed, its card readable
    started = _post(rita, f"/data/projects/{pid}/export", register="chest-web", split_by="case",
                    include="accepted", fractions="0.8,0.1,0.1", seed="0")
    assert "Export started." in _flash(rita, started)
    task = _wait(rita, pid)
    assert task["state"] == "done", task
    assert task["summary"]["registered"] == "chest-web" and sum(task["summary"]["rows"].values()) == 4
    folder = Path(json.loads(registry.read_text())["datasets"]["chest-web"]["path"])
    assert folder.parent == (app.state.config.web_dir / "exports" / pid).resolve()
    card = json.loads((folder / "card.json").read_text())
    assert card["split_by"] == "case" and card["review"]["qa"]["edited"] == 1
    datasets = rita.get("/data/datasets").text
    assert 'data-dataset="chest-web"' in datasets and f'href="/data/projects/{pid}"' in datasets
    card_page = rita.get("/data/datasets/chest-web")
    assert card_page.status_code == 200 and "Split by **case**" in card_page.text
    assert rita.get("/data/datasets/nope").status_code == 404
    assert "Registered as" in rita.get(f"/data/projects/{pid}").text


def test_the_api_mirrors_the_pages(app, samples_zip, registry):
    rita = _client(app, "rita")
    headers = api_token(rita)
    created = rita.post("/api/data/projects", headers=headers, data={"name": "api cases"},
                        files={"file": ("cases.zip", samples_zip.read_bytes(), "application/zip")})
    assert created.status_code == 201, created.text
    pid = created.json()["id"]
    assert created.json()["ingest"]["cases_added"] == 3 and created.json()["ingest"]["layout"] == "upload"
    listed = rita.get("/api/data/projects").json()
    assert [p["id"] for p in listed] == [pid] and listed[0]["name"] == "api cases"
    status = rita.get(f"/api/data/projects/{pid}").json()
    assert status["cases"] == 3 and status["concepts"] == 0 and status["task"] is None

    started = rita.post(f"/api/data/projects/{pid}/extract", headers=headers)
    assert started.status_code == 202 and started.json()["step"] == "extract"
    assert _wait(rita, pid)["summary"]["concepts"] > 10
    case_id = _project(app, pid).cases()[0].case_id
    case = rita.get(f"/api/data/projects/{pid}/cases/{case_id}").json()
    assert case["case"]["case_id"] == case_id and case["concepts"][0]["status"] == "pending"
    concept = case["concepts"][0]
    decided = rita.post(f"/api/data/projects/{pid}/decisions", headers=headers, json={
        "kind": "concept", "item_id": concept["concept_id"], "status": "edited", "edit": {"negated": True}})
    assert decided.status_code == 200 and decided.json()["reviewer"] == "rita"

    started = rita.post(f"/api/data/projects/{pid}/generate", headers=headers,
                        json={"question_types": ["PRES", "ABN", "MODALITY"], "variants": 1, "seed": 1})
    assert started.status_code == 202 and started.json()["params"]["question_types"] == ["PRES", "ABN", "MODALITY"]
    assert _wait(rita, pid)["summary"]["pairs"] > 0
    pairs = _project(app, pid).qa_pairs()
    for q in pairs[:2]:
        assert rita.post(f"/api/data/projects/{pid}/decisions", headers=headers, json={
            "kind": "qa", "item_id": q.qa_id, "status": "accepted"}).status_code == 200
    status = rita.get(f"/api/data/projects/{pid}").json()
    assert status["review"]["qa"]["accepted"] == 2 and status["review"]["concept"]["edited"] == 1

    started = rita.post(f"/api/data/projects/{pid}/export", headers=headers,
                        json={"register": "api-set", "split_by": "image", "fractions": [1.0, 0.0, 0.0]})
    assert started.status_code == 202, started.text
    task = _wait(rita, pid)
    assert task["state"] == "done" and task["summary"]["rows"]["train"] == 2, task
    datasets = rita.get("/api/data/datasets").json()
    assert [d["name"] for d in datasets] == ["api-set"] and datasets[0]["project_id"] == pid
    assert datasets[0]["split_by"] == "image" and datasets[0]["rows"]["train"] == 2
    # exporting again under the project's own name moves the name to the new export
    assert rita.post(f"/api/data/projects/{pid}/export", headers=headers,
                     json={"register": "api-set", "include": "reviewed-or-pending"}).status_code == 202
    assert _wait(rita, pid)["state"] == "done"
    assert rita.get("/api/data/datasets").json()[0]["include"] == "reviewed-or-pending"
    assert "data" in {t for op in rita.get("/openapi.json").json()["paths"].get(
        "/api/data/projects", {}).values() for t in op.get("tags", [])}


# -- refusals --------------------------------------------------------------------------------------------------------

def test_another_users_project_is_a_404_everywhere(app, samples_zip):
    rita = _client(app, "rita")
    pid = _new_project(rita, samples_zip)
    assert rita.post(f"/api/data/projects/{pid}/extract", headers=api_token(rita)).status_code == 202
    _wait(rita, pid)
    concept = _project(app, pid).concepts()[0]
    case_id = concept.case_id
    image_id = _project(app, pid).cases()[0].images[0].image_id
    before = len(_project(app, pid).decisions())

    for name in ("ruth", "vera"):  # another researcher; a reviewer it is not shared with
        other = _client(app, name)
        headers = api_token(other)
        for path in (f"/data/projects/{pid}", f"/data/projects/{pid}/task", f"/data/projects/{pid}/qa",
                     f"/data/projects/{pid}/cases/{case_id}", f"/data/projects/{pid}/images/{image_id}",
                     f"/api/data/projects/{pid}", f"/api/data/projects/{pid}/cases/{case_id}"):
            r = other.get(path)
            assert r.status_code == 404, (name, path, r.status_code)
            assert f"no such project {pid}" in r.text
        r = other.post(f"/api/data/projects/{pid}/decisions", headers=headers, json={
            "kind": "concept", "item_id": concept.concept_id, "status": "rejected"})
        assert r.status_code == 404
        assert _post(other, f"/data/projects/{pid}/decisions", kind="concept", item_id=concept.concept_id,
                     status="rejected", view_case=case_id).status_code == 404
        assert other.get("/api/data/projects").json() == []
        assert pid not in other.get("/data").text
    ruth = _client(app, "ruth")
    for step in ("extract", "generate", "export"):
        assert ruth.post(f"/api/data/projects/{pid}/{step}", headers=api_token(ruth), json={}).status_code == 404
        assert _post(ruth, f"/data/projects/{pid}/{step}").status_code == 404
    # a made-up or malformed id looks the same
    for bad in ("0123456789abcdef", "..", "x" * 300, "%2e%2e%2fsecret_key"):
        assert rita.get(f"/api/data/projects/{bad}").status_code == 404
    assert len(_project(app, pid).decisions()) == before

    # admins see everything; a reviewer sees (and reviews) a project once the owner shares it, runs no step
    admin = _client(app, "ada")
    assert [p["id"] for p in admin.get("/api/data/projects").json()] == [pid]
    assert admin.get(f"/data/projects/{pid}").status_code == 200
    assert "no longer" not in _flash(rita, _post(rita, f"/data/projects/{pid}/reviewers", username="vera",
                                                 action="add"))
    assert "no user" in _flash(rita, _post(rita, f"/data/projects/{pid}/reviewers", username="nobody",
                                           action="add"))
    vera = _client(app, "vera")
    assert [p["id"] for p in vera.get("/api/data/projects").json()] == [pid]
    html = vera.get(f"/data/projects/{pid}").text
    assert 'id="extract-form"' not in html and 'id="export-form"' not in html
    r = vera.post(f"/api/data/projects/{pid}/decisions", headers=api_token(vera), json={
        "kind": "concept", "item_id": concept.concept_id, "status": "rejected"})
    assert r.status_code == 200 and r.json()["reviewer"] == "vera"
    assert vera.post(f"/api/data/projects/{pid}/extract", headers=api_token(vera)).status_code == 403
    # ruth cannot share rita's project with herself
    assert _post(ruth, f"/data/projects/{pid}/reviewers", username="ruth", action="add").status_code == 404
    _post(rita, f"/data/projects/{pid}/reviewers", username="vera", action="remove")
    assert vera.get(f"/data/projects/{pid}").status_code == 404


def test_reviewers_cannot_upload_or_export(app, samples_zip):
    vera = _client(app, "vera")
    resp = vera.get("/data")
    assert resp.status_code == 200 and 'id="upload"' not in resp.text
    r = _upload(vera, samples_zip)
    assert r.status_code == 403 and "needs a researcher account" in r.text
    r = vera.post("/api/data/projects", headers=api_token(vera),
                  files={"file": ("cases.zip", samples_zip.read_bytes(), "application/zip")})
    assert r.status_code == 403
    assert not (app.state.config.web_dir / "projects").exists()
    rita = _client(app, "rita")
    pid = _new_project(rita, samples_zip)
    _post(rita, f"/data/projects/{pid}/reviewers", username="vera", action="add")
    for step in ("export", "generate", "extract"):
        assert vera.post(f"/api/data/projects/{pid}/{step}", headers=api_token(vera), json={}).status_code == 403
        assert _post(vera, f"/data/projects/{pid}/{step}").status_code == 403
    assert not (app.state.config.web_dir / "exports").exists()


@pytest.mark.parametrize("entry, data, message", [
    ("../evil.txt", b"x", "'..' in the path: refused (zip-slip)"),
    ("/etc/cron.d/evil", b"x", "absolute path: refused (zip-slip)"),
    (_symlink("ok/link.png"), b"/etc/passwd", "is a symbolic link: refused"),
])
def test_hostile_zips_are_refused_with_the_ingest_message(app, tmp_path, entry, data, message):
    rita = _client(app, "rita")
    archive = _hostile_zip(tmp_path / "hostile.zip", entry, data)
    r = _upload(rita, archive)
    assert r.status_code == 400 and 'id="problems"' in r.text
    assert "1 problem(s) in cases.zip; nothing was imported" in r.text
    assert str(escape_html(message)) in r.text and "Traceback" not in r.text
    api = rita.post("/api/data/projects", headers=api_token(rita),
                    files={"file": ("hostile.zip", archive.read_bytes(), "application/zip")})
    assert api.status_code == 400 and api.json()["problems"][0]["message"] == message
    web = app.state.config.web_dir
    assert list((web / "uploads").iterdir()) == [] and list((web / "projects").iterdir()) == []
    assert not (tmp_path / "evil.txt").exists() and not (web / "evil.txt").exists()
    assert app.state.accounts.owned_ids("project", app.state.accounts.get_by_name("ada")) == []


def escape_html(text: str) -> str:
    from markupsafe import escape

    return str(escape(text))


def test_a_folder_per_case_upload_and_bad_uploads(app, tmp_path):
    rita = _client(app, "rita")
    folders = tmp_path / "folders.zip"
    with zipfile.ZipFile(folders, "w") as zf:
        zf.writestr("case7/a.png", _png())
        zf.writestr("case7/report.txt", "Small right pleural effusion. No pneumothorax.")
        zf.writestr("notes.md", "a loose file")
    r = _upload(rita, folders, name="", filename="folders.zip", layout="auto")
    assert r.status_code == 303 and "1 warning(s)" in _flash(rita, r)
    pid = r.headers["location"].rsplit("/", 1)[1]
    html = rita.get(r.headers["location"]).text
    assert "<h1>folders</h1>" in html and "Note: 1 file(s) at the top of the upload" in html  # name: the file's
    assert [c.case_id for c in _project(app, pid).cases()] == ["case7"]

    r = _upload(rita, b"not a zip at all", filename="notes.zip")
    assert r.status_code == 400 and "notes.zip is not a .zip archive" in r.text
    empty = tmp_path / "empty.zip"
    with zipfile.ZipFile(empty, "w") as zf:
        zf.writestr("readme.md", "nothing here")
    r = _upload(rita, empty)
    assert r.status_code == 400 and 'id="problems"' in r.text and "nothing was imported" in r.text
    r = _upload(rita, empty, name="x" * 150)
    assert r.status_code == 400 and "at most 100 characters" in r.text
    assert rita.post("/data/upload", data={"csrf_token": rita.token}).status_code == 422  # no file
    kept = list((app.state.config.web_dir / "uploads").iterdir())  # the imported upload only
    assert [p.stem for p in kept] == app.state.accounts.owned_ids("upload", app.state.accounts.get_by_name("rita"))


def test_an_upload_over_the_size_limit_is_a_413(tmp_path, samples_zip):
    app = make_app(tmp_path, max_upload_bytes=100_000)
    app.state.accounts.create_user("rita", PW, "researcher")
    rita = _client(app, "rita")
    assert samples_zip.stat().st_size > 100_000
    r = _upload(rita, samples_zip)
    assert r.status_code == 413 and "Traceback" not in r.text
    r = rita.post("/api/data/projects", headers=api_token(rita),
                  files={"file": ("cases.zip", samples_zip.read_bytes(), "application/zip")})
    assert r.status_code == 413 and "error" in r.json()
    assert not (app.state.config.web_dir / "uploads").exists() or not list(
        (app.state.config.web_dir / "uploads").iterdir())


def test_bad_generation_and_export_values_are_refused(app, samples_zip, registry):
    rita = _client(app, "rita")
    pid = _new_project(rita, samples_zip)
    headers = api_token(rita)
    for form, message in ((dict(variants="0"), "variants must be at least 1"),
                          (dict(negatives="-1"), "negatives must be 0 or more"),
                          (dict(question_types=["PRES", "NOPE"]), "question types must be among"),
                          (dict(question_types=[]), "question types must be among"),  # every box unticked
                          (dict(closed_share="2"), "closed_share must be between 0 and 1"),
                          (dict(closed_share="lots"), "closed share must be a number")):
        form = {"question_types": ["PRES"], **form}
        html = _flash(rita, _post(rita, f"/data/projects/{pid}/generate", **form))
        assert "flash-error" in html and message in html, message
    assert _post(rita, f"/data/projects/{pid}/generate", variants="two").status_code == 422
    for body, message in (({"variants": 0}, "variants must be at least 1"),
                          ({"question_types": []}, "question types must be among"),
                          ({"min_confidence": 3}, "min_confidence must be between 0 and 1")):
        r = rita.post(f"/api/data/projects/{pid}/generate", headers=headers, json=body)
        assert r.status_code == 400 and message in r.json()["error"], r.text
    assert rita.post(f"/api/data/projects/{pid}/generate", headers=headers,
                     json={"variants": "many"}).status_code == 422
    for form, message in ((dict(fractions="0.5,0.5"), "fractions must be three numbers"),
                          (dict(fractions="0.5,0.6,0.1"), "summing to 1"),
                          (dict(register="../escape"), "a dataset name is letters"),
                          (dict(register="vqa-rad"), "built-in")):
        html = _flash(rita, _post(rita, f"/data/projects/{pid}/export", **form))
        assert message in html, (message, html[html.find("flash"):][:400])
    assert _post(rita, f"/data/projects/{pid}/export", split_by="patient-name").status_code == 422
    r = rita.post(f"/api/data/projects/{pid}/export", headers=headers, json={"include": "everything"})
    assert r.status_code == 422 and "include" in r.json()["error"]
    # a failed step (nothing to generate from) shows its error on the page
    assert rita.post(f"/api/data/projects/{pid}/generate", headers=headers, json={}).status_code == 202
    task = _wait(rita, pid)
    assert task["state"] == "failed" and "has no concepts; run the extraction first" in task["message"]
    assert "has no concepts" in rita.get(f"/data/projects/{pid}").text
    # a name registered for another user's export is not taken over
    registry.write_text(json.dumps({"datasets": {"taken": {"path": "/somewhere/else", "splits": ["train"]}}}))
    html = _flash(rita, _post(rita, f"/data/projects/{pid}/export", register="taken"))
    assert "is registered already for another export" in html
    assert not (app.state.config.web_dir / "exports").exists()


def test_decision_refusals(app, samples_zip):
    rita = _client(app, "rita")
    pid = _new_project(rita, samples_zip)
    headers = api_token(rita)
    rita.post(f"/api/data/projects/{pid}/extract", headers=headers)
    _wait(rita, pid)
    c = _project(app, pid).concepts()[0]
    htmx = {"HX-Request": "true"}
    base = {"csrf_token": rita.token, "kind": "concept", "item_id": c.concept_id, "view_case": c.case_id}
    r = rita.post(f"/data/projects/{pid}/decisions", headers=htmx, data={
        **base, "status": "edited", "value": c.value, "category": c.category})
    assert r.status_code == 400 and "the edit changes nothing" in r.json()["error"]
    r = rita.post(f"/data/projects/{pid}/decisions", headers=htmx, data={
        **base, "status": "edited", "value": "  ", "category": c.category})
    assert r.status_code == 400 and "must not be empty" in r.json()["error"]
    r = rita.post(f"/data/projects/{pid}/decisions", headers=htmx, data={**base, "status": "edited",
                                                                          "value": "x", "category": "colour"})
    assert r.status_code == 422 and "category" in r.json()["error"]
    r = rita.post(f"/data/projects/{pid}/decisions", headers=htmx, data={**base, "item_id": "nope",
                                                                          "status": "accepted"})
    assert r.status_code == 400 and "no concept with id 'nope'" in r.json()["error"]
    for body, code, message in (
            ({"kind": "concept", "item_id": c.concept_id, "status": "edited", "edit": {"category": "colour"}}, 400,
             "category must be one of"),
            ({"kind": "concept", "item_id": c.concept_id, "status": "edited", "edit": {"confidence": 1}}, 400,
             "cannot edit confidence"),
            ({"kind": "concept", "item_id": c.concept_id, "status": "edited", "edit": {"negated": "yes"}}, 400,
             "negated must be true or false"),
            ({"kind": "concept", "item_id": c.concept_id, "status": "accepted", "edit": {"value": "x"}}, 400,
             "only an edited one carries them"),
            ({"kind": "concept", "item_id": c.concept_id, "status": "pending"}, 422, "status"),
            ({"kind": "image", "item_id": c.concept_id, "status": "accepted"}, 422, "kind")):
        r = rita.post(f"/api/data/projects/{pid}/decisions", headers=headers, json=body)
        assert r.status_code == code and message in r.json()["error"], (body, r.text)
    assert _project(app, pid).decisions() == []


def test_csrf_is_required(app, samples_zip):
    rita = _client(app, "rita")
    pid = _new_project(rita, samples_zip)
    files = {"file": ("cases.zip", samples_zip.read_bytes(), "application/zip")}
    refusals = [
        rita.post("/data/upload", data={"name": "x"}, files=files),
        rita.post("/data/upload", data={"csrf_token": "forged", "name": "x"}, files=files),
        rita.post("/api/data/projects", files=files),
        rita.post(f"/data/projects/{pid}/extract", data={}),
        rita.post(f"/data/projects/{pid}/generate", data={"variants": "1"}),
        rita.post(f"/data/projects/{pid}/export", data={"register": "x"}),
        rita.post(f"/data/projects/{pid}/reviewers", data={"username": "vera", "action": "add"}),
        rita.post(f"/data/projects/{pid}/decisions", data={"kind": "concept", "item_id": "x", "status": "accepted"}),
        rita.post(f"/api/data/projects/{pid}/extract"),
        rita.post(f"/api/data/projects/{pid}/generate", json={}),
        rita.post(f"/api/data/projects/{pid}/export", json={}),
        rita.post(f"/api/data/projects/{pid}/decisions", json={"kind": "concept", "item_id": "x",
                                                                "status": "accepted"}),
    ]
    for r in refusals:
        assert r.status_code == 403 and "CSRF check failed" in r.text, r.text[:300]
    assert [p["id"] for p in rita.get("/api/data/projects").json()] == [pid]
    assert rita.get(f"/api/data/projects/{pid}").json()["task"] is None


# -- background steps: one at a time, restarts, failures -----------------------------------------------------------

def test_one_step_at_a_time_a_restart_shows_interrupted_and_failures_show_their_error(app, samples_zip,
                                                                                       monkeypatch):
    rita = _client(app, "rita")
    pid = _new_project(rita, samples_zip)
    release = threading.Event()
    real = concepts_module.extract_into

    def slow_extract(project, *args, **kwargs):
        kwargs["progress"](3, 8)  # the page shows how far a step is
        assert release.wait(30)
        return real(project, *args, **kwargs)

    monkeypatch.setattr(concepts_module, "extract_into", slow_extract)
    assert "started" in _flash(rita, _post(rita, f"/data/projects/{pid}/extract"))
    html = rita.get(f"/data/projects/{pid}").text
    assert 'hx-trigger="every 1s"' in html and "running for" in html
    assert "3 / 8 cases" in html and 'value="3" max="8"' in html
    progress = rita.get(f"/api/data/projects/{pid}").json()["task"]["progress"]
    assert progress["done"] == 3 and progress["total"] == 8 and progress["rate"] > 0 and progress["eta"] >= 0
    assert re.search(r'<button type="submit" disabled>Extract concepts</button>', html)
    again = _flash(rita, _post(rita, f"/data/projects/{pid}/generate"))
    assert "Concept extraction is running for this project; wait until it has finished" in again
    r = rita.post(f"/api/data/projects/{pid}/export", headers=api_token(rita), json={})
    assert r.status_code == 409 and "is running" in r.json()["error"]
    assert json.loads((app.state.config.web_dir / "projects" / pid / TASK_FILE).read_text())["state"] == "running"

    # the server stops mid-step (a second app on the same store and folder = the restarted server)
    restarted = make_app(app.state.config.web_dir.parent, db_url=app.state.config.db_url)
    after = _client(restarted, "rita")
    status = after.get(f"/api/data/projects/{pid}").json()["task"]
    assert status["state"] == "interrupted" and "Run it again" in status["message"]
    assert "interrupted" in after.get(f"/data/projects/{pid}").text
    release.set()
    assert _wait(rita, pid)["state"] == "done"

    # another process (the CLI) holds the project's lock: refused as busy
    handle = _project(app, pid).writing()
    handle.__enter__()
    try:
        assert "The project is busy (running elsewhere)" in _flash(rita, _post(rita, f"/data/projects/{pid}/extract"))
    finally:
        handle.__exit__(None, None, None)

    def broken(project, *args, **kwargs):
        raise ConfigError("the lexicon cannot be read")

    monkeypatch.setattr(concepts_module, "extract_into", broken)
    rita.post(f"/api/data/projects/{pid}/extract", headers=api_token(rita))
    task = _wait(rita, pid)
    assert task["state"] == "failed" and task["message"] == "the lexicon cannot be read"

    def buggy(project, *args, **kwargs):
        raise RuntimeError("secret internals")

    monkeypatch.setattr(concepts_module, "extract_into", buggy)
    rita.post(f"/api/data/projects/{pid}/extract", headers=api_token(rita))
    task = _wait(rita, pid)
    assert task["state"] == "failed" and task["message"].startswith("unexpected error (ref ")
    html = rita.get(f"/data/projects/{pid}").text
    assert "secret internals" not in html and "unexpected error (ref " in html


def test_highlight_escapes_the_report_and_never_nests_marks_badly():
    report = "No <b>left</b> effusion & left lung"
    spans = [Concept("c1", "k", "finding", "pleural effusion", "effusion", 15, 23, negated=True),
             Concept("c2", "k", "laterality", "left", "left", 6, 10),
             Concept("c3", "k", "organ", "lung", "left lung", 26, 35),
             Concept("c4", "k", "laterality", "left", "left", 26, 30),
             Concept("bad", "k", "finding", "x", "x", 30, 99)]  # offsets past the end: ignored
    html = str(highlight(report, [(c, "rejected" if c.concept_id == "c2" else "pending") for c in spans]))
    assert "<b>" not in html and "&lt;b&gt;" in html and "&amp;" in html
    assert '<mark class="concept cat-finding st-pending negated" data-concepts="c1"' in html
    assert '<mark class="concept cat-laterality st-rejected" data-concepts="c2"' in html
    assert '<mark class="concept cat-laterality st-pending" data-concepts="c3 c4"' in html  # innermost wins
    assert '<mark class="concept cat-organ st-pending" data-concepts="c3"' in html
    assert html.count("<mark") == html.count("</mark>") == 4
    assert re.sub(r"<[^>]+>", "", html) == str(escape_html(report))


# -- the browser ------------------------------------------------------------------------------------------------------

@pytest.fixture
def shots(tmp_path):
    folder = ROOT / "docs" / "web" / "screenshots" if os.environ.get("EMBEDLAB_SCREENSHOTS") == "1" \
        else tmp_path / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_upload_review_export_in_a_browser(page, tmp_path, samples_zip, shots, registry):  # noqa: F811
    from playwright.sync_api import expect

    app = make_app(tmp_path)
    app.state.accounts.create_user("rita", PW, "researcher")
    errors = watch_errors(page)
    with LiveServer(app) as base:
        browser_login(page, base, "rita", PW)
        page.get_by_role("navigation", name="main").get_by_role("link", name="Data", exact=True).click()
        expect(page).to_have_url(base + "/data")
        # a hostile zip first: refused, its problems listed, nothing imported
        hostile = _hostile_zip(tmp_path / "hostile.zip", "../../evil.txt", b"x")
        page.locator("#upload").get_by_label("Cases (.zip)").set_input_files(hostile)
        page.locator("#upload").get_by_role("button", name="Upload and import").click()
        expect(page.locator("#upload-error")).to_contain_text("nothing was imported")
        expect(page.locator("#problems tbody tr")).to_have_count(1)
        expect(page.locator("#problems")).to_contain_text("zip-slip")
        page.screenshot(path=shots / "data-00-upload-refused.png")
        assert all("status of 400" in e for e in errors), errors  # the browser logs the refused request itself
        errors.clear()
        form = page.locator("#upload")
        form.get_by_label("Project name").fill("Case samples")
        form.get_by_label("Cases (.zip)").set_input_files(samples_zip)
        page.screenshot(path=shots / "data-01-upload.png")
        form.get_by_role("button", name="Upload and import").click()
        expect(page.locator(".flash-success")).to_have_text("Imported 3 case(s) with 4 image(s).")
        expect(page.locator("#n-cases")).to_have_text("3")
        page.screenshot(path=shots / "data-02-project.png")

        page.get_by_role("button", name="Extract concepts").click()
        expect(page.locator("#task")).to_contain_text("done", timeout=30_000)  # polled, then the page reloads
        expect(page.locator("#n-concepts")).not_to_have_text("0")
        page.screenshot(path=shots / "data-03-extracted.png")

        page.get_by_role("link", name="Review concepts case by case").click()
        expect(page.locator("#report mark").first).to_be_visible()
        page.screenshot(path=shots / "data-04-case.png")
        items = page.locator(".concept-item")
        first_id = items.nth(0).get_attribute("data-concept")
        second_id = items.nth(1).get_attribute("data-concept")
        items.nth(0).get_by_role("button", name="Accept").click()
        expect(page.locator(f'[data-concept="{first_id}"] .status')).to_have_text("accepted")
        page.locator(f'[data-concept="{second_id}"]').get_by_role("button", name="Reject").click()
        expect(page.locator(f'[data-concept="{second_id}"] .status')).to_have_text("rejected")
        expect(page.locator(f'#report mark.st-rejected[data-concepts~="{second_id}"]').first).to_be_visible()
        page.screenshot(path=shots / "data-05-concepts-reviewed.png")
        page.get_by_role("link", name="Next case →").click()
        expect(page.locator("#case-nav")).to_contain_text("(2 of 3)")

        page.get_by_role("link", name="Case samples").click()
        page.locator("#generate-form").get_by_role("button", name="Generate QA pairs").click()
        expect(page.locator("#task")).to_contain_text("QA pairs (", timeout=30_000)
        expect(page.locator("#n-qa")).not_to_have_text("0")
        page.screenshot(path=shots / "data-06-generated.png")

        page.get_by_role("link", name="Review QA pairs").click()
        pending = page.locator("#qa-counts .st-pending")
        total = int(pending.inner_text())
        for n in range(1, 4):
            page.locator(".qa-item").first.get_by_role("button", name="Accept").click()
            expect(page.locator("#qa-counts .st-accepted")).to_have_text(str(n))
        expect(pending).to_have_text(str(total - 3))
        page.locator(".qa-item").first.get_by_role("button", name="Reject").click()
        expect(page.locator("#qa-counts .st-rejected")).to_have_text("1")
        page.screenshot(path=shots / "data-07-qa-review.png")

        page.get_by_role("link", name="Case samples").click()
        export = page.locator("#export-form")
        export.get_by_label("Register as").fill("case-samples-web")
        export.get_by_role("button", name="Export").click()
        expect(page.locator("#task")).to_contain_text("Registered as case-samples-web", timeout=30_000)
        page.screenshot(path=shots / "data-08-exported.png")

        page.locator("#task").get_by_role("link", name="case-samples-web").click()
        expect(page.locator("#card")).to_contain_text("Split by **case**")
        page.locator("nav.crumbs").get_by_role("link", name="Datasets").click()
        row = page.locator('tr[data-dataset="case-samples-web"]')
        expect(row).to_contain_text("Case samples")
        expect(row).to_contain_text("accepted 3")
        page.screenshot(path=shots / "data-09-datasets.png")
    assert not errors, errors
    assert json.loads(registry.read_text())["datasets"]["case-samples-web"]["splits"]
