"""Acceptance: embedlab reproduces MTEB's published scores for all-MiniLM-L6-v2 on the local data (±0.05), and agrees
with sentence-transformers' own evaluators on the same inputs (±0.01).

The evaluation runs on embedlab's OpenVINO fp32 path (embedlab/text/backends.py) when OpenVINO is installed, the
PyTorch path otherwise: both equal sentence-transformers' vectors to 1e-5 (tests/test_backends.py, test_embedder.py),
and OpenVINO does the one SciFact corpus pass at max_length 256 (most of this module's time: about 4 minutes with
PyTorch on 2 cores) about three times faster. The corpus is embedded once (through the embedding cache, in a
temporary folder) and those embeddings are handed to sentence-transformers' InformationRetrievalEvaluator, after
checking on a sample that sentence-transformers' own encode gives the same vectors (to 1e-5), so the reference
costs one query pass, not a second corpus pass.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from embedlab.data import catalog
from embedlab.evaluate.cache import EmbeddingCache
from embedlab.evaluate.runner import EvalSettings, evaluate

pytestmark = pytest.mark.slow

# MTEB's published scores for sentence-transformers/all-MiniLM-L6-v2 (x100).
PUBLISHED = {"stsb": 82.03, "sts12": 72.37, "sts13": 80.60, "scifact": 64.51}


@pytest.fixture(scope="module")
def fast_minilm(data_root, tmp_path_factory):
    """all-MiniLM-L6-v2 on the OpenVINO fp32 path when it is installed (see the module docstring), else PyTorch."""
    import importlib.util

    from embedlab.text import Embedder

    if importlib.util.find_spec("openvino") is None:
        return Embedder.load("sentence-transformers/all-MiniLM-L6-v2")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EMBEDLAB_CACHE", str(tmp_path_factory.mktemp("exports")))
        return Embedder.load("sentence-transformers/all-MiniLM-L6-v2", backend="openvino", precision="fp32")


@pytest.fixture(scope="module")
def mteb_run(fast_minilm, data_root, tmp_path_factory):
    cache = EmbeddingCache(tmp_path_factory.mktemp("cache"))
    out = tmp_path_factory.mktemp("results")
    results = evaluate(fast_minilm, list(PUBLISHED), settings=EvalSettings(batch_size=32), out_dir=out, cache=cache,
                       model_label="sentence-transformers/all-MiniLM-L6-v2")
    return {r.task.name: r for r in results}, cache, out


@pytest.mark.parametrize("task", list(PUBLISHED))
def test_matches_published_mteb_score(mteb_run, task):
    results, _, _ = mteb_run
    assert results[task].main_score * 100 == pytest.approx(PUBLISHED[task], abs=0.05)


def test_mteb_json_written(mteb_run):
    import json

    results, _, out = mteb_run
    files = {p.stem: json.loads(p.read_text()) for p in out.rglob("*.json")}
    assert {"STSBenchmark", "STS12", "STS13", "SciFact"} <= set(files)
    sci = files["SciFact"]
    assert sci["task_name"] == "SciFact"
    assert sci["scores"]["test"][0]["main_score"] == pytest.approx(results["scifact"].main_score)
    assert sci["scores"]["test"][0]["ndcg_at_10"] == sci["scores"]["test"][0]["main_score"]
    assert sci["evaluation_time"] > 0


@pytest.mark.parametrize("task", ["stsb", "sts12", "sts13"])
def test_sts_matches_sentence_transformers_evaluator(mteb_run, minilm_st, task):
    from sentence_transformers.sentence_transformer.evaluation import EmbeddingSimilarityEvaluator

    results, _, _ = mteb_run
    data = catalog.load_sts(task, "test")
    evaluator = EmbeddingSimilarityEvaluator(data.sentences1, data.sentences2, data.scores,
                                             similarity_fn_names=["cosine"], write_csv=False)
    st = evaluator(minilm_st)
    assert results[task].scores["cosine_spearman"] * 100 == pytest.approx(st["spearman_cosine"] * 100, abs=0.01)
    assert results[task].scores["cosine_pearson"] * 100 == pytest.approx(st["pearson_cosine"] * 100, abs=0.01)


def test_scifact_matches_sentence_transformers_evaluator(mteb_run, fast_minilm, minilm_st):
    from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator
    from sentence_transformers.util import cos_sim

    results, cache, _ = mteb_run
    data = catalog.load_retrieval("scifact", "test")
    doc_ids = list(data.corpus)
    corpus_emb = cache.get_or_compute(fast_minilm.model_hash(), "scifact/corpus", fast_minilm.max_length, doc_ids,
                                      lambda: pytest.fail("the SciFact corpus should be in the cache by now"),
                                      texts=[data.corpus[d].full_text() for d in doc_ids])
    # The cached vectors are what sentence-transformers itself would produce (checked on a spread-out sample).
    sample = list(range(0, len(doc_ids), len(doc_ids) // 48))
    st_sample = minilm_st.encode([data.corpus[doc_ids[i]].full_text() for i in sample])
    assert np.abs(st_sample - corpus_emb[sample]).max() < 1e-5

    queries = data.judged_queries()
    evaluator = InformationRetrievalEvaluator(
        queries=queries, corpus={d: data.corpus[d].full_text() for d in doc_ids},
        relevant_docs={q: {d for d, g in rel.items() if g > 0} for q, rel in data.qrels.items()},
        mrr_at_k=[10], ndcg_at_k=[10], accuracy_at_k=[1, 10], precision_recall_at_k=[1, 10, 100], map_at_k=[100],
        score_functions={"cosine": cos_sim}, write_csv=False,
    )
    assert evaluator.corpus_ids == doc_ids  # the precomputed rows line up with its corpus order
    st = evaluator.compute_all_metrics(minilm_st, corpus_embeddings=torch.from_numpy(corpus_emb))["cosine"]
    ours = results["scifact"].scores
    assert ours["ndcg_at_10"] * 100 == pytest.approx(st["ndcg@k"][10] * 100, abs=0.01)
    assert ours["mrr_at_10"] * 100 == pytest.approx(st["mrr@k"][10] * 100, abs=0.01)
    assert ours["recall_at_100"] * 100 == pytest.approx(st["recall@k"][100] * 100, abs=0.01)
    assert ours["precision_at_1"] * 100 == pytest.approx(st["precision@k"][1] * 100, abs=0.01)
