"""The demo page (embedlab/web/routes_demo.py): a tiny Med-VQA model trained here (cnn-ban, ``tiny`` profile, 50
VQA-RAD val-train questions, seconds) answers questions about uploaded PNG / JPEG / DICOM images and VQA-RAD val
examples; all-MiniLM-L6-v2 searches a small part of SciFact. Every endpoint through FastAPI's TestClient, with its
refusals (bad bytes, oversize, too many pixels, unknown or path-like model ids and example names, another user's job
model, CSRF), and both flows in a real browser (Chromium through Playwright).

Screenshots go to tmp_path; with EMBEDLAB_SCREENSHOTS=1 to docs/web/screenshots/demo-*.png.
"""
from __future__ import annotations

import datetime as dt
import io
import os
import shutil
from pathlib import Path

import pytest
from web_server import (  # noqa: F401  (fixtures)
    LiveServer, api_token, browser, browser_login, make_app, page, signed_in, watch_errors,
)

from embedlab.web import routes_demo

ROOT = Path(__file__).resolve().parents[1]
PW = "correct horse battery"
JOB = "d" * 32


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A cnn-ban model trained for seconds on the first 50 questions of VQA-RAD's val-train split."""
    from embedlab.medvqa.datasets import load_dataset
    from embedlab.medvqa.train import train_model
    from embedlab.settings import data_root

    if data_root() is None or not (data_root() / "medvqa" / "vqa-rad" / "trainset.json").is_file():
        pytest.skip("VQA-RAD is not in the local data mirror (set EMBEDLAB_DATA)")
    out = tmp_path_factory.mktemp("tiny") / "cnn-ban-tiny"
    trained = train_model("cnn-ban", "tiny", load_dataset("vqa-rad", "val-train")[:50], out, seed=0)
    return out, trained.answers.answers


@pytest.fixture(scope="module")
def val_image():
    from embedlab.medvqa.datasets import image_path, load_dataset

    record = load_dataset("vqa-rad", "val")[0]
    return record, image_path(record)


@pytest.fixture
def app(tmp_path, tiny_model, monkeypatch):
    monkeypatch.setattr(routes_demo, "DEMO_DIRS", [tmp_path / "demo"])  # not this checkout's own runs/demo
    monkeypatch.delenv(routes_demo.MODELS_ENV, raising=False)
    app = make_app(tmp_path)
    shutil.copytree(tiny_model[0], tmp_path / "web" / "models" / "tiny-cnn-ban")  # how an admin registers one
    accounts = app.state.accounts
    accounts.create_user("ada", PW, "admin")
    accounts.create_user("rita", PW, "researcher")
    accounts.create_user("rob", PW, "reviewer")
    return app


@pytest.fixture
def rita(app):
    return signed_in(app, "rita", PW)


def _vqa_id(client) -> str:
    models = client.get("/api/demo/models").json()["models"]
    return next(m["id"] for m in models if m["kind"] == "medvqa" and "web folder" in m["source"])


def _png(size=(48, 40), mode="L") -> bytes:
    """A PNG of seeded noise (incompressible: its size in bytes grows with its pixels)."""
    import numpy as np
    from PIL import Image

    shape = (size[1], size[0]) if mode == "L" else (size[1], size[0], 3)
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _ask(client, model_id, *, files=None, headers=None, **form):
    data = {"model": model_id, "question": "is there a fracture?", "answer_type": "auto", **form}
    return client.post("/api/demo/vqa", data=data, files=files,
                       headers=api_token(client) if headers is None else headers)


# -- the page and the models ------------------------------------------------------------------------------------------

