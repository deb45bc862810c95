"""Model fusion: merge fine-tuned checkpoints of one base model into one model, tensor by tensor.

Methods (registered in ``MERGE_METHODS``, one module each, formula in its docstring): ``linear`` (model soup),
``task_arithmetic``, ``ties``, ``dare_linear``, ``dare_ties``, ``slerp``, ``delta_guided`` (CoDiEmb, several
variants), and ``greedy_soup`` (greedy.py: needs a dev score). ``merge.fuse`` is the driver (streaming, validated,
atomic output in the sentence-transformers layout); ``config`` reads mergekit-style YAML. Nothing here trains or
evaluates by itself.
"""
from . import dare, delta_guided, greedy, linear, slerp, task_arithmetic, ties  # noqa: F401  (register methods)
from .base import MERGE_METHODS, MergeMethod  # noqa: F401
from .merge import FusionResult, fuse  # noqa: F401

__all__ = ["MERGE_METHODS", "MergeMethod", "FusionResult", "fuse", "dare", "delta_guided", "linear", "slerp",
           "task_arithmetic", "ties", "greedy"]
