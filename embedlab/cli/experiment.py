"""``embedlab experiment``: an experiment YAML as jobs (submit and wait), its records exported, its table rendered."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ._common import _on_interrupt, _progress_bars, _say

app = typer.Typer()


@app.command()
def experiment(
    spec: Path = typer.Argument(..., help="experiment YAML (see experiments/)"),
    only: Optional[str] = typer.Option(None, "--only", help="comma-separated run names"),
    seeds: Optional[str] = typer.Option(None, "--seeds", help="comma-separated seeds (default: each run's own)"),
    table_only: bool = typer.Option(False, "--table-only",
                                    help="run nothing: import the records JSON into the store, export it and "
                                         "render the table"),
    db: Optional[str] = typer.Option(None, "--db", help="results store URL or SQLite file (default: "
                                     "EMBEDLAB_RESULTS_DB)"),
    executor: str = typer.Option("local", "--executor", help="local | ray | inline"),
    cpus: Optional[int] = typer.Option(None, "--cpus", min=1, help="local executor: cores to fill (default: all)"),
    address: Optional[str] = typer.Option(None, "--address", help="ray executor: cluster address (or RAY_ADDRESS)"),
    rerun: bool = typer.Option(False, "--rerun",
                               help="run the --only rows again even where they are done (a finished model in the "
                                    "row's folder is re-evaluated, a missing one trained); their new records "
                                    "replace the old"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Run every (run, seed) of an experiment as a job (resumable: done jobs are not rerun), store the scores,
    export the records JSON and render the table."""
    from ..experiment import refresh, run_experiment

    if table_only and rerun:
        raise typer.BadParameter("--table-only runs nothing; --rerun runs rows again: give one of them")
    if table_only:
        _say(f"table: {refresh(spec, db)}")
        return
    try:
        seed_list = [int(x) for x in seeds.split(",")] if seeds else None
    except ValueError:
        raise typer.BadParameter(f"--seeds must be comma-separated integers, got {seeds!r}") from None
    if seed_list is not None and min(seed_list) < 0:
        raise typer.BadParameter(f"--seeds must be integers >= 0, got {seeds!r}")
    _on_interrupt("interrupted: finished jobs are stored, running ones went back to the queue; the same command "
                  "resumes")
    path = run_experiment(spec, only=only.split(",") if only is not None else None,
                          show_progress=_progress_bars(progress), seeds=seed_list, db=db, executor=executor,
                          cpus=cpus, address=address, rerun=rerun)
    _say(f"records: {path}")
