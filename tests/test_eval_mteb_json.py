"""MTEB result JSON: format, mteb's folder layout, round trip, atomic replacement."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import embedlab
from embedlab.evaluate.mteb_json import (
    MTEB_FORMAT_VERSION,
    main_score,
    model_name_as_path,
    mteb_result,
    read_result,
    result_path,
    write_result,
)

SCORES = {"cosine_spearman": 0.8123, "cosine_pearson": 0.8, "main_score": 0.8123}


def test_result_format():
    r = mteb_result("STSBenchmark", "test", SCORES, evaluation_time=1.5, extra={"pairs": np.int64(1379)})
    assert set(r) >= {"dataset_revision", "task_name", "mteb_version", "scores", "evaluation_time", "kg_co2_emissions"}
    assert r["task_name"] == "STSBenchmark" and r["mteb_version"] == MTEB_FORMAT_VERSION
    assert r["kg_co2_emissions"] is None and r["evaluation_time"] == 1.5
    assert r["embedlab_version"] == embedlab.__version__
    (entry,) = r["scores"]["test"]
    assert entry == {**SCORES, "pairs": 1379, "hf_subset": "default", "languages": ["eng-Latn"]}
    assert type(entry["pairs"]) is int
    assert main_score(r, "test") == 0.8123 and np.isnan(main_score(r, "dev"))
    custom = mteb_result("T", "dev", SCORES, 0.1, hf_subset="en-de", languages=["eng-Latn", "deu-Latn"])
    assert custom["scores"]["dev"][0]["languages"] == ["eng-Latn", "deu-Latn"]


def test_result_rejects_missing_main_score_and_clobbering_extra():
    with pytest.raises(ValueError):
        mteb_result("T", "test", {"ndcg_at_10": 0.5}, 1.0)
    with pytest.raises(ValueError):
        mteb_result("T", "test", SCORES, 1.0, extra={"main_score": 1.0})


def test_layout_is_mtebs():
    assert model_name_as_path("sentence-transformers/all-MiniLM-L6-v2") == "sentence-transformers__all-MiniLM-L6-v2"
    assert model_name_as_path("my model") == "my_model"
    assert result_path("out", "org/m", "SciFact").as_posix() == "out/org__m/no_revision_available/SciFact.json"
    assert result_path("out", "org/m", "SciFact", revision="abc123").as_posix() == "out/org__m/abc123/SciFact.json"
    with pytest.raises(ValueError):
        model_name_as_path("..")
    with pytest.raises(ValueError):
        result_path("out", "m", "../evil")


def test_round_trip_and_nan_as_null(tmp_path):
    scores = {"ndcg_at_10": np.float32(0.625), "main_score": 0.625, "mrr_at_10": float("nan")}
    r = mteb_result("SciFact", "test", scores, 2.0)
    path = write_result(tmp_path, "org/model", r)
    assert path == tmp_path / "org__model" / "no_revision_available" / "SciFact.json"
    back = read_result(path)
    json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))  # strict JSON
    assert back["scores"]["test"] == [
        {"ndcg_at_10": 0.625, "main_score": 0.625, "mrr_at_10": None, "hf_subset": "default", "languages": ["eng-Latn"]}
    ]
    assert {k: v for k, v in back.items() if k != "scores"} == {k: v for k, v in r.items() if k != "scores"}


def test_write_is_atomic(tmp_path):
    first = mteb_result("STS12", "test", SCORES, 1.0)
    path = write_result(tmp_path, "m", first)
    before = path.read_bytes()
    broken = mteb_result("STS12", "test", SCORES, 1.0, extra={"oops": object()})
    with pytest.raises(TypeError):
        write_result(tmp_path, "m", broken)
    assert path.read_bytes() == before  # the old file is intact
    second = mteb_result("STS12", "test", {**SCORES, "main_score": 0.9}, 1.0)
    write_result(tmp_path, "m", second)
    assert main_score(read_result(path), "test") == 0.9  # replaced
    assert [p.name for p in path.parent.iterdir()] == ["STS12.json"]  # no leftover temporary files


def test_interrupted_write_leaves_old_file(tmp_path, monkeypatch):
    path = write_result(tmp_path, "m", mteb_result("STS13", "test", SCORES, 1.0))
    before = path.read_bytes()

    def half_then_fail(self, text, *args, **kwargs):
        with open(self, "w", encoding="utf-8") as f:
            f.write(text[: len(text) // 2])
        raise OSError("disk full")

    monkeypatch.setattr(Path, "write_text", half_then_fail)
    with pytest.raises(OSError):
        write_result(tmp_path, "m", mteb_result("STS13", "test", {**SCORES, "main_score": 0.1}, 1.0))
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == ["STS13.json"]
