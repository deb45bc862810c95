"""The experiment runner: records -> tables (mean ± std over seeds, per-seed averages, ablation groups with the
reference run at equal seeds), a tiny end-to-end run that trains, evaluates and resumes, and bad specs."""
from __future__ import annotations

import json

import pytest
import yaml

from embedlab.experiment import ExperimentSpec, load_experiment, render_table, run_experiment
from embedlab.errors import ConfigError

from tiny_training import recipe_file


def _spec(**kw) -> ExperimentSpec:
    base = {"name": "x", "results": "r.json", "table": "t.md", "tasks": ["a", "b", "c"],
            "averages": {"AB": ["a", "b"]}, "reference": "full",
            "runs": [{"name": "full", "recipe": "r.yaml", "seeds": [1, 2]},
                     {"name": "minus", "recipe": "r.yaml", "group": "ablation"}]}
    base.update(kw)
    return ExperimentSpec.model_validate(base)


def _rec(name, seed, task, value, **kw):
    return {"name": name, "seed": seed, "task": task, "value": value, "steps": 10, "train_seconds": 60.0, **kw}


def test_table_means_stds_averages_and_groups():
    records = [_rec("full", 1, "a", 80.0), _rec("full", 1, "b", 60.0), _rec("full", 1, "c", 1.0),
               _rec("full", 2, "a", 82.0), _rec("full", 2, "b", 64.0), _rec("full", 2, "c", 3.0),
               _rec("minus", 1, "a", 70.0), _rec("minus", 1, "b", 50.0)]
    records.append(_rec("full", 1, "c", 0.5, metric="anisotropy"))
    records.append(_rec("full", 2, "c", 0.7, metric="anisotropy"))
    table = render_table(_spec(extra_metrics={"c": ["anisotropy"]}), records)
    assert "| full | 0.600 ± 0.141 |" in table.split("**other metrics**")[1]
    table = table.split("**other metrics**")[0]
    main, ablation = table.split("**ablation**")
    # full: a = mean(80, 82) ± stdev; the AB average is per seed (70, 73) then mean ± std.
    assert "| full | 2 | 81.00 ± 1.41 | 62.00 ± 2.83 | 2.00 ± 1.41 | 71.50 ± 2.12 | 10 | 1.0 |" in main
    # The ablation table starts with the reference run at the ablation's seed only (seed 1).
    lines = [line for line in ablation.splitlines() if line.startswith("| ")]
    assert lines[1] == "| full | 1 | 80.00 | 60.00 | 1.00 | 70.00 | 10 | 1.0 |"
    # A run without task c still shows its other cells; "-" where there is nothing.
    assert lines[2] == "| minus | 1 | 70.00 | 50.00 | - | 60.00 | 10 | 1.0 |"


def test_a_group_on_another_backbone_gets_no_reference_row():
    spec = _spec(runs=[{"name": "full", "recipe": "r.yaml"},
                       {"name": "minus", "recipe": "r.yaml", "group": "ablation"},
                       {"name": "big", "recipe": "r.yaml", "model": "org/other", "group": "other backbone"},
                       {"name": "big-raw", "model": "org/other", "group": "other backbone"}])
    records = [_rec(n, 1, "a", v) for n, v in (("full", 80.0), ("minus", 70.0), ("big", 50.0), ("big-raw", 40.0))]
    table = render_table(spec, records)
    ablation, other = table.split("**ablation**")[1].split("**other backbone**")
    assert "| full |" in ablation
    assert "| full |" not in other and "| big |" in other and "| big-raw |" in other


def test_dev_column_is_the_per_seed_mean_of_the_dev_tasks():
    spec = _spec(dev_tasks=["stsb-dev", "scifact-dev"], reference=None)
    records = [_rec("full", 1, "a", 80.0), _rec("full", 1, "stsb-dev", 70.0), _rec("full", 1, "scifact-dev", 50.0),
               _rec("full", 2, "a", 82.0), _rec("full", 2, "stsb-dev", 74.0), _rec("full", 2, "scifact-dev", 50.0),
               _rec("minus", 1, "a", 70.0), _rec("minus", 1, "stsb-dev", 71.0)]  # scifact-dev missing
    table = render_table(spec, records)
    assert "| run | seeds | a | b | c | AB | dev | steps | train min |" in table
    assert "| full | 2 | 81.00 ± 1.41 | - | - | - | 61.00 ± 1.41 | 10 | 1.0 |" in table
    assert "| minus | 1 | 70.00 | - | - | - | - | 10 | 1.0 |" in table  # half a dev score is no dev score


