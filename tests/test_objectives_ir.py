"""IR and pair InfoNCE losses: vectorised vs loop references (values and gradients), the column-order guard, options,
and every registered loss on random inputs of its kind."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from embedlab.errors import ConfigError
from embedlab.objectives import LOSSES, infonce_loss, ir_infonce_loss, naive_infonce_loss
from embedlab.objectives.reference import ir_infonce_reference, pair_infonce_reference


def unit(*shape, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g, dtype=dtype), dim=-1).requires_grad_(True)


def grads(value, *xs):
    return torch.autograd.grad(value, xs, allow_unused=True, materialize_grads=True)


def ids_with_duplicates(B, P, N, seed=0):
    """Text ids drawn from a small pool, so positives recur as other queries' positives and as hard negatives."""
    g = torch.Generator().manual_seed(seed)
    pool = 2 * B
    return torch.randint(0, pool, (B, P), generator=g), torch.randint(0, pool, (B, N), generator=g)


IR_CASES = [
    dict(),
    dict(joint_softmax=True),
    dict(symmetric=True),
    dict(fn_margin=0.05),
    dict(joint_softmax=True, fn_margin=0.0),
    dict(ids=True),
    dict(joint_softmax=True, ids=True),
    dict(symmetric=True, ids=True, fn_margin=0.1),
    dict(joint_softmax=True, symmetric=True, ids=True, fn_margin=0.0, tau=0.05),
]


@pytest.mark.parametrize("opts", IR_CASES, ids=lambda o: ",".join(o) or "paper")
@pytest.mark.parametrize("P,N", [(2, 4), (1, 0), (3, 1)])
def test_ir_loss_matches_loop_reference(opts, P, N):
    B, d = 5, 6
    q, pos, neg = unit(B, d, seed=1), unit(B, P, d, seed=2), unit(B, N, d, seed=3)
    # make a few candidates score above the positive, so margin masking has something to do
    if N:
        with torch.no_grad():
            neg[:, :1].copy_(F.normalize(q.unsqueeze(1) + 0.1 * neg[:, :1], dim=-1))
    opts = dict(opts)
    if opts.pop("ids", False):
        opts["pos_ids"], opts["neg_ids"] = ids_with_duplicates(B, P, N)
    loss, parts = ir_infonce_loss(q, pos, neg, **opts)
    ref = ir_infonce_reference(q, pos, neg, **opts)
    assert loss.item() == pytest.approx(ref.item(), abs=1e-10, rel=1e-10)
    assert parts["loss"] == pytest.approx(loss.item(), rel=1e-12)
    for g, gr in zip(grads(loss, q, pos, neg), grads(ref, q, pos, neg)):
        torch.testing.assert_close(g, gr, atol=1e-10, rtol=1e-8)
        assert torch.isfinite(g).all()


def test_masking_actually_masks():
    B, P, N, d = 4, 2, 4, 6
    q, pos, neg = unit(B, d, seed=1), unit(B, P, d, seed=2), unit(B, N, d, seed=3)
    # every query's first hard negative is a copy of its first positive (same text id): a false negative
    pos_ids = torch.arange(B * P).view(B, P)
    neg_ids = 100 + torch.arange(B * N).view(B, N)
    with torch.no_grad():
        neg[:, 0] = pos[:, 0]
    neg_ids[:, 0] = pos_ids[:, 0]
    plain, _ = ir_infonce_loss(q, pos, neg)
    masked, parts = ir_infonce_loss(q, pos, neg, pos_ids=pos_ids, neg_ids=neg_ids)
    # one masked candidate per row: in slot 0 it duplicates the label; in slot 1 it is still one of q_i's positives
    assert parts["masked"] == pytest.approx(1.0)
    assert masked.item() < plain.item()


def test_joint_equals_slot_form_with_one_positive():
    q, pos, neg = unit(6, 5, seed=4), unit(6, 1, 5, seed=5), unit(6, 3, 5, seed=6)
    a, _ = ir_infonce_loss(q, pos, neg)
    b, _ = ir_infonce_loss(q, pos, neg, joint_softmax=True)
    assert a.item() == pytest.approx(b.item(), rel=1e-12)
    c, _ = ir_infonce_loss(q, pos[:, 0], neg)  # [b, d] positives read as P = 1
    assert c.item() == pytest.approx(a.item(), rel=1e-12)


