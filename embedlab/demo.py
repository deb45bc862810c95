"""The main job on the embedded defaults (``make demo`` / ``embedlab demo``): evaluate, train CoDiEmb, evaluate again.

1. evaluate all-MiniLM-L6-v2 on every local STS and retrieval set plus the geometry probe (MTEB conventions; bf16
   autocast where the CPU computes bf16 natively, so the whole demo fits in 15 minutes on 2 cores, fp32 elsewhere
   (embedlab.hardware); ``--fp32`` reproduces MTEB's numbers exactly);
2. build the training files from the local data (``embedlab convert``; seconds) and train a short CoDiEmb run from
   ``recipes/codiemb_demo.yaml`` in the same precision (resumes from its checkpoints if interrupted; a finished run
   is reused);
3. evaluate the trained model on the same tasks and write ``<out>/report.md``: before, after and the difference per
   task, the published MTEB scores of the base model, what was trained and how long it took;
4. Med-VQA (``vqa=True``, the default): the three baselines and a ``cpu``-profile library model trained for a few
   minutes (``DEMO_VQA``) on VQA-RAD's validation split, scored with real, blank and shuffled images; a section of
   the same report (validation numbers only; the test split is never touched).

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


_DEMO_ENTRIES = {"report.md", "results.sqlite", "base", "codiemb", "train-data", "medvqa"}
# The Med-VQA part: a library model (cpu profile) trained briefly on VQA-RAD val-train, scored on val.
DEMO_VQA = {"model": "cnn-ban", "profile": "cpu", "task": "vqa-rad-val", "seed": 0, "train": {"epochs": 8}}


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
    # Training follows the evaluation's precision: the recipe's bf16 autocast is fast only where bf16 is native.
    recipe = load_recipe(recipe_path, [f"data.root={data_root}", f"output_dir={out / 'codiemb'}",
                                       f"model.name={model}",
                                       f"train.mixed_precision={'bf16' if precision == 'bf16' else 'fp32'}"])
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


def run_vqa_demo(out: Path, report: Path, log: Callable[[str], None] = print, recipe: dict | None = None) -> Path:
    """Step 4: baselines and a briefly trained library model on VQA-RAD's validation split; appends a section to
    ``report`` (rewritten atomically) and returns it. The model trains in ``<out>/medvqa``, which the trainer resumes:
    a finished run is not trained again, and a run of another recipe there is refused rather than reused."""
    from .atomic import write_text
    from .medvqa.baselines import BASELINES
    from .medvqa.datasets import load_dataset
    from .medvqa.metrics import score
    from .medvqa.recipe import VQARecipe, run_recipe

    r = VQARecipe(**{**DEMO_VQA, **(recipe or {}), "output_dir": str(out / "medvqa")}).check()
    task = r.resolved_task()
    log(f"4/4 Med-VQA: baselines, then {r.model} ({r.profile} profile, {r.train.get('epochs')} epochs) on "
        f"{task.name}; interrupt and rerun to resume")
    train, val = load_dataset(task.dataset, task.train_split), load_dataset(task.dataset, task.eval_split)
    answers = [x.answer for x in train]
    rows = []
    for name in BASELINES.names():
        result = score(val, BASELINES.get(name)(seed=0).fit(train).predict(val), train_answers=answers)
        rows.append((f"baseline: {name}", result["scores"]))
    trained, result = run_recipe(r)
    minutes = f"{sum(h['seconds'] for h in trained.info['history']) / 60:.1f}"  # the epochs, over all resumes
    rows.append((f"{r.model} ({r.profile}, {trained.info.get('epochs')} epochs, seed {r.seed})", result["scores"]))

    def cell(scores, key):
        v = scores.get(key)
        return "-" if v is None or v != v else f"{100 * v:.1f}"

    lines = ["", "## Med-VQA: VQA-RAD validation split", "",
             f"Trained on `{task.train_split}` ({len(train)} questions), scored on `{task.eval_split}` ({len(val)} "
             f"questions); closed/open by the answer_type field; answers unseen in training count wrong. Blank = "
             f"every image one constant grey; shuffled = every question asked about another image. Training time "
             f"(epochs): {minutes} min. A model uses the image only if it beats image identity and drops on blank "
             f"images.", "",
             "| model | closed | open | overall | blank | shuffled |", "|---|---:|---:|---:|---:|---:|"]
    for label, s_ in rows:
        lines.append(f"| {label} | {cell(s_, 'closed')} | {cell(s_, 'open')} | {cell(s_, 'overall')} | "
                     f"{cell(s_, 'blank_overall')} | {cell(s_, 'shuffled_overall')} |")
    text = report.read_text(encoding="utf-8") if report.is_file() else "# embedlab demo\n"
    marker = "\n## Med-VQA: VQA-RAD validation split"
    text = text.split(marker)[0].rstrip("\n") + "\n" + "\n".join(lines) + "\n"
    write_text(report, text)
    return report
