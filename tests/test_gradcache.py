"""GradCache (train.gradcache_chunk): the same loss and gradients as one big batch, for every objective, with dropout
masks replayed; and a trainer run with it and gradient accumulation."""
from __future__ import annotations

import json

import pytest
import torch

from embedlab.config import load_recipe
from embedlab.text import Embedder
from embedlab.train.steps import StepContext, make_sampler, run_step
from embedlab.train.trainer import Trainer, load_recipe_sources

from tiny_training import recipe_file


def _first_batches(recipe, sources):
    """The first batch of each task (single-task sampler) or the first mixed batch."""
    found = {}
    for batch in make_sampler(recipe, sources, rank=0, world=1):
        key = getattr(batch, "task", "mixed") if recipe.sampler.kind != "mixed" else "mixed"
        found.setdefault(key, batch)
    return found


def _grads(recipe, sources, model, batch, chunk, train_mode, seed=5):
    model.zero_grad(set_to_none=True)
    model.train(train_mode)
    r = recipe.model_copy(deep=True)
    r.train.gradcache_chunk = chunk
    ctx = StepContext(recipe=r, model=model, sources=sources, device=torch.device("cpu"),
                      backward=lambda t: t.backward())
    torch.manual_seed(seed)
    result = run_step(ctx, batch, step=0)
    assert result.backward_done == (chunk is not None)
    if not result.backward_done:
        result.loss.backward()
    return result.loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _assert_same(a, b, atol=2e-5):
    (loss_a, ga), (loss_b, gb) = a, b
    assert loss_a == pytest.approx(loss_b, abs=1e-5)
    assert ga.keys() == gb.keys() and ga
    worst = max((ga[k] - gb[k]).abs().max().item() for k in ga)
    assert worst < atol, f"largest gradient difference {worst:.2e}"


@pytest.mark.parametrize("objective,sampler", [("codiemb", "single_task"), ("cosent", "single_task"),
                                               ("naive", "mixed")])
def test_gradcache_equals_one_big_batch(train_root, objective, sampler):
    recipe = load_recipe(recipe_file(train_root, objective=objective, sampler=sampler))
    sources = load_recipe_sources(recipe)
    model = Embedder.load(str(train_root / "tiny-model"), max_length=32)
    for batch in _first_batches(recipe, sources).values():
        # Without dropout: chunks of 3 (queries, positives+negatives, STS sides all split) = one big batch.
        _assert_same(_grads(recipe, sources, model, batch, None, False),
                     _grads(recipe, sources, model, batch, 3, False))
        # With dropout on: a chunk as large as the batch consumes the RNG like the plain path, so equal gradients
        # show that the second pass replays the first pass's dropout masks.
        _assert_same(_grads(recipe, sources, model, batch, None, True),
                     _grads(recipe, sources, model, batch, 1000, True))
        # ... and dropout really is active (another seed gives other gradients), so the check above has teeth.
        other = _grads(recipe, sources, model, batch, None, True, seed=6)
        with pytest.raises(AssertionError):
            _assert_same(_grads(recipe, sources, model, batch, None, True), other)


def test_trainer_runs_with_gradcache_and_accumulation(train_root):
    tmp = train_root
    recipe = load_recipe(recipe_file(tmp), ["train.gradcache_chunk=2", "train.grad_accum=2", "train.max_steps=3",
                                            "train.save_every=null", f"output_dir={tmp / 'gc'}"])
    final = Trainer(recipe, show_progress=False).train()
    assert (final / "modules.json").is_file()
    log = [json.loads(line) for line in open(tmp / "gc" / "train_log.jsonl")]
    assert len(log) == 3 and all(torch.isfinite(torch.tensor(r["loss"])) for r in log)
