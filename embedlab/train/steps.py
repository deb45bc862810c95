"""One optimisation step's work for each objective: turn a batch of example indices into embeddings and a loss.

- ``codiemb`` (single-task batches): IR batches -> multi-positive InfoNCE with P positives and N hard negatives per
  query (cross-device negatives when running on several ranks); STS batches -> the four order-aware losses (Pearson,
  Rank-KL, PRO, mid-layer InfoNCE) on scaled labels.
- ``cosent`` (single-task batches): IR as above; STS -> CoSENT only (the paper's CoSENT baseline).
- ``naive`` (mixed batches): every example becomes one (anchor, positive) pair — an IR query with its first positive,
  an STS pair whose scaled score >= ``sampler.sts_threshold`` — and one in-batch InfoNCE covers them all.

Prompts follow CoDiEmb: queries and both STS sides get ``data.query_template`` filled with the source's instruction
(excluded from mean pooling unless ``model.include_prompt``); IR documents get no prompt. Positives and negatives are
drawn per query with a generator seeded by (seed, step, rank), so a resumed run draws the same ones; a query with fewer
than P positives (N negatives) is filled by repetition; a query without any negative borrows random positives of
other queries of the same source. This module does not own the loop, the optimizer or checkpoints (trainer.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

from ..config import Recipe
from ..data.records import IRExample, STSPair
from ..errors import ConfigError
from ..objectives.ir import ir_infonce_loss
from ..objectives.sts import codiemb_sts_loss, cosent_sts_loss
from ..objectives.unsupervised import infonce_loss


@dataclass
class StepContext:
    recipe: Recipe
    model: Any  # Embedder
    sources: list  # LoadedSource
    device: torch.device
    world: int = 1
    rank: int = 0


def make_sampler(recipe: Recipe, sources: Sequence, rank: int, world: int):
    """The recipe's batch sampler over the loaded sources (batches are lists of (source, index) pairs)."""
    from ..data import samplers

    cfg = recipe.sampler
    if cfg.kind == "mixed":
        batch = max(cfg.batch_size.values())
        return samplers.MixedBatchSampler(sources, batch, seed=recipe.seed, rank=rank, world_size=world)
    return samplers.SingleTaskBatchSampler(sources, cfg.batch_size, policy=cfg.policy, temperature=cfg.temperature,
                                           ratio=cfg.ratio, seed=recipe.seed, rank=rank, world_size=world)


def _prompt(ctx: StepContext, source_index: int) -> str:
    instruction = ctx.sources[source_index].source.instruction
    return ctx.recipe.data.query_template.format(instruction=instruction) if instruction else ""


def _draw(items: Sequence[str], k: int, gen: torch.Generator) -> list[str]:
    """k items without replacement when possible, else all of them and the rest by repetition."""
    if k == 0:
        return []
    order = torch.randperm(len(items), generator=gen).tolist()
    picked = [items[i] for i in order[:k]]
    while len(picked) < k:
        picked.append(items[order[len(picked) % len(order)]])
    return picked


def _embed(ctx: StepContext, texts: list[str], prompt: str = "", layers: Sequence[int] | None = None):
    features = ctx.model.tokenize(texts, prompt=prompt, max_length=ctx.recipe.model.max_length)
    if layers is None:
        return ctx.model(features)
    return ctx.model.forward_layers(features, layers)


def ir_step(ctx: StepContext, source_index: int, indices: Sequence[int], gen: torch.Generator):
    r = ctx.recipe
    source = ctx.sources[source_index]
    examples: list[IRExample] = [source[i] for i in indices]
    P, N = r.data.n_positives, r.data.n_negatives
    pos, neg = [], []
    for ex in examples:
        pos.extend(_draw(list(ex.pos), P, gen))
        pool = list(ex.neg)
        if not pool and N:
            # No mined negatives: random positives of other queries of this source stand in (documented above).
            others = torch.randint(len(source), (max(N * 4, 8),), generator=gen).tolist()
            pool = [d for j in others for d in source[j].pos if d not in ex.pos][: max(N, 1)] or list(ex.pos)
        neg.extend(_draw(pool, N, gen))
    q = _embed(ctx, [ex.query for ex in examples], prompt=_prompt(ctx, source_index))
    docs = _embed(ctx, pos + neg)
    b = len(examples)
    d_pos = docs[: b * P].view(b, P, -1)
    d_neg = docs[b * P:].view(b, N, -1) if N else None
    loss, comps = ir_infonce_loss(q, d_pos, d_neg, tau=r.objective.ir_temperature,
                                  joint_softmax=r.objective.ir_joint_softmax, symmetric=r.objective.ir_symmetric,
                                  gather=r.objective.cross_device_negatives and ctx.world > 1)
    return loss, comps


