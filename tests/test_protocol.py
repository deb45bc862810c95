"""Issue 13's protocol fixes: each test failed on the code before the fix.

- IR steps pass text ids, so a document shared by two queries' positives is not a negative for either (the mask
  existed and was tested, but training never used it).
"""
from __future__ import annotations

import json

from embedlab.config import load_recipe
from embedlab.train.trainer import Trainer

from tiny_training import make_train_root, recipe_file


def _shared_positive_data(root):
    """IR rows whose positives all include one shared document (as SciFact's cited abstracts are shared)."""
    rows = [json.loads(line) for line in (root / "train-data" / "ir.jsonl").read_text().splitlines()]
    for row in rows:
        row["pos"] = [row["pos"][0], "a shared abstract cited by every claim"]
    (root / "train-data" / "ir.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_ir_steps_mask_shared_positives_by_default(tmp_path, tiny_bert):
    root = make_train_root(tmp_path, tiny_bert)
    _shared_positive_data(root)
    path = recipe_file(root)
    Trainer(load_recipe(path, ["train.max_steps=2", "sampler.batch_size={ir: 4}",
                               "data.sources=[{name: ir, path: ir.jsonl, task: ir}]"]), show_progress=False).train()
    log = [json.loads(x) for x in (root / "out" / "train_log.jsonl").read_text().splitlines()]
    assert all(r["masked"] > 0 for r in log), log
    off = load_recipe(path, ["objective.ir_mask_shared_positives=false", f"output_dir={root / 'off'}",
                             "train.max_steps=2", "sampler.batch_size={ir: 4}",
                             "data.sources=[{name: ir, path: ir.jsonl, task: ir}]"])
    Trainer(off, show_progress=False).train()
    log_off = [json.loads(x) for x in (root / "off" / "train_log.jsonl").read_text().splitlines()]
    assert all("masked" not in r for r in log_off)
    assert log_off[0]["loss"] > log[0]["loss"]  # the shared abstract counted as a negative: a larger loss