def _buggy_ir_loss(q, pos, neg, tau=0.02):
    """The column-order mistake: labels index the flattened candidate list as if it were [hard negatives | positives]
    (points each query at its own first hard negative). Used to prove the guard below would catch it."""
    b, P, d = pos.shape
    N = neg.shape[1]
    losses = []
    for j in range(P):
        logits = torch.cat([q @ pos[:, j].T, q @ neg.reshape(-1, d).T], dim=1) / tau
        losses.append(F.cross_entropy(logits, b + torch.arange(b) * N))
    return torch.stack(losses).mean(), {}


def _column_order_guard_holds(loss_fn) -> bool:
    """Queries equal to their first positive, other positives near it, hard negatives random: a correct loss is
    already low, puts its top score on a positive, and a gradient step moves q towards its positives and away from
    its hard negatives."""
    B, P, N, d = 6, 2, 4, 16
    pos = unit(B, P, d, seed=7).detach()
    with torch.no_grad():
        pos[:, 1] = F.normalize(pos[:, 0] + 0.3 * pos[:, 1], dim=-1)
    neg = unit(B, N, d, seed=8).detach()
    q = pos[:, 0].clone().requires_grad_(True)
    loss, _ = loss_fn(q, pos, neg)
    (g,) = torch.autograd.grad(loss, q)
    q2 = F.normalize(q.detach() - 0.01 * g, dim=-1)
    moved_to_pos = ((q2.unsqueeze(1) * pos).sum(-1) - (q.detach().unsqueeze(1) * pos).sum(-1)).mean() > 0
    moved_from_neg = ((q2.unsqueeze(1) * neg).sum(-1) - (q.detach().unsqueeze(1) * neg).sum(-1)).mean() < 0
    return loss.item() < 1.0 and bool(moved_to_pos) and bool(moved_from_neg)


def test_column_order_guard():
    assert _column_order_guard_holds(ir_infonce_loss)
    assert _column_order_guard_holds(lambda q, p, n: ir_infonce_loss(q, p, n, joint_softmax=True))
    assert _column_order_guard_holds(lambda q, p, n: ir_infonce_loss(q, p, n, symmetric=True))
    assert not _column_order_guard_holds(_buggy_ir_loss)  # the guard has teeth


def test_label_points_at_own_positive_per_slot():
    """Each query's positives are copies of the query: loss ≈ 0 and accuracy 1 only if the label of every (i, j) row
    is its own positive (a label offset by one query, or into the hard negatives, scores ~0 instead of 1)."""
    B, N, d = 5, 4, 32
    q = unit(B, d, seed=9).detach()
    pos = torch.stack([q, q], dim=1).clone()  # both slots hold the query itself
    neg = unit(B, N, d, seed=10).detach()
    loss, parts = ir_infonce_loss(q, pos, neg)
    assert parts["acc"] == 1.0 and loss.item() < 1e-3


def test_pair_infonce_matches_reference():
    a, p, n = unit(7, 5, seed=11), unit(7, 5, seed=12), unit(4, 5, seed=13)
    for sym in (False, True):
        for negs in (None, n):
            loss, parts = naive_infonce_loss(a, p, negs, symmetric=sym)
            ref = pair_infonce_reference(a, p, negs, tau=0.02, symmetric=sym)
            assert loss.item() == pytest.approx(ref.item(), rel=1e-10)
            xs = (a, p) if negs is None else (a, p, n)
            for g, gr in zip(grads(loss, *xs), grads(ref, *xs)):
                torch.testing.assert_close(g, gr, atol=1e-10, rtol=1e-8)
    loss, _ = infonce_loss(a, p)
    assert loss.item() == pytest.approx(pair_infonce_reference(a, p, tau=0.05).item(), rel=1e-10)