def test_dev_tasks_refuse_test_splits_and_unknown_names():
    with pytest.raises(Exception, match="stsb is a test split"):
        _spec(dev_tasks=["stsb"])
    with pytest.raises(Exception, match="unknown task 'stsb-devv'"):
        _spec(dev_tasks=["stsb-devv"])


def test_bad_spec_names_the_key(tmp_path):
    path = tmp_path / "e.yaml"
    path.write_text(yaml.safe_dump({"name": "x", "results": "r", "table": "t", "tasks": ["stsb"], "runz": []}))
    with pytest.raises(ConfigError, match=r"e.yaml: runz"):
        load_experiment(path)


def test_tiny_experiment_trains_evaluates_and_resumes(train_root, data_root, monkeypatch):
    tmp = train_root
    monkeypatch.chdir(tmp)
    recipe = recipe_file(tmp)
    spec = {"name": "tiny", "workdir": str(tmp / "work"), "results": str(tmp / "res.json"),
            "table": str(tmp / "table.md"), "tasks": ["stsb-dev"], "averages": {"STS": ["stsb-dev"]},
            "common_overrides": ["train.max_steps=2", "train.save_every=null"],
            "extra_metrics": {"stsb-dev": ["cosine_pearson"]}, "dev_tasks": ["sickr-dev"], "eval_max_length": 64,
            "runs": [{"name": "untrained", "model": str(tmp / "tiny-model")},
                     {"name": "untrained-cls", "model": str(tmp / "tiny-model"), "pooling": "cls"},
                     {"name": "trained", "recipe": recipe, "seeds": [1, 2]},
                     {"name": "fused", "seeds": [0], "fuse": {
                         "method": "delta_guided", "base": str(tmp / "tiny-model"),
                         "models": ["{workdir}/trained-s1/final", "{workdir}/trained-s2/final"],
                         "sweep": {"variant": ["magnitude", "inverse"]}, "select_on": ["stsb-dev"]}}]}
    (tmp / "e.yaml").write_text(yaml.safe_dump(spec))
    run_experiment(tmp / "e.yaml", show_progress=False)
    records = json.loads((tmp / "res.json").read_text())["records"]
    pearson = [r for r in records if r["metric"] == "cosine_pearson"]
    assert len(pearson) == 5 and all(-100 <= r["value"] <= 100 for r in pearson)  # display scale, like the store
    # every record says what computed it (a new machine may install newer releases than the last)
    import torch
    import transformers
    assert all(r["software"]["torch"] == torch.__version__ and r["software"]["transformers"] == transformers.__version__
               for r in records)
    records = [r for r in records if r["metric"] == "main_score"]
    dev = [r for r in records if r["task"] == "sickr-dev"]
    records = [r for r in records if r["task"] == "stsb-dev"]
    assert sorted((r["name"], r["seed"]) for r in records) == [("fused", 0), ("trained", 1), ("trained", 2),
                                                               ("untrained", 49), ("untrained-cls", 49)]
    # Every row also got its dev score, a dev split, shown in the table's dev column.
    assert sorted((r["name"], r["seed"]) for r in dev) == sorted((r["name"], r["seed"]) for r in records)
    assert all(r["split"] == "dev" and -100 <= r["value"] <= 100 for r in dev)
    untrained_dev = next(r["value"] for r in dev if r["name"] == "untrained")
    assert f"| {untrained_dev:.2f} | 0 | - |" in (tmp / "table.md").read_text()
    by_name = {r["name"]: r["value"] for r in records}
    assert by_name["untrained-cls"] != by_name["untrained"]  # the pooling override took effect
    fused = next(r for r in records if r["name"] == "fused")
    tried = fused["sweep"]["candidates"]
    assert [c["params"]["variant"] for c in tried] == ["magnitude", "inverse"]
    assert fused["params"]["variant"] == max(tried, key=lambda c: c["dev"])["params"]["variant"]
    # each candidate's update size is recorded beside its dev score, and the kept model's in the record
    assert all(c["relative_update"] > 0 for c in tried)
    assert fused["update"]["relative_update"] == pytest.approx(
        max(tried, key=lambda c: c["dev"])["relative_update"], rel=1e-9)
    assert fused["models"] == [str(tmp / "work" / f"trained-s{i}" / "final") for i in (1, 2)]
    trained = [r for r in records if r["name"] == "trained"]
    assert all(r["steps"] == 2 and r["split"] == "dev" and f"seed={r['seed']}" in r["overrides"] for r in trained)
    assert trained[0]["value"] != trained[1]["value"]  # two seeds, two models
    assert "| trained | 2 |" in (tmp / "table.md").read_text()
    # Run again: nothing is retrained or re-evaluated (the records are unchanged, the models untouched).
    stamp = (tmp / "work" / "trained-s1" / "final" / "model.safetensors").stat().st_mtime_ns
    written = {p: (tmp / p).stat().st_mtime_ns for p in ("res.json", "table.md")}
    run_experiment(tmp / "e.yaml", show_progress=False)
    assert [r for r in json.loads((tmp / "res.json").read_text())["records"]
            if r["metric"] == "main_score" and r["task"] == "stsb-dev"] == records
    assert (tmp / "work" / "trained-s1" / "final" / "model.safetensors").stat().st_mtime_ns == stamp
    # Nothing ran, so the records file and the table (written as each job finished) are not rewritten either ...
    assert {p: (tmp / p).stat().st_mtime_ns for p in written} == written
    # ... unless one of them is missing: then both are written from the store again.
    table = (tmp / "table.md").read_text()
    (tmp / "table.md").unlink()
    run_experiment(tmp / "e.yaml", show_progress=False)
    assert (tmp / "table.md").read_text() == table


