"""The one training loop every embedding recipe uses (CoDiEmb, naive co-training, CoSENT, single-task specialists).

    trainer = Trainer(load_recipe("recipes/codiemb.yaml"))
    trainer.train()            # resumes from the newest checkpoint in output_dir if there is one

What it does: seeds everything; loads and validates every training source before the first step; builds the sampler
(single-task or mixed batches); AdamW with linear warmup/decay; gradient clipping, accumulation and checkpointing;
bf16 / fp16 autocast on a GPU; checkpoints every ``save_every`` steps with exact resume (model, optimizer, scheduler,
sampler position, RNG); dev evaluation and best-checkpoint selection; a JSONL log of losses, learning rate and
throughput; a progress bar with ETA. Multi-process runs (``torchrun --nproc_per_node N -m embedlab train ...``)
initialise the process group from the environment, give every rank the same steps, gather IR negatives across ranks in
the loss and average gradients with one all-reduce per step. Launched by
``accelerate launch --use_deepspeed --zero_stage 1|2``, the model and optimizer go to a DeepSpeed ZeRO engine instead
(zero.py), which reduces, clips and steps.

What it does not do: the losses (embedlab.objectives), the batch order (embedlab.data.samplers) and the per-step
batch assembly (steps.py) live elsewhere.
"""
from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import torch

from .. import __version__
from ..atomic import write_json
from ..config import Recipe, recipe_to_dict
from ..data.training import TrainingSource, load_sources
from ..errors import ConfigError
from . import checkpoint as ckpt
from . import run_folder
from . import zero as zero_mod
from .model_setup import build_model
from .steps import StepContext, make_sampler, run_step

log = logging.getLogger("embedlab.train")


def load_recipe_sources(r: Recipe) -> list:
    """The recipe's training files, loaded and validated in full, each cut to its ``max_examples``."""
    from ..prep.convert import check_current

    from ..settings import data_root

    root = Path(r.data.root)
    if any(not s.path.startswith("data:") and not Path(s.path).is_absolute() for s in r.data.sources):
        # Files read from the root: converter output built by older code may hold rows now known to leak
        # evaluation data. (Sources given as absolute paths are the user's own files, not the root's.)
        check_current(root)

    def where(path: str) -> Path:
        if path.startswith("data:"):  # the dataset mirror (EMBEDLAB_DATA), e.g. data:unsup/sentences.txt
            if data_root() is None:
                raise ConfigError(f"source path {path!r} is under the dataset mirror, but EMBEDLAB_DATA is not set "
                                  f"and ../shared/data does not exist")
            return data_root() / path[len("data:"):]
        return Path(path) if Path(path).is_absolute() else root / path

    recorded = _manifest_instructions(root) if r.data.instructions else {}

    def instruction(s) -> str | None:
        if not r.data.instructions:
            return None
        return s.instruction if s.instruction is not None else recorded.get(s.path)

    sources = [TrainingSource(name=s.name, path=where(s.path), task=s.task, instruction=instruction(s),
                              score_range=s.score_range) for s in r.data.sources]
    loaded = load_sources(sources)
    for cfg, src in zip(r.data.sources, loaded):
        if cfg.max_examples is not None:
            src.examples = (src.examples.cut(cfg.max_examples) if hasattr(src.examples, "cut")
                            else src.examples[: cfg.max_examples])
    return loaded


def _manifest_instructions(root: Path) -> dict[str, str]:
    """path -> instruction, as ``embedlab convert`` recorded them in ``root/manifest.json`` (empty without one)."""
    manifest = root / "manifest.json"
    if not manifest.is_file():
        return {}
    try:
        entries = json.loads(manifest.read_text(encoding="utf-8")).get("sources", [])
    except (OSError, ValueError, AttributeError) as e:
        raise ConfigError(f"{manifest}: unreadable training-data manifest ({e})") from None
    return {e["path"]: e["instruction"] for e in entries if isinstance(e, dict) and e.get("instruction")}


def task_prompts(r: Recipe, sources: list) -> dict[str, str]:
    """The prompts a model trained by ``r`` on ``sources`` carries: one per evaluation task of each kind (STS,
    retrieval) whose training sources had instructions — evaluation then matches training, never adds text that
    training did not see. None with ``data.instructions: false``."""
    from ..evaluate.tasks import instruction_prompts

    kinds = {"sts" if s.task == "sts" else "retrieval" for s in sources if s.source.instruction}
    return instruction_prompts(r.data.query_template, tuple(sorted(kinds))) if r.data.instructions and kinds else {}


