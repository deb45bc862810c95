"""The sentence-transformers peer: a recipe's data trained with sentence-transformers' own trainer, as a baseline row.

    recipe (objective.kind: mnrl_cosent) -> SentenceTransformerTrainer -> <output_dir>/final  (ST layout)

This is what a sentence-transformers user would write for the same multi-task data, so that the CoDiEmb table has a
peer trained by the reference library rather than by our loop:

- every IR source becomes a dataset ``(anchor, positive[, negative_1 .. negative_k])`` trained with
  ``MultipleNegativesRankingLoss`` (in-batch negatives plus the file's hard negatives; k = min(data.n_negatives, the
  fewest negatives any row of that file has), so a file without mined negatives relies on in-batch negatives alone);
  the positive is each query's first positive, the negatives its first k;
- every STS source becomes ``(sentence1, sentence2, score)`` with the score scaled to [0, 1] by its declared range
  (the same scaling as our trainer) and is trained with ``CoSENTLoss``;
- ``MultiDatasetBatchSamplers.PROPORTIONAL`` (a dataset is drawn in proportion to its size, each batch from one
  dataset), the recipe's per-task batch sizes (through a batch-sampler callable that looks at the dataset's columns),
  full batches only, and the recipe's steps, learning rate, warmup, linear decay, gradient clipping, weight decay, seed
  and bf16.
- losses keep ST's defaults (scale 20, i.e. temperature 0.05, for both): the peer is sentence-transformers as its users
  run it, not a copy of our objective.

Query instructions (``data.query_template``) are prepended to anchors and STS sentences as plain text. Resuming uses the
HF trainer's own checkpoints (``<output_dir>/st-checkpoints``). It does not evaluate (the experiment runner does) and
does not support our GradCache or cross-device gathering options.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from ..atomic import write_json
from ..config import Recipe, recipe_to_dict
from ..errors import ConfigError
from . import run_folder

log = logging.getLogger("embedlab.train")


def _datasets(recipe: Recipe, sources: list) -> tuple[dict, dict[str, str]]:
    """{source name: datasets.Dataset}, {source name: task}."""
    from datasets import Dataset

    out, tasks = {}, {}
    for loaded in sources:
        instruction = loaded.source.instruction
        prefix = recipe.data.query_template.format(instruction=instruction) if instruction else ""
        if loaded.task == "ir":
            k = min([recipe.data.n_negatives] + [len(ex.neg) for ex in loaded.examples])
            cols: dict[str, list[str]] = {"anchor": [prefix + ex.query for ex in loaded.examples],
                                          "positive": [ex.pos[0] for ex in loaded.examples]}
            for j in range(k):
                cols[f"negative_{j + 1}"] = [ex.neg[j] for ex in loaded.examples]
        else:
            cols = {"sentence1": [prefix + p.sentence1 for p in loaded.examples],
                    "sentence2": [prefix + p.sentence2 for p in loaded.examples],
                    "score": [float(p.score) for p in loaded.examples]}
        out[loaded.name] = Dataset.from_dict(cols)
        tasks[loaded.name] = loaded.task
    return out, tasks


class per_task_batch_sampler:
    """A ``batch_sampler`` callable for ST's trainer giving each dataset its task's batch size (ST has one batch size
    for all datasets; ours are per task). An STS dataset is the one with a ``score`` column. Full batches only.
    A class, not a closure: the HF trainer pickles its arguments into every checkpoint."""

    def __init__(self, sizes: dict[str, int]):
        self.sizes = dict(sizes)

    def __call__(self, dataset, batch_size: int, drop_last: bool, valid_label_columns=None, generator=None, seed=0):
        try:
            from sentence_transformers.base.sampler import DefaultBatchSampler
        except ImportError:  # sentence-transformers < 6
            from sentence_transformers.sampler import DefaultBatchSampler
        from torch.utils.data import RandomSampler

        size = self.sizes.get("sts" if "score" in dataset.column_names else "ir", batch_size)
        return DefaultBatchSampler(RandomSampler(dataset, generator=generator), batch_size=size, drop_last=True,
                                   valid_label_columns=valid_label_columns, generator=generator, seed=seed)


def train_st_peer(recipe: Recipe, show_progress: bool = True, callbacks: list | None = None,
                  batch_sampler=None) -> Path:
    """Train ``recipe`` with SentenceTransformerTrainer; returns ``<output_dir>/final``. Reuses a finished run.
    ``callbacks``: extra ``transformers.TrainerCallback`` objects (benchmarks/train_step.py times steps with one).
    ``batch_sampler``: replaces ``per_task_batch_sampler`` (same call signature; benchmarks/train_step.py replays
    embedlab's batches with one so both tools see identical batches)."""
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    try:  # sentence-transformers >= 6 moved these; 3.x-5.x keep them at the top level
        from sentence_transformers.sentence_transformer.losses import CoSENTLoss, MultipleNegativesRankingLoss
        from sentence_transformers.sentence_transformer.training_args import MultiDatasetBatchSamplers
    except ImportError:
        from sentence_transformers.losses import CoSENTLoss, MultipleNegativesRankingLoss
        from sentence_transformers.training_args import MultiDatasetBatchSamplers

    from ..pretrained import resolve
    from .trainer import load_recipe_sources

    if recipe.objective.kind != "mnrl_cosent":
        raise ConfigError(f"the sentence-transformers peer trains objective.kind 'mnrl_cosent', got "
                          f"{recipe.objective.kind!r}")
    if recipe.sampler.kind != "single_task" or recipe.sampler.policy != "proportional":
        raise ConfigError("the sentence-transformers peer uses ST's proportional multi-dataset sampler: set "
                          "sampler.kind=single_task and sampler.policy=proportional")
    out = recipe.resolved_output_dir()
    # The same folder rules as our trainer: only embedlab's folder; a finished run is reused only for its own recipe,
    # and ST's checkpoints are resumed only when the recipe that started them matches.
    run_folder.check_writable_run_folder(out)
    final = run_folder.finished_model(out, recipe)
    if final is not None:
        return final
    final = out / "final"
    started = out / "recipe.json"
    if started.is_file() and (out / "st-checkpoints").is_dir():
        saved = json.loads(started.read_text(encoding="utf-8"))
        diffs = run_folder.recipe_differences(saved, recipe_to_dict(recipe))
        if diffs:
            raise ConfigError(f"cannot resume the sentence-transformers run in {out}: it was started by a different "
                              f"recipe ({'; '.join(diffs[:8])}); use another output_dir")
    run_folder.mark_run_folder(out)
    write_json(out / "recipe.json", {"trainer": "sentence-transformers", **recipe_to_dict(recipe)})
    if recipe.train.num_threads:
        torch.set_num_threads(recipe.train.num_threads)
    sources = load_recipe_sources(recipe)  # the same validation and max_examples cuts as our trainer
    datasets, tasks = _datasets(recipe, sources)
    where = resolve(recipe.model.name)
    if where.gguf_file:
        raise ConfigError(f"model.name {recipe.model.name!r} is a GGUF file, which sentence-transformers cannot train; "
                          "the peer row is for Hugging Face / sentence-transformers checkpoints")
    model = SentenceTransformer(where.location, device="cuda" if torch.cuda.is_available() else "cpu")
    model.max_seq_length = recipe.model.max_length
    mnrl, cosent = MultipleNegativesRankingLoss(model), CoSENTLoss(model)
    losses = {name: (mnrl if task == "ir" else cosent) for name, task in tasks.items()}

    t = recipe.train
    args = SentenceTransformerTrainingArguments(
        output_dir=str(out / "st-checkpoints"),
        max_steps=t.max_steps or -1,
        num_train_epochs=t.epochs,
        per_device_train_batch_size=max(recipe.sampler.batch_size.values()),
        learning_rate=t.lr,
        warmup_ratio=t.warmup_ratio,  # a ratio, not steps: with epochs (no max_steps) steps would give 0 warmup
        lr_scheduler_type="linear",
        weight_decay=t.weight_decay,
        max_grad_norm=t.grad_clip or 0.0,
        gradient_accumulation_steps=t.grad_accum,
        bf16=t.mixed_precision == "bf16",
        fp16=t.mixed_precision == "fp16" and torch.cuda.is_available(),
        seed=recipe.seed,
        data_seed=recipe.seed,
        dataloader_drop_last=True,
        batch_sampler=batch_sampler or per_task_batch_sampler(recipe.sampler.batch_size),
        multi_dataset_batch_sampler=MultiDatasetBatchSamplers.PROPORTIONAL,
        logging_steps=t.log_every,
        save_strategy="steps" if t.save_every else "no",
        save_steps=t.save_every or 500,
        save_total_limit=t.keep,
        report_to="none",
        disable_tqdm=not show_progress,
        use_cpu=not torch.cuda.is_available(),
        **({"gradient_checkpointing": True} if t.grad_checkpointing else {}),
    )
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=datasets, loss=losses,
                                         callbacks=callbacks)
    resume = any((out / "st-checkpoints").glob("checkpoint-*")) if (out / "st-checkpoints").is_dir() else False
    trainer.train(resume_from_checkpoint=True if resume else None)
    out.mkdir(parents=True, exist_ok=True)
    # trained_steps: the optimizer steps ST ran (with epochs instead of max_steps the recipe does not say how many)
    write_json(out / "recipe.json", {"trainer": "sentence-transformers", "trained_steps": trainer.state.global_step,
                                     **recipe_to_dict(recipe)})
    from .trainer import task_prompts

    model.prompts = task_prompts(recipe, sources)  # the instructions its training texts carried
    model.default_prompt_name = None
    model.save(str(final))
    return final


def peer_steps(output_dir: Path) -> int | None:
    """The optimizer steps a finished peer run took (``trained_steps`` in its recipe.json); None for a run written
    before embedlab recorded them."""
    try:
        return json.loads((Path(output_dir) / "recipe.json").read_text(encoding="utf-8")).get("trained_steps")
    except (OSError, ValueError):
        return None
