"""Recipe configuration: pydantic schemas, YAML in, clear errors out, ``key.sub=value`` overrides.

A recipe is one YAML file (see ``recipes/``) validated against ``Recipe``. Unknown keys are errors (a typo must not be
silently ignored), and every error names the file and the dotted key path. Overrides from the command line are
applied to the raw YAML before validation, so they are checked exactly like file values:

    embedlab train recipes/codiemb.yaml train.max_steps=200 sampler.policy=round_robin model.name=smollm2

This module only describes and validates configuration; it does not load data or models.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal


from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .configfile import apply_overrides, load_config, read_config_text  # noqa: F401 - re-exported


class _Strict(BaseModel):
    # No NaN / infinity anywhere: a NaN learning rate or weight trains silently wrong.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class LoraConfig(_Strict):
    """LoRA through peft: only the low-rank adapters train; the saved model has them merged in."""

    r: int = Field(64, gt=0)
    alpha: float = Field(16.0, gt=0)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: str | list[str] = "all-linear"  # peft's names, or "all-linear"


class ModelConfig(_Strict):
    name: str = "sentence-transformers/all-MiniLM-L6-v2"
    pooling: str | None = None  # None: the model's own (mean for all-MiniLM-L6-v2, last_token for decoders)
    include_prompt: bool = False  # CoDiEmb: instruction tokens are excluded from the mean
    normalize: bool = True
    max_length: int = Field(128, gt=0)
    # Decoder embedders (CSE-SFP): a registered template name or {name, text, bos?, max_sentence_tokens?}; ``slots``
    # are the inference representation (default: the template's last slot; [rep1, rep2] = Rep1+Rep2).
    template: str | dict[str, Any] | None = None
    slots: list[str] | None = None
    lora: LoraConfig | None = None
    load_in_4bit: bool = False  # QLoRA: needs a CUDA GPU and bitsandbytes
    dropout: float | None = Field(None, ge=0, lt=1)  # set every dropout of the backbone (two-pass baselines)


class SourceConfig(_Strict):
    """One training file: a sub-dataset with one task type."""

    name: str
    path: str  # relative to data.root, absolute, or "data:<path>" (under EMBEDLAB_DATA, e.g. data:unsup/sentences.txt)
    task: Literal["ir", "sts", "unsup"]  # unsup: one sentence a line (CSE-SFP, SimCSE)
    instruction: str | None = None
    score_range: tuple[float, float] | None = None  # STS only: the declared label range, scaled to [0, 1]
    max_examples: int | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _sts_needs_range(self):
        if self.task == "sts" and self.score_range is None:
            raise ValueError(f"source {self.name!r}: an sts source needs score_range (e.g. [0, 5])")
        if self.score_range is not None and not self.score_range[0] < self.score_range[1]:
            raise ValueError(f"source {self.name!r}: score_range must be [low, high] with low < high")
        return self


class DataConfig(_Strict):
    root: str = "runs/train-data"
    sources: list[SourceConfig]
    n_positives: int = Field(2, ge=1, le=64)  # P: positives per query (fewer are resampled with repetition)
    n_negatives: int = Field(4, ge=0, le=256)  # N: hard negatives per query
    query_template: str = "Instruction: {instruction} Query: "  # CoDiEmb's prompt; {instruction} filled per source
    # Task instructions (CoDiEmb): queries and both STS sides get query_template with their source's instruction
    # (a source's own ``instruction``, else the one its converter recorded in data.root/manifest.json), and the
    # saved model carries one prompt per evaluation task (sentence-transformers ``prompts``), so evaluation uses the
    # same text. false: no instruction in training, none saved.
    instructions: bool = True


class SamplerConfig(_Strict):
    kind: Literal["single_task", "mixed"] = "single_task"
    policy: Literal["proportional", "round_robin", "temperature", "ratio"] = "proportional"
    batch_size: dict[Literal["ir", "sts", "unsup"], Annotated[int, Field(gt=0)]] = Field(
        default_factory=lambda: {"ir": 32, "sts": 32})  # global batch per task
    temperature: float = Field(2.0, gt=0)
    ratio: dict[Literal["ir", "sts", "unsup"], Annotated[float, Field(gt=0)]] | None = None
    # naive baseline: STS pairs with scaled score >= this become positives
    sts_threshold: float = Field(0.8, ge=0, le=1)


class ObjectiveConfig(_Strict):
    # codiemb | naive | cosent | mnrl_cosent (the sentence-transformers peer) on ir/sts sources;
    # cse_sfp (one forward pass, two template slots) | simcse_prompt (two passes, one slot) | simcse (two passes,
    # the model's pooling) on unsup sources.
    kind: Literal["codiemb", "naive", "cosent", "mnrl_cosent", "cse_sfp", "simcse_prompt", "simcse"] = "codiemb"
    unsup_temperature: float = Field(0.05, gt=0)
    unsup_symmetric: bool = False  # cse_sfp / simcse: also the positive -> anchor direction
    in_view_negatives: bool = False  # cse_sfp: the other sentences' anchors are extra negatives
    ir_temperature: float = Field(0.02, gt=0)
    ir_symmetric: bool = False
    ir_joint_softmax: bool = False
    cross_device_negatives: bool = True
    # False-negative mask: remove a candidate whose text is one of the query's own (drawn) positives from its
    # denominator (another query's positive shared with it, or a hard negative equal to it). Issue 13 made it the
    # default; false reproduces the earlier runs.
    ir_mask_shared_positives: bool = True
    sts_weights: dict[Literal["mid_nce", "pro", "pearson", "rank_kl"], Annotated[float, Field(ge=0)]] = Field(
        default_factory=lambda: {"mid_nce": 1.0, "pro": 0.5, "pearson": 2.0, "rank_kl": 5.0})
    sts_gather: bool = False
    # Mid-layer InfoNCE anchors: pairs whose *scaled* label is >= this (0.8 = 4.0 on STS-B's 0-5 scale). The paper's
    # code uses 1.0 on a label scale it does not state; 0.8 keeps the same "clearly similar" pairs on [0, 1] labels.
    mid_threshold: float = Field(0.8, ge=0, le=1)
    cosent_temperature: float = Field(0.05, gt=0)


class TrainConfig(_Strict):
    lr: float = Field(5e-5, gt=0)
    max_steps: int | None = Field(None, gt=0)  # None: epochs x steps per epoch
    epochs: int = Field(1, gt=0)
    warmup_ratio: float = Field(0.03, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    grad_clip: float | None = Field(1.0, gt=0)  # a negative norm would flip the gradient's sign
    grad_accum: int = Field(1, ge=1)
    grad_checkpointing: bool = False
    mixed_precision: Literal["fp32", "bf16", "fp16"] = "fp32"  # "fp32", not "no": YAML reads a bare no as false
    gradcache_chunk: int | None = Field(None, gt=0)  # GradCache: embed in chunks of this size without graphs
    log_every: int = Field(10, gt=0)
    save_every: int | None = Field(None, gt=0)
    keep: int = Field(3, ge=1)
    eval_every: int | None = Field(None, gt=0)
    select_on: list[str] = Field(default_factory=lambda: ["stsb-dev"])  # dev tasks for best-checkpoint selection
    num_threads: int | None = Field(None, gt=0, le=1024)

    @field_validator("select_on")
    @classmethod
    def _known_tasks(cls, names: list[str]) -> list[str]:
        # Checked with the recipe: an unknown name used to stop the run at its first dev evaluation, after training.
        from .evaluate.tasks import TASKS

        unknown = [n for n in names if n not in TASKS]
        if unknown:
            raise ValueError(f"unknown task(s) {', '.join(map(repr, unknown))}; valid: {', '.join(TASKS.names())}")
        return names


class FusionStepConfig(_Strict):
    """A fusion run after training (rank 0): ``embedlab fuse`` on this run's checkpoints and/or other models."""

    method: str = "delta_guided"
    # "checkpoints": this run's kept checkpoints (points along the trajectory); "final": its final model; or paths
    # (other runs' final models: other seeds, task ratios, loss weights).
    models: list[str] = Field(default_factory=lambda: ["checkpoints"])
    base: str | None = None  # default: model.name (the initialization the run started from)
    weights: list[float] | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    out: str = "fused"  # relative to output_dir
    seed: int = Field(0, ge=0)


