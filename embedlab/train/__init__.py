"""Training: the one embedlab loop (``trainer.Trainer``), its per-step batch assembly (``steps``), checkpoints, and
the sentence-transformers peer (``st_peer``) used as a baseline row. ``train_recipe`` picks the right one."""
from __future__ import annotations

from pathlib import Path


def train_recipe(recipe, resume: bool = True, show_progress: bool = True, stop_after: int | None = None,
                 on_step=None):
    """Train ``recipe`` and return ``(final model folder or None if stopped early, steps done)``.

    ``objective.kind: mnrl_cosent`` is trained by sentence-transformers' own trainer (the peer baseline); every other
    objective by embedlab's trainer. ``on_step(step, total_steps)`` is called after every optimizer step of
    embedlab's trainer (the job runner's progress); the peer reports no steps."""
    if recipe.objective.kind == "mnrl_cosent":
        from .st_peer import peer_steps, train_st_peer

        if stop_after is not None or not resume:
            from ..errors import ConfigError

            raise ConfigError("the sentence-transformers peer always resumes and runs to the end (no --no-resume / "
                              "stop_after)")
        final: Path | None = train_st_peer(recipe, show_progress=show_progress)
        return final, peer_steps(recipe.resolved_output_dir())
    from .trainer import Trainer

    trainer = Trainer(recipe, resume=resume, show_progress=show_progress, on_step=on_step)
    final = trainer.train(stop_after=stop_after)
    return final, trainer.step
