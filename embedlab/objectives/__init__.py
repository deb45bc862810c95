"""Training objectives: losses as pure functions of embeddings, one module per family.

    ir.py            multi-positive InfoNCE with hard / in-batch / cross-device negatives (CoDiEmb IR)
    sts.py           Pearson, Rank-KL, PRO, CoSENT, mid-layer InfoNCE and CoDiEmb's weighted STS sum
    unsupervised.py  pair InfoNCE (SimCSE, the two-pass prompt baseline) and the naive mixed-batch baseline
    single_pass.py   CSE-SFP: Rep2 vs Rep1 of one forward pass (symmetric / in-view-negative options)
    distributed.py   all-gather with gradients, rank helpers, the gradient convention under DDP
    reference.py     slow loop implementations the tests and benchmarks/pro_loss.py check against

Every registered loss returns ``(loss, components)``: a scalar tensor to backpropagate and a dict of floats to log
(always including "loss"). Configs name a loss from ``LOSSES``; each entry says which inputs it takes:

    inputs="ir"    fn(q [b,d], pos [b,P,d], neg [b,N,d] | None, **options)
    inputs="sts"   fn(e1 [n,d], e2 [n,d], labels [n], mid1=None, mid2=None, **options)
    inputs="pair"  fn(anchor [b,d], positive [b,d], negatives [m,d] | None, **options)
    inputs="views" fn(rep2 [b,d], rep1 [b,d], **options)     two views of the same b texts

    loss_fn = LOSSES.get("codiemb_sts").bind(weights={"pro": 1.0})   # unknown option -> ConfigError naming it
    loss, parts = loss_fn(e1, e2, y, mid1=m1, mid2=m2)
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import ConfigError
from ..registry import Registry
from . import distributed
from .distributed import gather_sizes, gather_with_grad, is_distributed, rank, rank_offset, world_size
from .ir import ir_infonce_loss
from .sts import (
    STS_COMPONENTS,
    STS_PAPER_WEIGHTS,
    codiemb_sts_loss,
    cosent_loss,
    cosent_sts_loss,
    mid_infonce_loss,
    pearson_loss,
    pro_loss,
    rank_kl_loss,
)
from .single_pass import single_pass_loss
from .unsupervised import infonce_loss, naive_infonce_loss

INPUT_KINDS = ("ir", "sts", "pair", "views")


@dataclass(frozen=True)
class LossSpec:
    """A registered loss: the function, the kind of inputs it takes, and option defaults applied before the caller's."""

    fn: Callable[..., Any]
    inputs: str
    defaults: dict[str, Any] = field(default_factory=dict)
    summary: str = ""

    def __post_init__(self) -> None:
        if self.inputs not in INPUT_KINDS:
            raise ValueError(f"inputs must be one of {INPUT_KINDS}, got {self.inputs!r}")

    def options(self) -> list[str]:
        """Keyword-only options the function accepts (what a config may set)."""
        return [p.name for p in inspect.signature(self.fn).parameters.values() if p.kind is p.KEYWORD_ONLY]

    def bind(self, **options: Any) -> "LossSpec":
        """A copy with ``options`` as defaults; an option the function does not take raises ConfigError."""
        unknown = sorted(set(options) - set(self.options()))
        if unknown:
            raise ConfigError(f"loss option(s) {unknown} not accepted by {self.fn.__name__}; "
                              f"valid: {', '.join(self.options())}")
        return LossSpec(self.fn, self.inputs, {**self.defaults, **options}, self.summary)

    def __call__(self, *args: Any, **kwargs: Any):
        return self.fn(*args, **{**self.defaults, **kwargs})


LOSSES: Registry[LossSpec] = Registry("loss")
LOSSES.add("ir_infonce", LossSpec(ir_infonce_loss, "ir", summary="CoDiEmb IR: multi-positive InfoNCE, τ 0.02"))
LOSSES.add("codiemb_sts", LossSpec(codiemb_sts_loss, "sts",
                                   summary="CoDiEmb STS: 1 MidNCE + 0.5 PRO + 2 Pearson + 5 RankKL"))
LOSSES.add("cosent", LossSpec(cosent_sts_loss, "sts", summary="CoSENT baseline, τ 0.05"))
LOSSES.add("infonce", LossSpec(infonce_loss, "pair", summary="in-batch InfoNCE (SimCSE, CSE-SFP), τ 0.05"))
LOSSES.add("single_pass", LossSpec(single_pass_loss, "views",
                                   summary="CSE-SFP: Rep2 anchors vs Rep1 positives of one forward pass, τ 0.05"))
LOSSES.add("naive_infonce", LossSpec(naive_infonce_loss, "pair",
                                     summary="naive baseline: one InfoNCE over a mixed batch, τ 0.02"))

__all__ = [
    "LOSSES", "LossSpec", "INPUT_KINDS", "STS_COMPONENTS", "STS_PAPER_WEIGHTS",
    "ir_infonce_loss", "codiemb_sts_loss", "cosent_sts_loss", "infonce_loss", "naive_infonce_loss", "single_pass_loss",
    "pearson_loss", "rank_kl_loss", "pro_loss", "cosent_loss", "mid_infonce_loss",
    "gather_with_grad", "gather_sizes", "is_distributed", "world_size", "rank", "rank_offset", "distributed",
]
