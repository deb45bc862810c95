"""CSE-SFP's loss: against an explicit loop, its options, and — on a tiny decoder — the single forward pass against
explicit per-sentence forward passes (Rep1 of the full prompt = the last state of the prefix alone: causal view)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from embedlab.objectives import single_pass_loss


def unit(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g, dtype=torch.float64), dim=-1).requires_grad_(True)


def reference(rep2, rep1, tau=0.05, symmetric=False, in_view=False):
    """One sentence at a time, the obviously-correct way."""
    def direction(a, p):
        total = 0.0
        for i in range(len(a)):
            cands = [a[i] @ p[k] / tau for k in range(len(a))]
            if in_view:
                cands += [a[i] @ a[k] / tau for k in range(len(a)) if k != i]
            total = total - (a[i] @ p[i] / tau - torch.logsumexp(torch.stack(cands), 0))
        return total / len(a)
    loss = direction(rep2, rep1)
    return 0.5 * (loss + direction(rep1, rep2)) if symmetric else loss


@pytest.mark.parametrize("symmetric,in_view", [(False, False), (True, False), (False, True), (True, True)])
def test_equals_the_loop(symmetric, in_view):
    r2, r1 = unit(7, 16, seed=1), unit(7, 16, seed=2)
    loss, parts = single_pass_loss(r2, r1, symmetric=symmetric, in_view_negatives=in_view)
    ref = reference(r2, r1, symmetric=symmetric, in_view=in_view)
    assert loss.item() == pytest.approx(ref.item(), rel=1e-12)
    g, = torch.autograd.grad(loss, r2)
    g_ref, = torch.autograd.grad(ref, r2)
    assert torch.allclose(g, g_ref, atol=1e-12)
    assert parts["loss"] == pytest.approx(loss.item())


def test_known_values():
    # Identical views far apart from the others: loss -> 0, accuracy 1.
    eye = torch.eye(4, dtype=torch.float64)
    loss, parts = single_pass_loss(eye, eye.clone(), tau=0.01)
    assert loss.item() < 1e-30 and parts["acc"] == 1.0
    # All views identical: every candidate ties -> log B.
    same = F.normalize(torch.ones(5, 3, dtype=torch.float64), dim=-1)
    assert single_pass_loss(same, same.clone())[0].item() == pytest.approx(math.log(5))
    # In-view negatives never include the anchor itself (otherwise it would beat the positive: loss >> 0).
    assert single_pass_loss(eye, eye.clone(), tau=0.01, in_view_negatives=True)[0].item() < 1e-30


def test_single_forward_pass_equals_per_sentence_forwards(tiny_llama):
    """Rep1 and Rep2 taken from one batched forward pass of the two-slot template equal the last hidden states of
    separate forwards of (a) the text up to slot 1 alone and (b) the whole text alone — so the loss built from the
    single pass equals the loss built from explicit per-sentence passes."""
    from embedlab.text import Embedder

    backbone, tok = tiny_llama
    tok.bos_token = "[CLS]"
    model = Embedder(backbone, tok, max_length=64, is_decoder=True, template="csesfp_llama")
    texts = ["a man plays a guitar", "two dogs run in a park", "cats", "the sky is blue today"]
    with torch.no_grad():
        reps = model.forward_slots(model.tokenize(texts))
        single = single_pass_loss(reps["rep2"].double(), reps["rep1"].double())[0]
        rep1, rep2 = [], []
        for t in texts:
            full, pos = model.template.render(t)
            for cut, out in ((pos["rep1"], rep1), (len(full), rep2)):
                ids = model._template_encoder._ids([full[:cut]])[0]
                states = backbone(input_ids=torch.tensor([ids])).last_hidden_state
                out.append(F.normalize(states[0, -1], dim=-1))
        explicit = single_pass_loss(torch.stack(rep2).double(), torch.stack(rep1).double())[0]
    assert torch.allclose(reps["rep1"], torch.stack(rep1), atol=1e-5)
    assert torch.allclose(reps["rep2"], torch.stack(rep2), atol=1e-5)
    assert single.item() == pytest.approx(explicit.item(), abs=1e-5)