def test_fused_row_reads_models_beside_a_workdir_not_yet_created(train_root, data_root, monkeypatch):
    """experiments/fusion.yaml names its inputs "{workdir}/../codiemb/...": that must work on the first run, before
    the fusion workdir exists (a path through a missing folder does not resolve on Linux)."""
    import shutil

    tmp = train_root
    monkeypatch.chdir(tmp)
    for name in ("a", "b"):
        shutil.copytree(tmp / "tiny-model", tmp / "other" / name)
    spec = {"name": "f", "workdir": str(tmp / "not-yet" / "f"), "results": str(tmp / "f.json"),
            "table": str(tmp / "f.md"), "tasks": ["stsb-dev"], "eval_max_length": 64,
            "runs": [{"name": "soup", "seeds": [0], "fuse": {
                "method": "linear", "models": ["{workdir}/../../other/a", "{workdir}/../../other/b"]}}]}
    (tmp / "f.yaml").write_text(yaml.safe_dump(spec))
    run_experiment(tmp / "f.yaml", show_progress=False)
    [record] = [r for r in json.loads((tmp / "f.json").read_text())["records"] if r["metric"] == "main_score"]
    assert record["models"] == [str(tmp / "other" / "a"), str(tmp / "other" / "b")]


def test_a_run_can_be_evaluated_at_its_dev_selected_step(train_root, data_root, monkeypatch):
    tmp = train_root
    monkeypatch.chdir(tmp)
    recipe = recipe_file(tmp)
    spec = {"name": "sel", "workdir": str(tmp / "sel"), "results": str(tmp / "sel.json"), "table": str(tmp / "sel.md"),
            # eval_max_length = the training length, at which the trainer scored its dev tasks when selecting
            # and no instructions: the trainer scored with the model's own prompts (none for STS here)
            "tasks": ["stsb-dev"], "eval_max_length": 32, "instructions": False,
            "common_overrides": ["train.max_steps=4", "train.save_every=null"],
            "runs": [{"name": "best", "recipe": recipe, "seeds": [1], "evaluate": "best",
                      "overrides": ["train.eval_every=2", "train.select_on=[stsb-dev]"]}]}
    (tmp / "sel.yaml").write_text(yaml.safe_dump(spec))
    run_experiment(tmp / "sel.yaml", show_progress=False)
    [record] = [r for r in json.loads((tmp / "sel.json").read_text())["records"] if r["metric"] == "main_score"]
    best = json.loads((tmp / "sel" / "best-s1" / "best.json").read_text())
    assert record["best"]["step"] == best["step"] in (2, 4)
    # The evaluated model is the selected one: its stsb-dev score is the one the trainer recorded when choosing it.
    assert record["value"] == pytest.approx(best["scores"]["stsb-dev"], abs=0.05)

    spec["runs"][0]["overrides"] = []  # no dev selection: "best" never gets written
    spec["runs"][0]["name"] = "nobest"
    (tmp / "sel.yaml").write_text(yaml.safe_dump(spec))
    with pytest.raises(ConfigError, match="train.eval_every and train.select_on"):
        run_experiment(tmp / "sel.yaml", show_progress=False)


