"""Similarity (STS) losses: Pearson, Rank-KL, PRO, CoSENT, the mid-layer InfoNCE, and CoDiEmb's weighted sum.

Paper: Zhang et al., "CoDiEmb", arXiv 2508.11442 (the combination and its weights, from its released training code,
re-derived here from formulas). Components: Pearson — Pcc-tuning (Zhang & Li, EMNLP 2024); PRO — Peng et al. 2024,
arXiv 2311.03758; CoSENT — Su 2022 (the paper's baseline; sentence-transformers' CoSENTLoss with scale 20 = 1/0.05).

A batch is n pairs (x1_i, x2_i, y_i); ŝ_i = cos(e(x1_i), e(x2_i)) = e1_i·e2_i (inputs L2-normalised; nothing is
renormalised unless ``normalize=True``). Labels y are floats, larger = more similar; CoDiEmb's threshold of 1.0 for the
mid-layer anchors implies labels scaled to [0, 1] (the data layer does the scaling, e.g. STS-B 0–5 → /5).
The score-level functions take ``scores`` [n] and ``labels`` [n] and return a scalar tensor; labels never get gradients.

    Pearson   L = 1 − r(ŝ, y), population (co)variances; 0 when y is constant (r undefined; returns an exact 0 that
              keeps the graph, no NaN) or n < 2. Perfect correlation → 0, perfect anti-correlation → 2.
    Rank-KL   rank_i = tie-aware rank of y_i in descending order, 0 = best; ties share the average of the ranks they
              span (the convention of the Spearman metric this loss targets). t_i = (n−1−rank_i)/(n−1) ∈ [0, 1];
              P = softmax(t/τ), log Q = log_softmax(ŝ/τ), L = KL(P‖Q) with "batchmean" on the 1-D list, i.e.
              Σ_i P_i (log P_i − log Q_i) / n. τ = 0.05. 0 iff ŝ = t + const.
    PRO       for each k, J_k = {j : y_j < y_k} (after sorting by y descending these are the later pairs with strictly
              lower y); w_j = y_k − y_j, w_k = max_{j∈J_k} w_j = y_k − min(y); logits [w_k ŝ_k/τ, {w_j ŝ_j/τ}_{j∈J_k}];
              ℓ_k = −log softmax(logits)[0]; L = mean of ℓ_k over k with J_k ≠ ∅ (0 if none). τ = 0.05.
              Vectorised on the n×n matrix W[k, j] = y_k − y_j with the pairs W ≤ 0 masked to −∞: no sort and no
              Python loop (J_k does not depend on order), O(n²) memory — 1 MB at n = 512.
    CoSENT    L = log(1 + Σ_{(i,j): y_i > y_j} exp((ŝ_j − ŝ_i)/τ)), τ = 0.05.
    MidNCE    on embeddings m1, m2 [n, d] from the middle hidden layer (pooled and normalised like the last layer):
              anchors A = {i : y_i ≥ threshold} (default 1.0), candidates all m2 of the batch, label = own index;
              L = −(1/|A|) Σ_{i∈A} log softmax_k(m1_i·m2_k/τ)[i], τ = 0.02; 0 if A = ∅.
    CoDiEmb   L_STS = 1·MidNCE + 0.5·PRO + 2·Pearson + 5·RankKL  (``STS_PAPER_WEIGHTS``; any subset, plus CoSENT).

``gather=False`` (default) is the paper: the lists are per device. ``gather=True`` all-gathers the scores, labels
and mid-layer embeddings (with gradients) and computes the list-wise losses on the global list on every rank — the
losses are not sums over rows, so every rank computes the whole list; the value is the global loss on every rank and
the gradient follows ``embedlab.objectives.distributed``'s convention (W × global, exact after DDP's average).
"""
from __future__ import annotations

from typing import Mapping

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from .distributed import gather_nograd, gather_with_grad, world_size
from .ir import _check_tau, _logit_dtype

STS_COMPONENTS = ("mid_nce", "pro", "pearson", "rank_kl", "cosent")
STS_PAPER_WEIGHTS: Mapping[str, float] = {"mid_nce": 1.0, "pro": 0.5, "pearson": 2.0, "rank_kl": 5.0}

_NEG_INF = float("-inf")


def _zero(*tensors: torch.Tensor) -> torch.Tensor:
    # An exact 0 that stays attached to the graph, so callers can always .backward() (gradient 0, never NaN).
    return sum(t.sum() for t in tensors) * 0.0