def test_page_lists_models_examples_corpora(app, rita):
    resp = rita.get("/demo")
    assert resp.status_code == 200 and 'id="vqa-form"' in resp.text and 'id="text-form"' in resp.text
    assert "cnn-ban (tiny)" in resp.text and "web folder" in resp.text and "synpic" in resp.text
    assert "scifact" in resp.text
    models = rita.get("/api/demo/models").json()
    kinds = {m["kind"] for m in models["models"]}
    assert kinds == {"medvqa", "text"} and "scifact" in models["corpora"]
    assert all("path" not in m for m in models["models"])  # folders are shown to admins only
    ada = signed_in(app, "ada", PW)
    assert all("path" in m for m in ada.get("/api/demo/models").json()["models"])
    assert signed_in(app, "rob", PW).get("/demo").status_code == 200  # any signed-in user
    examples = rita.get("/api/demo/examples").json()["examples"]
    assert len(examples) > 100 and examples[0]["questions"][0]["question"]


def test_pages_need_a_login(app):
    from fastapi.testclient import TestClient

    client = TestClient(app)
    assert client.get("/demo", follow_redirects=False).headers["location"] == "/login?next=/demo"
    assert client.get("/api/demo/models").status_code == 401
    assert client.get("/api/demo/text", params={"model": "txt-minilm", "corpus": "scifact", "q": "x"}).status_code \
        == 401


def test_no_model_says_how_to_get_one(tmp_path, monkeypatch):
    monkeypatch.setattr(routes_demo, "DEMO_DIRS", [])
    app = make_app(tmp_path)
    app.state.accounts.create_user("ada", PW, "admin")
    resp = signed_in(app, "ada", PW).get("/demo")
    assert 'id="no-vqa-models"' in resp.text and "make demo" in resp.text


# -- asking ---------------------------------------------------------------------------------------------------------

def test_upload_png_jpeg_dicom(app, rita, tiny_model, val_image):
    from pydicom.data import get_testdata_file

    mid = _vqa_id(rita)
    answers = set(tiny_model[1])
    uploads = {"scan.png": _png(), "x.jpg": val_image[1].read_bytes(),
               "ct.dcm": Path(get_testdata_file("CT_small.dcm", download=False)).read_bytes(),
               "rgb.png": _png(mode="RGB")}
    for name, data in uploads.items():
        r = _ask(rita, mid, files={"image": (name, data, "application/octet-stream")})
        assert r.status_code == 200, (name, r.text)
        out = r.json()
        assert out["answer"] in answers and len(out["top"]) == 5
        probs = [t["probability"] for t in out["top"]]
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
        assert out["top"][0]["answer"] == out["answer"]
        assert out["image"]["src"].startswith("data:image/png;base64,")
    assert out["image"]["source"].startswith("your upload (PNG")
    assert not list((app.state.config.web_dir / "demo" / "tmp").iterdir())  # nothing kept


def test_closed_and_open_questions(app, rita):
    mid = _vqa_id(rita)
    closed = _ask(rita, mid, files={"image": ("a.png", _png(), "image/png")}, answer_type="closed").json()
    assert closed["candidates"] == ["yes", "no"] and {t["answer"] for t in closed["top"]} == {"yes", "no"}
    assert sum(t["probability"] for t in closed["top"]) == pytest.approx(1.0)
    opened = _ask(rita, mid, files={"image": ("a.png", _png(), "image/png")}, answer_type="open").json()
    assert not {"yes", "no"} & {t["answer"] for t in opened["top"]} and len(opened["top"]) == 5


def test_example_image_and_dataset_answer(app, rita, val_image):
    record, _ = val_image
    name = Path(record.image).name
    out = _ask(rita, _vqa_id(rita), example=name, question=record.question.upper()).json()
    assert out["image"]["source"] == f"VQA-RAD val image {name}"
    assert out["dataset_answer"] == {"answer": record.answer, "answer_type": record.answer_type}
    partial = rita.get("/demo/vqa/example", params={"example": name}, headers={"HX-Request": "true"})
    assert partial.status_code == 200 and "<html" not in partial.text
    assert 'id="example-questions"' in partial.text and record.question in partial.text
    assert rita.get("/demo/vqa/example").text.strip() == ""


