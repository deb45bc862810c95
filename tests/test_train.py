"""The trainer: recipes validate, exact resume, every objective runs, bad recipes stop before training, and a short
run on a tiny model improves its dev metric."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from embedlab.config import load_recipe
from embedlab.errors import ConfigError, DataError
from embedlab.text import Embedder
from embedlab.train import checkpoint as ckpt
from embedlab.train.trainer import Trainer

from tiny_training import recipe_file as _recipe_file

def _weights(folder):
    return load_file(str(folder / "model.safetensors"))


def test_resume_gives_identical_weights(train_root):
    tmp = train_root
    straight = Trainer(load_recipe(_recipe_file(tmp), [f"output_dir={tmp / 'a'}"]), show_progress=False)
    straight.train()
    # Interrupted after step 3 (the trainer checkpoints at step 3), then resumed by a fresh Trainer.
    first = Trainer(load_recipe(_recipe_file(tmp), [f"output_dir={tmp / 'b'}"]), show_progress=False)
    first.train(stop_after=3)
    assert [p.name for p in ckpt.list_checkpoints(tmp / "b")] == ["step-000003"]
    resumed = Trainer(load_recipe(_recipe_file(tmp), [f"output_dir={tmp / 'b'}"]), show_progress=False)
    resumed.train()
    assert resumed.step == 6
    a, b = _weights(tmp / "a" / "final"), _weights(tmp / "b" / "final")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    initial = _weights(tmp / "tiny-model")
    assert any(not torch.equal(initial[k], a[k]) for k in a), "training changed nothing"
    log = [json.loads(line) for line in open(tmp / "a" / "train_log.jsonl")]
    assert [r["step"] for r in log] == [1, 2, 3, 4, 5, 6]
    assert {"loss", "lr", "examples_per_s", "task"} <= set(log[0])


@pytest.mark.parametrize("objective,sampler", [("cosent", "single_task"), ("naive", "mixed"),
                                               ("naive", "single_task"), ("codiemb", "mixed")])
def test_other_objectives_run(train_root, objective, sampler):
    tmp = train_root
    trainer = Trainer(load_recipe(_recipe_file(tmp, objective=objective, sampler=sampler),
                                  ["train.max_steps=2", "train.save_every=null"]), show_progress=False)
    final = trainer.train()
    assert (final / "modules.json").is_file()
    log = [json.loads(line) for line in open(tmp / "out" / "train_log.jsonl")]
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in log)


def test_bad_recipes_stop_before_training(train_root):
    tmp = train_root
    with pytest.raises(ConfigError, match="train.max_stepz: unknown key"):
        load_recipe(_recipe_file(tmp), ["train.max_stepz=3"])
    with pytest.raises(ConfigError, match="task"):
        load_recipe(_recipe_file(tmp), ["data.sources=[{name: x, path: ir.jsonl, task: retrieval}]"])
    with pytest.raises(ConfigError, match="score_range"):
        load_recipe(_recipe_file(tmp), ["data.sources=[{name: x, path: sts.jsonl, task: sts}]"])
    with pytest.raises(ConfigError, match="mixed"):  # a mixed sampler has no meaning for the ST peer's losses
        load_recipe(_recipe_file(tmp, objective="mnrl_cosent", sampler="mixed"))
    # A row outside the declared score range stops setup (before any step), naming file and line.
    with open(tmp / "train-data" / "sts.jsonl", "a") as f:
        f.write(json.dumps({"sentence1": "a", "sentence2": "b", "score": 7}) + "\n")
    trainer = Trainer(load_recipe(_recipe_file(tmp)), show_progress=False)
    with pytest.raises(DataError, match=r"sts.jsonl:25"):
        trainer.setup()
    # An IR row with an empty positive list.
    (tmp / "train-data" / "ir.jsonl").write_text(json.dumps({"query": "q", "pos": [], "neg": []}) + "\n")
    with pytest.raises(DataError, match=r"ir.jsonl:1"):
        Trainer(load_recipe(_recipe_file(tmp), ["data.sources=[{name: ir, path: ir.jsonl, task: ir}]"]),
                show_progress=False).setup()


def test_short_run_improves_dev_metric(tmp_path, tiny_bert, data_root):
    """A tiny random BERT trained for 40 steps on 640 STS-B train pairs gets a better STS-B dev Spearman."""
    from embedlab.data import catalog
    from embedlab.evaluate.runner import evaluate

    train = catalog.load_sts("stsb", "train").pairs[:640]
    (tmp_path / "data").mkdir()
    with open(tmp_path / "data" / "stsb.jsonl", "w") as f:
        for p in train:
            f.write(json.dumps({"sentence1": p.sentence1, "sentence2": p.sentence2, "score": p.score}) + "\n")
    backbone, tok = tiny_bert
    model = Embedder(backbone, tok, max_length=48, name="tiny")
    model.save(tmp_path / "tiny")
    before = evaluate(model, ["stsb-dev"])[0].main_score
    (tmp_path / "r.yaml").write_text(f"""
name: e2e
output_dir: {tmp_path / 'out'}
model: {{name: {tmp_path / 'tiny'}, max_length: 48}}
data: {{root: {tmp_path / 'data'}, sources: [{{name: stsb, path: stsb.jsonl, task: sts, score_range: [0, 5]}}]}}
sampler: {{batch_size: {{sts: 32}}}}
train: {{lr: 2.0e-3, max_steps: 40, eval_every: 20, select_on: [stsb-dev], log_every: 10}}
""")
    Trainer(load_recipe(tmp_path / "r.yaml"), show_progress=False).train()
    after = evaluate(Embedder.load(str(tmp_path / "out" / "best")), ["stsb-dev"])[0].main_score
    assert after > before + 0.05, (before, after)
    dev = [json.loads(line) for line in open(tmp_path / "out" / "dev_log.jsonl")]
    assert [d["step"] for d in dev] == [20, 40]
    assert all(d["seconds"] > 0 for d in dev)  # dev scoring's share of the wall time, for equal-time comparisons
