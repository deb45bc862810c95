"""``embedlab vqa train`` and ``embedlab vqa eval``: the Med-VQA model library from the command line.

    embedlab vqa train recipes/vqa-mevf-ban.yaml train.epochs=5 seed=1
    embedlab vqa eval --model runs/vqa/vqa-rad-val/mevf-ban-cpu-s0 --task vqa-rad-val

Both print closed / open / overall accuracy with the blank- and shuffled-image scores and store the rows in the
results store (``--db``), as ``embedlab eval`` does for text; a matrix of runs goes through ``embedlab jobs submit``
with the ``vqa-train`` job kind.
"""
from __future__ import annotations

import uuid
from pathlib import Path
from typing import Optional

import typer

from ._common import _on_interrupt, _progress_bars, _say, _table, console

app = typer.Typer()
vqa = typer.Typer(help="Med-VQA: train and evaluate library models (embedlab list shows models and tasks)",
                  no_args_is_help=True)
app.add_typer(vqa, name="vqa")

_SHOWN = ("closed", "open", "overall", "blank_overall", "shuffled_overall", "image_reliance")


def _show(title: str, result: dict) -> None:
    s = result["scores"]
    cells = [f"{100 * s[k]:.1f}" if k in s and s[k] == s[k] else "-" for k in _SHOWN]
    console.print(_table(title, ["closed", "open", "overall", "blank", "shuffled", "reliance", "n", "unseen"],
                         [[*cells, str(result["counts"]["n"]), str(result["counts"]["unseen"])]]))


def _store(rows: list, db: Optional[str]) -> str:
    from .. import results as results_path
    from ..bench.store import ResultsStore

    store = ResultsStore(db)
    results_path.write(rows, store)
    return store.display_url


def _bar(enabled: bool):
    if not _progress_bars(enabled):
        return None
    from tqdm import tqdm

    bar = tqdm(total=100, unit="%", dynamic_ncols=True)

    def update(fraction, text):
        if fraction is not None:
            bar.n = round(100 * fraction)
        bar.set_description(text[:60])
        bar.refresh()
    return update


@vqa.command("train", context_settings={"allow_extra_args": True, "ignore_unknown_options": False})
def train(
    ctx: typer.Context,
    recipe: Path = typer.Argument(..., help="a Med-VQA recipe YAML (see recipes/vqa-*.yaml)"),
    db: Optional[str] = typer.Option(None, "--db", help="results store URL or SQLite file"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Train a library model on its task's training split and score the evaluation split (real, blank and shuffled
    images); extra arguments key.sub=value override the YAML (e.g. train.epochs=5 seed=1)."""
    from ..medvqa.recipe import load_recipe, run_recipe
    from ..results import make_rows

    r = load_recipe(recipe, list(ctx.args))
    out = r.resolved_output_dir()
    _on_interrupt(f"interrupted: the last finished epoch is saved in {out}/checkpoints; the same command resumes")
    trained, result = run_recipe(r, progress=_bar(progress))
    task = r.resolved_task()
    rows = make_rows(domain="medvqa", model=f"{r.model}-{r.profile}", task=task.name, task_type=task.type,
                     dataset=task.dataset, split=task.eval_split, scores=result["scores"], run_id=uuid.uuid4().hex,
                     seed=r.seed, config=r.model_dump(),
                     extra={"counts": result["counts"], "options": result["options"], "model_dir": str(out),
                            "train": trained.train, "model_settings": trained.settings})
    where = _store(rows, db)
    _show(f"{r.model} ({r.profile}, seed {r.seed}) on {task.name}", result)
    _say(f"model: {out}; results store: {where}")


@vqa.command("eval")
def evaluate(
    model: Path = typer.Option(..., "--model", help="a trained model folder (from `embedlab vqa train`)"),
    task: Optional[str] = typer.Option(None, "--task", help="a Med-VQA task (vqa-rad-val, vqa-rad-image, ...)"),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="instead of --task: a dataset name or export"),
    split: str = typer.Option("val", "--split", help="with --dataset: the split to score"),
    closed_by: str = typer.Option("field", "--closed-by", help="field | yesno"),
    questions: str = typer.Option("all", "--questions", help="all | freeform"),
    db: Optional[str] = typer.Option(None, "--db", help="results store URL or SQLite file"),
) -> None:
    """Score a trained model on a task's evaluation split, or on a dataset split (real, blank, shuffled images)."""
    from ..errors import ConfigError
    from ..medvqa.datasets import load_dataset
    from ..medvqa.evaluate import evaluate_model
    from ..medvqa.models import load_model
    from ..medvqa.tasks import TASK_TYPE, resolve_task
    from ..results import make_rows

    if (task is None) == (dataset is None):
        raise ConfigError("give either --task or --dataset (with --split)")
    trained = load_model(model)
    if task is not None:
        t = resolve_task(task)
        ds, test_split, name = t.dataset, t.eval_split, t.name
    else:
        ds, test_split, name = dataset, split, f"{dataset}:{split}"
    records = load_dataset(ds, test_split)
    result = evaluate_model(trained, records, closed_by=closed_by, questions=questions)
    rows = make_rows(domain="medvqa", model=str(model), task=name, task_type=TASK_TYPE, dataset=str(ds),
                     split=test_split, scores=result["scores"], run_id=uuid.uuid4().hex,
                     extra={"counts": result["counts"], "options": result["options"], "model_dir": str(model)})
    where = _store(rows, db)
    _show(f"{trained.name} ({trained.profile}) on {name}", result)
    _say(f"results store: {where}")