def test_page_post_and_htmx_partial(app, rita):
    token = api_token(rita)["X-CSRF-Token"]
    form = {"csrf_token": token, "model": _vqa_id(rita), "question": "what organ is this?", "answer_type": "auto"}
    resp = rita.post("/demo/vqa", data=form, files={"image": ("a.png", _png(), "image/png")})
    assert resp.status_code == 200 and "<html" in resp.text and 'id="vqa-answer-text"' in resp.text
    assert resp.text.count("<meter") == 5
    partial = rita.post("/demo/vqa", data=form, files={"image": ("a.png", _png(), "image/png")},
                        headers={"HX-Request": "true"})
    assert "<html" not in partial.text and 'id="vqa-top"' in partial.text
    # no file chosen in the browser: an empty file part, which is no upload
    empty = rita.post("/demo/vqa", data=form, files={"image": ("", b"", "application/octet-stream")})
    assert empty.status_code == 400 and "upload an image or choose" in empty.text


def test_image_refusals(app, rita, monkeypatch):
    from pydicom.data import get_testdata_file

    mid = _vqa_id(rita)
    cases = [
        (b"just some text, not a picture", 400, "not a PNG, JPEG or DICOM"),
        (b"GIF89a" + b"\0" * 100, 400, "not a PNG, JPEG or DICOM"),
        (_png()[:60], 400, "cannot read the image"),  # a PNG cut short
        (b"\x89PNG\r\n\x1a\n" + b"\0" * 200, 400, "cannot read the image"),
        (b"\0" * 128 + b"DICM" + b"\xff" * 64, 400, "the DICOM file has no image"),
        (Path(get_testdata_file("MR_truncated.dcm", download=False)).read_bytes(), 400, "cannot read the image"),
    ]
    for data, status, message in cases:
        r = _ask(rita, mid, files={"image": ("scan.png", data, "image/png")})
        assert r.status_code == status and message in r.json()["error"], (data[:20], r.text)
        assert "/tmp" not in r.text and "upload-" not in r.text  # the server's file name never shows
    monkeypatch.setattr(routes_demo, "MAX_IMAGE_BYTES", 1000)
    big = _ask(rita, mid, files={"image": ("big.png", _png((200, 200)), "image/png")})
    assert big.status_code == 413 and "larger than" in big.json()["error"]
    monkeypatch.setattr(routes_demo, "MAX_IMAGE_BYTES", 20 * 1024 * 1024)
    monkeypatch.setattr(routes_demo, "MAX_PIXELS", 100)
    many = _ask(rita, mid, files={"image": ("many.png", _png(), "image/png")})
    assert many.status_code == 400 and "too large" in many.json()["error"]
    assert not list((app.state.config.web_dir / "demo" / "tmp").iterdir())


def test_upload_name_is_never_a_path(app, rita, tmp_path):
    r = _ask(rita, _vqa_id(rita), files={"image": ("../../../evil.png", _png(), "image/png")})
    assert r.status_code == 200
    assert not list(tmp_path.rglob("evil.png")) and not Path("/evil.png").exists()


def test_model_and_example_refusals(app, rita, val_image):
    mid = _vqa_id(rita)
    png = {"image": ("a.png", _png(), "image/png")}
    for bad in ("nope", "vqa-0000000000000000", "../../etc/passwd", "vqa-../../x", "/etc/passwd",
                "web/models/tiny-cnn-ban", "txt-minilm"):
        r = _ask(rita, bad, files=png)
        assert r.status_code == 404 and "unknown model" in r.json()["error"], bad
    # the folder's own path: refused as too long for an id (422) or as unknown (404), never used
    assert _ask(rita, str(app.state.config.web_dir / "models" / "tiny-cnn-ban"), files=png).status_code in (404, 422)
    for bad in ("nope.jpg", "../../secret_key", "../images/" + Path(val_image[0].image).name, "/etc/passwd"):
        r = _ask(rita, mid, example=bad)
        assert r.status_code == 404 and "unknown example" in r.json()["error"], bad
        assert rita.get("/demo/vqa/example", params={"example": bad}).status_code == 404
    both = _ask(rita, mid, files=png, example=Path(val_image[0].image).name)
    assert both.status_code == 400 and "not both" in both.json()["error"]
    assert _ask(rita, mid).status_code == 400
    assert _ask(rita, mid, files=png, question="   ").status_code == 400
    assert _ask(rita, mid, files=png, question="x" * 301).status_code == 422
    assert _ask(rita, mid, files=png, answer_type="maybe").status_code == 422
    # CSRF: no token, a wrong token
    assert _ask(rita, mid, files=png, headers={}).status_code == 403
    assert _ask(rita, mid, files=png, headers={"X-CSRF-Token": "forged"}).status_code == 403
    form = {"model": mid, "question": "q", "csrf_token": "forged"}
    assert rita.post("/demo/vqa", data=form, files=png).status_code == 403


