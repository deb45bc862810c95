"""Retrieval: exact search (faiss = torch = brute force) and MTEB metrics (= pytrec_eval = sentence-transformers)."""
from __future__ import annotations

from lookup_model import LookupModel

import math

import numpy as np
import pytest
import pytrec_eval
import torch

from embedlab.evaluate.retrieval import exact_search, score_run

# -------------------------------------------------------------------------------------------------- fixtures


def _problem(n_queries=40, n_docs=400, dim=24, seed=0):
    """Queries are noisy copies of 1-3 'relevant' documents, so the metrics are neither 0 nor 1."""
    rng = np.random.default_rng(seed)
    corpus = rng.normal(size=(n_docs, dim)).astype(np.float32)
    doc_ids = [f"d{j:04d}" for j in range(n_docs)]
    query_ids = [f"q{i:03d}" for i in range(n_queries)]
    queries, qrels = [], {}
    for qid in query_ids:
        rel = rng.choice(n_docs, size=rng.integers(1, 4), replace=False)
        queries.append(corpus[rel].mean(axis=0) + rng.normal(scale=1.2, size=dim))
        qrels[qid] = {doc_ids[j]: 1 for j in rel}
    return np.asarray(queries, dtype=np.float32), corpus, query_ids, doc_ids, qrels


def _brute_force(queries, corpus, k, score):
    q, c = queries.astype(np.float64), corpus.astype(np.float64)
    if score == "cosine":
        q = q / np.linalg.norm(q, axis=1, keepdims=True)
        c = c / np.linalg.norm(c, axis=1, keepdims=True)
    sims = q @ c.T
    return [list(np.lexsort((np.arange(len(c)), -row))[:k]) for row in sims]


_LookupModel = LookupModel


# -------------------------------------------------------------------------------------------------- search


@pytest.mark.parametrize("score", ["cosine", "dot"])
def test_search_backends_identical_and_equal_brute_force(score):
    queries, corpus, query_ids, doc_ids, _ = _problem(n_queries=23, n_docs=700)
    faiss_run = exact_search(queries, corpus, query_ids, doc_ids, top_k=50, score=score)
    torch_run = exact_search(queries, corpus, query_ids, doc_ids, top_k=50, score=score, backend="torch",
                             corpus_chunk_size=64, query_batch_size=5)
    assert faiss_run == torch_run  # same ids, same order, bit-identical scores
    expected = _brute_force(queries, corpus, 50, score)
    for qid, ranking in zip(query_ids, expected):
        assert list(faiss_run[qid]) == [doc_ids[j] for j in ranking]
        scores = list(faiss_run[qid].values())
        assert scores == sorted(scores, reverse=True)


def test_search_ties_are_deterministic():
    # Every document appears three times: every score is tied with two others, including at the cut.
    rng = np.random.default_rng(1)
    base = rng.normal(size=(50, 8)).astype(np.float32)
    corpus = np.repeat(base, 3, axis=0)
    doc_ids = [f"d{j:03d}" for j in range(len(corpus))]
    queries = rng.normal(size=(9, 8)).astype(np.float32)
    query_ids = [f"q{i}" for i in range(9)]
    for top_k in (1, 4, 10, 20):
        faiss_run = exact_search(queries, corpus, query_ids, doc_ids, top_k=top_k)
        torch_run = exact_search(queries, corpus, query_ids, doc_ids, top_k=top_k, backend="torch",
                                 corpus_chunk_size=7)
        assert faiss_run == torch_run
        for qid, ranking in zip(query_ids, _brute_force(queries, corpus, top_k, "cosine")):
            assert list(faiss_run[qid]) == [doc_ids[j] for j in ranking]  # ties: lower corpus position first


def test_search_small_corpus_zero_vectors_and_torch_inputs():
    corpus = np.array([[1.0, 0.0], [0.0, 0.0], [0.6, 0.8]], dtype=np.float32)
    queries = torch.tensor([[2.0, 0.0]])
    run = exact_search(queries, corpus, ["q"], ["a", "zero", "b"], top_k=10)
    assert list(run["q"]) == ["a", "b", "zero"]  # top_k larger than the corpus: all of it
    assert run["q"] == pytest.approx({"a": 1.0, "b": 0.6, "zero": 0.0})
    assert exact_search(queries, corpus, ["q"], ["a", "zero", "b"], top_k=1, score="dot") == {"q": {"a": 2.0}}


