"""``embedlab demo``: the main job on the embedded defaults (evaluate, train a short run, evaluate it, report)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.text import Text

from ._common import _on_interrupt, _say, console
from .eval import _run_eval, _settings

app = typer.Typer()


@app.command()
def demo(
    out: Path = typer.Option(Path("runs/demo"), "--out"),
    model: str = typer.Option("sentence-transformers/all-MiniLM-L6-v2", "--model"),
    tasks: str = typer.Option("stsb,sts12,sts13,scifact,msmarco-sample,nfcorpus-pp,geometry", "--tasks"),
    train: bool = typer.Option(True, "--train/--no-train", help="train a short CoDiEmb run and evaluate it too"),
    vqa: bool = typer.Option(True, "--vqa/--no-vqa", help="add the Med-VQA part (baselines and a model trained for a "
                             "few minutes on VQA-RAD's validation split)"),
    bf16: Optional[bool] = typer.Option(None, "--bf16/--fp32", help="train and evaluate with bf16 autocast (about 2x "
                                        "faster on a CPU with AVX-512 BF16 or AMX, scores within a few hundredths) "
                                        "or in fp32 (= MTEB exactly); default: bf16 where the CPU computes it "
                                        "natively, else fp32"),
) -> None:
    """The main job on the embedded defaults: evaluate the bundled model on every local STS and retrieval set, train
    a short CoDiEmb run from it (recipes/codiemb_demo.yaml), evaluate that, add the Med-VQA part (baselines and a
    briefly trained model on VQA-RAD's validation split), and write OUT/report.md."""
    from ..demo import run_demo

    from ..hardware import auto_precision

    if bf16 is None:
        precision, why = auto_precision()
        console.print(Text(f"precision: {precision} ({why}; --bf16 / --fp32 choose)", style="bold"))
        bf16 = precision == "bf16"
    settings = _settings(32, None, None, None, bf16, True, False)
    _on_interrupt(f"interrupted: what finished is kept under {out} (results store {out / 'results.sqlite'})")
    db = f"sqlite:///{(out / 'results.sqlite').resolve()}"

    def evaluate_fn(model_name, task_names, json_dir, label):
        return _run_eval(model_name, task_names, json_dir, db, False, settings, label=label)[1]

    def log(m):
        console.print(Text(m, style="bold"))

    report = run_demo(out, evaluate_fn, train=train, tasks=tasks, model=model, precision="bf16" if bf16 else "fp32",
                      log=log)
    if vqa:
        from ..demo import run_vqa_demo

        run_vqa_demo(out, report, log=log)
    _say(f"report: {report}")
