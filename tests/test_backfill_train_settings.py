"""experiments/backfill_train_settings.py: records stored before records carried ``train_settings`` get them,
resolved from their own recipe and overrides, with every value unchanged; a run folder whose saved recipe
disagrees stops the backfill for that run before anything is stored."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import yaml

from embedlab.bench.store import ResultsStore
from embedlab.config import load_recipe, recipe_to_dict
from embedlab.errors import ConfigError
from embedlab.experiment import load_experiment, refresh
from embedlab.text_jobs import train_settings

ROOT = Path(__file__).resolve().parents[1]
RECIPE = str(ROOT / "recipes" / "codiemb.yaml")


def _script():
    spec = importlib.util.spec_from_file_location("backfill", ROOT / "experiments" / "backfill_train_settings.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _old_experiment(tmp: Path) -> tuple[Path, str, list[dict]]:
    spec = {"name": "old", "workdir": str(tmp / "work"), "results": str(tmp / "old.json"),
            "table": str(tmp / "old.md"), "tasks": ["stsb-dev"], "eval_max_length": 64, "instructions": False,
            "runs": [{"name": "trained", "recipe": RECIPE, "overrides": ["train.lr=3.0e-5"], "seeds": [7]}]}
    (tmp / "old.yaml").write_text(yaml.safe_dump(spec))
    # As records were stored before 2026-12-04: the recipe and overrides, no train_settings.
    records = [{"name": "trained", "seed": 7, "task": "stsb-dev", "split": "dev", "metric": "main_score",
                "value": 61.25, "eval_bf16": False, "eval_max_length": 64, "instructions": False,
                "instruction_tokens_pooled": True, "steps": 20, "train_seconds": 9.0, "recipe": RECIPE,
                "overrides": ["train.lr=3.0e-5", "seed=7", "output_dir=/elsewhere/trained-s7"]}]
    (tmp / "old.json").write_text(json.dumps({"experiment": "old", "tasks": ["stsb-dev"], "records": records}))
    db = str(tmp / "store.sqlite")
    refresh(tmp / "old.yaml", db=db)
    return tmp / "old.yaml", db, records


def test_old_records_get_the_train_settings_of_their_recipe_and_keep_their_values(tmp_path, data_root):
    spec_path, db, records = _old_experiment(tmp_path)
    with ResultsStore(db, create=False) as store:
        assert _script().backfill(load_experiment(spec_path), store) == 1
    refresh(spec_path, db=db)
    (out,) = json.loads((tmp_path / "old.json").read_text())["records"]
    want = train_settings(load_recipe(RECIPE, ["train.lr=3.0e-5", "seed=7"]))
    assert out["train_settings"] == want and want["lr"] == 3.0e-5 and want["objective"] == "codiemb"
    assert "from the record's recipe and overrides" in out["train_settings_source"]
    assert {k: v for k, v in out.items() if not k.startswith("train_settings")} == records[0]
    with ResultsStore(db, create=False) as store:  # a second pass finds nothing left to do
        assert _script().backfill(load_experiment(spec_path), store) == 0


def test_a_run_folder_whose_recipe_disagrees_stops_the_backfill(tmp_path, data_root):
    spec_path, db, _ = _old_experiment(tmp_path)
    folder = tmp_path / "work" / "trained-s7"
    folder.mkdir(parents=True)
    saved = recipe_to_dict(load_recipe(RECIPE, ["train.lr=5.0e-5", "seed=7", f"output_dir={folder}"]))
    (folder / "recipe.json").write_text(json.dumps(saved))
    with ResultsStore(db, create=False) as store, pytest.raises(ConfigError, match="train.lr"):
        _script().backfill(load_experiment(spec_path), store)
    refresh(spec_path, db=db)
    (out,) = json.loads((tmp_path / "old.json").read_text())["records"]
    assert "train_settings" not in out
    # The same folder with the recipe the record names is accepted, and says it was checked.
    saved["train"]["lr"] = 3.0e-5
    (folder / "recipe.json").write_text(json.dumps(saved))
    with ResultsStore(db, create=False) as store:
        _script().backfill(load_experiment(spec_path), store)
    refresh(spec_path, db=db)
    (out,) = json.loads((tmp_path / "old.json").read_text())["records"]
    assert out["train_settings_source"].endswith("equal to the run folder's recipe.json")