def test_search_rejects_bad_input():
    x = np.zeros((2, 3), dtype=np.float32)
    with pytest.raises(ValueError):
        exact_search(x, x, ["q1", "q2"], ["d", "d"])  # duplicate doc ids
    with pytest.raises(ValueError):
        exact_search(x, np.zeros((2, 4)), ["q1", "q2"], ["a", "b"])
    with pytest.raises(ValueError):
        exact_search(x, x, ["q1"], ["a", "b"])
    with pytest.raises(ValueError):
        exact_search(x, x, ["q1", "q2"], ["a", "b"], score="l2")


# -------------------------------------------------------------------------------------------------- metrics


def _pytrec_means(qrels, run, ks):
    cut = ",".join(map(str, ks))
    measures = {f"ndcg_cut.{cut}", f"map_cut.{cut}", f"recall.{cut}", f"P.{cut}", f"success.{cut}", "recip_rank"}
    per_query = pytrec_eval.RelevanceEvaluator(qrels, measures).evaluate(run)
    return {m: np.mean([v[m] for v in per_query.values()]) for m in next(iter(per_query.values()))}


GRADED_QRELS = {
    "q1": {"d1": 2, "d2": 1, "d3": 0, "d4": 1},
    "q2": {"d5": 1, "d6": 3},
    "q3": {"d7": 1},
    "q4": {"d9": 0},  # judged, nothing relevant: counts, scores 0
}
TIED_RUN = {
    "q1": {"d3": 0.9, "d1": 0.8, "d4": 0.7, "d2": 0.6, "d8": 0.1},
    "q2": {"d1": 0.5, "d5": 0.5, "d6": 0.5, "d7": 0.5},  # all tied: trec_eval orders by doc id descending
    "q3": {"d2": 0.3, "d7": 0.3, "d9": 0.2},
    "q4": {"d9": 1.0},
}


def test_metrics_equal_pytrec_eval_with_graded_relevance_and_ties():
    ks = (1, 3, 5, 10, 100, 1000)
    ours = score_run(GRADED_QRELS, TIED_RUN, k_values=ks)
    ref = _pytrec_means(GRADED_QRELS, TIED_RUN, ks)
    for k in ks:
        assert ours[f"ndcg_at_{k}"] == pytest.approx(ref[f"ndcg_cut_{k}"], abs=1e-12)
        assert ours[f"map_at_{k}"] == pytest.approx(ref[f"map_cut_{k}"], abs=1e-12)
        assert ours[f"recall_at_{k}"] == pytest.approx(ref[f"recall_{k}"], abs=1e-12)
        assert ours[f"precision_at_{k}"] == pytest.approx(ref[f"P_{k}"], abs=1e-12)
        assert ours[f"hit_rate_at_{k}"] == pytest.approx(ref[f"success_{k}"], abs=1e-12)
    # With no cut-off in reach, MRR@k is trec_eval's recip_rank: same tie order.
    assert ours["mrr_at_1000"] == pytest.approx(ref["recip_rank"], abs=1e-12)
    assert ours["main_score"] == ours["ndcg_at_10"]


def test_mrr_cutoff_and_tie_order():
    qrels = {"q": {"d2": 1}}
    run = {"q": {"d1": 0.5, "d2": 0.5, "d3": 0.5}}  # trec order: d3, d2, d1 -> first relevant at rank 2
    s = score_run(qrels, run, k_values=(1, 2, 3))
    assert s["mrr_at_1"] == 0.0 and s["mrr_at_2"] == 0.5 and s["mrr_at_3"] == 0.5
    assert s["precision_at_1"] == 0.0


