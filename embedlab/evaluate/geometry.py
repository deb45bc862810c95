"""Geometry of an embedding space: alignment, uniformity, anisotropy, and the spectrum of token representations.

Sentence level (Wang & Isola 2020, "Understanding Contrastive Representation Learning through Alignment and
Uniformity on the Hypersphere"); every function L2-normalises its inputs itself, so pass raw embeddings:

| function              | definition (f = L2-normalised embedding)                                  | better  |
|-----------------------|---------------------------------------------------------------------------|---------|
| alignment             | mean over positive pairs of ||f(x) - f(x+)||^alpha, alpha = 2             | lower   |
| uniformity            | log mean over distinct pairs of exp(-t ||f(x) - f(y)||^2), t = 2          | lower   |
| distance_ratio        | mean positive-pair distance ||f(x) - f(x+)|| / mean random-pair distance  | lower   |
|                       | ||f(x) - f(y)|| (plain, not squared, distances; the random pairs are the  |         |
|                       | uniformity sample)                                                        |         |
| align_uniform_ratio   | alignment / |uniformity|                                                  | lower   |
| anisotropy            | mean cosine over the same distinct random pairs                           | lower   |

The two ratios are embedlab's own definitions (CSE-SFP reports two ratio metrics whose formulas we do not have); always
report alignment and uniformity alongside them. Both are scale-free summaries of "positives are close relative to how
spread out everything is". Uniformity is <= 0 and 0 only when everything collapses to one point, where the ratio is
undefined (inf).

"Distinct pairs" are pairs (i, j) with i != j. ``sample_pairs`` returns *all* i < j pairs when there are at most
``max_pairs`` (100,000 by default) of them, which makes uniformity exactly SimCSE's ``pdist``-based value; otherwise
``max_pairs`` uniformly random ordered pairs with i != j drawn with replacement from ``numpy.random.default_rng(seed)``
(seed 0), so a reported number can be reproduced exactly.

Token level, on a list of [n_tokens, dim] arrays (one per sentence, padding already removed):

| function              | definition                                                                 |
|-----------------------|----------------------------------------------------------------------------|
| token_cosine          | mean over sentences (with >= 2 tokens) of the mean cosine between distinct |
|                       | tokens of that sentence                                                    |
| token_spectrum        | singular values s of the stacked token matrix, mean-centred by default     |
|   effective_rank      | exp(H(p)), p = s / sum(s) (Roy & Vetterli 2007), between 1 and min(N, dim) |
|   svd_entropy         | H(p) = -sum p log p, natural log                                           |
|   condition_number    | s_max / s_min over the singular values above numpy's rank tolerance        |
|   numerical_rank      | how many singular values are above that tolerance                          |

Centring (``center=True``) subtracts the mean token first: the shared offset that makes representations anisotropic
would otherwise appear as one dominant singular value and the effective rank would mostly measure that offset,
which ``token_cosine`` and ``anisotropy`` already report. Note that centring N <= dim tokens leaves rank N - 1,
so the condition number is then inf.

It does not run models, pool tokens or pick the positive pairs (e.g. STS-B pairs with gold > 4.0): arrays in.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.special import logsumexp
from scipy.stats import entropy

log = logging.getLogger("embedlab.evaluate")

DEFAULT_MAX_PAIRS = 100_000
DEFAULT_SEED = 0


def _as_float64(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # torch.Tensor
        x = x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


def l2_normalize(x: Any) -> np.ndarray:
    """Rows scaled to unit L2 norm in float64; an all-zero row is left at zero."""
    x = _as_float64(x)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def sample_pairs(n: int, max_pairs: int = DEFAULT_MAX_PAIRS, seed: int = DEFAULT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """Index arrays (i, j) of distinct pairs among n items: all i < j pairs if there are <= max_pairs of them, else
    ``max_pairs`` random ordered pairs with i != j (with replacement), drawn reproducibly from ``seed``."""
    if n < 2:
        raise ValueError(f"need at least 2 items for a pair; got {n}")
    if n * (n - 1) // 2 <= max_pairs:
        i, j = np.triu_indices(n, k=1)
        return i, j
    rng = np.random.default_rng(seed)
    i = rng.integers(0, n, size=max_pairs)
    # j = i + an offset in [1, n-1] (mod n) is uniform over the other n-1 items, so i != j without rejection.
    j = (i + rng.integers(1, n, size=max_pairs)) % n
    return i, j


def alignment(x: Any, x_pos: Any, alpha: float = 2.0) -> float:
    """Mean ||f(x) - f(x+)||^alpha over positive pairs (row i of x with row i of x_pos); NaN (undefined, stored as
    n/a) when there is no positive pair."""
    a, b = l2_normalize(x), l2_normalize(x_pos)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"x and x_pos must both be [n, dim]; got {a.shape} and {b.shape}")
    if len(a) == 0:  # numpy would print "Mean of empty slice" warnings on the user's terminal and return NaN
        log.warning("alignment is undefined: no positive pairs (gold score > 4 of 5) in this set")
        return math.nan
    return float(np.mean(np.linalg.norm(a - b, axis=1) ** alpha))


def _pair_sq_distances(f: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    # For unit vectors ||a - b||^2 = 2 - 2 a.b; computing the difference directly avoids cancellation near 0.
    return np.sum((f[i] - f[j]) ** 2, axis=1)


def uniformity(
    x: Any, t: float = 2.0, *, max_pairs: int = DEFAULT_MAX_PAIRS, seed: int = DEFAULT_SEED
) -> float:
    """log mean exp(-t ||f(x) - f(y)||^2) over the distinct pairs of ``sample_pairs(len(x), max_pairs, seed)``."""
    f = l2_normalize(x)
    i, j = sample_pairs(len(f), max_pairs, seed)
    sq = _pair_sq_distances(f, i, j)
    # logsumexp keeps the log of a mean of tiny exponentials finite.
    return float(logsumexp(-t * sq) - np.log(len(sq)))


def anisotropy(x: Any, *, max_pairs: int = DEFAULT_MAX_PAIRS, seed: int = DEFAULT_SEED) -> float:
    """Mean cosine similarity over the distinct pairs of ``sample_pairs`` (0 for an isotropic space)."""
    f = l2_normalize(x)
    i, j = sample_pairs(len(f), max_pairs, seed)
    return float(np.mean(np.einsum("ij,ij->i", f[i], f[j])))


def distance_ratio(
    x: Any, x_pos: Any, sentences: Any, *, max_pairs: int = DEFAULT_MAX_PAIRS, seed: int = DEFAULT_SEED
) -> float:
    """Mean positive-pair distance ||f(x) - f(x+)|| divided by the mean distance of random distinct pairs of
    ``sentences`` (plain distances, not squared). Lower is better; about 1 means positives are no closer than chance."""
    if len(x) == 0:  # no positive pair: undefined (NaN, stored as n/a), without numpy's empty-mean warnings
        return math.nan
    pos = float(np.mean(np.linalg.norm(l2_normalize(x) - l2_normalize(x_pos), axis=1)))
    f = l2_normalize(sentences)
    i, j = sample_pairs(len(f), max_pairs, seed)
    rand = float(np.mean(np.sqrt(_pair_sq_distances(f, i, j))))
    return pos / rand if rand > 0 else float("inf")


def align_uniform_ratio(alignment_value: float, uniformity_value: float) -> float:
    """alignment / |uniformity|; lower is better; inf when uniformity is 0 (a collapsed space)."""
    return alignment_value / abs(uniformity_value) if uniformity_value != 0 else float("inf")


def sentence_geometry(
    x: Any, x_pos: Any, sentences: Any, *, max_pairs: int = DEFAULT_MAX_PAIRS, seed: int = DEFAULT_SEED
) -> dict[str, float]:
    """All sentence-level metrics at once: ``x``/``x_pos`` are the positive pairs, ``sentences`` the set whose spread
    uniformity and anisotropy measure (e.g. every STS-B sentence)."""
    align = alignment(x, x_pos)
    unif = uniformity(sentences, max_pairs=max_pairs, seed=seed)
    return {
        "alignment": align,
        "uniformity": unif,
        "distance_ratio": distance_ratio(x, x_pos, sentences, max_pairs=max_pairs, seed=seed),
        "align_uniform_ratio": align_uniform_ratio(align, unif),
        "anisotropy": anisotropy(sentences, max_pairs=max_pairs, seed=seed),
    }


def token_cosine(token_reps: Sequence[Any]) -> float:
    """Mean over sentences of the mean pairwise cosine between distinct tokens of that sentence.

    Sentences with fewer than two tokens have no pair and are skipped; NaN if no sentence has two tokens.
    """
    per_sentence = []
    for reps in token_reps:
        f = l2_normalize(reps)
        n = len(f)
        if n < 2:
            continue
        total = f.sum(axis=0)
        # sum over i != j of f_i.f_j = ||sum f||^2 - sum ||f_i||^2, without building the n x n Gram matrix.
        off_diagonal = float(total @ total - np.sum(f * f))
        per_sentence.append(off_diagonal / (n * (n - 1)))
    return float(np.mean(per_sentence)) if per_sentence else float("nan")


def singular_values(token_reps: Sequence[Any], center: bool = True, method: str = "auto") -> np.ndarray:
    """Singular values (descending, float64) of the stacked [N, dim] token matrix, optionally mean-centred.

    method: "svd" stacks the tokens and calls LAPACK; "gram" accumulates the dim x dim Gram matrix sentence by sentence
    and takes the square roots of its eigenvalues (memory O(dim^2) instead of O(N dim), but squaring loses the
    smallest singular values below about 1e-8 of the largest); "auto" picks "svd" when the stack has <= 2e7 numbers.
    """
    if len(token_reps) == 0:
        raise ValueError("no token representations")
    dims = {np.shape(r)[-1] for r in token_reps}
    if len(dims) != 1:
        raise ValueError(f"token representations have different dims: {sorted(dims)}")
    dim = dims.pop()
    n_tokens = sum(len(r) for r in token_reps)
    if n_tokens == 0:
        raise ValueError("no tokens")
    if method == "auto":
        method = "svd" if n_tokens * dim <= 20_000_000 else "gram"
    if method == "svd":
        m = np.concatenate([_as_float64(r).reshape(-1, dim) for r in token_reps])
        if center:
            m = m - m.mean(axis=0, keepdims=True)
        return np.linalg.svd(m, compute_uv=False)
    if method == "gram":
        gram = np.zeros((dim, dim))
        total = np.zeros(dim)
        for r in token_reps:
            r = _as_float64(r).reshape(-1, dim)
            gram += r.T @ r
            total += r.sum(axis=0)
        if center:
            # (X - 1 mu^T)^T (X - 1 mu^T) = X^T X - N mu mu^T
            mu = total / n_tokens
            gram -= n_tokens * np.outer(mu, mu)
        eig = np.linalg.eigvalsh(gram)[::-1][: min(n_tokens, dim)]
        s = np.sqrt(np.clip(eig, 0.0, None))
        # Rounding in X^T X leaves ~sqrt(eps) * s_max of noise where a singular value is 0: call that 0, so a
        # rank-deficient matrix reads as such (condition number inf) on this path too.
        s[s <= s[0] * np.sqrt(max(n_tokens, dim) * np.finfo(np.float64).eps)] = 0.0
        return s
    raise ValueError(f"unknown method {method!r}; valid: auto, svd, gram")


def spectrum_metrics(s: np.ndarray, shape: tuple[int, int]) -> dict[str, float]:
    """effective_rank, svd_entropy and condition_number from singular values ``s`` of a matrix of ``shape``."""
    s = np.asarray(s, dtype=np.float64)
    if s.size == 0 or s.max() <= 0:
        return {"effective_rank": 0.0, "svd_entropy": 0.0, "condition_number": float("inf"), "numerical_rank": 0.0}
    h = float(entropy(s / s.sum()))  # scipy: natural log, 0 log 0 = 0
    # numpy.linalg.matrix_rank's tolerance: below it a singular value is numerically zero. The condition number is
    # taken over the numerically non-zero spectrum (sigma_max / smallest sigma above the tolerance): real encoders have
    # a few dead hidden dimensions (all-MiniLM-L6-v2: 2 singular values ~1e-16 of the largest), which would make the
    # plain sigma_max / sigma_min infinite for every model and useless for comparisons. numerical_rank says how many
    # singular values that spectrum has.
    tol = s.max() * max(shape) * np.finfo(np.float64).eps
    nonzero = s[s > tol]
    return {"effective_rank": float(np.exp(h)), "svd_entropy": h,
            "condition_number": float(nonzero.max() / nonzero.min()), "numerical_rank": float(nonzero.size)}


def token_spectrum(token_reps: Sequence[Any], center: bool = True, method: str = "auto") -> dict[str, float]:
    """Effective rank and SVD entropy of the stacked token matrix (centred when ``center``), and its condition
    number, always computed on the *uncentred* matrix.

    Why the condition number is uncentred: the last layer of a BERT-like model ends in LayerNorm, so every token vector
    is gamma * z + beta with z summing to zero, i.e. all tokens lie on one affine hyperplane. Centring moves that
    hyperplane through the origin and leaves a matrix of rank dim - 1 exactly, whose condition number is inf for every
    such model; uncentred, the offset beta keeps it finite and comparable between models."""
    s = singular_values(token_reps, center=center, method=method)  # validates the input first
    shape = (sum(len(r) for r in token_reps), int(np.shape(token_reps[0])[-1]))
    metrics = spectrum_metrics(s, shape)
    if center:
        raw = spectrum_metrics(singular_values(token_reps, center=False, method=method), shape)
        metrics["condition_number"] = raw["condition_number"]
    return metrics


def token_geometry(token_reps: Sequence[Any], center: bool = True) -> dict[str, float]:
    """token_cosine plus token_spectrum in one dict."""
    return {"token_cosine": token_cosine(token_reps), **token_spectrum(token_reps, center=center)}
