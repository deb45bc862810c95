"""The evaluation runner and CLI end to end on a tiny data root: JSON + store rows + cache, and the error paths."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from embedlab.bench.store import ResultsStore
from embedlab.errors import DataError, UnknownChoiceError
from embedlab.evaluate.cache import EmbeddingCache
from embedlab.evaluate.runner import EvalSettings, evaluate, result_rows


@pytest.fixture
def tiny_root(tmp_path, monkeypatch):
    """A data root holding a 6-pair STS-B test file and a 5-document BEIR SciFact."""
    root = tmp_path / "data"
    (root / "sts" / "stsb").mkdir(parents=True)
    rows = [("A man plays a guitar.", "A person plays guitar.", 4.6), ("A dog runs.", "A cat sleeps.", 0.8),
            ("Kids play football.", "Children are playing soccer.", 4.2), ("It rains.", "The sun shines.", 0.4),
            ("A woman cooks.", "A woman is cooking food.", 4.8), ("Stocks fell.", "A bird sings.", 0.0)]
    for split in ("test", "dev", "train"):
        (root / "sts" / "stsb" / f"sts-{split}.csv").write_text(
            "".join(f"main-captions\tMSRvid\t2012test\t{i:04d}\t{s:.3f}\t{a}\t{b}\n"
                    for i, (a, b, s) in enumerate(rows)))
    beir = root / "retrieval" / "scifact"
    (beir / "qrels").mkdir(parents=True)
    docs = {"d1": "Guitars have six strings.", "d2": "Dogs are loyal animals.", "d3": "Soccer is football.",
            "d4": "Rain falls from clouds.", "d5": "Cooking needs heat."}
    (beir / "corpus.jsonl").write_text("".join(json.dumps({"_id": k, "title": "", "text": v}) + "\n"
                                               for k, v in docs.items()))
    queries = [("q1", "how many strings on a guitar"), ("q2", "where does rain come from")]
    (beir / "queries.jsonl").write_text("".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in queries))
    (beir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td4\t1\n")
    monkeypatch.setenv("EMBEDLAB_DATA", str(root))
    return root




def test_runner_writes_json_store_rows_and_uses_cache(tiny_root, tiny_model, tmp_path):
    store = ResultsStore(f"sqlite:///{tmp_path / 'r.sqlite'}")
    cache = EmbeddingCache(tmp_path / "cache")
    settings = EvalSettings(batch_size=4)
    results = evaluate(tiny_model, "stsb,scifact", settings=settings, out_dir=tmp_path / "out", cache=cache)
    for r in results:  # the one results path: evaluation returns results, the caller writes the rows
        store.add_run(result_rows(tiny_model, "tiny-bert", r, settings))
    assert [r.task.name for r in results] == ["stsb", "scifact"]
    assert -1 <= results[0].main_score <= 1 and 0 <= results[1].main_score <= 1
    files = sorted(p.name for p in (tmp_path / "out").rglob("*.json"))
    assert files == ["STSBenchmark.json", "SciFact.json"]
    rows = store.query(model="tiny-bert", metric="main_score")
    assert {(r["task"], r["split"]) for r in rows} == {("stsb", "test"), ("scifact", "test")}
    sts_row = next(r for r in rows if r["task"] == "stsb")
    assert sts_row["value"] == pytest.approx(results[0].main_score * 100)  # the store is on the x100 scale
    assert sts_row["model_hash"] == tiny_model.model_hash()
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 1
    # Second run: the corpus comes from the cache (a compute call would embed the corpus again).
    calls = []
    original = tiny_model.encode

    def counting_encode(texts, **kw):
        calls.append(len(texts))
        return original(texts, **kw)

    tiny_model.encode = counting_encode
    again = evaluate(tiny_model, ["scifact"], cache=cache)[0]
    del tiny_model.encode
    assert calls == [2]  # only the two queries were embedded
    assert again.main_score == pytest.approx(results[1].main_score)


def test_unknown_task_and_missing_dataset(tiny_root, tiny_model, monkeypatch, tmp_path):
    with pytest.raises(UnknownChoiceError, match="stsb"):
        evaluate(tiny_model, "stsb,nope")
    monkeypatch.setenv("EMBEDLAB_DATA", str(tmp_path / "empty"))
    with pytest.raises(DataError, match=str(tmp_path / "empty")):
        evaluate(tiny_model, "sts12", cache=EmbeddingCache(enabled=False))


def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "embedlab", *args], capture_output=True, text=True, env=env,
                          timeout=300)


def test_cli_reports_bad_input_in_one_line(tiny_root):
    import os

    env = {**os.environ}
    r = _cli("eval", "--model", "minilm", "--tasks", "stsb,nope", env=env)
    assert r.returncode == 2
    assert "unknown task 'nope'" in r.stderr and "scifact" in r.stderr and "Traceback" not in r.stdout + r.stderr
    r = _cli("eval", "--model", "./no/such/dir", "--tasks", "stsb", env=env)
    assert r.returncode == 2 and "does not exist" in r.stderr and "Traceback" not in r.stdout + r.stderr
    r = _cli("results", "--db", "not a url://x", env=env)
    assert r.returncode == 2 and "SQLAlchemy URL" in r.stderr


def test_cli_eval_then_results_csv(tiny_root, tmp_path):
    import os

    env = {**os.environ, "EMBEDLAB_CACHE": str(tmp_path / "cache"), "COLUMNS": "250"}
    db = str(tmp_path / "r.sqlite")
    r = _cli("eval", "--model", "minilm", "--tasks", "stsb", "--db", db, "--out", str(tmp_path / "out"),
             "--no-progress", env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "stsb" in r.stdout
    r = _cli("results", "--db", db, "--format", "csv", env=env)
    assert r.returncode == 0
    header, *lines = r.stdout.strip().splitlines()
    assert "model" in header and "value" in header and len(lines) == 1 and "stsb" in lines[0]
    r = _cli("models", env=env)
    assert r.returncode == 0 and "all-MiniLM-L6-v2" in r.stdout


def test_bf16_autocast_stays_close_to_fp32(minilm):
    texts = ["A man is playing a guitar.", "The stock market fell sharply today.", "Children play in the park."]
    import torch

    fp32 = minilm.encode(texts)
    bf16 = minilm.encode(texts, autocast_dtype=torch.bfloat16)
    assert bf16.dtype == np.float32
    assert (fp32 * bf16).sum(1).min() > 0.99


def test_cache_keeps_bf16_and_fp32_corpus_embeddings_apart(tiny_root, tiny_model, tmp_path):
    """Regression: a bf16-autocast evaluation must not fill the cache entry an fp32 evaluation reads."""
    import torch

    cache = EmbeddingCache(tmp_path / "cache")
    evaluate(tiny_model, ["scifact"], settings=EvalSettings(autocast_dtype=torch.bfloat16), cache=cache)
    calls = []
    original = tiny_model.encode

    def counting_encode(texts, **kw):
        calls.append(len(texts))
        return original(texts, **kw)

    tiny_model.encode = counting_encode
    evaluate(tiny_model, ["scifact"], cache=cache)
    del tiny_model.encode
    assert calls == [5, 2]  # the 5 documents were embedded again in fp32, then the 2 queries
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 2
