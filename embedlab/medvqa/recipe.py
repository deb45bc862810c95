"""Med-VQA training recipes: one YAML file (or job config) says which model, profile, task, seed and settings.

    # recipes/vqa-mevf-ban.yaml
    model: mevf-ban            # a name in the model library (embedlab list)
    profile: cpu               # paper | cpu | tiny
    task: vqa-rad-val          # trains on the task's training split, scores its evaluation split
    # or, instead of a task, any registered dataset or dataset-tool export folder and two of its splits:
    # dataset: runs/my-export   train_split: train   eval_split: val
    seed: 0
    output_dir: runs/vqa/mevf-ban-s0
    model_settings: {hidden: 512}            # over the profile (unknown keys refused)
    train: {epochs: 20, vqamix: false}       # over the profile
    eval: {closed_by: field, questions: all, conditions: [real, blank, shuffled]}

``load_recipe(path, overrides)`` reads it through the one YAML loader (``key=value`` overrides, errors naming the file
and key); ``run_recipe`` trains and scores it and returns the trained model and the evaluation result. The CLI
(``embedlab vqa train``) and the ``vqa-train`` job kind both go through ``run_recipe``. It writes no result rows.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ..configfile import load_config
from ..errors import ConfigError
from .models import MODELS, model_settings


class EvalOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    closed_by: Literal["field", "yesno"] = "field"
    questions: Literal["all", "freeform"] = "all"
    conditions: list[Literal["real", "blank", "shuffled"]] = Field(default_factory=lambda: ["real", "blank",
                                                                                            "shuffled"])
    bf16: bool = False


class VQARecipe(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str
    profile: Literal["paper", "cpu", "tiny"] = "cpu"
    task: str = "vqa-rad-val"
    dataset: str | None = None  # instead of task: a dataset name or export folder, with the two splits below
    train_split: str = "train"
    eval_split: str = "val"
    seed: int = 0
    output_dir: str | None = None
    model_settings: dict = Field(default_factory=dict)
    train: dict = Field(default_factory=dict)
    eval: EvalOptions = Field(default_factory=EvalOptions)

    def resolved_task(self):
        """The registered task, or for ``dataset:`` a task made of that dataset's two splits."""
        from .tasks import VQATask, resolve_task

        if self.dataset is None:
            return resolve_task(self.task)
        name = Path(self.dataset).name if Path(self.dataset).exists() else self.dataset
        return VQATask(f"{name}:{self.eval_split}", self.dataset, self.train_split, self.eval_split,
                       f"{self.dataset}: trained on {self.train_split}, scored on {self.eval_split}")

    def check(self) -> VQARecipe:
        MODELS.get(self.model)
        self.resolved_task()
        model_settings(self.model, self.profile, model_overrides=self.model_settings, train_overrides=self.train)
        if "real" not in self.eval.conditions:
            raise ConfigError("eval.conditions must include real")
        return self

    def resolved_output_dir(self) -> Path:
        task = self.resolved_task().name.replace(":", "-")
        return Path(self.output_dir or f"runs/vqa/{task}/{self.model}-{self.profile}-s{self.seed}")


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> VQARecipe:
    recipe = load_config(path, VQARecipe, "Med-VQA recipe", overrides or [])
    try:
        return recipe.check()
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def run_recipe(recipe: VQARecipe, *, progress=None, threads: int | None = None):
    """Train the recipe's model on its task's training split and score the evaluation split -> (trained, result)."""
    from .datasets import load_dataset
    from .evaluate import evaluate_model
    from .train import train_model

    task = recipe.resolved_task()
    train = load_dataset(task.dataset, task.train_split)
    test = load_dataset(task.dataset, task.eval_split)
    if "shuffled" in recipe.eval.conditions and len({r.image for r in test}) < 2:
        # checked before training: a small export's split may hold one image, which cannot be shuffled
        raise ConfigError(f"the {task.eval_split} split of {task.dataset} has questions on "
                          f"{len({r.image for r in test})} image(s): the shuffled-image condition needs two or more; "
                          f"score it without (eval.conditions=[real,blank])")
    overrides = dict(recipe.train)
    if threads is not None:
        overrides.setdefault("threads", threads)
    trained = train_model(recipe.model, recipe.profile, train, recipe.resolved_output_dir(), seed=recipe.seed,
                          eval_records=test, model_overrides=recipe.model_settings, train_overrides=overrides,
                          progress=progress, info={"task": task.name, "dataset": task.dataset,
                                                   "train_split": task.train_split})
    result = evaluate_model(trained, test, train_answers=[r.answer for r in train], closed_by=recipe.eval.closed_by,
                            questions=recipe.eval.questions, conditions=recipe.eval.conditions, seed=recipe.seed,
                            bf16=recipe.eval.bf16)
    return trained, result

