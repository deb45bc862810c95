"""Retrieval loss: multi-positive InfoNCE with hard, in-batch and cross-device negatives (CoDiEmb's IR objective).

Paper: Zhang et al., "CoDiEmb: A Collaborative yet Distinct Framework for Unified Representation Learning in Information
Retrieval and Semantic Textual Similarity", arXiv 2508.11442 (IR loss of its released training code, re-derived from
the formula below). InfoNCE: van den Oord et al. 2018; in-batch + hard negatives as in DPR (Karpukhin et al. 2020).

Inputs (this rank's shard; embeddings already L2-normalised, so a dot product is the cosine — nothing is renormalised
unless ``normalize=True``):
    q    [b, d]      queries
    pos  [b, P, d]   P positives per query ([b, d] is read as P = 1)
    neg  [b, N, d]   N hard negatives per query (None or N = 0: in-batch negatives only)
Global batch: B = Σ_ranks b queries with ``gather=True`` (world_size · b for equal shards), else B = b.
s(x, y) = x·y, τ = ``tau`` (default 0.02).

Default (``joint_softmax=False``, the paper): one softmax per positive slot j = 1..P, averaged over slots.
    C_j  = {d⁺_{k,j} : k = 1..B}  ∪  {d⁻_{k,n} : k = 1..B, n = 1..N}          (B + B·N candidates)
    L_j  = −(1/B) Σ_i log[ exp(s(q_i, d⁺_{i,j})/τ) / Σ_{c∈C_j} exp(s(q_i, c)/τ) ]
    L    = (1/P) Σ_j L_j
  Column layout of C_j: [the B j-th positives in global query order | the B·N hard negatives, query-major]. The label of
  local query i is column offset + i (offset = the queries on lower ranks, ``rank_offset``): its *own* j-th positive.
  (The classic bug is a label that indexes a flattened [B·P + B·N] list without the slot/offset arithmetic, which
  silently trains queries towards other queries' documents or their own hard negatives; tests/test_objectives_ir.py
  and the 2-process test guard it.)

``joint_softmax=True``: one softmax per query over every positive and hard negative of the global batch, all P own
positives in the numerator (the "multi-positive" / SupCon-style form, Khosla et al. 2020):
    C  = {d⁺_{k,j}} ∪ {d⁻_{k,n}}                                              (B·P + B·N candidates)
    L  = −(1/B) Σ_i log[ Σ_j exp(s(q_i, d⁺_{i,j})/τ) / Σ_{c∈C} exp(s(q_i, c)/τ) ]
  With P = 1 both forms are identical. The joint form lets a query satisfy the loss with its easiest positive; the slot
  form asks for every positive.

``symmetric=True`` adds the document→query direction and averages: L = ½(L_q→d + L_d→q) with
    L_d→q = −(1/(B·P)) Σ_{i,j} log[ exp(s(d⁺_{i,j}, q_i)/τ) / Σ_{k=1..B} exp(s(d⁺_{i,j}, q_k)/τ) ]
  (hard negatives are documents, so they do not appear as candidates for a document).

False-negative masking (a masked candidate is removed from the denominator; the label column is never masked):
  * ``fn_margin=m``: remove candidates c with s(q_i, c) > s(q_i, d⁺_{i,j}) + m (slot form), or > max_j s(q_i, d⁺_{i,j})
    + m (joint form: only what beats every known positive). For d→q: queries k with s(d, q_k) > s(d, q_i) + m. The
    decision uses the current scores (no gradient flows through a mask). m = 0 removes everything ranked above the
    positive; typical values 0.0–0.1 on cosine.
  * ``pos_ids`` [b, P] and ``neg_ids`` [b, N] (integer text ids, e.g. a hash of the text): remove any candidate whose id
    equals the id of one of q_i's own positives (a duplicate of a positive appearing as another query's positive or as
    a hard negative); in the joint form q_i's own positive columns are never removed. For d→q: remove query k ≠ i when
    d⁺_{i,j}'s id is among query k's positive ids.

``gather=True`` all-gathers pos/neg (and q when symmetric) with gradients and computes this rank's query rows against
the global candidates (ranks may hold different numbers of queries); the value returned is the global-batch loss, the
gradient follows the convention in ``embedlab.objectives.distributed`` (W × the global gradient, so DDP's average is
exact). No-op without a process group.

Returns ``(loss, components)``: components are floats — ``loss``, ``q2d``, ``d2q`` (symmetric only), ``acc`` (share of
rows whose top-scored candidate is a positive), ``masked`` (mean masked candidates per row, masking only).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from .distributed import (
    gather_nograd,
    gather_sizes,
    gather_with_grad,
    rank_offset,
    row_mean,
    sum_over_ranks,
    with_global_value,
    world_size,
)


def _logit_dtype(x: torch.Tensor) -> torch.Tensor:
    # Scores divided by τ = 0.02 reach ±50; bf16/fp16 would round them to ~0.25, so softmax math runs in ≥ fp32.
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _check_tau(tau: float) -> None:
    if not tau > 0:
        raise ConfigError(f"temperature must be > 0, got {tau}")


def _shapes(q: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    if q.dim() != 2:
        raise ValueError(f"q must be [b, d], got {tuple(q.shape)}")
    b, d = q.shape
    if pos.dim() == 2:
        pos = pos.unsqueeze(1)
    if neg is None:
        neg = q.new_zeros(b, 0, d)
    elif neg.dim() == 2:
        neg = neg.unsqueeze(1)
    if pos.dim() != 3 or pos.shape[0] != b or pos.shape[2] != d or pos.shape[1] < 1:
        raise ValueError(f"pos must be [b={b}, P>=1, d={d}], got {tuple(pos.shape)}")
    if neg.dim() != 3 or neg.shape[0] != b or neg.shape[2] != d:
        raise ValueError(f"neg must be [b={b}, N, d={d}], got {tuple(neg.shape)}")
    return pos, neg


def ir_infonce_loss(
    q: torch.Tensor,
    pos: torch.Tensor,
    neg: torch.Tensor | None = None,
    *,
    tau: float = 0.02,
    joint_softmax: bool = False,
    symmetric: bool = False,
    fn_margin: float | None = None,
    pos_ids: torch.Tensor | None = None,
    neg_ids: torch.Tensor | None = None,
    gather: bool = False,
    normalize: bool = False,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Multi-positive InfoNCE for retrieval; see the module docstring for the formula and every option."""
    _check_tau(tau)
    pos, neg = _shapes(q, pos, neg)
    if normalize:
        q, pos, neg = F.normalize(q, dim=-1), F.normalize(pos, dim=-1), F.normalize(neg, dim=-1)
    b, P, d = pos.shape
    N = neg.shape[1]
    use_ids = pos_ids is not None
    if use_ids:
        if tuple(pos_ids.shape) != (b, P):
            raise ValueError(f"pos_ids must be [b={b}, P={P}], got {tuple(pos_ids.shape)}")
        if neg_ids is None:
            if N:
                raise ValueError("neg_ids is required with pos_ids when hard negatives are given")
            neg_ids = pos_ids.new_zeros(b, 0)
        if tuple(neg_ids.shape) != (b, N):
            raise ValueError(f"neg_ids must be [b={b}, N={N}], got {tuple(neg_ids.shape)}")

    # Candidates come from every rank; anchors (rows) stay local. Labels are offset by the lower ranks' queries.
    gathering = gather and world_size() > 1
    sizes = gather_sizes(b, q.device) if gathering else [b]
    B = sum(sizes)  # queries in the global batch
    offset = rank_offset(sizes) if gathering else 0
    pos_all = gather_with_grad(pos, sizes) if gathering else pos
    neg_all = gather_with_grad(neg, sizes) if gathering else neg
    rows = torch.arange(b, device=q.device) + offset  # own query index among the B global queries
    if use_ids:
        pos_ids_all = gather_nograd(pos_ids, sizes) if gathering else pos_ids
        neg_ids_all = gather_nograd(neg_ids, sizes) if gathering else neg_ids

    # Sums over this rank's rows; row_mean / _finish turn them into global means (see distributed.py).
    s_neg = q @ neg_all.reshape(B * N, d).T  # [b, B·N], query-major: column k·N + n = d⁻_{k,n}
    parts: dict[str, tuple[torch.Tensor, int]] = {}  # name -> (local sum, global number of rows)

    if not joint_softmax:
        s_pos = torch.einsum("id,kjd->ijk", q, pos_all)  # [b, P, B]: s(q_i, d⁺_{k,j})
        logits = _logit_dtype(torch.cat([s_pos, s_neg.unsqueeze(1).expand(b, P, B * N)], dim=-1))  # [b, P, C]
        label_col = rows.view(b, 1, 1).expand(b, P, 1)
        if fn_margin is not None or use_ids:
            with torch.no_grad():
                mask = torch.zeros_like(logits, dtype=torch.bool)
                if fn_margin is not None:
                    mask |= logits > logits.gather(-1, label_col) + fn_margin
                if use_ids:
                    # candidate ids per slot j: [the j-th positives' ids of all queries | all negatives' ids]
                    cand_ids = torch.cat([pos_ids_all.T, neg_ids_all.reshape(1, -1).expand(P, -1)], dim=1)  # [P, C]
                    mask |= (cand_ids.view(1, P, -1, 1) == pos_ids.view(b, 1, 1, P)).any(-1)
                mask.scatter_(-1, label_col, False)
            logits = logits.masked_fill(mask, float("-inf"))
            parts["masked"] = (mask.sum().to(logits.dtype), B * P)
        flat = logits.reshape(b * P, -1) / tau
        labels = rows.repeat_interleave(P)  # row i·P + j is (query i, slot j); its label is query i's column
        parts["q2d"] = (F.cross_entropy(flat, labels, reduction="sum"), B * P)
        parts["acc"] = ((flat.argmax(-1) == labels).sum().to(flat.dtype), B * P)
    else:
        s_pos = q @ pos_all.reshape(B * P, d).T  # [b, B·P], column k·P + j = d⁺_{k,j}
        logits = _logit_dtype(torch.cat([s_pos, s_neg], dim=-1))  # [b, C]
        own = torch.zeros_like(logits, dtype=torch.bool)
        own_cols = rows.view(b, 1) * P + torch.arange(P, device=q.device).view(1, P)  # [b, P]
        own.scatter_(1, own_cols, True)
        if fn_margin is not None or use_ids:
            with torch.no_grad():
                mask = torch.zeros_like(own)
                if fn_margin is not None:
                    best_pos = logits.gather(1, own_cols).max(dim=1, keepdim=True).values
                    mask |= logits > best_pos + fn_margin
                if use_ids:
                    cand_ids = torch.cat([pos_ids_all.reshape(-1), neg_ids_all.reshape(-1)])  # [C]
                    mask |= (cand_ids.view(1, -1, 1) == pos_ids.view(b, 1, P)).any(-1)
                mask &= ~own
            logits = logits.masked_fill(mask, float("-inf"))
            parts["masked"] = (mask.sum().to(logits.dtype), B)
        z = logits / tau
        parts["q2d"] = ((z.logsumexp(-1) - z.masked_fill(~own, float("-inf")).logsumexp(-1)).sum(), B)
        parts["acc"] = (own.gather(1, z.argmax(-1, keepdim=True)).sum().to(z.dtype), B)

    total = row_mean(*parts["q2d"], gathering)
    weights = {"q2d": 1.0}
    if symmetric:
        q_all = gather_with_grad(q, sizes) if gathering else q
        s_dq = _logit_dtype(torch.einsum("ijd,kd->ijk", pos, q_all))  # [b, P, B]: s(d⁺_{i,j}, q_k)
        label_col = rows.view(b, 1, 1).expand(b, P, 1)
        if fn_margin is not None or use_ids:
            with torch.no_grad():
                mask = torch.zeros_like(s_dq, dtype=torch.bool)
                if fn_margin is not None:
                    mask |= s_dq > s_dq.gather(-1, label_col) + fn_margin
                if use_ids:
                    mask |= (pos_ids.view(b, P, 1, 1) == pos_ids_all.view(1, 1, B, P)).any(-1)
                mask.scatter_(-1, label_col, False)
            s_dq = s_dq.masked_fill(mask, float("-inf"))
        parts["d2q"] = (F.cross_entropy(s_dq.reshape(b * P, B) / tau, rows.repeat_interleave(P), reduction="sum"),
                        B * P)
        total = 0.5 * (total + row_mean(*parts["d2q"], gathering))
        weights = {"q2d": 0.5, "d2q": 0.5}
    return _finish(total, parts, weights, gathering)


def _finish(total: torch.Tensor, parts: dict[str, tuple[torch.Tensor, int]], weights: dict[str, float],
            gathering: bool) -> tuple[torch.Tensor, dict[str, float]]:
    """Global means of every part (one all-reduce of the local sums), the loss value Σ weights · means, and the loss
    tensor carrying that value with the local gradient (``total`` = the same combination of ``row_mean`` terms)."""
    names = list(parts)
    local = torch.stack([parts[k][0].detach().to(torch.float64) for k in names])
    sums = sum_over_ranks(local) if gathering else local
    comps = {k: float(v) / max(parts[k][1], 1) for k, v in zip(names, sums.tolist())}
    value = sum(w * comps[k] for k, w in weights.items())
    if not gathering:
        return total, {"loss": float(total.detach()), **comps}
    loss = with_global_value(total, torch.tensor(value, dtype=total.dtype, device=total.device))
    return loss, {"loss": value, **comps}
