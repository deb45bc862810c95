"""``embedlab report``: a leaderboard report (HTML + Markdown, charts, CSV/JSON downloads) from results-store queries.

    embedlab report --experiment codiemb_full --out runs/report      # index.html, report.md, charts/, CSV, JSON

See docs/reports.md. It reads the store only (a store that does not exist is an error); the output folder follows
embedlab's ownership rule (new, empty, or written by embedlab before; ``--overwrite`` otherwise).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ._common import _say

app = typer.Typer()


@app.command()
def report(
    out: Path = typer.Option(..., "--out", help="folder for index.html, report.md, charts and downloads"),
    experiment: Optional[str] = typer.Option(None, "--experiment", help="only this experiment's results"),
    db: Optional[str] = typer.Option(None, "--db", help="results store URL or SQLite file (default: "
                                     "EMBEDLAB_RESULTS_DB)"),
    title: Optional[str] = typer.Option(None, "--title"),
    domain: Optional[str] = typer.Option(None, "--domain", help="only this domain's results (text, medvqa)"),
    split: str = typer.Option("test", "--split", help="the split the leaderboard ranks on (dev to choose on dev)"),
    metrics: str = typer.Option("", "--metrics", help="comma-separated metrics shown per task and split for each "
                                "model's chosen configuration (e.g. closed,open,overall,blank_overall)"),
    html_only: bool = typer.Option(False, "--html-only", help="skip report.md and the PNG charts"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace a folder embedlab did not write"),
) -> None:
    """Render a leaderboard per dataset (best configuration per model, mean ± std over seeds), per-task and
    per-category tables, bar charts, training curves and provenance, from the results store."""
    from ..bench.report_site import build_report

    built = build_report(db, out, experiment=experiment, title=title, domain=domain, split=split,
                         metrics=[m.strip() for m in metrics.split(",") if m.strip()],
                         formats=("html",) if html_only else ("html", "md"), overwrite=overwrite)
    for note in built.notes:
        _say(f"note: {note}")
    _say(f"report: {built.out_dir / 'index.html'} ({len(built.files)} files, {built.seconds['total']:.1f} s)")