def test_only_with_an_unknown_name_fails_instead_of_running_nothing(tmp_path):
    path = tmp_path / "e.yaml"
    path.write_text(yaml.safe_dump({"name": "x", "results": str(tmp_path / "r.json"), "table": str(tmp_path / "t.md"),
                                    "tasks": ["stsb-dev"], "runs": [{"name": "a", "model": "m"}]}))
    with pytest.raises(ConfigError, match=r"no run named 'b'; runs: a"):
        run_experiment(path, only=["a", "b"], show_progress=False)
    path.write_text(yaml.safe_dump({"name": "x", "results": "r", "table": "t", "tasks": ["stsb-dev"],
                                    "runs": [{"name": "slerp (a, b)", "model": "m"}]}))
    with pytest.raises(ConfigError, match="name"):
        load_experiment(path)


def test_seeds_or_only_that_select_nothing_fail_instead_of_running_nothing(tmp_path):
    path = tmp_path / "e.yaml"
    path.write_text(yaml.safe_dump({"name": "x", "results": str(tmp_path / "r.json"), "table": str(tmp_path / "t.md"),
                                    "tasks": ["stsb-dev"], "runs": [{"name": "a", "model": "m", "seeds": [1, 2]},
                                                                    {"name": "b", "model": "m", "seeds": [3]}]}))
    with pytest.raises(ConfigError, match=r"--seeds 7: no selected run has this seed \(the runs' seeds: a: 1, 2; b: 3"):
        run_experiment(path, seeds=[1, 7], show_progress=False)
    with pytest.raises(ConfigError, match=r"run 'b' has none of --seeds 1 \(its seeds: 3\)"):
        run_experiment(path, only=["a", "b"], seeds=[1], show_progress=False)
    with pytest.raises(ConfigError, match="--only names no run"):  # e.g. --only "$UNSET_VARIABLE"
        run_experiment(path, only=[""], show_progress=False)
    assert not (tmp_path / "r.json").exists()  # nothing ran, nothing was written


def test_the_job_runner_gives_the_numbers_of_a_direct_train_and_evaluate(train_root, data_root, monkeypatch):
    """Today's experiment YAMLs through the new runner (jobs in worker processes, rows in the store, JSON exported)
    give the same numbers as training and evaluating by hand."""
    from embedlab.config import load_recipe
    from embedlab.evaluate.cache import EmbeddingCache
    from embedlab.evaluate.runner import EvalSettings, evaluate
    from embedlab.text import Embedder
    from embedlab.train import train_recipe

    tmp = train_root
    monkeypatch.chdir(tmp)
    recipe = recipe_file(tmp)
    overrides = ["train.max_steps=3", "train.save_every=null"]
    spec = {"name": "same", "workdir": str(tmp / "work"), "results": str(tmp / "same.json"),
            "table": str(tmp / "same.md"), "tasks": ["stsb-dev"], "eval_max_length": 64, "instructions": False,
            "common_overrides": overrides,
            "runs": [{"name": "untrained", "model": str(tmp / "tiny-model")},
                     {"name": "trained", "recipe": recipe, "seeds": [1]}]}
    (tmp / "same.yaml").write_text(yaml.safe_dump(spec))
    run_experiment(tmp / "same.yaml", show_progress=False)
    got = {r["name"]: r["value"] for r in json.loads((tmp / "same.json").read_text())["records"]}

    settings = EvalSettings(max_length=64)

    def score(path) -> float:
        model = Embedder.load(path)
        model.prompts, model.default_prompt_name = {}, None
        return evaluate(model, ["stsb-dev"], settings=settings, cache=EmbeddingCache(enabled=False))[0].display()

    train_recipe(load_recipe(recipe, [*overrides, "seed=1", f"output_dir={tmp / 'by-hand'}"]), show_progress=False)
    assert got["untrained"] == pytest.approx(score(tmp / "tiny-model"), abs=1e-9)
    assert got["trained"] == pytest.approx(score(tmp / "by-hand" / "final"), abs=1e-6)
    from embedlab.bench.store import ResultsStore

    rows = ResultsStore(str(tmp / "embedlab-results.sqlite")).query(experiment="same", metric="main_score")
    assert {r["model"] for r in rows} == {"untrained", "trained"} and all(r["job_id"] for r in rows)


