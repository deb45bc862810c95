"""Pair InfoNCE: in-batch contrastive loss for SimCSE / CSE-SFP, and the naive co-training baseline.

Papers: InfoNCE — van den Oord et al. 2018; SimCSE — Gao et al., EMNLP 2021 (τ = 0.05, anchor → positive only);
CSE-SFP — Zhang et al. 2025 (same loss on decoder embeddings). The naive baseline is the "InfoNCE-only, mixed batches"
comparison of CoDiEmb (arXiv 2508.11442).

Inputs (this rank's shard; L2-normalised embeddings — the dot product is the cosine; ``normalize=True`` normalises):
    anchor     [b, d]
    positive   [b, d]     positive i belongs to anchor i
    negatives  [m, d]     optional extra candidates (hard negatives of the mixed batch; naive baseline only)
With B = world_size · b (gathered) or b:

    L_a→p = −(1/B) Σ_i log[ exp(a_i·p_i/τ) / (Σ_{k=1..B} exp(a_i·p_k/τ) + Σ_{c ∈ negatives} exp(a_i·c/τ)) ]
    symmetric=True:  L = ½(L_a→p + L_p→a),  L_p→a over the B anchors only.

``infonce_loss``        τ = 0.05, usually no extra negatives (unsupervised SimCSE: anchor and positive are two dropout
                        views of one sentence; supervised SimCSE passes its hard negatives).
``naive_infonce_loss``  τ = 0.02 (the IR loss's temperature, so the baseline differs from CoDiEmb only in structure):
                        one InfoNCE over every (query, positive) pair of a mixed IR+STS batch — IR queries with their
                        first positive, STS pairs above a score threshold (the data layer picks them) — with the IR
                        hard negatives appended as candidates for every anchor.

Not handled: duplicate texts inside a batch (two anchors with the same positive are each other's false negatives; the
IR loss has id-based masking for that). ``gather=True``: candidates from every rank, this rank's anchors as rows,
labels offset by the lower ranks' anchor counts (which may differ between ranks, as may the number of negatives);
value = global loss, gradient per ``embedlab.objectives.distributed`` (W × global). 0 anchors in the whole batch
gives a loss of 0.
Returns ``(loss, {"loss", "a2p", "p2a" (symmetric), "acc"})``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .distributed import gather_sizes, gather_with_grad, rank_offset, row_mean, world_size
from .ir import _check_tau, _finish, _logit_dtype


def naive_infonce_loss(
    anchor: torch.Tensor,
    positive: torch.Tensor,
    negatives: torch.Tensor | None = None,
    *,
    tau: float = 0.02,
    symmetric: bool = False,
    gather: bool = False,
    normalize: bool = False,
) -> tuple[torch.Tensor, dict[str, float]]:
    """In-batch InfoNCE over (anchor, positive) pairs with optional extra negative candidates; see the module doc."""
    _check_tau(tau)
    if anchor.dim() != 2 or anchor.shape != positive.shape:
        raise ValueError(f"anchor and positive must both be [b, d], got {tuple(anchor.shape)}, {tuple(positive.shape)}")
    if negatives is not None and (negatives.dim() != 2 or negatives.shape[1] != anchor.shape[1]):
        raise ValueError(f"negatives must be [m, d={anchor.shape[1]}], got {tuple(negatives.shape)}")
    if normalize:
        anchor, positive = F.normalize(anchor, dim=-1), F.normalize(positive, dim=-1)
        negatives = F.normalize(negatives, dim=-1) if negatives is not None else None
    b = anchor.shape[0]
    gathering = gather and world_size() > 1
    # Anchor counts may differ between ranks here (a mixed batch keeps only the STS pairs above a threshold), so the
    # label offset and the mean use every rank's actual count, not rank · b.
    sizes = gather_sizes(b, anchor.device) if gathering else [b]
    B = sum(sizes)
    if B == 0:  # no pair anywhere (every rank sees the same sizes, so every rank returns here: no collective skipped)
        zero = (anchor.sum() + positive.sum()) * 0.0
        return zero, {"loss": 0.0, "a2p": 0.0, "acc": 0.0}
    if negatives is None:  # an empty block, so that every rank makes the same collective calls
        negatives = anchor.new_zeros(0, anchor.shape[1])
    cands = gather_with_grad(positive, sizes) if gathering else positive  # [B, d]; column k = positive of anchor k
    cands = torch.cat([cands, gather_with_grad(negatives) if gathering else negatives])
    labels = torch.arange(b, device=anchor.device) + (rank_offset(sizes) if gathering else 0)

    logits = _logit_dtype(anchor @ cands.T) / tau
    parts = {"a2p": (F.cross_entropy(logits, labels, reduction="sum"), B),
             "acc": ((logits.argmax(-1) == labels).sum().to(logits.dtype), B)}
    total = row_mean(*parts["a2p"], gathering)
    weights = {"a2p": 1.0}
    if symmetric:
        anchors_all = gather_with_grad(anchor, sizes) if gathering else anchor
        p2a = F.cross_entropy(_logit_dtype(positive @ anchors_all.T) / tau, labels, reduction="sum")
        parts["p2a"] = (p2a, B)
        total = 0.5 * (total + row_mean(p2a, B, gathering))
        weights = {"a2p": 0.5, "p2a": 0.5}
    return _finish(total, parts, weights, gathering)


def infonce_loss(
    anchor: torch.Tensor,
    positive: torch.Tensor,
    negatives: torch.Tensor | None = None,
    *,
    tau: float = 0.05,
    symmetric: bool = False,
    gather: bool = False,
    normalize: bool = False,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Plain in-batch InfoNCE (SimCSE / CSE-SFP), τ = 0.05; ``negatives`` (supervised SimCSE's hard negatives) are
    extra candidates as in ``naive_infonce_loss``, which this is with another default temperature."""
    return naive_infonce_loss(anchor, positive, negatives, tau=tau, symmetric=symmetric, gather=gather,
                              normalize=normalize)
