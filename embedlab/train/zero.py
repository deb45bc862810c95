"""DeepSpeed ZeRO (stages 1 and 2) for embedlab's trainer, configured the accelerate way.

    accelerate launch --use_deepspeed --zero_stage 2 --num_processes 8 -m embedlab train recipes/codiemb.yaml
    accelerate launch --config_file my_deepspeed.yaml -m embedlab train recipes/codiemb.yaml

``accelerate launch`` exports ``ACCELERATE_USE_DEEPSPEED=true`` and the DeepSpeed settings; the trainer sees that
(``requested()``) and hands its model and AdamW to a ``ZeroEngine``, which builds accelerate's ``Accelerator`` (which
reads the launch's DeepSpeed plugin), fills the fields DeepSpeed needs from the recipe, and wraps both into a
DeepSpeed engine. From then on the engine averages the gradients over ranks (ZeRO-2: reduce-scatter into per-rank
partitions), clips them, and steps an optimizer whose state is partitioned across ranks (ZeRO-1 and -2), so optimizer
memory per GPU falls with the number of GPUs. Checkpoints add a ``zero/`` folder with every rank's optimizer shard
(DeepSpeed's own format, written collectively) next to the usual model and trainer state; resume reads it back.

What the recipe decides, not the DeepSpeed config: gradient accumulation (``train.grad_accum``), clipping
(``train.grad_clip``), the learning rate and its schedule (embedlab's scheduler drives the wrapped AdamW's groups)
and autocast (``train.mixed_precision``). A DeepSpeed config that sets other values for the first two is overridden
with a warning.

What it does not do, and refuses with a ConfigError rather than doing it half: ZeRO-3 (parameters sharded across
ranks: the embedder's forward path and the sentence-transformers save would need gathered parameters), DeepSpeed's
own fp16 / bf16 weight casting (set ``mixed_precision: no`` in the accelerate config and use
``train.mixed_precision``, which autocasts and keeps fp32 weights), ``train.mixed_precision: fp16`` (its gradient
scaler would fight the engine's), and GradCache (its second backward bypasses the engine's gradient reduction).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from ..config import Recipe
from ..errors import ConfigError

log = logging.getLogger("embedlab.train")

ZERO_DIR = "zero"  # inside a checkpoint folder
_TAG = "state"  # DeepSpeed's checkpoint tag (a sub-folder of ZERO_DIR)


def requested() -> bool:
    """True when launched by ``accelerate launch`` with DeepSpeed enabled (its launcher exports this variable)."""
    return os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() in ("1", "true", "yes")


def _check_recipe(r: Recipe) -> None:
    if r.train.gradcache_chunk:
        raise ConfigError("train.gradcache_chunk: GradCache cannot run under DeepSpeed ZeRO (its second backward "
                          "bypasses the engine's gradient reduction); drop one of the two")
    if r.train.mixed_precision == "fp16":
        raise ConfigError("train.mixed_precision: fp16 uses a gradient scaler that conflicts with the DeepSpeed "
                          "engine; use bf16 (autocast, fp32 weights) or fp32 under ZeRO")


class ZeroEngine:
    """Accelerator + DeepSpeed engine around the trainer's model and optimizer (see the module docstring)."""

    def __init__(self, recipe: Recipe):
        _check_recipe(recipe)
        try:
            from accelerate import Accelerator
        except ImportError as e:  # pragma: no cover - accelerate is a core dependency
            raise ConfigError("DeepSpeed launch detected but accelerate is not installed") from e
        try:
            import deepspeed  # noqa: F401
        except ImportError as e:
            raise ConfigError("launched with DeepSpeed (ACCELERATE_USE_DEEPSPEED=true) but the deepspeed package is "
                              "missing: pip install 'embedlab[deepspeed]'") from e
        self.recipe = recipe
        self.accelerator = Accelerator()  # reads the launch's DeepSpeed plugin; initialises the process group
        plugin = self.accelerator.state.deepspeed_plugin
        if plugin is None:  # pragma: no cover - accelerate always builds one when ACCELERATE_USE_DEEPSPEED is set
            raise ConfigError("ACCELERATE_USE_DEEPSPEED is set but accelerate built no DeepSpeed plugin")
        if self.accelerator.mixed_precision != "no":
            raise ConfigError(f"accelerate mixed_precision={self.accelerator.mixed_precision!r}: DeepSpeed would cast "
                              "the weights; launch with --mixed_precision no and set train.mixed_precision instead "
                              "(autocast, fp32 weights)")
        self.config = plugin.deepspeed_config
        self.stage = int(self.config.get("zero_optimization", {}).get("stage", 0))
        if self.stage not in (1, 2):
            raise ConfigError(f"DeepSpeed zero_optimization.stage={self.stage}: embedlab's trainer supports ZeRO "
                              "stages 1 and 2 (optimizer state / + gradients partitioned); stage 3 is not supported")
        self.engine = None

    @property
    def world(self) -> int:
        return torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1

    def prepare(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """Wrap ``model`` and ``optimizer`` in the engine. ``model`` stays usable as is: ZeRO-1/2 keep full parameters
        on every rank (re-pointed into the engine's flat buffers), so the trainer's steps call it directly."""
        t = self.recipe.train
        ours = {"gradient_accumulation_steps": t.grad_accum, "gradient_clipping": float(t.grad_clip or 0.0)}
        for key, value in ours.items():
            theirs = self.config.get(key, "auto")
            if theirs not in ("auto", None) and float(theirs) != float(value):
                log.warning("DeepSpeed config %s=%s overridden by the recipe (%s)", key, theirs, value)
            self.config[key] = value
        # Batches are assembled by embedlab's sampler (per-task sizes), not by a DataLoader DeepSpeed could see: the
        # engine only uses these two numbers for its own bookkeeping, and they must satisfy its identity.
        self.config["train_micro_batch_size_per_gpu"] = 1
        self.config["train_batch_size"] = t.grad_accum * self.world
        # Building the engine must not move the training's random stream (dropout masks would differ from a plain run).
        state = torch.random.get_rng_state()
        # the returned optimizer wrapper is not kept: the engine steps the optimizer itself (see backward)
        self.engine, _ = self.accelerator.prepare(model, optimizer)
        torch.random.set_rng_state(state)
        log.info("DeepSpeed ZeRO stage %d on %d process(es)", self.stage, self.world)

    def backward(self, loss: torch.Tensor) -> None:
        """Backward of one micro-batch's *unscaled* loss: the engine divides by the accumulation steps, reduces the
        gradients across ranks and, at its accumulation boundary (every ``grad_accum`` calls), clips and steps.

        The engine is driven directly, not through ``Accelerator.backward``: that one marks every call a boundary
        unless the loop runs inside ``accelerator.accumulate()``, which would step after each micro-batch."""
        self.engine.backward(loss)
        self.engine.step()

    def grad_norm(self) -> float | None:
        norm = self.engine.get_global_grad_norm()
        return None if norm is None else float(norm)

    # ------------------------------------------------------------------ checkpoints (collective: every rank calls)
    def save(self, folder: Path) -> None:
        """Every rank writes its optimizer shard (and DeepSpeed's module copy) under ``folder``."""
        self.engine.save_checkpoint(str(folder), tag=_TAG, save_latest=False)

    def load(self, folder: Path) -> None:
        """Restore weights and this rank's optimizer shard written by ``save``."""
        if not (folder / _TAG).is_dir():
            raise ConfigError(f"{folder.parent}: this checkpoint holds no DeepSpeed state (it was written by a run "
                              "without ZeRO); resume it without DeepSpeed or start fresh with --no-resume")
        path, _ = self.engine.load_checkpoint(str(folder), tag=_TAG, load_optimizer_states=True,
                                              load_lr_scheduler_states=False)
        if path is None:
            raise ConfigError(f"{folder}: DeepSpeed could not read the checkpoint (written with another world size "
                              "or ZeRO stage?)")


def barrier() -> None:
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
