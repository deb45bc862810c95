"""STS losses: vectorised vs loop references on random inputs with tied labels (values and gradients), known values,
degenerate lists (no NaN), and the CoDiEmb combination."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from embedlab.errors import ConfigError
from embedlab.objectives import (
    STS_PAPER_WEIGHTS,
    codiemb_sts_loss,
    cosent_loss,
    cosent_sts_loss,
    mid_infonce_loss,
    pearson_loss,
    pro_loss,
    rank_kl_loss,
)
from embedlab.objectives.reference import (
    average_ranks_desc_reference,
    cosent_reference,
    mid_infonce_reference,
    pearson_reference,
    pro_reference,
    rank_kl_reference,
)
from embedlab.objectives.sts import average_ranks_desc


def scores_and_labels(n, seed, levels=6):
    """Cosine-like scores in [-1, 1] and labels on a coarse grid (0, 0.2, ..., 1) so ties are common."""
    g = torch.Generator().manual_seed(seed)
    s = (torch.rand(n, generator=g, dtype=torch.float64) * 2 - 1).requires_grad_(True)
    y = torch.randint(0, levels, (n,), generator=g).double() / (levels - 1)
    return s, y


SCORE_LOSSES = [
    (pearson_loss, pearson_reference),
    (rank_kl_loss, rank_kl_reference),
    (pro_loss, pro_reference),
    (cosent_loss, cosent_reference),
]


@pytest.mark.parametrize("fn,ref", SCORE_LOSSES, ids=lambda f: getattr(f, "__name__", ""))
@pytest.mark.parametrize("n,seed,levels", [(2, 0, 6), (7, 1, 3), (16, 2, 6), (33, 3, 4), (40, 4, 40)])
def test_score_losses_match_loop_reference(fn, ref, n, seed, levels):
    s, y = scores_and_labels(n, seed, levels)
    out, expected = fn(s, y), ref(s, y)
    assert out.item() == pytest.approx(expected.item(), abs=1e-10, rel=1e-9)
    (g,) = torch.autograd.grad(out, s)
    (gr,) = torch.autograd.grad(expected, s) if expected.requires_grad else (torch.zeros_like(s),)
    torch.testing.assert_close(g, gr, atol=1e-10, rtol=1e-8)


@pytest.mark.parametrize("seed", range(5))
def test_pro_with_many_ties_and_custom_tau(seed):
    s, y = scores_and_labels(25, seed + 10, levels=3)
    for tau in (0.05, 0.5):
        a, b = pro_loss(s, y, tau), pro_reference(s, y, tau)
        assert a.item() == pytest.approx(b.item(), rel=1e-10)
        torch.testing.assert_close(torch.autograd.grad(a, s)[0], torch.autograd.grad(b, s)[0], atol=1e-10, rtol=1e-8)


def test_average_ranks_match_reference_and_scipy():
    from scipy.stats import rankdata

    for seed in range(4):
        _, y = scores_and_labels(30, seed, levels=5)
        mine = average_ranks_desc(y)
        assert mine.tolist() == average_ranks_desc_reference(y)
        assert mine.tolist() == (rankdata(-y.numpy(), method="average") - 1).tolist()


# ---- known values ---------------------------------------------------------------------------------------------

def test_pearson_known_values():
    y = torch.tensor([0.0, 0.2, 0.5, 0.9, 1.0], dtype=torch.float64)
    assert pearson_loss(2 * y + 0.1, y).item() == pytest.approx(0.0, abs=1e-12)
    assert pearson_loss(-3 * y, y).item() == pytest.approx(2.0, abs=1e-12)


def test_pearson_degenerate_lists_give_no_nan():
    s = torch.tensor([0.3, 0.5, 0.1], requires_grad=True)
    constant_y = torch.full((3,), 0.6)  # 0.6 is not exactly representable: the mean is off by one ulp
    loss = pearson_loss(s, constant_y)
    assert loss.item() == 0.0
    (g,) = torch.autograd.grad(loss, s)
    assert torch.equal(g, torch.zeros_like(s))
    constant_s = torch.full((3,), 0.4, requires_grad=True)
    loss = pearson_loss(constant_s, torch.tensor([0.0, 0.5, 1.0]))
    assert loss.item() == pytest.approx(1.0)
    assert torch.isfinite(torch.autograd.grad(loss, constant_s)[0]).all()
    one = torch.tensor([0.3], requires_grad=True)
    assert pearson_loss(one, torch.tensor([1.0])).item() == 0.0


def test_rank_kl_known_values():
    y = torch.tensor([1.0, 0.4, 0.4, 0.0, 0.8], dtype=torch.float64)
    n = 5
    t = (n - 1 - average_ranks_desc(y)) / (n - 1)
    assert rank_kl_loss(t + 0.3, y).item() == pytest.approx(0.0, abs=1e-12)  # Q = P exactly (shift-invariant)
    same_order = rank_kl_loss(0.5 * t, y).item()
    reversed_order = rank_kl_loss(-t, y).item()
    assert same_order < 0.5 and reversed_order > 10 * same_order
    # tie-aware: the two tied labels get the same target, so equal scores for them cost nothing extra
    assert average_ranks_desc(y).tolist() == [0.0, 2.5, 2.5, 4.0, 1.0]


def test_cosent_known_values():
    s = torch.tensor([0.9, 0.1], dtype=torch.float64)
    assert cosent_loss(s, torch.tensor([1.0, 0.0])).item() == pytest.approx(math.log1p(math.exp(-16.0)), rel=1e-12)
    assert cosent_loss(s, torch.tensor([0.0, 1.0])).item() == pytest.approx(math.log1p(math.exp(16.0)), rel=1e-12)
    # three pairs, y = (1, .5, 0), ŝ = (.6, .5, .7): ordered pairs (0,1), (0,2), (1,2)
    s = torch.tensor([0.6, 0.5, 0.7], dtype=torch.float64)
    expected = math.log(1 + math.exp(-0.1 / 0.05) + math.exp(0.1 / 0.05) + math.exp(0.2 / 0.05))
    assert cosent_loss(s, torch.tensor([1.0, 0.5, 0.0])).item() == pytest.approx(expected, rel=1e-12)
    assert cosent_loss(s, torch.tensor([0.5, 0.5, 0.5])).item() == 0.0


def test_cosent_equals_sentence_transformers():
    try:
        from sentence_transformers.sentence_transformer.losses import CoSENTLoss
    except ImportError:  # sentence-transformers < 6
        from sentence_transformers.losses import CoSENTLoss

    g = torch.Generator().manual_seed(0)
    e1, e2 = torch.randn(12, 8, generator=g), torch.randn(12, 8, generator=g)
    y = torch.randint(0, 4, (12,), generator=g).float()
    theirs = CoSENTLoss(model=None, scale=20.0).compute_loss_from_embeddings([e1, e2], y)
    mine, parts = cosent_sts_loss(e1, e2, y, normalize=True)
    assert mine.item() == pytest.approx(theirs.item(), rel=1e-5)
    assert set(parts) == {"loss", "cosent"}


def test_pro_degenerate_lists():
    s = torch.tensor([0.2, 0.9, 0.4], requires_grad=True)
    loss = pro_loss(s, torch.full((3,), 0.5))
    assert loss.item() == 0.0 and torch.equal(torch.autograd.grad(loss, s)[0], torch.zeros(3))
    assert pro_loss(s[:1], torch.tensor([1.0])).item() == 0.0


def test_pro_prefers_correct_order():
    y = torch.linspace(0, 1, 10, dtype=torch.float64)
    assert pro_loss(y.clone(), y).item() < pro_loss(y.flip(0), y).item()


def test_mid_infonce_matches_reference():
    g = torch.Generator().manual_seed(5)
    m1 = F.normalize(torch.randn(9, 6, generator=g, dtype=torch.float64), dim=-1).requires_grad_(True)
    m2 = F.normalize(torch.randn(9, 6, generator=g, dtype=torch.float64), dim=-1).requires_grad_(True)
    y = torch.tensor([1.0, 0.2, 1.0, 0.8, 0.0, 1.0, 0.4, 0.6, 0.9], dtype=torch.float64)
    for thr in (1.0, 0.75):
        a, b = mid_infonce_loss(m1, m2, y, threshold=thr), mid_infonce_reference(m1, m2, y, threshold=thr)
        assert a.item() == pytest.approx(b.item(), rel=1e-10)
        for ga, gb in zip(torch.autograd.grad(a, (m1, m2)), torch.autograd.grad(b, (m1, m2))):
            torch.testing.assert_close(ga, gb, atol=1e-10, rtol=1e-8)
    none = mid_infonce_loss(m1, m2, torch.zeros(9, dtype=torch.float64))
    assert none.item() == 0.0 and all(torch.isfinite(t).all() for t in torch.autograd.grad(none, (m1, m2)))


# ---- the CoDiEmb combination ------------------------------------------------------------------------------------

def _sts_batch(n=12, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    t = [F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=-1).requires_grad_(True)
         for _ in range(4)]
    y = torch.tensor([1.0, 0.8, 0.8, 0.2, 0.0, 1.0, 0.4, 0.6, 0.4, 1.0, 0.0, 0.6], dtype=torch.float64)[:n]
    return t[0], t[1], y, t[2], t[3]


def test_codiemb_sts_loss_is_the_weighted_sum():
    e1, e2, y, m1, m2 = _sts_batch()
    total, parts = codiemb_sts_loss(e1, e2, y, mid1=m1, mid2=m2)
    s = (e1 * e2).sum(-1)
    expected = (1 * mid_infonce_reference(m1, m2, y) + 0.5 * pro_reference(s, y) + 2 * pearson_reference(s, y)
                + 5 * rank_kl_reference(s, y))
    assert total.item() == pytest.approx(expected.item(), rel=1e-10)
    assert set(parts) == {"loss", "mid_nce", "pro", "pearson", "rank_kl"}
    assert parts["loss"] == pytest.approx(sum(STS_PAPER_WEIGHTS[k] * parts[k] for k in STS_PAPER_WEIGHTS), rel=1e-10)
    for g in torch.autograd.grad(total, (e1, e2, m1, m2)):
        assert torch.isfinite(g).all() and g.abs().sum() > 0


def test_codiemb_sts_weights_replace_defaults():
    e1, e2, y, _, _ = _sts_batch()
    total, parts = codiemb_sts_loss(e1, e2, y, weights={"pro": 1.0, "cosent": 0.5, "pearson": 0})
    assert set(parts) == {"loss", "pro", "cosent"}  # zero weights are not computed; no mid-layer inputs needed
    assert parts["loss"] == pytest.approx(parts["pro"] + 0.5 * parts["cosent"], rel=1e-12)


def test_codiemb_sts_errors():
    e1, e2, y, _, _ = _sts_batch()
    with pytest.raises(ValueError, match="mid1/mid2"):
        codiemb_sts_loss(e1, e2, y)
    with pytest.raises(ConfigError, match="rank_kll"):
        codiemb_sts_loss(e1, e2, y, weights={"rank_kll": 1.0})
    with pytest.raises(ValueError, match=r"\[n\]"):
        pro_loss(torch.zeros(3), torch.zeros(4))