def _prep(scores: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if scores.dim() != 1 or labels.shape != scores.shape:
        raise ValueError(f"scores and labels must both be [n], got {tuple(scores.shape)} and {tuple(labels.shape)}")
    s = _logit_dtype(scores)
    return s, labels.detach().to(device=s.device, dtype=s.dtype)


def pearson_loss(scores: torch.Tensor, labels: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """1 − Pearson r(ŝ, y); 0 when y is constant or n < 2."""
    s, y = _prep(scores, labels)
    # Exact test (not var_y == 0): the mean of n copies of 0.6 is not exactly 0.6 in float, which would leave a
    # ~1e-16 variance and a meaningless r.
    if s.numel() < 2 or bool(y.max() == y.min()):
        return _zero(scores)
    sc, yc = s - s.mean(), y - y.mean()
    # Clamp *before* the sqrt: clamping after would still backprop 0 · ∞ = NaN when ŝ is constant.
    r = (sc * yc).mean() / torch.sqrt(((sc * sc).mean() * (yc * yc).mean()).clamp_min(eps))
    return 1.0 - r


def average_ranks_desc(labels: torch.Tensor) -> torch.Tensor:
    """Rank of each label in descending order, 0 = largest; ties get the mean of the ranks they span.

    rank_i = #{j : y_j > y_i} + (#{j : y_j = y_i} − 1)/2 — an n×n comparison, cheap next to the encoder for STS list
    sizes, and exact for ties without a sort."""
    y = labels.detach()
    greater = (y.unsqueeze(0) > y.unsqueeze(1)).sum(1)
    equal = (y.unsqueeze(0) == y.unsqueeze(1)).sum(1)
    return greater.to(y.dtype) + (equal.to(y.dtype) - 1) / 2


def rank_kl_loss(scores: torch.Tensor, labels: torch.Tensor, tau: float = 0.05) -> torch.Tensor:
    """KL(softmax(t/τ) ‖ softmax(ŝ/τ)) / n with t the linearly rescaled tie-aware ranks of y (best = 1)."""
    _check_tau(tau)
    s, y = _prep(scores, labels)
    n = s.numel()
    if n < 2:
        return _zero(scores)
    with torch.no_grad():  # the target is a function of the labels only
        t = (n - 1 - average_ranks_desc(y)) / (n - 1)
        p = torch.softmax(t / tau, dim=0)
    # kl_div(input=log Q, target=P) = Σ P (log P − log Q); "batchmean" divides by size(0) = n for this 1-D list.
    return F.kl_div(torch.log_softmax(s / tau, dim=0), p, reduction="batchmean")


def pro_loss(scores: torch.Tensor, labels: torch.Tensor, tau: float = 0.05) -> torch.Tensor:
    """PRO (Peng et al. 2024), vectorised: see the module docstring."""
    _check_tau(tau)
    s, y = _prep(scores, labels)
    w = y.unsqueeze(1) - y.unsqueeze(0)  # w[k, j] = y_k − y_j
    lower = w > 0  # j ∈ J_k
    valid = lower.any(1)
    if not bool(valid.any()):
        return _zero(scores)
    w_k = w.amax(1)  # = y_k − min(y) on valid rows (w[k, k] = 0 keeps invalid rows at 0)
    anchor = w_k * s / tau  # [n]
    others = (w * s.unsqueeze(0) / tau).masked_fill(~lower, _NEG_INF)  # [n, n]
    lse = torch.logsumexp(torch.cat([anchor.unsqueeze(1), others], dim=1), dim=1)
    per_k = (lse - anchor).masked_fill(~valid, 0.0)  # invalid rows are exactly 0 already; keep them out of the mean
    return per_k.sum() / valid.sum()


def cosent_loss(scores: torch.Tensor, labels: torch.Tensor, tau: float = 0.05) -> torch.Tensor:
    """log(1 + Σ_{y_i > y_j} exp((ŝ_j − ŝ_i)/τ)); 0 when no pair is ordered."""
    _check_tau(tau)
    s, y = _prep(scores, labels)
    diff = (s.unsqueeze(0) - s.unsqueeze(1)) / tau  # diff[i, j] = (ŝ_j − ŝ_i)/τ
    diff = diff.masked_fill(~(y.unsqueeze(1) > y.unsqueeze(0)), _NEG_INF)
    # the leading 0 is the "1 +": log(e^0 + Σ ...) via one stable logsumexp
    return torch.logsumexp(torch.cat([s.new_zeros(1), diff.reshape(-1)]), dim=0)


def mid_infonce_loss(
    m1: torch.Tensor, m2: torch.Tensor, labels: torch.Tensor, *, threshold: float = 1.0, tau: float = 0.02
) -> torch.Tensor:
    """InfoNCE of high-score pairs (y ≥ threshold) against every x2 of the batch; 0 when there is no such pair."""
    _check_tau(tau)
    if m1.dim() != 2 or m1.shape != m2.shape or labels.shape != m1.shape[:1]:
        raise ValueError(f"m1, m2 must be [n, d] and labels [n]; got {tuple(m1.shape)}, {tuple(m2.shape)}, "
                         f"{tuple(labels.shape)}")
    anchors = (labels.detach() >= threshold).nonzero().squeeze(1)
    if anchors.numel() == 0:
        return _zero(m1, m2)
    logits = _logit_dtype(m1[anchors] @ m2.T) / tau
    return F.cross_entropy(logits, anchors)


def _check_weights(weights: Mapping[str, float]) -> dict[str, float]:
    unknown = set(weights) - set(STS_COMPONENTS)
    if unknown:
        raise ConfigError(f"unknown STS loss component(s) {sorted(unknown)}; valid: {', '.join(STS_COMPONENTS)}")
    return {k: float(v) for k, v in weights.items() if float(v) != 0.0}


def codiemb_sts_loss(
    e1: torch.Tensor,
    e2: torch.Tensor,
    labels: torch.Tensor,
    *,
    mid1: torch.Tensor | None = None,
    mid2: torch.Tensor | None = None,
    weights: Mapping[str, float] | None = None,
    tau: float = 0.05,
    mid_tau: float = 0.02,
    mid_threshold: float = 1.0,
    gather: bool = False,
    normalize: bool = False,
) -> tuple[torch.Tensor, dict[str, float]]:
    """CoDiEmb's STS objective: Σ_c weights[c] · L_c over the components in ``STS_COMPONENTS``.

    e1, e2 [n, d]: last-layer embeddings of the two sides; labels [n]; mid1, mid2 [n, d]: middle-layer embeddings
    (required when ``weights['mid_nce']`` ≠ 0). ``weights`` replaces the defaults (``STS_PAPER_WEIGHTS``) entirely —
    a component not named has weight 0 and is not computed. ``tau`` is shared by Rank-KL, PRO and CoSENT.
    Returns (total, {"loss": total, <component>: unweighted value, ...}).
    """
    w = _check_weights(STS_PAPER_WEIGHTS if weights is None else weights)
    if e1.dim() != 2 or e1.shape != e2.shape or labels.shape != e1.shape[:1]:
        raise ValueError(f"e1, e2 must be [n, d] and labels [n]; got {tuple(e1.shape)}, {tuple(e2.shape)}, "
                         f"{tuple(labels.shape)}")
    if "mid_nce" in w and (mid1 is None or mid2 is None):
        raise ValueError("weights['mid_nce'] is non-zero but mid1/mid2 (middle-layer embeddings) were not given; "
                         "pass them or set the weight to 0")
    if normalize:
        e1, e2 = F.normalize(e1, dim=-1), F.normalize(e2, dim=-1)
        if mid1 is not None and mid2 is not None:
            mid1, mid2 = F.normalize(mid1, dim=-1), F.normalize(mid2, dim=-1)

    scores = (e1 * e2).sum(-1)
    if gather and world_size() > 1:
        # Scores (not embeddings) are all the list-wise losses need: n floats per rank instead of 2·n·d.
        scores, labels = gather_with_grad(scores), gather_nograd(labels.detach())
        if "mid_nce" in w:
            mid1, mid2 = gather_with_grad(mid1), gather_with_grad(mid2)

    parts: dict[str, torch.Tensor] = {}
    if "mid_nce" in w:
        parts["mid_nce"] = mid_infonce_loss(mid1, mid2, labels, threshold=mid_threshold, tau=mid_tau)
    if "pro" in w:
        parts["pro"] = pro_loss(scores, labels, tau)
    if "pearson" in w:
        parts["pearson"] = pearson_loss(scores, labels)
    if "rank_kl" in w:
        parts["rank_kl"] = rank_kl_loss(scores, labels, tau)
    if "cosent" in w:
        parts["cosent"] = cosent_loss(scores, labels, tau)
    total = sum(w[k] * v for k, v in parts.items()) if parts else _zero(scores)
    comps = {"loss": float(total.detach())}
    comps.update({k: float(v.detach()) for k, v in parts.items()})
    return total, comps


def cosent_sts_loss(
    e1: torch.Tensor,
    e2: torch.Tensor,
    labels: torch.Tensor,
    *,
    tau: float = 0.05,
    gather: bool = False,
    normalize: bool = False,
    **_ignored_mid,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The CoSENT baseline as an STS objective (the paper's comparison): ``codiemb_sts_loss`` with only CoSENT.

    Accepts and ignores mid1/mid2 so a trainer can call every STS objective the same way."""
    unexpected = set(_ignored_mid) - {"mid1", "mid2"}
    if unexpected:
        raise TypeError(f"cosent_sts_loss() got unexpected keyword argument(s) {sorted(unexpected)}")
    return codiemb_sts_loss(e1, e2, labels, weights={"cosent": 1.0}, tau=tau, gather=gather, normalize=normalize)
