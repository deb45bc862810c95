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


def test_every_experiment_row_is_evaluated_at_one_length(tmp_path, tiny_bert, data_root, monkeypatch):
    """The trained model saves its training length (32 here); the experiment's eval_max_length (64) must apply to
    it and to the untrained row alike, be recorded, and a per-row length is refused."""
    import pytest
    import yaml

    from embedlab.experiment import load_experiment, run_experiment
    from embedlab.errors import ConfigError
    from embedlab.text import Embedder

    root = make_train_root(tmp_path, tiny_bert)
    monkeypatch.chdir(root)
    seen = []
    original = Embedder.encode

    def spy(self, texts, *args, **kwargs):
        seen.append(kwargs.get("max_length"))
        return original(self, texts, *args, **kwargs)

    monkeypatch.setattr(Embedder, "encode", spy)
    spec = {"name": "len", "workdir": str(root / "work"), "results": str(root / "res.json"),
            "table": str(root / "table.md"), "tasks": ["stsb-dev"], "eval_max_length": 64,
            "common_overrides": ["train.max_steps=1", "train.save_every=null"],
            "runs": [{"name": "untrained", "model": str(root / "tiny-model")},
                     {"name": "trained", "recipe": recipe_file(root), "seeds": [1]}]}
    (root / "e.yaml").write_text(yaml.safe_dump(spec))
    run_experiment(root / "e.yaml", show_progress=False, executor="inline")  # in this process: the spy sees it
    records = json.loads((root / "res.json").read_text())["records"]
    assert {r["name"] for r in records} == {"untrained", "trained"}
    assert all(r["eval_max_length"] == 64 for r in records)
    assert all(r["instructions"] and not r["instruction_tokens_pooled"] for r in records)  # one setting, every row
    assert seen and set(seen) == {64}
    items = json.loads((root / "res-items" / "trained-s1-stsb-dev.json").read_text())  # for the paired bootstrap
    assert len(items["gold"]) == len(items["pred"]) == 1500
    assert Embedder.load(str(root / "work" / "trained-s1" / "final")).max_length == 32
    spec["runs"][0]["max_length"] = 128
    (root / "e2.yaml").write_text(yaml.safe_dump(spec))
    with pytest.raises(ConfigError, match="eval_max_length"):
        load_experiment(root / "e2.yaml")


def test_task_instructions_round_trip_from_training_to_evaluation(tmp_path, tiny_bert, data_root, monkeypatch):
    """Instructions reach training (a source's own, else its converter's from the manifest), the saved model carries
    one prompt per evaluation task in sentence-transformers' layout, and evaluation puts it before each task's
    queries / STS sides; data.instructions=false removes them everywhere."""
    from sentence_transformers import SentenceTransformer

    from embedlab.evaluate.runner import EvalSettings, evaluate
    from embedlab.evaluate.tasks import instruction_prompts
    from embedlab.text import Embedder
    from embedlab.train.trainer import load_recipe_sources

    root = make_train_root(tmp_path, tiny_bert)
    from embedlab.prep.convert import converter_hash

    (root / "train-data" / "manifest.json").write_text(json.dumps({"converter_hash": converter_hash(), "sources": [
        {"name": "sts", "path": "sts.jsonl", "instruction": "Retrieve semantically similar text."}]}))
    recipe = load_recipe(recipe_file(root), ["train.max_steps=1"])
    by_name = {s.name: s.source.instruction for s in load_recipe_sources(recipe)}
    assert by_name == {"ir": "find it", "sts": "Retrieve semantically similar text."}
    final = Trainer(recipe, show_progress=False).train()
    prompts = instruction_prompts("Instruction: {instruction} Query: ")
    assert prompts["STSBenchmark"] == "Instruction: Retrieve semantically similar text. Query: "
    model = Embedder.load(str(final))
    assert model.prompts == prompts
    assert SentenceTransformer(str(final), device="cpu").prompts["SciFact"] == prompts["SciFact"]
    used = []
    original = Embedder.encode

    def spy(self, texts, *args, **kwargs):
        used.append(kwargs.get("prompt_name"))
        return original(self, texts, *args, **kwargs)

    monkeypatch.setattr(Embedder, "encode", spy)
    evaluate(model, "stsb-dev", settings=EvalSettings(limit=8))
    assert used == ["STSBenchmark"]
    # no instruction in any training source: nothing saved (evaluation must not add text training never saw)
    (root / "train-data" / "manifest.json").unlink()
    bare = load_recipe(recipe_file(root),
                       ["train.max_steps=1", f"output_dir={root / 'bare'}",
                        "data.sources=[{name: sts, path: sts.jsonl, task: sts, score_range: [0, 5]}]"])
    assert Embedder.load(str(Trainer(bare, show_progress=False).train())).prompts == {}
    off = load_recipe(recipe_file(root), ["train.max_steps=1", "data.instructions=false",
                                          f"output_dir={root / 'off'}"])
    assert {s.source.instruction for s in load_recipe_sources(off)} == {None}
    assert Embedder.load(str(Trainer(off, show_progress=False).train())).prompts == {}


