"""The main job on the embedded defaults (``make demo`` / ``embedlab demo``): evaluate, train CoDiEmb, evaluate again.

1. evaluate all-MiniLM-L6-v2 on every local STS and retrieval set plus the geometry probe (MTEB conventions; bf16
   autocast by default so the whole demo fits in 15 minutes on 2 cores, ``--fp32`` reproduces MTEB's numbers exactly);
2. build the training files from the local data (``embedlab convert``; seconds) and train a short CoDiEmb run from
   ``recipes/codiemb_demo.yaml`` (resumes from its checkpoints if interrupted; a finished run is reused);
3. evaluate the trained model on the same tasks and write ``<out>/report.md``: before, after and the difference per
   task, the published MTEB scores of the base model, what was trained and how long it took.

MTEB-format JSON goes to ``<out>/<label>/json`` and every score to ``<out>/results.sqlite``. Corpus embeddings are
cached by model hash, so a second run of the demo recomputes nothing it has already done. It does not define tasks,
losses or the report layout of a single evaluation (see evaluate/, train/, evaluate/report.py).
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

from .atomic import write_json

DEMO_RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "codiemb_demo.yaml"
BASE_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
TASKS = "stsb,sts12,sts13,scifact,msmarco-sample,nfcorpus-pp,geometry"


_DEMO_ENTRIES = {"report.md", "results.sqlite", "base", "codiemb", "train-data"}


def _earlier_demo(folder: Path) -> bool:
    """A demo folder written before folders carried the owner marker (or prepared for it, e.g. with train-data/):
    nothing but the demo's own entries, and a report.md, if any, that a demo wrote."""
    if not all(p.name in _DEMO_ENTRIES for p in folder.iterdir()):
        return False
    report = folder / "report.md"
    if not report.exists():
        return True
    try:
        with open(report, encoding="utf-8") as f:
            return report.is_file() and f.readline().startswith("# embedlab")
    except (OSError, ValueError):
        return False


def run_demo(out: Path, evaluate_fn: Callable, train: bool = True, recipe_path: Path = DEMO_RECIPE,
             tasks: str = TASKS, model: str = BASE_MODEL, log: Callable[[str], None] = print,
             precision: str = "fp32") -> Path:
    """``evaluate_fn(model_name, tasks, json_dir, label) -> results`` evaluates one model (the CLI passes its own,
    which prints progress and stores the scores). Returns the report path."""
    from .evaluate.report import write_comparison_report, write_report

    from .outputs import claim_folder

    # report.md and results.sqlite are written into `out`: never into a folder of the user's own files
    claim_folder(out, "demo output folder", "embedlab demo", legacy=_earlier_demo)
    log(f"1/3 evaluating {model}")
    before = evaluate_fn(model, tasks, out / "base" / "json", model)
    settings = {"batch_size": 32, "max_length": "model default (256)",
                "precision": precision if precision == "fp32" else f"{precision} autocast"}
    if not train:
        return write_report(out / "report.md", model, before, settings)
    from .config import load_recipe
    from .prep.convert import convert_all
    from .train import train_recipe
    from .train.run_folder import finished_model

    data_root = out / "train-data"
    recipe = load_recipe(recipe_path, [f"data.root={data_root}", f"output_dir={out / 'codiemb'}",
                                       f"model.name={model}"])
    names = sorted({Path(s.path).stem for s in recipe.data.sources})
    from .prep.convert import check_current
    from .errors import ConfigError

    try:
        check_current(data_root)
        current = all((data_root / s.path).is_file() for s in recipe.data.sources)
    except ConfigError:
        current = False  # built by other converter code: rebuild (seconds)
    if not current:
        log(f"2/3 building training files ({', '.join(names)}) in {data_root}")
        convert_all(data_root, names=names)
    final = out / "codiemb" / "final"
    timing_path = out / "codiemb" / "train_time.json"
    if finished_model(out / "codiemb", recipe) is None:  # reuse only this recipe's own finished model
        log(f"2/3 training CoDiEmb: {recipe.train.max_steps} steps ({recipe_path.name}); interrupt and rerun to resume")
        t0 = time.perf_counter()
        final, steps = train_recipe(recipe)
        write_json(timing_path, {"seconds": time.perf_counter() - t0, "steps": steps})
    timing = json.loads(timing_path.read_text()) if timing_path.is_file() else {}
    log(f"3/3 evaluating the trained model {final}")
    after = evaluate_fn(str(final), tasks, out / "codiemb" / "json", "codiemb-demo")
    training = {
        "recipe": str(recipe_path.relative_to(recipe_path.parents[1])) if recipe_path.is_relative_to(
            recipe_path.parents[1]) else str(recipe_path),
        "steps": timing.get("steps", recipe.train.max_steps),
        "minutes": round(timing["seconds"] / 60, 1) if "seconds" in timing else "reused (see train_time.json)",
        "precision": recipe.train.mixed_precision,
        "batch": dict(recipe.sampler.batch_size),
        "data": ", ".join(f"{s.name} ({s.task}{', first ' + str(s.max_examples) if s.max_examples else ''})"
                          for s in recipe.data.sources),
    }
    return write_comparison_report(out / "report.md", model, before, "codiemb-demo", after, settings, training)