def test_pair_infonce_known_value():
    # orthonormal anchors = positives: logits are 1/τ on the diagonal and 0 elsewhere
    e = torch.eye(4, dtype=torch.float64)
    loss, parts = infonce_loss(e, e)
    assert loss.item() == pytest.approx(math.log(1 + 3 * math.exp(-20.0)), rel=1e-9)
    assert parts["acc"] == 1.0


def test_low_precision_inputs_use_fp32_logits():
    q = unit(8, 16, seed=14, dtype=torch.float32).detach()
    pos = unit(8, 2, 16, seed=15, dtype=torch.float32).detach()
    neg = unit(8, 4, 16, seed=16, dtype=torch.float32).detach()
    full, _ = ir_infonce_loss(q, pos, neg)
    half, _ = ir_infonce_loss(q.bfloat16(), pos.bfloat16(), neg.bfloat16())
    assert half.dtype == torch.float32
    assert half.item() == pytest.approx(full.item(), rel=0.05)


def test_normalize_option():
    q, pos, neg = unit(4, 8, seed=17).detach(), unit(4, 2, 8, seed=18).detach(), unit(4, 3, 8, seed=19).detach()
    a, _ = ir_infonce_loss(q, pos, neg)
    b, _ = ir_infonce_loss(3 * q, 2 * pos, 5 * neg, normalize=True)
    assert a.item() == pytest.approx(b.item(), rel=1e-10)


def test_bad_inputs():
    q, pos, neg = unit(4, 8).detach(), unit(4, 2, 8).detach(), unit(4, 3, 8).detach()
    with pytest.raises(ConfigError, match="temperature"):
        ir_infonce_loss(q, pos, neg, tau=0.0)
    with pytest.raises(ValueError, match="pos must be"):
        ir_infonce_loss(q, pos[:3], neg)
    with pytest.raises(ValueError, match="neg_ids"):
        ir_infonce_loss(q, pos, neg, pos_ids=torch.zeros(4, 2, dtype=torch.long))


# ---- the registry: every entry runs on random inputs of its kind ------------------------------------------------

def _inputs(kind: str):
    if kind == "ir":
        return (unit(6, 2, 8, seed=20)[:, 0].detach().requires_grad_(True), unit(6, 2, 8, seed=21),
                unit(6, 4, 8, seed=22)), {}
    if kind == "pair":
        return (unit(6, 8, seed=23), unit(6, 8, seed=24), unit(3, 8, seed=25)), {}
    if kind == "views":
        return (unit(6, 8, seed=30), unit(6, 8, seed=31)), {}
    labels = torch.tensor([1.0, 0.8, 0.8, 0.2, 0.0, 1.0], dtype=torch.float64)
    mids = {"mid1": unit(6, 8, seed=28), "mid2": unit(6, 8, seed=29)}
    return (unit(6, 8, seed=26), unit(6, 8, seed=27), labels), mids


@pytest.mark.parametrize("name", LOSSES.names())
def test_registered_loss_runs(name):
    spec = LOSSES.get(name)
    args, kw = _inputs(spec.inputs)
    loss, parts = spec(*args, **kw)
    assert loss.dim() == 0 and torch.isfinite(loss)
    assert parts["loss"] == pytest.approx(loss.item(), rel=1e-9)
    assert all(isinstance(v, float) for v in parts.values())
    leaves = [t for t in list(args) + list(kw.values()) if t.requires_grad]
    for g in torch.autograd.grad(loss, leaves, allow_unused=True):
        assert g is None or torch.isfinite(g).all()
    assert spec.summary


def test_registry_bind_and_unknown_names():
    spec = LOSSES.get("ir_infonce").bind(tau=0.05, joint_softmax=True)
    q, pos, neg = unit(4, 8).detach(), unit(4, 2, 8).detach(), unit(4, 3, 8).detach()
    assert spec(q, pos, neg)[0].item() == pytest.approx(
        ir_infonce_loss(q, pos, neg, tau=0.05, joint_softmax=True)[0].item())
    with pytest.raises(ConfigError, match="temprature"):
        LOSSES.get("ir_infonce").bind(temprature=0.05)
    with pytest.raises(ConfigError, match="unknown loss"):
        LOSSES.get("no_such_loss")