def test_naive_uses_hard_negatives_and_the_arms_change_one_factor(tmp_path, tiny_bert, monkeypatch):
    """The naive baseline's docstring promised hard negatives that never reached its loss. Now every IR item's N
    drawn negatives are candidates; the losses-alone arm (naive loss, single-task batches) and the sampler-alone arm
    (CoDiEmb's losses, mixed batches) train."""
    import embedlab.train.steps as steps

    root = make_train_root(tmp_path, tiny_bert)
    seen = []
    original = steps.infonce_loss

    def spy(anchor, positive, negatives=None, **kw):
        seen.append((anchor.shape[0], None if negatives is None else negatives.shape[0]))
        return original(anchor, positive, negatives, **kw)

    monkeypatch.setattr(steps, "infonce_loss", spy)
    path = recipe_file(root, objective="naive", sampler="mixed")
    Trainer(load_recipe(path, ["train.max_steps=3", "train.save_every=null",
                               "data.sources=[{name: ir, path: ir.jsonl, task: ir}]"]), show_progress=False).train()
    assert seen and all(neg == 2 * anchors for anchors, neg in seen)  # n_negatives: 2 per IR query
    for objective, sampler in (("naive", "single_task"), ("codiemb", "mixed")):
        out = root / f"{objective}-{sampler}"
        r = load_recipe(recipe_file(root, objective=objective, sampler=sampler),
                        ["train.max_steps=3", "train.save_every=null", f"output_dir={out}"])
        Trainer(r, show_progress=False).train()
        log = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
        assert len(log) == 3 and all(x["loss"] == x["loss"] for x in log)
        if sampler == "mixed":
            assert any("ir_loss" in x or "sts_loss" in x for x in log)


def test_two_pass_baseline_as_shipped_has_two_different_views(tmp_path, tiny_llama):
    """recipes/simcse_prompt.yaml (and cse_sfp.yaml) turn model dropout on: two train-mode passes differ from the
    first step. Before, LoRA's dropout (on a branch whose B is zero at init) was the only noise: identical views."""
    import torch

    from embedlab.text import Embedder
    from embedlab.train.model_setup import build_model

    backbone, tok = tiny_llama
    tok.bos_token = "[CLS]"  # the test tokenizer (BERT's) has no BOS; the CSE-SFP templates need one
    Embedder(backbone, tok, max_length=64, is_decoder=True, name="tiny-llama").save(tmp_path / "llama")
    for name in ("simcse_prompt", "cse_sfp"):
        r = load_recipe(f"recipes/{name}.yaml", [f"model.name={tmp_path / 'llama'}"])
        assert r.model.dropout == 0.1
    texts = ["a man plays the guitar", "the cat sleeps on the mat"]

    def two_views(overrides):
        r = load_recipe("recipes/simcse_prompt.yaml", [f"model.name={tmp_path / 'llama'}", *overrides])
        model = build_model(r.model, torch.device("cpu"))
        model.train()
        torch.manual_seed(0)
        feats = model.tokenize(texts)
        return model(feats), model(feats)

    a, b = two_views([])
    assert (a - b).abs().max() > 1e-4
    a, b = two_views(["model.dropout=0.0"])  # the no-noise control: identical at init
    assert (a - b).abs().max() == 0


def test_per_query_ndcg_is_what_the_main_score_averages():
    from embedlab.evaluate.retrieval import per_query_ndcg10, score_run

    qrels = {"q1": {"d1": 1}, "q2": {"d2": 2, "d3": 1}, "q3": {"d9": 1}}
    run = {"q1": {"d1": 0.9, "d2": 0.5}, "q2": {"d3": 0.8, "d2": 0.7, "d1": 0.1}, "q3": {"d1": 0.3}}
    per = per_query_ndcg10(qrels, run)
    assert list(per) == ["q1", "q2", "q3"] and per["q1"] == 1.0 and per["q3"] == 0.0
    assert abs(sum(per.values()) / 3 - score_run(qrels, run)["ndcg_at_10"]) < 1e-12


