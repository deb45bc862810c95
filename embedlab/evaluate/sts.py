"""STS scoring: correlation between embedding similarities and gold similarity scores, as MTEB reports it.

    sts_scores(emb1, emb2, gold)  ->  {"cosine_spearman": 0.86..., "main_score": 0.86..., ...}

Given the embeddings of the two sides of each pair and the gold scores, it returns MTEB's STS keys on MTEB's scale
(correlations in [-1, 1], *not* multiplied by 100; the caller multiplies for display):

| key                                   | similarity that is correlated with the gold scores                 |
|---------------------------------------|--------------------------------------------------------------------|
| cosine_pearson, cosine_spearman       | cosine similarity                                                  |
| manhattan_pearson, manhattan_spearman | negative L1 distance                                               |
| euclidean_pearson, euclidean_spearman | negative L2 distance                                               |
| pearson, spearman                     | the model's own similarity (``model_similarity``, default cosine)  |
| main_score                            | cosine_spearman (MTEB's main score for every STS task)             |

Correlations are ``scipy.stats.pearsonr`` / ``spearmanr`` of (gold, similarity), as in MTEB's ``AbsTaskSTS``. MTEB first
rescales the gold scores to [0, 1] with the task's min/max score; that is linear, so no correlation changes and it is
not done here. Similarities are computed in float64 (MTEB and sentence-transformers use the embeddings' dtype, usually
float32), so results can differ from theirs around the 7th digit.

It does not encode text, load data or write results: arrays in, numbers out.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from scipy.stats import pearsonr, spearmanr

SIMILARITIES = ("cosine", "manhattan", "euclidean", "dot")


def as_float64(x: Any) -> np.ndarray:
    """A numpy float64 copy of a numpy array, torch tensor (any device/dtype) or nested list."""
    if hasattr(x, "detach"):  # torch.Tensor, without importing torch here
        x = x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


def pairwise_similarity(emb1: np.ndarray, emb2: np.ndarray, kind: str) -> np.ndarray:
    """Row-wise similarity of two [n, dim] float arrays: cosine, dot, or a *negative* manhattan/euclidean distance.

    Distances are negated so that, as for cosine, larger means more similar (MTEB and sentence-transformers do the
    same). A zero vector has cosine 0 with everything (sklearn's ``paired_cosine_distances`` convention, used by MTEB).
    """
    if kind == "cosine":
        n1 = np.linalg.norm(emb1, axis=1)
        n2 = np.linalg.norm(emb2, axis=1)
        denom = n1 * n2
        dots = np.einsum("ij,ij->i", emb1, emb2)
        return np.divide(dots, denom, out=np.zeros_like(dots), where=denom > 0)
    if kind == "dot":
        return np.einsum("ij,ij->i", emb1, emb2)
    if kind == "manhattan":
        return -np.abs(emb1 - emb2).sum(axis=1)
    if kind == "euclidean":
        return -np.linalg.norm(emb1 - emb2, axis=1)
    raise ValueError(f"unknown similarity {kind!r}; valid: {', '.join(SIMILARITIES)}")


def sts_scores(emb1: Any, emb2: Any, gold: Any, *, model_similarity: str = "cosine") -> dict[str, float]:
    """MTEB's STS metrics for one set of pairs (see the module docstring for the keys).

    Args:
        emb1, emb2: [n, dim] embeddings of the first and second sentence of each pair (numpy or torch).
        gold: [n] gold similarity scores, any scale.
        model_similarity: the similarity the model is meant to be used with; only ``pearson``/``spearman`` use it.

    A constant similarity or gold vector makes the correlation undefined: scipy warns and the value is NaN.
    """
    a, b, g = as_float64(emb1), as_float64(emb2), as_float64(gold).reshape(-1)
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(f"emb1 and emb2 must both be [n, dim]; got {a.shape} and {b.shape}")
    if len(g) != len(a):
        raise ValueError(f"{len(a)} pairs but {len(g)} gold scores")
    if len(g) < 2:
        raise ValueError("a correlation needs at least 2 pairs")
    if model_similarity not in SIMILARITIES:
        raise ValueError(f"unknown model_similarity {model_similarity!r}; valid: {', '.join(SIMILARITIES)}")

    def corr(sim: np.ndarray) -> tuple[float, float]:
        return float(pearsonr(g, sim)[0]), float(spearmanr(g, sim)[0])

    scores: dict[str, float] = {}
    for kind in ("cosine", "manhattan", "euclidean"):
        scores[f"{kind}_pearson"], scores[f"{kind}_spearman"] = corr(pairwise_similarity(a, b, kind))
    if model_similarity == "dot":
        scores["pearson"], scores["spearman"] = corr(pairwise_similarity(a, b, "dot"))
    else:
        scores["pearson"] = scores[f"{model_similarity}_pearson"]
        scores["spearman"] = scores[f"{model_similarity}_spearman"]
    scores["main_score"] = scores["cosine_spearman"]
    return scores
