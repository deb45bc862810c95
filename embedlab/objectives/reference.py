"""Slow, obviously-correct references for the objectives: Python loops over anchors, slots, pairs and candidates.

They follow the formulas in the module docstrings of ir.py, sts.py and unsupervised.py word for word (one list of
candidate scores per anchor, one softmax per list) and exist only to check the vectorised versions — the tests compare
values and gradients on random inputs, and benchmarks/pro_loss.py times PRO against ``pro_reference``. Single-process
only (they see the whole, already concatenated batch). Never used in training.
"""
from __future__ import annotations

import torch


def _lse(xs: list[torch.Tensor]) -> torch.Tensor:
    return torch.logsumexp(torch.stack(xs), dim=0)


def _dot(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (x * y).sum()


def ir_infonce_reference(q, pos, neg, *, tau=0.02, joint_softmax=False, symmetric=False, fn_margin=None,
                         pos_ids=None, neg_ids=None) -> torch.Tensor:
    """q [B, d], pos [B, P, d], neg [B, N, d] — the whole global batch."""
    B, P, _ = pos.shape
    N = neg.shape[1]
    ids = pos_ids is not None
    own_ids = [set(pos_ids[i].tolist()) for i in range(B)] if ids else None

    def drop(score, ref_score, cand_id, i) -> bool:
        if fn_margin is not None and score.item() > ref_score.item() + fn_margin:
            return True
        return ids and cand_id in own_ids[i]

    terms = []
    if not joint_softmax:
        for j in range(P):
            for i in range(B):
                # C_j: the j-th positive of every query, then every hard negative (query-major)
                cands = [(pos[k, j], pos_ids[k, j].item() if ids else None, k == i) for k in range(B)]
                cands += [(neg[k, n], neg_ids[k, n].item() if ids else None, False) for k in range(B) for n in range(N)]
                label_score = _dot(q[i], pos[i, j])
                logits, label = [], None
                for c, cid, is_label in cands:
                    score = _dot(q[i], c)
                    if not is_label and drop(score, label_score, cid, i):
                        continue
                    if is_label:
                        label = len(logits)
                    logits.append(score / tau)
                terms.append(_lse(logits) - logits[label])
    else:
        for i in range(B):
            own = [_dot(q[i], pos[i, j]) for j in range(P)]
            best = max(own, key=lambda t: t.item())
            others = [(pos[k, j], pos_ids[k, j].item() if ids else None) for k in range(B) if k != i for j in range(P)]
            others += [(neg[k, n], neg_ids[k, n].item() if ids else None) for k in range(B) for n in range(N)]
            num = [s / tau for s in own]
            den = list(num)
            for c, cid in others:
                score = _dot(q[i], c)
                if not drop(score, best, cid, i):
                    den.append(score / tau)
            terms.append(_lse(den) - _lse(num))
    q2d = torch.stack(terms).mean()
    if not symmetric:
        return q2d
    terms = []
    for i in range(B):
        for j in range(P):
            d = pos[i, j]
            label_score = _dot(d, q[i])
            logits, label = [], None
            for k in range(B):
                score = _dot(d, q[k])
                if k != i:
                    if fn_margin is not None and score.item() > label_score.item() + fn_margin:
                        continue
                    if ids and pos_ids[i, j].item() in own_ids[k]:
                        continue
                else:
                    label = len(logits)
                logits.append(score / tau)
            terms.append(_lse(logits) - logits[label])
    return 0.5 * (q2d + torch.stack(terms).mean())


def pair_infonce_reference(anchor, positive, negatives=None, *, tau=0.05, symmetric=False) -> torch.Tensor:
    B = anchor.shape[0]
    extra = [] if negatives is None else list(negatives)
    terms = []
    for i in range(B):
        logits = [_dot(anchor[i], positive[k]) / tau for k in range(B)] + [_dot(anchor[i], c) / tau for c in extra]
        terms.append(_lse(logits) - logits[i])
    a2p = torch.stack(terms).mean()
    if not symmetric:
        return a2p
    terms = []
    for i in range(B):
        logits = [_dot(positive[i], anchor[k]) / tau for k in range(B)]
        terms.append(_lse(logits) - logits[i])
    return 0.5 * (a2p + torch.stack(terms).mean())


def pearson_reference(scores, labels) -> torch.Tensor:
    n = len(scores)
    y = [float(v) for v in labels]
    if n < 2 or max(y) == min(y):
        return scores.sum() * 0
    ms = sum(scores[i] for i in range(n)) / n
    my = sum(y) / n
    cov = sum((scores[i] - ms) * (y[i] - my) for i in range(n)) / n
    var_s = sum((scores[i] - ms) ** 2 for i in range(n)) / n
    var_y = sum((v - my) ** 2 for v in y) / n
    return 1 - cov / torch.sqrt(var_s * var_y)


def average_ranks_desc_reference(labels) -> list[float]:
    """Sort descending, walk runs of equal values, give each run the mean of its 0-based positions."""
    y = [float(v) for v in labels]
    order = sorted(range(len(y)), key=lambda i: -y[i])
    ranks = [0.0] * len(y)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and y[order[end + 1]] == y[order[start]]:
            end += 1
        for m in range(start, end + 1):
            ranks[order[m]] = (start + end) / 2
        start = end + 1
    return ranks


def rank_kl_reference(scores, labels, tau=0.05) -> torch.Tensor:
    n = len(scores)
    if n < 2:
        return scores.sum() * 0
    ranks = average_ranks_desc_reference(labels)
    t = torch.tensor([(n - 1 - r) / (n - 1) for r in ranks], dtype=scores.dtype)
    log_p = torch.log_softmax(t / tau, dim=0)
    log_q = torch.log_softmax(scores / tau, dim=0)
    return sum(log_p[i].exp() * (log_p[i] - log_q[i]) for i in range(n)) / n


def pro_reference(scores, labels, tau=0.05) -> torch.Tensor:
    """PRO exactly as described: sort by y descending; for each k the later pairs with strictly lower y; ..."""
    y = [float(v) for v in labels]
    order = sorted(range(len(y)), key=lambda i: -y[i])
    losses = []
    for pos_k, k in enumerate(order):
        later = [j for j in order[pos_k + 1:] if y[j] < y[k]]
        if not later:
            continue
        w = [y[k] - y[j] for j in later]
        w_k = max(w)
        logits = torch.stack([w_k * scores[k] / tau] + [w_j * scores[j] / tau for w_j, j in zip(w, later)])
        losses.append(-torch.log_softmax(logits, dim=0)[0])
    if not losses:
        return scores.sum() * 0
    return torch.stack(losses).mean()


def cosent_reference(scores, labels, tau=0.05) -> torch.Tensor:
    n = len(scores)
    total = torch.ones((), dtype=scores.dtype)
    for i in range(n):
        for j in range(n):
            if labels[i] > labels[j]:
                total = total + torch.exp((scores[j] - scores[i]) / tau)
    return torch.log(total)


def mid_infonce_reference(m1, m2, labels, threshold=1.0, tau=0.02) -> torch.Tensor:
    terms = []
    for i in range(len(labels)):
        if labels[i] >= threshold:
            logits = [_dot(m1[i], m2[k]) / tau for k in range(len(labels))]
            terms.append(_lse(logits) - logits[i])
    if not terms:
        return (m1.sum() + m2.sum()) * 0
    return torch.stack(terms).mean()