def _old_experiment(tmp, records) -> None:
    """An experiment file "old" with one untrained row on stsb-dev, and its records JSON holding ``records``."""
    spec = {"name": "old", "workdir": str(tmp / "work"), "results": str(tmp / "old.json"),
            "table": str(tmp / "old.md"), "tasks": ["stsb-dev"], "eval_max_length": 64, "instructions": False,
            "runs": [{"name": "untrained", "model": str(tmp / "tiny-model")}]}
    (tmp / "old.yaml").write_text(yaml.safe_dump(spec))
    (tmp / "old.json").write_text(json.dumps({"experiment": "old", "tasks": ["stsb-dev"], "records": records}))


def _committed_records(tmp):
    """``_old_experiment`` as a fresh checkout has it: an untrained row whose records (with a value no model
    computed, 12.5) and per-item file cover it, and a row "gone" under another protocol. Returns (records, the
    untrained row's per-item file)."""
    from embedlab.experiment import items_path, load_experiment

    protocol = {"eval_bf16": False, "eval_max_length": 64, "instructions": False, "instruction_tokens_pooled": True}
    records = [{"name": "untrained", "seed": 49, "task": "stsb-dev", "split": "dev", "metric": "main_score",
                "value": 12.5, **protocol, "steps": 0, "train_seconds": 0.0},
               {"name": "gone", "seed": 1, "task": "stsb-dev", "split": "dev", "metric": "main_score",
                "value": 7.0, "eval_bf16": False, "eval_max_length": 128, "steps": 5, "train_seconds": 3.0}]
    _old_experiment(tmp, records)
    items = items_path(load_experiment(tmp / "old.yaml"), "untrained", 49, "stsb-dev")
    items.parent.mkdir(parents=True)
    items.write_text(json.dumps({"gold": [1, 2, 3], "pred": [0.1, 0.3, 0.2]}))
    return records, items


def test_committed_records_are_imported_and_finished_jobs_not_rerun(train_root, data_root, monkeypatch):
    """A fresh checkout has the records JSON (and per-item files) but no store: the records are imported, the runs
    they cover are adopted as done jobs (nothing is trained or evaluated again), and the export reproduces them."""
    tmp = train_root
    monkeypatch.chdir(tmp)
    records, items = _committed_records(tmp)
    run_experiment(tmp / "old.yaml", show_progress=False)
    out = json.loads((tmp / "old.json").read_text())["records"]
    assert out == records  # 12.5 is not a score a model computed: the untrained job was adopted, not rerun
    assert not (tmp / "work").exists()
    assert "| untrained | 1 | 12.50 |" in (tmp / "old.md").read_text()
    run_experiment(tmp / "old.yaml", show_progress=False)  # idempotent: nothing imported twice
    assert json.loads((tmp / "old.json").read_text())["records"] == records
    # A records file written later (another value for the same run, seed and task) wins over the store's older row.
    from embedlab.experiment import refresh

    records[0]["value"] = 13.5
    (tmp / "old.json").write_text(json.dumps({"experiment": "old", "tasks": ["stsb-dev"], "records": records}))
    refresh(tmp / "old.yaml")
    assert json.loads((tmp / "old.json").read_text())["records"] == records


def test_rerun_runs_an_adopted_row_again_and_its_new_records_replace_the_old(train_root, data_root, monkeypatch):
    """A row adopted from committed records has no model on this machine (its folder was on another); ``rerun``
    with ``only`` queues it again: it is really evaluated, and its new record replaces the committed one in the
    export while the rows not named keep theirs. Without ``only`` it is refused before anything runs."""
    tmp = train_root
    monkeypatch.chdir(tmp)
    records, items = _committed_records(tmp)
    db = str(tmp / "store.sqlite")
    run_experiment(tmp / "old.yaml", show_progress=False, db=db)  # adopted, not run
    assert json.loads((tmp / "old.json").read_text())["records"] == records
    with pytest.raises(ConfigError, match="--rerun needs --only"):
        run_experiment(tmp / "old.yaml", show_progress=False, db=db, rerun=True)
    run_experiment(tmp / "old.yaml", show_progress=False, db=db, only=["untrained"], rerun=True)
    out = {r["name"]: r for r in json.loads((tmp / "old.json").read_text())["records"]}
    assert out["gone"] == records[1]  # not named: untouched
    assert out["untrained"]["value"] != 12.5 and -100 <= out["untrained"]["value"] <= 100  # computed this time
    assert json.loads(items.read_text())["gold"] != [1, 2, 3]  # the per-item file is the new run's
    # Done again now: a plain call runs nothing and changes nothing.
    again = json.loads((tmp / "old.json").read_text())["records"]
    run_experiment(tmp / "old.yaml", show_progress=False, db=db)
    assert json.loads((tmp / "old.json").read_text())["records"] == again