def _add_done_job(store, output_dir: Path) -> None:
    from sqlalchemy.orm import Session

    from embedlab.bench.store import Job

    now = dt.datetime.now(dt.timezone.utc)
    with Session(store.engine) as session, session.begin():
        session.add(Job(id=JOB, kind="vqa-train", domain="medvqa", experiment="e", name="cnn-ban-tiny", spec={},
                        config_hash="c" * 64, seed=0, status="done", attempts=1, max_attempts=2, threads=1,
                        output_dir=str(output_dir), cancel_requested=False, created_at=now, finished_at=now))


def test_job_models_only_for_owner_and_admin(app, tmp_path, tiny_model):
    job_dir = tmp_path / "jobs" / "cnn-ban-tiny-s0"
    shutil.copytree(tiny_model[0], job_dir / "vqa-rad-val")  # a vqa-train job: <output_dir>/<task>/
    _add_done_job(app.state.store, job_dir)
    app.state.accounts.own("job", JOB, app.state.accounts.get_by_name("rita"))
    rita, rob, ada = (signed_in(app, n, PW) for n in ("rita", "rob", "ada"))
    mine = [m for m in rita.get("/api/demo/models").json()["models"] if m["source"].startswith("job dddddddd")]
    assert len(mine) == 1
    assert _ask(rita, mine[0]["id"], files={"image": ("a.png", _png(), "image/png")}).status_code == 200
    assert not [m for m in rob.get("/api/demo/models").json()["models"] if m["source"].startswith("job ")]
    refused = _ask(rob, mine[0]["id"], files={"image": ("a.png", _png(), "image/png")})
    assert refused.status_code == 404  # the same answer as a model that does not exist
    assert [m for m in ada.get("/api/demo/models").json()["models"] if m["source"].startswith("job dddddddd")]


def test_make_demo_and_configured_folders(app, rita, tmp_path, tiny_model, monkeypatch):
    shutil.copytree(tiny_model[0], tmp_path / "demo" / "medvqa")  # what `make demo` leaves
    shutil.copytree(tiny_model[0], tmp_path / "lab-models" / "shared-model")
    monkeypatch.setenv(routes_demo.MODELS_ENV, str(tmp_path / "lab-models"))
    models = rita.get("/api/demo/models").json()["models"]
    sources = {m["source"] for m in models if m["kind"] == "medvqa"}
    assert sources == {"web folder", "make demo", "configured"}
    demo_id = next(m["id"] for m in models if m["source"] == "make demo")
    assert _ask(rita, demo_id, files={"image": ("a.png", _png(), "image/png")}).status_code == 200
    # `embedlab serve --demo-models DIR` (WebConfig.demo_models) adds folders the same way as the variable
    monkeypatch.delenv(routes_demo.MODELS_ENV)
    shutil.copytree(tiny_model[0], tmp_path / "served" / "m")
    served = make_app(tmp_path / "s2", demo_models=(tmp_path / "served",))
    served.state.accounts.create_user("rita", PW, "researcher")
    listed = signed_in(served, "rita", PW).get("/api/demo/models").json()["models"]
    assert len([m for m in listed if m["source"] == "configured" and m["kind"] == "medvqa"]) == 1


# -- text search ---------------------------------------------------------------------------------------------------

