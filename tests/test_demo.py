"""The demo flow (evaluate -> train -> evaluate -> before/after report) on a tiny model and the real STS-B dev set."""
from __future__ import annotations

import shutil

import pytest

from embedlab.demo import run_demo
from embedlab.errors import ConfigError
from embedlab.evaluate.cache import EmbeddingCache
from embedlab.evaluate.runner import EvalSettings, evaluate
from embedlab.text import Embedder

from tiny_training import recipe_file


def test_demo_trains_and_reports_before_and_after(train_root, data_root):
    tmp = train_root
    out = tmp / "demo"
    shutil.copytree(tmp / "train-data", out / "train-data")  # present: the demo does not convert
    calls = []

    def evaluate_fn(model_name, tasks, json_dir, label):
        calls.append(label)
        return evaluate(Embedder.load(model_name), tasks, settings=EvalSettings(show_progress=False),
                        cache=EmbeddingCache(enabled=False), out_dir=json_dir, model_label=label)

    recipe = tmp / "recipe.yaml"
    recipe_file(tmp)  # writes recipe.yaml: 6 steps on the tiny files
    report = run_demo(out, evaluate_fn, recipe_path=recipe, tasks="stsb-dev", model=str(tmp / "tiny-model"),
                      log=lambda m: None)
    text = report.read_text()
    assert calls == [str(tmp / "tiny-model"), "codiemb-demo"]
    assert "| stsb-dev | dev |" in text and "STS average" in text and "steps=6" in text
    assert "precision=fp32" in text  # training follows the evaluation's precision (the recipe asks bf16)
    assert (out / "codiemb" / "final" / "modules.json").is_file()
    assert any((out / "base" / "json").rglob("*.json")) and any((out / "codiemb" / "json").rglob("*.json"))
    # Run again: the finished training is reused (the weights file is not rewritten).
    stamp = (out / "codiemb" / "final" / "model.safetensors").stat().st_mtime_ns
    run_demo(out, evaluate_fn, recipe_path=recipe, tasks="stsb-dev", model=str(tmp / "tiny-model"), log=lambda m: None)
    assert (out / "codiemb" / "final" / "model.safetensors").stat().st_mtime_ns == stamp


def test_the_med_vqa_part_appends_one_section_with_baselines_and_image_checks(tmp_path, data_root, monkeypatch):
    from embedlab.demo import run_vqa_demo

    monkeypatch.setenv("EMBEDLAB_CACHE", str(tmp_path / "cache"))
    report = tmp_path / "report.md"
    report.write_text("# embedlab demo\n\ntext part\n")
    tiny = {"profile": "tiny", "train": {"epochs": 1}}
    run_vqa_demo(tmp_path, report, log=lambda m: None, recipe=tiny)
    text = report.read_text()
    assert text.startswith("# embedlab demo\n\ntext part")
    assert "baseline: image-identity" in text and "cnn-ban (tiny, 1 epochs, seed 0)" in text
    row = [line for line in text.splitlines() if line.startswith("| cnn-ban")][0]
    assert len(row.split("|")) == 8 and "-" not in row.split("|")[5]  # the blank-image score is there
    run_vqa_demo(tmp_path, report, log=lambda m: None, recipe=tiny)  # resumed (nothing to train), one section
    assert report.read_text().count("## Med-VQA") == 1
    log = (tmp_path / "medvqa" / "train_log.jsonl").read_text()
    assert log.count('"epoch": 0') == 1  # the finished run was not trained again
    with pytest.raises(ConfigError, match="belongs to another run"):  # another recipe's run is not reused
        run_vqa_demo(tmp_path, report, log=lambda m: None, recipe={**tiny, "seed": 1})

    # The web app's demo page finds what the demo wrote (<out>/medvqa) and answers with it.
    from web_server import api_token, make_app, signed_in

    from embedlab.medvqa.datasets import image_path, load_dataset
    from embedlab.web import routes_demo

    monkeypatch.setattr(routes_demo, "DEMO_DIRS", [tmp_path])
    monkeypatch.delenv(routes_demo.MODELS_ENV, raising=False)
    app = make_app(tmp_path / "server")
    app.state.accounts.create_user("rita", "a long passphrase", "researcher")
    rita = signed_in(app, "rita", "a long passphrase")
    found = [m for m in rita.get("/api/demo/models").json()["models"] if m["source"] == "make demo"]
    assert [m["kind"] for m in found] == ["medvqa"]
    record = load_dataset("vqa-rad", "val")[0]
    with open(image_path(record), "rb") as f:
        answer = rita.post("/api/demo/vqa", headers=api_token(rita), files={"image": ("x.jpg", f.read())},
                           data={"model": found[0]["id"], "question": record.question, "answer_type": "auto"})
    assert answer.status_code == 200, answer.text
    top = answer.json()["top"]
    assert len(top) == 5 and abs(sum(t["probability"] for t in top)) <= 1 + 1e-6


@pytest.mark.parametrize("native,precision", [("0", "fp32"), ("1", "bf16")])
def test_the_demo_command_uses_bf16_only_where_the_cpu_computes_it_natively(train_root, tmp_path, monkeypatch,
                                                                           native, precision):
    from typer.testing import CliRunner

    from embedlab.cli import app

    monkeypatch.setenv("EMBEDLAB_CACHE", str(tmp_path / "cache"))
    out = CliRunner().invoke(app, ["demo", "--out", str(tmp_path / "demo"), "--model", str(train_root / "tiny-model"),
                                   "--tasks", "stsb-dev", "--no-train", "--no-vqa"],
                             env={"EMBEDLAB_NATIVE_BF16": native, "COLUMNS": "200"})
    assert out.exit_code == 0, out.output
    assert f"precision: {precision} (" in out.output
    report = (tmp_path / "demo" / "report.md").read_text()
    assert ("precision=bf16 autocast" if precision == "bf16" else "precision=fp32") in report