def sts_step(ctx: StepContext, source_index: int, indices: Sequence[int]):
    r = ctx.recipe
    source = ctx.sources[source_index]
    pairs: list[STSPair] = [source[i] for i in indices]
    labels = torch.tensor([p.score for p in pairs], dtype=torch.float32, device=ctx.device)
    prompt = _prompt(ctx, source_index)
    if r.objective.kind == "cosent":
        e1 = _embed(ctx, [p.sentence1 for p in pairs], prompt)
        e2 = _embed(ctx, [p.sentence2 for p in pairs], prompt)
        return cosent_sts_loss(e1, e2, labels, tau=r.objective.cosent_temperature, gather=r.objective.sts_gather
                               and ctx.world > 1)
    weights = r.objective.sts_weights
    mid = (ctx.model.num_layers + 1) // 2  # hidden_states has num_layers + 1 entries; CoDiEmb takes len // 2
    if weights.get("mid_nce", 0):
        e1, m1 = _embed(ctx, [p.sentence1 for p in pairs], prompt, layers=[-1, mid])
        e2, m2 = _embed(ctx, [p.sentence2 for p in pairs], prompt, layers=[-1, mid])
    else:
        e1 = _embed(ctx, [p.sentence1 for p in pairs], prompt)
        e2 = _embed(ctx, [p.sentence2 for p in pairs], prompt)
        m1 = m2 = None
    return codiemb_sts_loss(e1, e2, labels, mid1=m1, mid2=m2, weights=weights,
                            mid_threshold=r.objective.mid_threshold,
                            gather=r.objective.sts_gather and ctx.world > 1)


def naive_step(ctx: StepContext, items: Sequence[tuple[int, int]], gen: torch.Generator):
    """Mixed batch of (source, index) items -> one in-batch InfoNCE over (anchor, positive) pairs."""
    r = ctx.recipe
    groups: dict[str, tuple[list[str], list[str]]] = {}
    for source_index, i in items:
        ex = ctx.sources[source_index][i]
        prompt = _prompt(ctx, source_index)
        if isinstance(ex, IRExample):
            anchor, positive = ex.query, _draw(list(ex.pos), 1, gen)[0]
            doc_prompt = ""
        elif ex.score >= r.sampler.sts_threshold:
            anchor, positive, doc_prompt = ex.sentence1, ex.sentence2, prompt
        else:
            continue  # a low-similarity STS pair has no positive in this baseline
        a, p = groups.setdefault(f"{prompt}\x00{doc_prompt}", ([], []))
        a.append(anchor)
        p.append(positive)
    if not groups:
        raise ConfigError("a mixed batch held no usable pair: lower sampler.sts_threshold or add IR data")
    anchors, positives = [], []
    for key, (a, p) in groups.items():
        prompt, doc_prompt = key.split("\x00")
        anchors.append(_embed(ctx, a, prompt))
        positives.append(_embed(ctx, p, doc_prompt))
    return infonce_loss(torch.cat(anchors), torch.cat(positives), tau=r.objective.ir_temperature,
                        gather=r.objective.cross_device_negatives and ctx.world > 1)


def run_step(ctx: StepContext, batch, step: int):
    """-> (loss, components, task name, examples in this rank's batch)."""
    gen = torch.Generator().manual_seed(hash((ctx.recipe.seed, step, ctx.rank)) & 0x7FFF_FFFF)
    if ctx.recipe.sampler.kind == "mixed":
        loss, comps = naive_step(ctx, batch, gen)
        return loss, comps, "mixed", len(batch)
    source_index, indices = batch.source, [i for _, i in batch]
    task = ctx.sources[source_index].task
    if task == "ir":
        loss, comps = ir_step(ctx, source_index, indices, gen)
    else:
        loss, comps = sts_step(ctx, source_index, indices)
    return loss, comps, f"{task}:{ctx.sources[source_index].name}", len(indices)