def test_a_run_with_a_geometry_task_is_adopted_without_per_item_files_for_it(train_root, data_root, monkeypatch):
    """Geometry scores have no per-item outputs: requiring a per-item file for every task left every CSE-SFP row of
    a fresh checkout unadoptable (their experiment scores geometry), so each was trained and evaluated again."""
    from embedlab.experiment import items_path, load_experiment

    tmp = train_root
    monkeypatch.chdir(tmp)
    protocol = {"eval_bf16": False, "eval_max_length": 64, "instructions": False, "instruction_tokens_pooled": True,
                "steps": 0, "train_seconds": 0.0}
    records = [{"name": "untrained", "seed": 49, "task": "stsb-dev", "split": "dev", "metric": "main_score",
                "value": 12.5, **protocol},
               {"name": "untrained", "seed": 49, "task": "geometry", "split": "test", "metric": "main_score",
                "value": 0.75, **protocol}]
    _old_experiment(tmp, records)
    spec = yaml.safe_load((tmp / "old.yaml").read_text())
    (tmp / "old.yaml").write_text(yaml.safe_dump({**spec, "tasks": ["stsb-dev", "geometry"]}))
    items = items_path(load_experiment(tmp / "old.yaml"), "untrained", 49, "stsb-dev")
    items.parent.mkdir(parents=True)
    items.write_text(json.dumps({"gold": [1, 2, 3], "pred": [0.1, 0.3, 0.2]}))
    run_experiment(tmp / "old.yaml", show_progress=False)
    assert not (tmp / "work").exists()  # adopted: not evaluated again
    assert json.loads((tmp / "old.json").read_text())["records"] == records
    # (A ranked task without its per-item file still blocks adoption: the test below.)


def test_records_imported_before_their_items_existed_are_adopted_once_the_items_are_there(train_root, data_root,
                                                                                         monkeypatch):
    """A store that took a run's records as plain rows (its per-item files were not committed yet, so it could not
    be adopted) adopts the job on a later import once they are: the run is not trained or evaluated again."""
    from embedlab.bench.jobs import JobQueue
    from embedlab.bench.store import ResultsStore
    from embedlab.experiment import experiment_jobs, items_path, refresh

    tmp = train_root
    monkeypatch.chdir(tmp)
    records = [{"name": "untrained", "seed": 49, "task": "stsb-dev", "split": "dev", "metric": "main_score",
                "value": 12.5, "eval_bf16": False, "eval_max_length": 64, "instructions": False,
                "instruction_tokens_pooled": True, "steps": 0, "train_seconds": 0.0}]
    _old_experiment(tmp, records)
    db = str(tmp / "store.sqlite")
    refresh(tmp / "old.yaml", db=db)  # no per-item file yet: the rows are imported, the job is not adopted
    loaded = load_experiment(tmp / "old.yaml")
    ((_, job, _),) = experiment_jobs(loaded, tmp / "work")
    with ResultsStore(db) as store:
        assert JobQueue(store).find(job) is None
    items = items_path(loaded, "untrained", 49, "stsb-dev")
    items.parent.mkdir(parents=True)
    items.write_text(json.dumps({"gold": [1, 2, 3], "pred": [0.1, 0.3, 0.2]}))
    refresh(tmp / "old.yaml", db=db)
    with ResultsStore(db) as store:
        assert JobQueue(store).find(job)["status"] == "done"
    run_experiment(tmp / "old.yaml", show_progress=False, db=db)
    assert not (tmp / "work").exists()  # not evaluated again: 12.5 is not a score the tiny model computes
    assert json.loads((tmp / "old.json").read_text())["records"] == records


