"""Length-grouped embedding in training steps: texts of very different lengths are embedded in groups of similar
length (far fewer padded tokens) with the same embeddings, losses and gradients as one padded batch; the group plan
is the cheapest split (checked against brute force)."""
from __future__ import annotations

import itertools
import random

import numpy as np
import pytest
import torch

from embedlab.config import load_recipe
from embedlab.text import Embedder
from embedlab.train import steps
from embedlab.train.steps import StepContext, make_sampler, run_step
from embedlab.train.trainer import load_recipe_sources

from tiny_training import recipe_file

plan = Embedder.plan_length_groups


def _cost(lengths, groups, overhead):
    return sum(len(g) * max(lengths[i] for i in g) for g in groups) + overhead * (len(groups) - 1)


def test_the_plan_is_a_partition_and_the_cheapest_split():
    rng = random.Random(0)
    for _ in range(200):
        n = rng.randint(1, 9)
        lengths = [rng.choice([3, 5, 8, 40, 41, 120, 256]) for _ in range(n)]
        overhead = rng.choice([0, 10, 100, 1000])
        groups = plan(lengths, overhead, max_groups=3)
        assert sorted(np.concatenate(groups).tolist()) == list(range(n)) and all(len(g) for g in groups)
        # brute force: every split of the sorted order into at most 3 consecutive groups
        order = sorted(range(n), key=lambda i: lengths[i])
        best = min(_cost(lengths, [order[a:b] for a, b in zip((0, *cuts), (*cuts, n))], overhead)
                   for k in range(3) for cuts in itertools.combinations(range(1, n), k))
        assert _cost(lengths, groups, overhead) == best


def test_a_few_long_texts_among_short_ones_are_split_off_and_equal_lengths_are_not():
    lengths = [256] * 8 + [20] * 120  # a naive mixed batch's negatives: a few SciFact abstracts, many NLI sentences
    groups = plan(lengths, 4096)
    assert [sorted(g.tolist()) for g in groups] == [list(range(8, 128)), list(range(8))]
    assert _cost(lengths, groups, 4096) < 0.5 * 128 * 256
    assert [g.tolist() for g in plan([30] * 5, 0)] == [list(range(5))]  # nothing to gain: one group, in order
    assert len(plan(lengths, 10 ** 9)) == 1  # a split that does not pay is not made


TEXTS = ["a cat", "the quick brown fox jumps over the lazy dog " * 5, "hi", "one two three four five six seven",
         "x " * 40, "short one"]


@pytest.mark.parametrize("fixture", ["tiny_bert", "tiny_llama"])  # right padding (encoder) and left (decoder)
def test_grouped_tokenisation_gives_the_same_embeddings(request, fixture):
    backbone, tok = request.getfixturevalue(fixture)
    model = Embedder(backbone, tok, max_length=64, name="tiny", is_decoder=fixture == "tiny_llama")
    whole = model(model.tokenize(TEXTS, prompt="query: "))
    groups = model.tokenize_groups(TEXTS, prompt="query: ", overhead_tokens=0)
    assert len(groups) > 1
    for idx, features in groups:
        assert torch.allclose(model(features), whole[torch.from_numpy(idx)], atol=1e-5)


def _loss_and_grads(recipe, sources, model, batch, overhead, monkeypatch, calls):
    monkeypatch.setattr(steps, "LENGTH_GROUP_OVERHEAD_TOKENS", overhead)
    original = Embedder.tokenize_groups

    def spy(self, *a, **kw):
        out = original(self, *a, **kw)
        calls.append(len(out))
        return out

    monkeypatch.setattr(Embedder, "tokenize_groups", spy)
    model.zero_grad(set_to_none=True)
    ctx = StepContext(recipe=recipe, model=model, sources=sources, device=torch.device("cpu"))
    result = run_step(ctx, batch, step=0)
    result.loss.backward()
    return result.loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("objective,sampler", [("codiemb", "single_task"), ("cosent", "single_task"),
                                               ("naive", "mixed"), ("codiemb", "mixed")])
def test_a_grouped_step_has_the_loss_and_gradients_of_one_padded_batch(train_root, monkeypatch, objective, sampler):
    recipe = load_recipe(recipe_file(train_root, objective=objective, sampler=sampler))
    sources = load_recipe_sources(recipe)
    model = Embedder.load(str(train_root / "tiny-model"), max_length=32)
    model.train(False)
    grouped_calls: list[int] = []
    for n, batch in zip(range(4), make_sampler(recipe, sources, rank=0, world=1)):
        loss_a, ga = _loss_and_grads(recipe, sources, model, batch, 10 ** 9, monkeypatch, [])
        loss_b, gb = _loss_and_grads(recipe, sources, model, batch, 0, monkeypatch, grouped_calls)
        assert loss_a == pytest.approx(loss_b, abs=1e-5)
        assert ga.keys() == gb.keys() and ga
        worst = max((ga[k] - gb[k]).abs().max().item() for k in ga)
        assert worst < 2e-5, f"largest gradient difference {worst:.2e}"
    assert max(grouped_calls) > 1  # the grouped path really split the texts