UNSUP_OBJECTIVES = ("cse_sfp", "simcse_prompt", "simcse")


class Recipe(_Strict):
    name: str
    seed: int = Field(49, ge=0, lt=2**32)  # numpy seeds must fit in 32 bits
    output_dir: str = "runs/{name}"
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig
    sampler: SamplerConfig = Field(default_factory=SamplerConfig)
    objective: ObjectiveConfig = Field(default_factory=ObjectiveConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    fusion: FusionStepConfig | None = None

    @field_validator("output_dir")
    @classmethod
    def _not_empty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("output_dir is empty")
        try:  # the only placeholder is {name}; a stray brace would fail later as a KeyError / ValueError traceback
            v.format(name="name")
        except (KeyError, IndexError, ValueError, AttributeError) as e:
            raise ValueError(f"output_dir {v!r} may use only the placeholder {{name}} ({type(e).__name__}: {e}); "
                             f"write a literal brace as {{{{ or }}}}") from None
        return v

    @model_validator(mode="after")
    def _objective_matches_sampler(self):
        # naive + mixed is the naive baseline, codiemb + single_task the method; naive + single_task (the losses
        # alone) and codiemb/cosent + mixed (the sampler alone) are the ablation arms between them.
        unsup = self.objective.kind in UNSUP_OBJECTIVES
        if self.sampler.kind == "mixed" and (unsup or self.objective.kind == "mnrl_cosent"):
            raise ValueError(f"sampler.kind 'mixed' works with objective.kind naive, codiemb or cosent; got "
                             f"{self.objective.kind!r}")
        if self.sampler.kind == "mixed" and self.train.gradcache_chunk and self.objective.kind != "naive":
            raise ValueError("train.gradcache_chunk is not supported for codiemb/cosent on mixed batches")
        wrong = [f"{s.name} ({s.task})" for s in self.data.sources if (s.task == "unsup") != unsup]
        if wrong:
            want = "unsup (one sentence a line)" if unsup else "ir or sts"
            raise ValueError(f"objective.kind {self.objective.kind!r} trains on {want} sources; these are not: "
                             f"{', '.join(wrong)}")
        if self.objective.kind in ("cse_sfp", "simcse_prompt") and self.model.template is None:
            raise ValueError(f"objective.kind {self.objective.kind!r} needs model.template (e.g. csesfp_llama)")
        if self.model.template is not None:
            from .text.templates import get_template

            template = get_template(self.model.template)  # unknown names / malformed templates fail here
            if self.objective.kind == "cse_sfp" and len(template.slots) < 2:
                raise ValueError(f"objective.kind 'cse_sfp' needs a template with two representation slots "
                                 f"(e.g. csesfp_llama); {template.name!r} has {list(template.slots)}")
        return self

    def resolved_output_dir(self) -> Path:
        return Path(self.output_dir.format(name=self.name))


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Read, override and validate a recipe; every problem raises ConfigError naming the file and key."""
    return load_config(path, Recipe, "recipe", overrides)


def recipe_to_dict(recipe: Recipe) -> dict[str, Any]:
    return recipe.model_dump(mode="json")