def test_hand_computed_ndcg_at_3():
    # Ranking d3 (grade 0), d1 (2), d4 (1); ideal order 2, 1, 1.  Gains are linear, discounts 1/log2(rank + 1).
    dcg = 0 / math.log2(2) + 2 / math.log2(3) + 1 / math.log2(4)
    idcg = 2 / math.log2(2) + 1 / math.log2(3) + 1 / math.log2(4)
    s = score_run({"q1": GRADED_QRELS["q1"]}, {"q1": TIED_RUN["q1"]}, k_values=(3,))
    assert s["ndcg_at_3"] == pytest.approx(dcg / idcg, abs=1e-12)
    assert s["ndcg_at_3"] == pytest.approx(0.562727, abs=1e-6)


def test_equals_sentence_transformers_information_retrieval_evaluator():
    from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator
    from sentence_transformers.util import cos_sim

    queries, corpus, query_ids, doc_ids, qrels = _problem(seed=3)
    model = _LookupModel({**dict(zip(query_ids, queries)), **dict(zip(doc_ids, corpus))})
    evaluator = InformationRetrievalEvaluator(
        queries={q: q for q in query_ids}, corpus={d: d for d in doc_ids},
        relevant_docs={q: set(docs) for q, docs in qrels.items()},
        mrr_at_k=[10], ndcg_at_k=[10], accuracy_at_k=[1, 3, 5, 10], precision_recall_at_k=[1, 3, 5, 10],
        map_at_k=[100], score_functions={"cosine": cos_sim}, write_csv=False,
    )
    st = evaluator(model)
    ours = score_run(qrels, exact_search(queries, corpus, query_ids, doc_ids, top_k=1000),
                     k_values=(1, 3, 5, 10, 100))
    assert 0.05 < ours["ndcg_at_10"] < 0.95  # a non-trivial problem
    assert ours["ndcg_at_10"] == pytest.approx(st["cosine_ndcg@10"], abs=1e-6)
    assert ours["mrr_at_10"] == pytest.approx(st["cosine_mrr@10"], abs=1e-6)
    # ST divides AP@k by min(k, |relevant|), trec_eval by |relevant|: equal here since |relevant| <= 3.
    assert ours["map_at_100"] == pytest.approx(st["cosine_map@100"], abs=1e-6)
    for k in (1, 3, 5, 10):
        assert ours[f"precision_at_{k}"] == pytest.approx(st[f"cosine_precision@{k}"], abs=1e-6)
        assert ours[f"recall_at_{k}"] == pytest.approx(st[f"cosine_recall@{k}"], abs=1e-6)
        assert ours[f"hit_rate_at_{k}"] == pytest.approx(st[f"cosine_accuracy@{k}"], abs=1e-6)


def test_ignore_identical_ids():
    qrels = {"a": {"a": 1, "b": 1}}
    run = {"a": {"a": 0.9, "b": 0.8, "c": 0.7}}
    assert score_run(qrels, run)["precision_at_1"] == 1.0
    s = score_run(qrels, run, ignore_identical_ids=True)
    assert s["precision_at_1"] == 1.0  # b moves up to rank 1
    assert s["recall_at_10"] == 0.5  # the qrels are untouched: 'a' still counts as relevant, never retrieved
    assert run["a"] == {"a": 0.9, "b": 0.8, "c": 0.7}  # the caller's run is not modified


def test_query_selection_and_default_keys():
    qrels = {"q1": {"d1": 1}, "q2": {"d2": 1}, "q_empty": {}}
    run = {"q1": {"d1": 1.0}, "q_unjudged": {"d1": 1.0}}  # q2 retrieved nothing
    s = score_run(qrels, run)
    assert s["ndcg_at_10"] == 0.5 and s["mrr_at_10"] == 0.5  # mean over q1 and q2; q_empty and q_unjudged ignored
    wanted = {f"ndcg_at_{k}" for k in (1, 3, 5, 10, 100)} | {"map_at_10", "map_at_100", "mrr_at_10"} | {
        f"recall_at_{k}" for k in (1, 10, 100, 1000)} | {"precision_at_1", "precision_at_10", "main_score"}
    assert wanted <= set(s)
    assert "ndcg_at_10" in score_run(qrels, run, k_values=(1, 5))  # 10 is always there for main_score
    with pytest.raises(ValueError):
        score_run({"q": {}}, run)
