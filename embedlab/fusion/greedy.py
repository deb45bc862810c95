"""``greedy_soup`` (Wortsman et al., 2022): rank checkpoints by a dev score, then add them to the soup in that order,
keeping each one only if the uniform soup's dev score does not drop.

    soup = [best];  for m in the rest, best first:  if score(uniform_soup(soup + [m])) >= score(soup): soup += [m]

The score is any callable on a model folder (the CLI's: the mean main score of dev tasks such as ``stsb-dev`` and
``scifact-dev`` — dev splits only, never test). Candidate soups are written next to the output and removed at the end;
the final soup goes to ``out`` with every score in its ``fusion.json``. The base model is not used.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable, Sequence

from ..atomic import check_output_dir, staging_dir
from .base import register
from .linear import linear
from .merge import FusionResult, fuse


@register("greedy_soup", needs_base=False, summary="add checkpoints by dev score while the soup's score holds",
          needs_score=True)
def _greedy_soup_tensor(base, tensors, weights, params, seed):
    return linear(base, tensors, weights, {"normalize": True}, seed)


def greedy_soup(models: Sequence[str | Path], score_fn: Callable[[str], float], out: str | Path, seed: int = 0,
                show_progress: bool = True, log: Callable[[str], None] = lambda m: None,
                overwrite: bool = False) -> FusionResult:
    out = Path(out)
    check_output_dir(out, overwrite=overwrite, inputs=[str(m) for m in models])  # before any dev evaluation
    work = staging_dir(out, "greedy")
    try:
        scores = {str(m): score_fn(str(m)) for m in models}
        order = sorted(scores, key=lambda m: -scores[m])
        soup, best = [order[0]], scores[order[0]]
        steps = [{"model": order[0], "soup_score": best, "kept": True}]
        log(f"greedy soup: start with {order[0]} ({best:.4f})")
        for i, candidate in enumerate(order[1:]):
            trial = fuse(soup + [candidate], "linear", out=work / f"trial-{i}", seed=seed, show_progress=False)
            score = score_fn(str(trial.out))
            kept = score >= best
            steps.append({"model": candidate, "soup_score": score, "kept": kept})
            log(f"greedy soup: + {candidate} -> {score:.4f} ({'kept' if kept else 'dropped'})")
            if kept:
                soup, best = soup + [candidate], score
        return fuse(soup, "linear", out=out, seed=seed, show_progress=show_progress, overwrite=overwrite,
                    extra={"greedy_soup": {"individual_scores": scores, "steps": steps, "soup": soup,
                                           "soup_score": best}})
    finally:
        shutil.rmtree(work, ignore_errors=True)


def dev_scorer(tasks: str | list[str], bf16: bool = False) -> Callable[[str], float]:
    """Model folder -> mean main score over dev tasks (no embedding cache: every soup is a new model). Test splits
    are refused: soups are selected on dev data only."""
    import torch

    from ..errors import ConfigError
    from ..evaluate.cache import EmbeddingCache
    from ..evaluate.runner import EvalSettings, evaluate
    from ..evaluate.tasks import parse_tasks
    from ..text import Embedder

    for t in parse_tasks(tasks):
        if t.split == "test":
            raise ConfigError(f"dev tasks: {t.name} is a test split; select models on dev splits only")
    settings = EvalSettings(show_progress=False, autocast_dtype=torch.bfloat16 if bf16 else None)

    def score(path: str) -> float:
        results = evaluate(Embedder.load(path), tasks, settings=settings, cache=EmbeddingCache(enabled=False))
        return sum(r.main_score for r in results) / len(results)

    return score