def fuse_after_training(r: Recipe, output_dir: Path):
    """The recipe's ``fusion:`` step: merge this run's checkpoints (and/or other models) into ``output_dir/<out>``."""
    from ..fusion import fuse
    from ..fusion.greedy import dev_scorer, greedy_soup

    cfg = r.fusion
    models: list[str] = []
    for entry in cfg.models:
        if entry == "checkpoints":
            models += [str(p) for p in ckpt.list_checkpoints(output_dir)]
        elif entry == "final":
            models.append(str(output_dir / "final"))
        else:
            models.append(entry)
    out = output_dir / cfg.out
    if cfg.method == "greedy_soup":
        return greedy_soup(models, dev_scorer(r.train.select_on or ["stsb-dev"]), out, seed=cfg.seed)
    return fuse(models, cfg.method, out=out, base=cfg.base or r.model.name, weights=cfg.weights, params=cfg.params,
                seed=cfg.seed)


def _init_distributed() -> tuple[int, int]:
    """(rank, world_size); initialises the default process group when launched by torchrun with >1 process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        torch.distributed.init_process_group(backend=backend)
    if torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _average_gradients(params: list[torch.nn.Parameter], world: int) -> None:
    """Average gradients over ranks with a single flattened all-reduce (what DDP does, without its hooks)."""
    grads = [p.grad for p in params if p.grad is not None]
    if world == 1 or not grads:
        return
    flat = torch._utils._flatten_dense_tensors(grads)
    torch.distributed.all_reduce(flat)
    flat /= world
    for g, synced in zip(grads, torch._utils._unflatten_dense_tensors(flat, grads)):
        g.copy_(synced)


class Trainer:
    def __init__(self, recipe: Recipe, resume: bool = True, show_progress: bool = True, on_step=None):
        self.recipe = recipe
        self.resume = resume
        self.show_progress = show_progress
        self.on_step = on_step  # (step, total_steps) after each optimizer step: a job's progress
        self.output_dir = recipe.resolved_output_dir()
        # ZeRO: accelerate's Accelerator initialises the process group itself (DeepSpeed's way), so it comes first.
        self.zero = zero_mod.ZeroEngine(recipe) if zero_mod.requested() else None
        self.rank, self.world = _init_distributed()
        self.device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if torch.cuda.is_available()
                                   else "cpu")
        self.step = 0
        self.best: dict[str, Any] | None = None

    # ------------------------------------------------------------------ setup
    def setup(self) -> None:
        """Check the output folder, load data and model, build the optimizer, resume. A failure releases the folder."""
        try:
            self._setup()
        except BaseException:
            self.release()
            raise

    def _setup(self) -> None:
        r = self.recipe
        # Before any work: is output_dir ours, is no other training using it, and may this recipe resume its newest
        # checkpoint? (run_folder.py)
        if self.rank == 0:
            self._lock = run_folder.lock_run_folder(self.output_dir)
        self._resume_from = run_folder.prepare_output_dir(self.output_dir, recipe_to_dict(r), self.resume,
                                                          is_main=self.rank == 0, inputs=(r.model.name,))
        torch.manual_seed(r.seed)
        if r.train.num_threads:
            torch.set_num_threads(r.train.num_threads)
        if r.train.mixed_precision == "bf16" and self.device.type == "cpu":
            from ..hardware import native_bf16

            if not native_bf16("cpu"):
                log.warning("mixed_precision=bf16 on a CPU without native bf16 (no AVX-512 BF16 or AMX): PyTorch "
                            "emulates it, several times slower than fp32; set train.mixed_precision=fp32 here")
        if r.train.mixed_precision == "fp16" and self.device.type != "cuda":
            log.warning("mixed_precision=fp16 needs a CUDA GPU; training in fp32 on %s", self.device)
        self.sources = load_recipe_sources(r)  # validates every row before any model work
        self.model = build_model(r.model, self.device)  # template, dropout, LoRA / QLoRA (model_setup.py)
        if self.model.template is None:  # the evaluation prompts match what training put before each text
            self.model.prompts, self.model.default_prompt_name = task_prompts(r, self.sources), None
        if r.train.grad_checkpointing:
            self.model.backbone.gradient_checkpointing_enable()
        self.sampler = make_sampler(r, self.sources, self.rank, self.world)
        steps_per_epoch = len(self.sampler)
        if steps_per_epoch == 0:
            raise ConfigError("the sampler has no full batch: the training files are smaller than the batch size")
        self.total_steps = r.train.max_steps or steps_per_epoch * r.train.epochs
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        # The fused AdamW kernel (one pass over each parameter; CPU and CUDA) instead of the per-tensor Python loop:
        # the loop cost ~6 % of a MiniLM step on one CPU thread (cProfile), and the fused kernel is what
        # sentence-transformers' trainer uses by default (adamw_torch_fused), so benchmarks/train_step.py compares
        # like with like.
        fused = self.device.type in ("cpu", "cuda") and all(p.is_floating_point() for p in self.params)
        self.optimizer = torch.optim.AdamW(self.params, lr=r.train.lr, weight_decay=r.train.weight_decay,
                                           fused=fused or None)
        warmup = int(round(r.train.warmup_ratio * self.total_steps))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, _linear_schedule(warmup, self.total_steps))
        if self.zero is not None:  # the scheduler keeps driving the wrapped AdamW's param groups
            self.zero.prepare(self.model, self.optimizer)
        self.ctx = StepContext(recipe=r, model=self.model, sources=self.sources, device=self.device,
                               world=self.world, rank=self.rank, backward=self._backward)
        self.scaler = torch.amp.GradScaler("cuda") if (r.train.mixed_precision == "fp16"
                                                       and self.device.type == "cuda") else None
        if self.rank == 0:
            run_folder.mark_run_folder(self.output_dir)
            ckpt.clean_partial(self.output_dir)  # half-written checkpoints of a killed run
            write_json(self.output_dir / "recipe.json", {"embedlab": __version__, **recipe_to_dict(r)})
        if self._resume_from is not None:
            self._resume(self._resume_from)

    def _resume(self, last: Path) -> None:
        from safetensors.torch import load_file

        state = ckpt.load_state(last)
        if self.zero is not None:  # weights and this rank's optimizer shard, from DeepSpeed's files
            self.zero.load(last / zero_mod.ZERO_DIR)
        elif "trainable" in state:  # LoRA: the saved model is merged; resume the adapters themselves
            missing = set(state["trainable"]) - {n for n, _ in self.model.named_parameters()}
            if missing:
                raise ConfigError(f"{last}: the checkpoint's trainable tensors do not fit this recipe's model "
                                  f"(e.g. {sorted(missing)[:3]}); was model.lora changed?")
            self.model.load_state_dict(state["trainable"], strict=False)
        else:
            try:
                weights = load_file(str(last / "model.safetensors"))
            except Exception as e:  # missing or damaged file (safetensors raises its own error type)
                raise ConfigError(f"{last / 'model.safetensors'}: cannot read the checkpoint's weights ({e}); "
                                  f"delete {last} to resume from the one before, or start fresh with --no-resume")
            expected = set(self.model.backbone.state_dict())
            missing = sorted(expected - set(weights))
            if missing:  # strict=False below would otherwise resume silently from a partial file
                raise ConfigError(f"{last / 'model.safetensors'}: the checkpoint lacks {len(missing)} of the model's "
                                  f"tensors (e.g. {missing[:3]}); delete {last} or start fresh with --no-resume")
            self.model.backbone.load_state_dict(weights, strict=False)
        if self.zero is None:
            if state.get("optimizer") is None:
                raise ConfigError(f"{last}: the optimizer state is in DeepSpeed shards (a ZeRO run); resume it with "
                                  "the same accelerate launch, or start fresh with --no-resume")
            self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.sampler.load_state_dict(state["sampler"])
        ckpt.set_rng_state(state["rng"])
        self.step = int(state["step"])
        self.best = state.get("best")
        if self.rank == 0:
            run_folder.trim_logs(self.output_dir, self.step)
        log.info("resumed from %s (step %d)", last, self.step)

    # ------------------------------------------------------------------ loop
    def train(self, stop_after: int | None = None) -> Path | None:
        """Run to ``total_steps`` (resuming if possible); returns the folder of the final model.

        ``stop_after=k`` stops after step k with a checkpoint, as an interruption would (used to size runs to a time
        box and by the resume test); running again continues from there. The output folder's lock is released when
        this returns or raises."""
        try:
            return self._train(stop_after)
        finally:
            self.release()

    def release(self) -> None:
        """Give up the output folder's lock (another Trainer may then use the folder)."""
        lock = getattr(self, "_lock", None)
        if lock is not None:
            lock.close()
            self._lock = None

    def _train(self, stop_after: int | None) -> Path | None:
        if not hasattr(self, "model"):
            self.setup()
        r = self.recipe
        from tqdm.auto import tqdm

        bar = tqdm(total=self.total_steps, initial=self.step, disable=not self.show_progress or self.rank != 0,
                   desc=r.name, unit="step", dynamic_ncols=True)
        log_path = self.output_dir / "train_log.jsonl"
        batches = self._batches()
        self.model.train()
        t_last, examples_since = time.perf_counter(), 0
        while self.step < self.total_steps:
            if self.zero is None:  # the engine clears its own gradients after each optimizer step
                self.optimizer.zero_grad(set_to_none=True)
            comps_total: dict[str, float] = {}
            task = ""
            for _ in range(r.train.grad_accum):
                batch = next(batches)
                with self._autocast():
                    result = run_step(self.ctx, batch, self.step)
                if not torch.isfinite(result.loss.detach()).all():
                    # A diverged run must stop here, not write NaN weights into checkpoints and final/.
                    raise ConfigError(f"training diverged: the loss at step {self.step + 1} ({result.task}) is "
                                      f"{float(result.loss.detach())}; lower train.lr or set train.grad_clip. The "
                                      f"checkpoints in {self.output_dir / 'checkpoints'} predate it")
                if not result.backward_done:  # GradCache runs its backward inside the step
                    self._backward(result.loss)
                task = result.task
                examples_since += result.examples
                for k, v in result.components.items():
                    comps_total[k] = comps_total.get(k, 0.0) + v / r.train.grad_accum
            if self.zero is not None:  # reduced, clipped and stepped inside the engine's backward at the boundary
                grad_norm = self.zero.grad_norm()
            else:
                grad_norm = self._reduce_clip_step()
            self.scheduler.step()
            self.step += 1
            bar.update(1)
            if self.on_step is not None and self.rank == 0:
                self.on_step(self.step, self.total_steps)
            if self.step % r.train.log_every == 0 or self.step == self.total_steps:
                now = time.perf_counter()
                record = {"step": self.step, "task": task, "lr": self.scheduler.get_last_lr()[0],
                          "examples_per_s": examples_since / max(now - t_last, 1e-9),
                          "grad_norm": float(grad_norm) if grad_norm is not None else None, **comps_total}
                t_last, examples_since = now, 0
                bar.set_postfix(loss=f"{comps_total.get('loss', float('nan')):.4f}", task=task)
                if self.rank == 0:
                    with open(log_path, "a", encoding="utf-8") as f:
                        f.write(json.dumps(record) + "\n")
            if r.train.eval_every and self.step % r.train.eval_every == 0:
                self._evaluate_dev()
            saved = False
            if r.train.save_every and self.step % r.train.save_every == 0 and self.step < self.total_steps:
                self._save()
                saved = True
            if stop_after is not None and self.step >= stop_after and self.step < self.total_steps:
                if not saved:
                    self._save()
                bar.close()
                return None
        bar.close()
        if r.train.eval_every and self.step % r.train.eval_every != 0:
            self._evaluate_dev()
        self._save()
        if self.rank == 0:
            self.model.save(self.output_dir / "final")
            if self.best is not None:
                write_json(self.output_dir / "best.json", self.best)
            if r.fusion is not None:
                fuse_after_training(r, self.output_dir)
        return self.output_dir / "final"

    def _reduce_clip_step(self) -> torch.Tensor | None:
        """Average gradients over ranks, clip, step the optimizer; returns the gradient norm before clipping."""
        _average_gradients(self.params, self.world)
        if self.scaler:
            self.scaler.unscale_(self.optimizer)
        clip = self.recipe.train.grad_clip
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, clip) if clip else None
        if self.scaler:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        return grad_norm

    def _backward(self, loss: torch.Tensor) -> None:
        """Backward of one micro-batch's loss, scaled for accumulation (and by the fp16 grad scaler)."""
        if self.zero is not None:  # the engine scales for accumulation itself
            self.zero.backward(loss)
            return
        scaled = loss / self.recipe.train.grad_accum
        (self.scaler.scale(scaled) if self.scaler else scaled).backward()

    def _batches(self):
        """Endless stream of this rank's batches; the sampler's own state makes it resumable mid-epoch."""
        while True:
            yield from self.sampler
            self.sampler.set_epoch(self.sampler.epoch + 1)

    def _autocast(self):
        import contextlib

        mp = self.recipe.train.mixed_precision
        if mp == "bf16":  # CUDA, CPUs with AVX-512 BF16 or AMX (about 2x faster; weights stay fp32): hardware.py
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        if mp == "fp16" and self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.float16)
        return contextlib.nullcontext()

    def _save(self) -> Path | None:
        """Checkpoint this step (rank 0 writes; under ZeRO every rank first writes its optimizer shard)."""
        extra = {}
        if self.zero is not None:  # collective: every rank must be here
            shards = ckpt.checkpoint_dir(self.output_dir, self.step).with_name(f".step-{self.step:06d}.zero")
            self.zero.save(shards)
            zero_mod.barrier()
            extra[zero_mod.ZERO_DIR] = shards
        path = None
        if self.rank == 0:
            state = {"optimizer": None if self.zero is not None else self.optimizer.state_dict(),
                     "scheduler": self.scheduler.state_dict(), "sampler": self.sampler.state_dict(), "best": self.best}
            if self.recipe.model.lora is not None:
                state["trainable"] = {n: p.detach().clone() for n, p in self.model.named_parameters()
                                      if p.requires_grad}
            path = ckpt.save_checkpoint(self.output_dir, self.step, self.model, state,
                                        {"recipe": self.recipe.name, "dev": (self.best or {}).get("last_dev"),
                                         "recipe_config": recipe_to_dict(self.recipe)},
                                        extra_dirs=extra)
            protect = Path(self.best["checkpoint"]) if self.best and self.best.get("checkpoint") else None
            ckpt.prune(self.output_dir, self.recipe.train.keep, protect)
        if self.zero is not None:  # no rank runs ahead into the next save while rank 0 renames
            zero_mod.barrier()
        return path

    def _evaluate_dev(self) -> None:
        """Score the dev tasks (rank 0); the best step (mean main score) is saved as a checkpoint and recorded."""
        if not self.recipe.train.select_on:
            return
        improved = self._score_dev() if self.rank == 0 else False
        if self.zero is not None and self.world > 1:  # saving is collective under ZeRO: tell every rank
            flag = [improved]
            torch.distributed.broadcast_object_list(flag, src=0)
            improved = bool(flag[0])
        elif self.rank != 0:
            return
        if improved:
            path = self._save()
            if self.rank == 0:
                self.best["checkpoint"] = str(path)
                self.model.save(self.output_dir / "best")

    def _score_dev(self) -> bool:
        """Evaluate the dev tasks, log them, update ``self.best``; True when this step is the new best."""
        from ..evaluate.cache import EmbeddingCache
        from ..evaluate.runner import evaluate

        was_training = self.model.training
        t0 = time.perf_counter()
        results = evaluate(self.model, self.recipe.train.select_on, cache=EmbeddingCache(enabled=False))
        self.model.train(was_training)
        scores = {r.task.name: r.display() for r in results}
        mean = sum(scores.values()) / len(scores)
        # seconds: what dev scoring added to the run's wall time (equal-time comparisons subtract it)
        with open(self.output_dir / "dev_log.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps({"step": self.step, "mean": mean, **scores,
                                "seconds": round(time.perf_counter() - t0, 2)}) + "\n")
        improved = self.best is None or mean > self.best["mean"]
        if improved:
            self.best = {"step": self.step, "mean": mean, "scores": scores, "checkpoint": None}
        self.best["last_dev"] = scores
        return improved


def _linear_schedule(warmup: int, total: int):
    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))

    return factor
