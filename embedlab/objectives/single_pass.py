"""CSE-SFP's single-forward-pass contrastive loss (Zhang et al., SIGIR 2025), with our options.

Inputs (this rank's shard, from ONE forward pass of a two-slot template; L2-normalised):
    rep2 [b, d]   the final token (sees the whole prompt): the anchor
    rep1 [b, d]   the first slot (cannot see the suffix): the positive of the same sentence
With B = world_size · b (gathered with gradients, the local shard kept) or b, τ = 0.05, labels i → i:

    L = −(1/B) Σ_i log[ exp(r2_i·r1_i/τ) / Σ_{k=1..B} exp(r2_i·r1_k/τ) ]                       (the paper: one-way)

Options (each measured as an ablation, docs/cse_sfp.md):
    symmetric=True       L = ½(L_{2→1} + L_{1→2}); L_{1→2} scores every Rep1 against all Rep2
    in_view_negatives    the other sentences' anchors are extra negatives: the denominator of row i also has
                         Σ_{k≠i} exp(r2_i·r2_k/τ) (the same sentence's own view is masked out, never a negative)

Returns ``(loss, {"loss", "a2p", "p2a" (symmetric), "acc"})``; ``acc`` is the share of anchors whose best candidate
is their own Rep1. The gradient follows ``objectives.distributed``'s convention (W × global).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .distributed import gather_sizes, gather_with_grad, rank_offset, row_mean, world_size
from .ir import _check_tau, _finish, _logit_dtype


def _direction(anchor: torch.Tensor, cands: torch.Tensor, same_view: torch.Tensor | None, labels: torch.Tensor,
               tau: float) -> tuple[torch.Tensor, torch.Tensor]:
    logits = _logit_dtype(anchor @ cands.T) / tau
    if same_view is not None:
        own = _logit_dtype(anchor @ same_view.T) / tau
        own = own.masked_fill(F.one_hot(labels, own.shape[1]).bool(), float("-inf"))  # never yourself
        logits = torch.cat([logits, own], dim=1)
    loss = F.cross_entropy(logits, labels, reduction="sum")
    acc = (logits.argmax(-1) == labels).sum().to(logits.dtype)
    return loss, acc


def single_pass_loss(
    rep2: torch.Tensor,
    rep1: torch.Tensor,
    *,
    tau: float = 0.05,
    symmetric: bool = False,
    in_view_negatives: bool = False,
    gather: bool = False,
) -> tuple[torch.Tensor, dict[str, float]]:
    _check_tau(tau)
    if rep2.dim() != 2 or rep2.shape != rep1.shape:
        raise ValueError(f"rep2 and rep1 must both be [b, d], got {tuple(rep2.shape)}, {tuple(rep1.shape)}")
    b = rep2.shape[0]
    gathering = gather and world_size() > 1
    sizes = gather_sizes(b, rep2.device) if gathering else [b]
    B = sum(sizes)
    r1_all = gather_with_grad(rep1, sizes) if gathering else rep1
    r2_all = gather_with_grad(rep2, sizes) if gathering else rep2
    labels = torch.arange(b, device=rep2.device) + (rank_offset(sizes) if gathering else 0)
    a2p, acc = _direction(rep2, r1_all, r2_all if in_view_negatives else None, labels, tau)
    parts = {"a2p": (a2p, B), "acc": (acc, B)}
    total = row_mean(a2p, B, gathering)
    weights = {"a2p": 1.0}
    if symmetric:
        p2a, _ = _direction(rep1, r2_all, r1_all if in_view_negatives else None, labels, tau)
        parts["p2a"] = (p2a, B)
        total = 0.5 * (total + row_mean(p2a, B, gathering))
        weights = {"a2p": 0.5, "p2a": 0.5}
    return _finish(total, parts, weights, gathering)