def test_paired_bootstrap_interval():
    """Identical rows: 0, not real. A clearly better row: real. For a mean metric the percentile interval is close
    to the normal one, mean(d) ± 1.96·sd(d)/√n. Rows scored on different items are refused."""
    import numpy as np
    import pytest

    from embedlab.bench.stats import paired_difference

    rng = np.random.default_rng(0)
    gold = np.round(rng.uniform(0, 5, 800), 1).tolist()
    noisy = [{"gold": gold, "pred": (np.array(gold) + rng.normal(0, s, 800)).tolist()} for s in (1.0, 1.1)]
    worse = [{"gold": gold, "pred": (np.array(gold) + rng.normal(0, 2.0, 800)).tolist()}]
    same = paired_difference([noisy], [noisy])
    assert same.diff == 0 and not same.real
    better = paired_difference([noisy], [worse])
    assert better.real and better.low > 0 and better.low < better.diff < better.high
    qids = [str(i) for i in range(400)]
    a, b = rng.uniform(0, 1, 400), rng.uniform(0, 1, 400)
    d = paired_difference([[{"qids": qids, "main": a.tolist()}]], [[{"qids": qids, "main": b.tolist()}]])
    diff = 100 * (a - b)
    half = 1.96 * diff.std(ddof=1) / np.sqrt(len(diff))
    assert d.diff == pytest.approx(diff.mean())
    assert d.low == pytest.approx(diff.mean() - half, abs=0.15 * half)
    assert d.high == pytest.approx(diff.mean() + half, abs=0.15 * half)
    with pytest.raises(ValueError, match="query ids"):
        paired_difference([[{"qids": qids, "main": a.tolist()}]], [[{"qids": qids[::-1], "main": b.tolist()}]])


def test_resample_ranks_equal_scipys_rankdata_with_ties():
    """The bootstrap's counting ranks (embedlab.bench.stats.resample_ranks) are scipy's tie-averaged ranks of each
    resample, exactly."""
    import numpy as np
    from scipy.stats import rankdata

    from embedlab.bench.stats import resample_ranks

    rng = np.random.default_rng(3)
    for n in (1, 2, 9, 300):
        values = np.round(rng.uniform(0, 5, n), 0 if n < 50 else 1)  # many ties
        for shape in ((50, n), (2, 3, n)):
            idx = rng.integers(0, n, shape)
            assert np.array_equal(resample_ranks(values, idx), rankdata(values[idx], axis=-1))


def test_the_table_compares_the_reference_with_intervals():
    import numpy as np

    from embedlab.experiment import ExperimentSpec, render_table

    spec = ExperimentSpec.model_validate({
        "name": "x", "results": "r.json", "table": "t.md", "tasks": ["stsb", "scifact"], "reference": "codiemb",
        "averages": {"STS avg": ["stsb"], "IR avg": ["scifact"]},
        "runs": [{"name": "codiemb", "recipe": "r.yaml", "seeds": [1, 2]}, {"name": "naive", "recipe": "r.yaml",
                                                                            "seeds": [1, 2]}]})
    rng = np.random.default_rng(1)
    gold = rng.uniform(0, 5, 300).tolist()
    qids = [str(i) for i in range(100)]
    items, records = {}, []
    for name, noise, ndcg in (("codiemb", 0.5, 0.6), ("naive", 2.0, 0.6)):
        for seed in (1, 2):
            items[(name, seed, "stsb")] = {"gold": gold, "pred": (np.array(gold) + rng.normal(0, noise, 300)).tolist()}
            items[(name, seed, "scifact")] = {"qids": qids, "main": rng.uniform(0, 2 * ndcg, 100).tolist()}
            records += [{"name": name, "seed": seed, "task": t, "value": 50.0, "steps": 1, "train_seconds": 1.0}
                        for t in ("stsb", "scifact")]
    table = render_table(spec, records, items)
    line = next(x for x in table.splitlines() if x.startswith("| naive |") and "[" in x)
    sts, ir = line.split("|")[2:4]
    assert sts.strip().endswith("*") and not ir.strip().endswith("*")  # a real STS gap; IR rows drawn alike


def test_a_table_shows_one_protocol_only():
    from embedlab.experiment import ExperimentSpec, render_table

    spec = ExperimentSpec.model_validate({"name": "x", "results": "r.json", "table": "t.md", "tasks": ["stsb"],
                                          "instructions": False, "runs": [{"name": "a", "recipe": "r.yaml"}]})
    now = {"name": "a", "seed": 49, "task": "stsb", "value": 80.0, "eval_max_length": 256, "instructions": False,
           "instruction_tokens_pooled": True}
    before = {**now, "value": 70.0, "instructions": True, "instruction_tokens_pooled": False}
    table = render_table(spec, [now, {**before, "seed": 50}])
    assert "| a | 1 | 80.00 |" in table and "70.00" not in table and "1 records scored under another protocol" in table


def test_a_damaged_items_file_is_one_line(tmp_path):
    import pytest

    from embedlab.experiment import ExperimentSpec, items_path, load_items
    from embedlab.errors import ConfigError

    spec = ExperimentSpec.model_validate({"name": "x", "results": str(tmp_path / "r.json"), "table": "t.md",
                                          "tasks": ["stsb"], "runs": [{"name": "a", "recipe": "r.yaml"}]})
    path = items_path(spec, "a", 49, "stsb")
    path.parent.mkdir()
    path.write_text('{"gold": [1, ')
    with pytest.raises(ConfigError, match="unreadable per-item file"):
        load_items(spec)


