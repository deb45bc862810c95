"""STS scoring equals scipy on the same similarities and sentence-transformers' EmbeddingSimilarityEvaluator."""
from __future__ import annotations

from lookup_model import LookupModel

import numpy as np
import pytest
import torch
from scipy.stats import pearsonr, spearmanr

from embedlab.evaluate.sts import sts_scores

MTEB_KEYS = {
    "cosine_pearson", "cosine_spearman", "manhattan_pearson", "manhattan_spearman", "euclidean_pearson",
    "euclidean_spearman", "pearson", "spearman", "main_score",
}


def _pairs(n=200, dim=16, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n, dim))
    b = a + rng.normal(scale=1.5, size=(n, dim))
    gold = rng.uniform(0, 5, size=n) + 0.5 * (a * b).sum(axis=1)
    return a.astype(np.float32), b.astype(np.float32), gold


_LookupModel = LookupModel


def test_keys_scale_and_main_score():
    a, b, gold = _pairs()
    s = sts_scores(a, b, gold)
    assert set(s) == MTEB_KEYS
    assert all(-1.0 <= v <= 1.0 for v in s.values())  # MTEB scale, not x100
    assert s["main_score"] == s["cosine_spearman"]
    assert s["pearson"] == s["cosine_pearson"] and s["spearman"] == s["cosine_spearman"]


def test_equals_scipy_on_the_same_similarities():
    a, b, gold = _pairs(seed=1)
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    cos = (a64 * b64).sum(1) / np.linalg.norm(a64, axis=1) / np.linalg.norm(b64, axis=1)
    man = -np.abs(a64 - b64).sum(1)
    euc = -np.linalg.norm(a64 - b64, axis=1)
    s = sts_scores(a, b, gold)
    for name, sim in (("cosine", cos), ("manhattan", man), ("euclidean", euc)):
        assert s[f"{name}_pearson"] == pytest.approx(pearsonr(gold, sim)[0], abs=1e-12)
        assert s[f"{name}_spearman"] == pytest.approx(spearmanr(gold, sim)[0], abs=1e-12)


def test_equals_sentence_transformers_evaluator():
    from sentence_transformers.sentence_transformer.evaluation import EmbeddingSimilarityEvaluator

    a, b, gold = _pairs(seed=2)
    s1 = [f"a{i}" for i in range(len(a))]
    s2 = [f"b{i}" for i in range(len(b))]
    model = _LookupModel({**dict(zip(s1, a)), **dict(zip(s2, b))})
    evaluator = EmbeddingSimilarityEvaluator(
        s1, s2, gold.tolist(), similarity_fn_names=["cosine", "manhattan", "euclidean"], write_csv=False
    )
    st = evaluator(model)
    ours = sts_scores(a, b, gold)
    for name in ("cosine", "manhattan", "euclidean"):
        assert ours[f"{name}_pearson"] == pytest.approx(st[f"pearson_{name}"], abs=1e-6)
        assert ours[f"{name}_spearman"] == pytest.approx(st[f"spearman_{name}"], abs=1e-6)


def test_torch_input_and_model_similarity_dot():
    a, b, gold = _pairs(seed=3)
    s_np = sts_scores(a, b, gold, model_similarity="dot")
    s_t = sts_scores(torch.from_numpy(a), torch.from_numpy(b), torch.from_numpy(gold), model_similarity="dot")
    assert s_np == s_t
    dot = (a.astype(np.float64) * b.astype(np.float64)).sum(1)
    assert s_np["spearman"] == pytest.approx(spearmanr(gold, dot)[0], abs=1e-12)
    assert s_np["main_score"] == s_np["cosine_spearman"]  # MTEB's main score stays cosine


def test_perfect_and_inverted_rankings():
    rng = np.random.default_rng(4)
    a = rng.normal(size=(30, 8))
    b = rng.normal(size=(30, 8))
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert sts_scores(a, b, np.exp(cos))["cosine_spearman"] == pytest.approx(1.0)
    assert sts_scores(a, b, -cos)["cosine_pearson"] == pytest.approx(-1.0)


@pytest.mark.parametrize(
    "a, b, gold",
    [(np.zeros((3, 4)), np.zeros((3, 5)), np.zeros(3)), (np.zeros((3, 4)), np.zeros((3, 4)), np.zeros(2)),
     (np.zeros((1, 4)), np.zeros((1, 4)), np.zeros(1))],
)
def test_bad_shapes_raise(a, b, gold):
    with pytest.raises(ValueError):
        sts_scores(a, b, gold)