def test_text_search(app, rita, monkeypatch):
    monkeypatch.setattr(routes_demo, "CORPUS_DOCS", 20)  # keep the embedding short here
    params = {"model": "txt-minilm", "corpus": "scifact", "q": "vitamin D and bone density"}
    out = rita.get("/api/demo/text", params=params).json()
    assert out["documents"] == 20 and out["corpus_total"] == 5183 and len(out["hits"]) == 10
    scores = [h["score"] for h in out["hits"]]
    assert scores == sorted(scores, reverse=True) and all(-1 <= s <= 1 for s in scores)
    assert [h["rank"] for h in out["hits"]] == list(range(1, 11)) and out["hits"][0]["title"]
    cached = list((app.state.config.web_dir / "demo" / "embeddings").glob("*.npy"))
    assert len(cached) == 1  # embeddings cached per model under the web folder
    partial = rita.get("/demo/text", params=params, headers={"HX-Request": "true"})
    assert partial.status_code == 200 and "<html" not in partial.text and partial.text.count("<li>") == 10
    resp = rita.get("/demo/text", params=params)
    assert "<html" in resp.text and 'id="hits"' in resp.text
    # refusals
    assert rita.get("/api/demo/text", params={**params, "corpus": "../../etc"}).status_code == 404
    assert rita.get("/api/demo/text", params={**params, "corpus": "stsb"}).status_code == 404
    assert rita.get("/api/demo/text", params={**params, "model": _vqa_id(rita)}).status_code == 404
    assert rita.get("/api/demo/text", params={**params, "model": "/work"}).status_code == 404
    assert rita.get("/api/demo/text", params={**params, "q": "  "}).status_code == 400
    assert rita.get("/api/demo/text", params={**params, "q": "x" * 501}).status_code == 422
    assert rita.get("/api/demo/text", params={"model": "txt-minilm"}).status_code == 422


# -- the browser -----------------------------------------------------------------------------------------------------

@pytest.fixture
def shots(tmp_path):
    folder = ROOT / "docs" / "web" / "screenshots" if os.environ.get("EMBEDLAB_SCREENSHOTS") == "1" \
        else tmp_path / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_demo_in_a_browser(app, page, shots, val_image, tmp_path, monkeypatch):  # noqa: F811
    from playwright.sync_api import expect

    monkeypatch.setattr(routes_demo, "CORPUS_DOCS", 20)
    upload = tmp_path / "chest.jpg"
    upload.write_bytes(val_image[1].read_bytes())
    errors = watch_errors(page)
    with LiveServer(app) as base:
        browser_login(page, base, "rita", PW, next="/demo")
        expect(page).to_have_url(base + "/demo")

        form = page.locator("#vqa-form")
        form.get_by_label("Upload an image").set_input_files(str(upload))
        form.get_by_label("Question", exact=True).fill("Is the trachea midline?")
        form.get_by_role("button", name="Ask").click()
        expect(page.locator("#vqa-answer-text")).not_to_be_empty()
        expect(page.locator("#vqa-top tbody tr")).to_have_count(5)
        expect(page.locator("#vqa-result img")).to_be_visible()
        page.screenshot(path=shots / "demo-vqa.png", full_page=True)

        # an example from VQA-RAD val instead: its preview and questions come in through HTMX
        form.get_by_label("Upload an image").set_input_files([])
        name = Path(val_image[0].image).name
        form.get_by_label("or choose a VQA-RAD val image").select_option(name)
        expect(page.locator("#example img")).to_be_visible()
        form.get_by_label("Question", exact=True).fill(val_image[0].question)
        form.get_by_label("Answer type").select_option("closed")
        form.get_by_role("button", name="Ask").click()
        expect(page.locator("#vqa-gold")).to_contain_text(val_image[0].answer)
        expect(page.locator("#vqa-top tbody tr")).to_have_count(2)  # closed: yes / no

        search = page.locator("#text-form")
        search.get_by_label("Query").fill("A deficiency of vitamin B12 increases blood levels of homocysteine.")
        search.get_by_role("button", name="Search").click()
        expect(page.locator("#hits li")).to_have_count(10, timeout=60_000)
        page.locator("#text-search").screenshot(path=shots / "demo-text.png")
    assert not errors, errors
