"""``embedlab train``: train with a recipe YAML, key.sub=value overrides on the command line."""
from __future__ import annotations

from pathlib import Path

import typer

from ._common import _on_interrupt, _progress_bars, _say

app = typer.Typer()


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": False})
def train(
    ctx: typer.Context,
    recipe: Path = typer.Argument(..., help="a recipe YAML (see recipes/)"),
    no_resume: bool = typer.Option(False, "--no-resume", help="start fresh even if output_dir has checkpoints"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Train with a recipe; extra arguments key.sub=value override the YAML (e.g. train.max_steps=200 seed=1)."""
    from ..config import load_recipe
    from ..train import train_recipe

    r = load_recipe(recipe, list(ctx.args))
    _on_interrupt(f"interrupted: the checkpoints saved so far in {r.resolved_output_dir()} let a rerun of the same "
                  f"command resume")
    final, _ = train_recipe(r, resume=not no_resume, show_progress=_progress_bars(progress))
    _say(f"final model: {final}")