def test_a_misspelt_extra_metric_is_an_error_not_an_empty_column(train_root, data_root, monkeypatch):
    tmp = train_root
    monkeypatch.chdir(tmp)
    spec = {"name": "xm", "workdir": str(tmp / "w"), "results": str(tmp / "xm.json"), "table": str(tmp / "xm.md"),
            "tasks": ["stsb-dev"], "eval_max_length": 32, "extra_metrics": {"stsb-dev": ["cosine_pearsn"]},
            "runs": [{"name": "untrained", "model": str(tmp / "tiny-model")}]}
    (tmp / "xm.yaml").write_text(yaml.safe_dump(spec))
    with pytest.raises(ConfigError, match=r"task stsb-dev has no score 'cosine_pearsn' \(it has: .*cosine_pearson"):
        run_experiment(tmp / "xm.yaml", show_progress=False, executor="inline")


def test_each_finished_job_is_exported_before_the_call_ends(train_root, data_root, monkeypatch):
    """A call of many jobs that is stopped half-way (Ctrl-C, the machine going away) has already written the records
    and table of every job it finished: the export follows each job, not only the end of the call."""
    import embedlab.bench.executors as executors

    tmp = train_root
    monkeypatch.chdir(tmp)
    spec = {"name": "stopped", "workdir": str(tmp / "work"), "results": str(tmp / "stopped.json"),
            "table": str(tmp / "stopped.md"), "tasks": ["stsb-dev"], "eval_max_length": 64,
            "runs": [{"name": "first", "model": str(tmp / "tiny-model")},
                     {"name": "second", "model": str(tmp / "tiny-model"), "pooling": "cls"}]}
    (tmp / "stopped.yaml").write_text(yaml.safe_dump(spec))
    real = executors.make_executor

    def stopping_executor(*args, **kwargs):
        ex = real(*args, **kwargs)
        run = ex.run

        def run_then_stop(ids, on_change=None):
            def changed(job):
                on_change(job)
                if job["status"] == "done":  # the user presses Ctrl-C right after the first job finishes
                    raise KeyboardInterrupt
            return run(ids, on_change=changed)
        ex.run = run_then_stop
        return ex

    monkeypatch.setattr(executors, "make_executor", stopping_executor)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(tmp / "stopped.yaml", show_progress=False, executor="inline")
    records = json.loads((tmp / "stopped.json").read_text())["records"]
    assert [(r["name"], r["task"]) for r in records] == [("first", "stsb-dev")]
    assert "| first |" in (tmp / "stopped.md").read_text() and "| second |" not in (tmp / "stopped.md").read_text()


def test_a_recipe_edited_after_its_row_trained_is_refused_not_taken_as_done(train_root, data_root, monkeypatch):
    """Jobs are keyed by recipe path and overrides: an edited recipe file would leave the old row's records standing
    for it. The runner compares each finished row's saved recipe with today's and stops, naming what changed."""
    tmp = train_root
    monkeypatch.chdir(tmp)
    recipe = recipe_file(tmp)
    spec = {"name": "edited", "workdir": str(tmp / "work"), "results": str(tmp / "edited.json"),
            "table": str(tmp / "edited.md"), "tasks": ["stsb-dev"], "eval_max_length": 64,
            "common_overrides": ["train.max_steps=2", "train.save_every=null"],
            "runs": [{"name": "trained", "recipe": recipe, "seeds": [1]}]}
    (tmp / "edited.yaml").write_text(yaml.safe_dump(spec))
    run_experiment(tmp / "edited.yaml", show_progress=False, executor="inline")
    before = (tmp / "edited.json").read_text()
    # each trained record says what trained it, resolved (the overrides applied), not only the recipe's path
    settings = [r["train_settings"] for r in json.loads(before)["records"]]
    assert settings and all(s == settings[0] for s in settings)
    assert {k: settings[0][k] for k in ("lr", "max_steps", "max_length", "objective")} == {
        "lr": 1.0e-3, "max_steps": 2, "max_length": 32, "objective": "codiemb"}
    run_experiment(tmp / "edited.yaml", show_progress=False, executor="inline")  # unchanged: nothing to say
    with open(recipe) as f:
        text = f.read()
    with open(recipe, "w") as f:
        f.write(text.replace("lr: 1.0e-3", "lr: 5.0e-4"))
    with pytest.raises(ConfigError, match=r"trained seed 1 \(train.lr: 0.001 -> 0.0005\).*run of its own"):
        run_experiment(tmp / "edited.yaml", show_progress=False, executor="inline")
    assert (tmp / "edited.json").read_text() == before  # the old records are left as they were