def test_a_group_with_its_own_reference_is_compared_with_it():
    """A second fusion batch (another set of inputs) compares its rows with its own reference, not the main one, and
    the main reference is not repeated in its table."""
    import numpy as np
    import pytest

    from embedlab.experiment import ExperimentSpec, render_table

    base = {"name": "x", "results": "r.json", "table": "t.md", "tasks": ["stsb"], "reference": "dg",
            "averages": {"STS avg": ["stsb"]},
            "runs": [{"name": "dg", "model": "m", "seeds": [0]}, {"name": "soup", "model": "m", "seeds": [0]},
                     {"name": "t: dg", "model": "m", "group": "t", "seeds": [0]},
                     {"name": "t: soup", "model": "m", "group": "t", "seeds": [0]}]}
    spec = ExperimentSpec.model_validate({**base, "group_references": {"t": "t: dg"}})
    rng = np.random.default_rng(0)
    gold = rng.uniform(0, 5, 200)
    items, records = {}, []
    for name, noise in (("dg", 0.5), ("soup", 0.5), ("t: dg", 0.3), ("t: soup", 3.0)):
        items[(name, 0, "stsb")] = {"gold": gold.tolist(), "pred": (gold + rng.normal(0, noise, 200)).tolist()}
        records.append({"name": name, "seed": 0, "task": "stsb", "value": 50.0})
    table = render_table(spec, records, items)
    t_table = table.split("**t**")[1].split("**dg − row")[0]
    assert "| dg |" not in t_table and "| t: dg |" in t_table
    main_cmp = table.split("**dg − row")[1].split("**t: dg − row")[0]
    t_cmp = table.split("**t: dg − row")[1]
    assert "| soup |" in main_cmp and "t: soup" not in main_cmp
    assert "| t: soup |" in t_cmp and "| soup |" not in t_cmp
    assert next(x for x in t_cmp.splitlines() if x.startswith("| t: soup |")).endswith("* |")
    with pytest.raises(ValueError, match="group_references.t: 'dg' is not a run of group 't'"):
        ExperimentSpec.model_validate({**base, "group_references": {"t": "dg"}})
    with pytest.raises(ValueError, match="reference 'nope' is not one of the runs"):
        ExperimentSpec.model_validate({**base, "reference": "nope"})


def test_a_further_comparison_pairs_runs_of_different_groups():
    """``comparisons: [[a, b]]`` adds "a − b" with its interval (e.g. CSE-SFP at equal training time against the
    two-pass baseline of the main group); the usual comparisons stay; a pair naming no run is refused."""
    import numpy as np
    import pytest

    from embedlab.experiment import ExperimentSpec, render_table

    base = {"name": "x", "results": "r.json", "table": "t.md", "tasks": ["stsb"], "reference": "sfp",
            "averages": {"STS avg": ["stsb"]},
            "runs": [{"name": "sfp", "model": "m", "seeds": [0]}, {"name": "two-pass", "model": "m", "seeds": [0]},
                     {"name": "sfp-200", "model": "m", "group": "equal time", "seeds": [0]}]}
    spec = ExperimentSpec.model_validate({**base, "comparisons": [["sfp-200", "two-pass"]]})
    rng = np.random.default_rng(0)
    gold = rng.uniform(0, 5, 300)
    items, records = {}, []
    for name, noise in (("sfp", 0.5), ("two-pass", 3.0), ("sfp-200", 0.4)):
        items[(name, 0, "stsb")] = {"gold": gold.tolist(), "pred": (gold + rng.normal(0, noise, 300)).tolist()}
        records.append({"name": name, "seed": 0, "task": "stsb", "value": 50.0})
    table = render_table(spec, records, items)
    main_cmp = table.split("**sfp − row")[1].split("**sfp-200 − row")[0]
    assert "| two-pass |" in main_cmp and "| sfp-200 |" in main_cmp
    extra = table.split("**sfp-200 − row")[1]
    rows = [x for x in extra.splitlines() if x.startswith("| ") and not x.startswith("| row")]
    assert len(rows) == 1 and rows[0].startswith("| two-pass | +") and rows[0].endswith("* |")
    assert "**sfp-200 − row" not in render_table(ExperimentSpec.model_validate(base), records, items)
    with pytest.raises(ValueError, match="comparisons.0: 'nope' is not one of the runs"):
        ExperimentSpec.model_validate({**base, "comparisons": [["sfp", "nope"]]})
    with pytest.raises(ValueError, match="compared with itself"):
        ExperimentSpec.model_validate({**base, "comparisons": [["sfp", "sfp"]]})
