"""The sentence-transformers peer: datasets built from the recipe's sources, per-task batch sizes, and a short run that
SentenceTransformer and embedlab can both load."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from embedlab.config import load_recipe
from embedlab.errors import ConfigError
from embedlab.text import Embedder
from embedlab.train import train_recipe
from embedlab.train.st_peer import _datasets, per_task_batch_sampler
from embedlab.train.trainer import load_recipe_sources

from tiny_training import recipe_file as _recipe_file


def test_datasets_follow_the_sources(train_root):
    recipe = load_recipe(_recipe_file(train_root, objective="mnrl_cosent"))
    sources = load_recipe_sources(recipe)
    datasets, tasks = _datasets(recipe, sources)
    assert tasks == {"ir": "ir", "sts": "sts"}
    ir, sts = datasets["ir"], datasets["sts"]
    # n_negatives=2 and every row has 3 negatives -> two negative columns; the instruction prompt prefixes the anchor.
    assert ir.column_names == ["anchor", "positive", "negative_1", "negative_2"]
    first = json.loads((train_root / "train-data" / "ir.jsonl").read_text().splitlines()[0])
    assert ir[0]["anchor"] == "Instruction: find it Query: " + first["query"]
    assert (ir[0]["positive"], ir[0]["negative_2"]) == (first["pos"][0], first["neg"][1])
    # STS scores are scaled from the declared [0, 5] to [0, 1], as in our trainer.
    raw = json.loads((train_root / "train-data" / "sts.jsonl").read_text().splitlines()[0])
    assert sts[0]["score"] == pytest.approx(raw["score"] / 5)


def test_per_task_batch_sizes():
    from datasets import Dataset

    make = per_task_batch_sampler({"ir": 4, "sts": 6})
    ir = Dataset.from_dict({"anchor": [f"q{i}" for i in range(10)], "positive": [f"d{i}" for i in range(10)]})
    sts = Dataset.from_dict({"sentence1": ["a"] * 13, "sentence2": ["b"] * 13, "score": [0.5] * 13})
    g = torch.Generator().manual_seed(0)
    assert [len(b) for b in make(ir, batch_size=32, drop_last=False, generator=g)] == [4, 4]
    assert [len(b) for b in make(sts, batch_size=32, drop_last=False, generator=g)] == [6, 6]


def test_short_peer_run_trains_and_loads(train_root):
    tmp = train_root
    recipe = load_recipe(_recipe_file(tmp, objective="mnrl_cosent"),
                         ["train.max_steps=3", "train.save_every=2", f"output_dir={tmp / 'peer'}"])
    final, steps = train_recipe(recipe, show_progress=False)
    assert steps == 3 and (final / "modules.json").is_file()
    assert (tmp / "peer" / "st-checkpoints" / "checkpoint-2").is_dir()  # HF checkpoints (the args are pickled)
    before = load_file(str(tmp / "tiny-model" / "model.safetensors"))
    after = load_file(str(final / "model.safetensors"))
    assert any(not torch.equal(before[k], after[k]) for k in after), "the peer changed no weight"
    from sentence_transformers import SentenceTransformer

    a = SentenceTransformer(str(final), device="cpu").encode(["a red fox"], convert_to_tensor=True)
    b = Embedder.load(str(final)).encode(["a red fox"])
    assert torch.allclose(torch.nn.functional.normalize(a, dim=-1), torch.as_tensor(b), atol=1e-5)
    # A finished run is reused, not retrained.
    assert train_recipe(recipe, show_progress=False)[0] == final


def test_peer_refuses_other_samplers(train_root):
    recipe = load_recipe(_recipe_file(train_root, objective="mnrl_cosent"), ["sampler.policy=round_robin"])
    with pytest.raises(ConfigError, match="proportional"):
        train_recipe(recipe, show_progress=False)


def test_a_given_batch_sampler_replaces_ours(train_root):
    """benchmarks/train_step.py replays embedlab's batches through this hook: the trainer must draw from it."""
    seen: list[list[int]] = []

    class Fixed:
        def __init__(self, batches):
            self.batches, self.batch_size, self.drop_last = batches, len(batches[0]), True

        def __iter__(self):
            for b in self.batches:
                seen.append(list(b))
                yield list(b)

        def __len__(self):
            return len(self.batches)

    def make(dataset, batch_size, drop_last, valid_label_columns=None, generator=None, seed=0):
        return Fixed([[3, 1, 2, 0]] if "score" not in dataset.column_names else [[5, 4, 7, 6]])

    tmp = train_root
    recipe = load_recipe(_recipe_file(tmp, objective="mnrl_cosent"),
                         ["train.max_steps=2", "train.save_every=null", f"output_dir={tmp / 'peer-fixed'}"])
    from embedlab.train.st_peer import train_st_peer

    train_st_peer(recipe, show_progress=False, batch_sampler=make)
    assert sorted(map(tuple, seen)) == [(3, 1, 2, 0), (5, 4, 7, 6)]  # one step of each, from our batches only


def test_peer_reports_the_steps_an_epoch_took(train_root):
    # With epochs instead of max_steps the recipe does not say how many steps ran: the run records ST's own count
    # (one per full batch of each task: drop_last), and a reused finished run reports it again.
    recipe = load_recipe(_recipe_file(train_root, objective="mnrl_cosent"),
                         ["train.max_steps=null", "train.epochs=1", "train.save_every=null",
                          f"output_dir={train_root / 'peer-epoch'}"])
    datasets, tasks = _datasets(recipe, load_recipe_sources(recipe))
    expected = sum(len(ds) // recipe.sampler.batch_size[name] for name, ds in datasets.items())
    assert expected > 0
    final, steps = train_recipe(recipe, show_progress=False)
    assert steps == expected
    assert train_recipe(recipe, show_progress=False) == (final, expected)
