"""The dataset tool end to end from the command line, on the original system's case samples: ingest -> extract ->
review concepts -> generate -> review QA -> export -> register -> a library model trains on it by name."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from embedlab import cli


def _run(args: list[str], input: str | None = None):
    res = CliRunner().invoke(cli.app, args, input=input)
    assert res.exit_code == 0, res.output
    return res.output


def _fail(args: list[str]) -> str:
    """The real command (its error handling and exit status): must fail with status 2 and one message, no traceback."""
    res = subprocess.run([sys.executable, "-m", "embedlab", *args], capture_output=True, text=True, timeout=120,
                         env=os.environ.copy())
    assert res.returncode == 2, res.stdout + res.stderr
    assert "Traceback" not in res.stderr
    return res.stdout + res.stderr


@pytest.fixture
def registry(tmp_path, monkeypatch):
    monkeypatch.setenv("EMBEDLAB_REGISTRY", str(tmp_path / "registry.json"))
    monkeypatch.setenv("EMBEDLAB_CACHE", str(tmp_path / "cache"))
    return tmp_path / "registry.json"


def test_case_samples_become_a_reviewed_dataset_a_model_trains_on(data_root, tmp_path, registry):
    from embedlab.medvqa.dataset_tool.project import Project
    from embedlab.medvqa.datasets import load_dataset
    from embedlab.medvqa.train import train_model

    project, out = tmp_path / "p", tmp_path / "export"
    _run(["vqa-data", "ingest", str(data_root / "medvqa" / "case-samples"), "--project", str(project)])
    _run(["vqa-data", "extract", "--project", str(project)])
    p = Project.open(project)
    assert len(p.cases()) == 3 and len(p.concepts()) > 10
    # the reviewer rejects the first concept, accepts the next two and stops; a second sitting continues
    first = _run(["vqa-data", "review", "--project", str(project), "--kind", "concept", "--reviewer", "ann"],
                 input="r\na\na\nq\n")
    assert "logged: {'rejected': 1, 'accepted': 2}" in first
    second = _run(["vqa-data", "review", "--project", str(project), "--kind", "concept", "--reviewer", "ann"],
                  input="q\n")
    assert f"{len(p.concepts()) - 3} concepts to review (3 decided before)" in second
    _run(["vqa-data", "generate", "--project", str(project), "--variants", "2"])
    pairs = Project.open(project).qa_pairs()
    assert {q.question_type for q in pairs} >= {"MODALITY", "ORGAN", "PRES", "ABN", "POS"}
    rejected = Project.open(project).concepts()[0].concept_id
    assert all(rejected not in q.concept_ids for q in pairs)  # a rejected concept generates nothing
    # an unreviewed QA set is not exported by default
    assert "all-unreviewed" in _fail(["vqa-data", "export", "--project", str(project), "--out", str(out)])
    n = len(pairs)
    _run(["vqa-data", "review", "--project", str(project), "--kind", "qa", "--reviewer", "bob"],
         input="e\nanswer\nleft arm\n" + "a\n" * (n - 2) + "r\n")
    _run(["vqa-data", "export", "--project", str(project), "--out", str(out), "--register", "my-cases"])
    card = json.loads((out / "card.json").read_text())
    assert card["review"]["qa"]["rejected"] == 1 and card["review"]["qa"]["edited"] == 1
    images = {s: {r["image_name"] for r in json.loads((out / f"{s}set.json").read_text())}
              for s in ("train", "val", "test") if (out / f"{s}set.json").is_file()}
    assert sum(len(v) for v in images.values()) == len(set().union(*images.values()))  # no image in two splits
    assert "my-cases" in _run(["vqa-data", "datasets"])
    train = load_dataset("my-cases", "train")
    assert len(train) == card["splits"]["train"]["json"]["rows"] and "left arm" in {
        r.answer for s in images for r in load_dataset("my-cases", s)}
    trained = train_model("cnn-ban", "tiny", train, tmp_path / "m", seed=0)
    assert trained.answers.answers
    status = _run(["vqa-data", "status", "--project", str(project)])
    assert "rejected 1" in status and "ann, bob" in status


def test_cli_errors_are_one_line_and_name_the_problem(tmp_path, registry):
    assert "not a dataset-tool project" in _fail(["vqa-data", "extract", "--project", str(tmp_path / "none")])
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"not a zip")
    assert "bad.zip" in _fail(["vqa-data", "ingest", str(bad), "--project", str(tmp_path / "p")])
    assert "--kind must be concept or qa" in _fail(["vqa-data", "review", "--project", str(tmp_path / "p"), "--kind",
                                                    "image", "--reviewer", "x"])
    assert "no registered dataset named 'nothing-here'" in _fail(["vqa-data", "unregister", "nothing-here"])


def test_iu_xray_reports_become_question_text_flagged_without_images(data_root, tmp_path, registry):
    """IU X-ray's reports (no image files in the mirror): 60 of them through ingest -> extract -> generate -> export;
    every pair is flagged no-image, kept in the JSONL and left out of the trainable JSON."""
    import csv

    from embedlab.medvqa.dataset_tool.project import Project

    src = data_root / "medvqa" / "iu-xray"
    upload = tmp_path / "iu"
    upload.mkdir()
    with open(src / "indiana_reports.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))[:60]
    uids = {r["uid"] for r in rows}
    for name, keep in (("indiana_reports.csv", rows), ("indiana_projections.csv", None)):
        with open(src / name, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            fields, data = reader.fieldnames, [r for r in reader if r["uid"] in uids] if keep is None else keep
        with open(upload / name, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            writer.writerows(data)
    project, out = tmp_path / "p", tmp_path / "export"
    _run(["vqa-data", "ingest", str(upload), "--project", str(project), "--allow-missing-images",
          "--skip-empty-reports"])
    _run(["vqa-data", "extract", "--project", str(project)])
    _run(["vqa-data", "generate", "--project", str(project)])
    pairs = Project.open(project).qa_pairs()
    assert len(pairs) > 200 and all("no-image" in q.flags for q in pairs)
    assert {"PRES", "ORGAN"} <= {q.question_type for q in pairs}
    _run(["vqa-data", "export", "--project", str(project), "--out", str(out), "--include", "all-unreviewed"])
    lines = [json.loads(line) for s in ("train", "val", "test") if (out / f"{s}.jsonl").is_file()
             for line in (out / f"{s}.jsonl").read_text().splitlines()]
    assert len(lines) == len(pairs) and not any((out / f"{s}set.json").is_file() for s in ("train", "val", "test"))
    card = json.loads((out / "card.json").read_text())
    assert card["no_image_left_out_of_json"] == len(pairs)
