"""Tiny training data, a tiny saved model and a recipe over them, shared by the trainer, peer and GradCache tests.

``make_train_root(tmp_path, tiny_bert)`` writes ``train-data/ir.jsonl`` (24 queries, 2 positives, 3 negatives each),
``train-data/sts.jsonl`` (24 scored pairs on 0-5) and ``tiny-model/``; ``recipe_file`` writes a recipe over them.
"""
from __future__ import annotations

import json
import random

from embedlab.text import Embedder

WORDS = ("cat dog bird fish horse cow sheep goat mouse lion tiger bear wolf fox deer frog snake eagle owl bee "
         "red blue green small big old new fast slow happy sad warm cold bright dark").split()


def sentence(rng: random.Random, n: int = 6) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def make_train_root(tmp_path, tiny_bert):
    rng = random.Random(0)
    root = tmp_path / "train-data"
    root.mkdir()
    with open(root / "ir.jsonl", "w") as f:
        for _ in range(24):
            q = sentence(rng)
            f.write(json.dumps({"query": q, "pos": [q + " " + sentence(rng, 2), sentence(rng)],
                                "neg": [sentence(rng) for _ in range(3)]}) + "\n")
    with open(root / "sts.jsonl", "w") as f:
        for _ in range(24):
            a = sentence(rng)
            f.write(json.dumps({"sentence1": a, "sentence2": a if rng.random() < 0.5 else sentence(rng),
                                "score": round(rng.uniform(0, 5), 2)}) + "\n")
    backbone, tok = tiny_bert
    Embedder(backbone, tok, max_length=32, name="tiny").save(tmp_path / "tiny-model")
    return tmp_path


def recipe_file(tmp_path, extra: str = "", objective: str = "codiemb", sampler: str = "single_task") -> str:
    text = f"""
name: t
seed: 3
output_dir: {tmp_path / 'out'}
model: {{name: {tmp_path / 'tiny-model'}, max_length: 32}}
data:
  root: {tmp_path / 'train-data'}
  n_positives: 2
  n_negatives: 2
  sources:
    - {{name: ir, path: ir.jsonl, task: ir, instruction: "find it"}}
    - {{name: sts, path: sts.jsonl, task: sts, score_range: [0, 5]}}
sampler: {{kind: {sampler}, batch_size: {{ir: 4, sts: 4}}}}
objective: {{kind: {objective}}}
train: {{lr: 1.0e-3, max_steps: 6, save_every: 3, log_every: 1, select_on: []}}
{extra}
"""
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return str(path)




def save_shifted(tiny_bert, path, shift: float) -> str:
    """The tiny model with ``shift`` added to every weight, saved in the sentence-transformers layout (a checkpoint
    that differs from the base by a known amount)."""
    import copy

    import torch

    backbone, tok = tiny_bert
    model = copy.deepcopy(backbone)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(shift)
    Embedder(model, tok, max_length=32, name="tiny").save(path)
    return str(path)


def save_noisy_checkpoints(tmp_path, tiny_bert, n: int):
    """A base and ``n`` 'fine-tuned' checkpoints (base + seeded noise, seed i)
    -> (base folder, [checkpoint folders])."""
    import copy

    import torch

    backbone, tok = tiny_bert
    Embedder(backbone, tok, max_length=32, name="tiny").save(tmp_path / "base")
    paths = []
    for i in range(n):
        model = copy.deepcopy(backbone)
        g = torch.Generator().manual_seed(i)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.02 * torch.randn(p.shape, generator=g))
        Embedder(model, tok, max_length=32, name="tiny").save(tmp_path / f"ckpt{i}")
        paths.append(tmp_path / f"ckpt{i}")
    return tmp_path / "base", paths


# ---- helpers of the job-runner tests (tests/test_jobs*.py): a tiny training job and ways to watch it

def train_job(train_root, steps: int, name: str = "t"):
    """A train+evaluate job on the tiny recipe: ``steps`` steps, a checkpoint every 10, every step logged."""
    from embedlab.jobkinds import JobSpec

    return JobSpec(kind="train+evaluate", name=name, tasks=("stsb-dev",), seed=3,
                   config={"recipe": recipe_file(train_root), "overrides": [f"train.max_steps={steps}",
                                                                            "train.save_every=10", "train.log_every=1"],
                           "eval": {"limit": 20}})


def wait_for(predicate, timeout: float = 120.0) -> bool:
    import time

    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if predicate():
            return True
        time.sleep(0.1)
    raise AssertionError("timed out")


def steps_logged(folder) -> list[int]:
    """The steps a run folder's train_log.jsonl has logged so far (a resumed run logs from its checkpoint on)."""
    path = folder / "train_log.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line)["step"] for line in path.read_text().splitlines() if line.strip()]
