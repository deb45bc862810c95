"""One optimisation step's work for each objective: turn a batch of example indices into embeddings and a loss.

- ``codiemb`` (single-task batches): IR batches -> multi-positive InfoNCE with P positives and N hard negatives per
  query (cross-device negatives when running on several ranks); STS batches -> the four order-aware losses (Pearson,
  Rank-KL, PRO, mid-layer InfoNCE) on scaled labels.
- ``cosent`` (single-task batches): IR as above; STS -> CoSENT only (the paper's CoSENT baseline).
- ``naive`` (mixed batches): every example becomes one (anchor, positive) pair — an IR query with a drawn positive
  (its N drawn hard negatives join the candidates), an STS pair whose scaled score >= ``sampler.sts_threshold`` — and
  one in-batch InfoNCE covers them all. The two ablation arms between naive and CoDiEmb change one factor each:
  ``naive`` with single-task batches (the losses alone) and ``codiemb`` with mixed batches (the sampler alone: each
  task's loss on its items of the mixed batch).
- ``cse_sfp`` / ``simcse_prompt`` / ``simcse`` (unsup sources, one sentence a line): one forward pass of a two-slot
  template (Rep2 anchors, Rep1 positives), or two stochastic passes of the same texts (dropout views).

Prompts follow CoDiEmb: queries and both STS sides get ``data.query_template`` filled with the source's instruction
(excluded from mean pooling unless ``model.include_prompt``); IR documents get no prompt. Positives and negatives are
drawn per query with a generator seeded by (seed, step, rank), so a resumed run draws the same ones; a query with fewer
than P positives (N negatives) is filled by repetition; a query without any negative borrows random positives of
other queries of the same source. This module does not own the loop, the optimizer or checkpoints (trainer.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..config import Recipe
from ..data.records import IRExample, STSPair
from ..errors import ConfigError
from ..objectives.ir import ir_infonce_loss
from ..objectives.single_pass import single_pass_loss
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
    # GradCache needs to run the loss's backward inside the step; the trainer passes how (scaling for accumulation
    # and fp16). None: steps never run backward themselves and GradCache is off.
    backward: Callable[[torch.Tensor], None] | None = None


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


SLOTS = "slots"  # a ``layers`` value: return (first slot, last slot) of the template from one forward pass


# The fixed cost of one more forward + backward call, in padded tokens: a group of texts is split off only when the
# padding it saves outweighs it (benchmarks/length_groups.py measures the effect).
LENGTH_GROUP_OVERHEAD_TOKENS = 4096


def _embed(ctx: StepContext, texts: list[str], prompt: str = "", layers: Sequence[int] | str | None = None):
    """Embeddings of ``texts`` with gradients. Texts of very different lengths (a mixed batch's few 256-token
    documents among short sentences) are embedded in groups of similar length and put back in order: the same
    embeddings (padding is masked) for far fewer padded tokens."""
    max_length = ctx.recipe.model.max_length
    if layers == SLOTS:
        reps = ctx.model.forward_slots(ctx.model.tokenize(texts, prompt=prompt, max_length=max_length))
        slots = ctx.model.template.slots
        return reps[slots[0]], reps[slots[-1]]
    groups = ctx.model.tokenize_groups(texts, prompt=prompt, max_length=max_length,
                                       overhead_tokens=LENGTH_GROUP_OVERHEAD_TOKENS)
    outs = [ctx.model(f) if layers is None else ctx.model.forward_layers(f, layers) for _, f in groups]
    if len(groups) == 1:
        return outs[0]
    order = torch.from_numpy(np.concatenate([g for g, _ in groups]))
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(len(order))
    if layers is None:
        return torch.cat(outs)[inverse.to(outs[0].device)]
    return [torch.cat([o[k] for o in outs])[inverse.to(outs[0][k].device)] for k in range(len(outs[0]))]


Spec = tuple  # (texts, prompt, layers or None): one group of texts embedded the same way


def _embed_and_loss(ctx: StepContext, specs: Sequence[Spec], loss_fn) -> tuple[torch.Tensor, dict, bool]:
    """Embed every group, apply ``loss_fn(outputs) -> (loss, components)``; -> (loss, components, backward_done).

    With ``train.gradcache_chunk`` (and a trainer-supplied ``ctx.backward``) this is GradCache (Gao et al., 2021):
    embed in chunks without graphs, backpropagate the loss to the embeddings only, then re-embed chunk by chunk with
    graphs and push the cached embedding gradients through. Activation memory is one chunk's, whatever the batch,
    and the gradients equal the plain path's (dropout masks are replayed by restoring the RNG state per chunk)."""
    chunk = ctx.recipe.train.gradcache_chunk
    if not chunk or ctx.backward is None:
        loss, comps = loss_fn([_embed(ctx, texts, prompt, layers) for texts, prompt, layers in specs])
        return loss, comps, False
    return _gradcache(ctx, specs, loss_fn, chunk)


def _rng_state(device: torch.device):
    return torch.get_rng_state(), (torch.cuda.get_rng_state(device) if device.type == "cuda" else None)


def _set_rng_state(state, device: torch.device) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], device)


def _as_tuple(out) -> tuple:
    return tuple(out) if isinstance(out, (list, tuple)) else (out,)


def _gradcache(ctx: StepContext, specs: Sequence[Spec], loss_fn, chunk: int):
    # Pass 1: no graphs; remember the RNG state before every chunk so pass 2 draws the same dropout masks.
    leaves, replay = [], []
    for texts, prompt, layers in specs:
        pieces = []
        for i in range(0, len(texts), chunk):
            replay.append((len(leaves), texts[i:i + chunk], prompt, layers, i, _rng_state(ctx.device)))
            with torch.no_grad():
                pieces.append(_as_tuple(_embed(ctx, texts[i:i + chunk], prompt, layers)))
        group = tuple(torch.cat([p[k] for p in pieces]).detach().requires_grad_() for k in range(len(pieces[0])))
        leaves.append(group)
    after = _rng_state(ctx.device)
    outputs = [g if layers is not None else g[0] for g, (_, _, layers) in zip(leaves, specs)]
    loss, comps = loss_fn(outputs)
    ctx.backward(loss)  # gradients of the loss w.r.t. the embeddings only (the leaves)
    # Pass 2: re-embed each chunk with a graph and push its slice of the cached gradients into the model.
    for group_index, texts, prompt, layers, start, state in replay:
        grads = [leaf.grad[start:start + len(texts)] if leaf.grad is not None else None
                 for leaf in leaves[group_index]]
        if all(g is None for g in grads):
            continue
        _set_rng_state(state, ctx.device)
        outs = _as_tuple(_embed(ctx, texts, prompt, layers))
        pairs = [(o, g.to(o.dtype)) for o, g in zip(outs, grads) if g is not None]
        torch.autograd.backward([o for o, _ in pairs], grad_tensors=[g for _, g in pairs])
    _set_rng_state(after, ctx.device)
    return loss.detach(), comps, True


def text_ids(texts: Sequence[str], device: torch.device) -> torch.Tensor:
    """A stable 63-bit integer id per text (equal texts, equal ids), for the loss's false-negative mask."""
    import hashlib

    return torch.tensor([int.from_bytes(hashlib.blake2b(t.encode("utf-8"), digest_size=8).digest(), "little") >> 1
                         for t in texts], dtype=torch.long, device=device)


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
    b = len(examples)
    ids: dict[str, torch.Tensor] = {}
    if r.objective.ir_mask_shared_positives:
        # Text ids: a document that is query i's positive and also appears as another query's positive or as a hard
        # negative is removed from query i's denominator (SciFact: 248 of 565 positive documents serve several
        # queries, so without this about 16 % of 16-query batches push a query away from its own positive).
        ids = {"pos_ids": text_ids(pos, ctx.device).view(b, P),
               "neg_ids": text_ids(neg, ctx.device).view(b, N)}

    def loss_fn(outs):
        q, docs = outs
        d_pos = docs[: b * P].view(b, P, -1)
        d_neg = docs[b * P:].view(b, N, -1) if N else None
        return ir_infonce_loss(q, d_pos, d_neg, tau=r.objective.ir_temperature,
                               joint_softmax=r.objective.ir_joint_softmax, symmetric=r.objective.ir_symmetric,
                               gather=r.objective.cross_device_negatives and ctx.world > 1, **ids)

    return _embed_and_loss(ctx, [([ex.query for ex in examples], _prompt(ctx, source_index), None),
                                 (pos + neg, "", None)], loss_fn)


def sts_step(ctx: StepContext, source_index: int, indices: Sequence[int]):
    r = ctx.recipe
    source = ctx.sources[source_index]
    pairs: list[STSPair] = [source[i] for i in indices]
    labels = torch.tensor([p.score for p in pairs], dtype=torch.float32, device=ctx.device)
    prompt = _prompt(ctx, source_index)
    gather = r.objective.sts_gather and ctx.world > 1
    n = len(pairs)
    # Both sides in ONE forward pass of 2n texts: one larger matrix product is faster than two on CPU (measured in
    # benchmarks/train_step.py), and the embeddings are the same (padding is masked).
    both = [p.sentence1 for p in pairs] + [p.sentence2 for p in pairs]
    if r.objective.kind == "cosent":
        return _embed_and_loss(ctx, [(both, prompt, None)], lambda outs: cosent_sts_loss(
            outs[0][:n], outs[0][n:], labels, tau=r.objective.cosent_temperature, gather=gather))
    weights = r.objective.sts_weights
    mid = (ctx.model.num_layers + 1) // 2  # hidden_states has num_layers + 1 entries; CoDiEmb takes len // 2
    layers = [-1, mid] if weights.get("mid_nce", 0) else None

    def loss_fn(outs):
        if layers:
            last, middle = outs[0]
            e1, e2, m1, m2 = last[:n], last[n:], middle[:n], middle[n:]
        else:
            e1, e2, m1, m2 = outs[0][:n], outs[0][n:], None, None
        return codiemb_sts_loss(e1, e2, labels, mid1=m1, mid2=m2, weights=weights,
                                mid_threshold=r.objective.mid_threshold, gather=gather)

    return _embed_and_loss(ctx, [(both, prompt, layers)], loss_fn)


def naive_step(ctx: StepContext, items: Sequence[tuple[int, int]], gen: torch.Generator):
    """A batch of (source, index) items -> one in-batch InfoNCE over (anchor, positive) pairs, the IR items' hard
    negatives (N per query, drawn like ir_step's) appended as candidates for every anchor. Mixed batches: the paper's
    naive baseline; single-task batches: the "losses alone" ablation arm."""
    r = ctx.recipe
    groups: dict[str, tuple[list[str], list[str]]] = {}
    negatives: list[str] = []
    for source_index, i in items:
        ex = ctx.sources[source_index][i]
        prompt = _prompt(ctx, source_index)
        if isinstance(ex, IRExample):
            anchor, positive = ex.query, _draw(list(ex.pos), 1, gen)[0]
            doc_prompt = ""
            negatives += _draw(list(ex.neg), r.data.n_negatives, gen) if ex.neg else []
        elif ex.score >= r.sampler.sts_threshold:
            anchor, positive, doc_prompt = ex.sentence1, ex.sentence2, prompt
        else:
            continue  # a low-similarity STS pair has no positive in this baseline
        a, p = groups.setdefault(f"{prompt}\x00{doc_prompt}", ([], []))
        a.append(anchor)
        p.append(positive)
    if not groups:
        # An STS-only batch without a pair above the threshold (the losses-alone arm): a zero loss, no update. The
        # loss is still called, so the ranks' collectives line up when other ranks have pairs.
        empty = torch.zeros(0, ctx.model.dim, device=ctx.device, requires_grad=True)
        loss, comps = infonce_loss(empty, empty, None, tau=r.objective.ir_temperature,
                                   gather=r.objective.cross_device_negatives and ctx.world > 1)
        return loss, comps, False
    specs = []
    for key, (a, p) in groups.items():
        prompt, doc_prompt = key.split("\x00")
        specs += [(a, prompt, None), (p, doc_prompt, None)]
    if negatives:
        specs.append((negatives, "", None))  # documents: no prompt
    n_groups = len(groups)

    def loss_fn(outs):
        anchors = torch.cat(outs[0:2 * n_groups:2])
        positives = torch.cat(outs[1:2 * n_groups:2])
        negs = outs[2 * n_groups] if negatives else None
        return infonce_loss(anchors, positives, negs, tau=r.objective.ir_temperature,
                            gather=r.objective.cross_device_negatives and ctx.world > 1)

    return _embed_and_loss(ctx, specs, loss_fn)


def mixed_task_step(ctx: StepContext, items: Sequence[tuple[int, int]], gen: torch.Generator):
    """The "sampler alone" ablation arm: a mixed batch under CoDiEmb's task-specific losses. Items are grouped by
    source; each group gets its own task's loss (ir_step / sts_step), and the step's loss is their mean weighted by
    the number of items (an STS group of one pair has no correlation to learn from and is skipped). One process
    only: groups differ between ranks, so the losses' collectives would not line up."""
    if ctx.world > 1:
        raise ConfigError("objective.kind codiemb/cosent with sampler.kind mixed (the sampler-alone arm) runs in one "
                          "process; use single-task batches for multi-process training")
    by_source: dict[int, list[int]] = {}
    for source_index, i in items:
        by_source.setdefault(source_index, []).append(i)
    total, comps, weight = None, {}, 0
    for source_index, indices in sorted(by_source.items()):
        task = ctx.sources[source_index].task
        if task == "sts" and len(indices) < 2:
            continue
        step = ir_step if task == "ir" else sts_step
        loss, c, _ = step(ctx, source_index, indices, gen) if task == "ir" else step(ctx, source_index, indices)
        total = loss * len(indices) if total is None else total + loss * len(indices)
        weight += len(indices)
        for k, v in c.items():
            comps[f"{task}_{k}"] = comps.get(f"{task}_{k}", 0.0) + v * len(indices)
    if total is None:
        raise ConfigError("a mixed batch held no usable group (single STS pairs only)")
    comps = {k: v / weight for k, v in comps.items()}
    total = total / weight
    comps["loss"] = float(total.detach())
    return total, comps, False


def unsup_step(ctx: StepContext, source_index: int, indices: Sequence[int]):
    """Sentences only. cse_sfp: ONE forward pass of the two-slot template, Rep2 anchors vs Rep1 positives;
    simcse_prompt / simcse: TWO forward passes of the same texts (dropout on), view 1 vs view 2."""
    r = ctx.recipe
    o = r.objective
    texts = [ctx.sources[source_index][i] for i in indices]
    gather = o.cross_device_negatives and ctx.world > 1
    if o.kind == "cse_sfp":
        if len(ctx.model.template.slots) < 2:
            raise ConfigError(f"cse_sfp needs a template with two slots; {ctx.model.template.name!r} has "
                              f"{list(ctx.model.template.slots)}")
        return _embed_and_loss(ctx, [(texts, "", SLOTS)], lambda outs: single_pass_loss(
            outs[0][1], outs[0][0], tau=o.unsup_temperature, symmetric=o.unsup_symmetric,
            in_view_negatives=o.in_view_negatives, gather=gather))
    return _embed_and_loss(ctx, [(texts, "", None), (texts, "", None)], lambda outs: infonce_loss(
        outs[0], outs[1], tau=o.unsup_temperature, symmetric=o.unsup_symmetric, gather=gather))


@dataclass
class StepResult:
    loss: torch.Tensor
    components: dict
    task: str  # "ir:<source>", "sts:<source>" or "mixed"
    examples: int  # in this rank's batch
    backward_done: bool  # GradCache ran the backward inside the step


def run_step(ctx: StepContext, batch, step: int) -> StepResult:
    gen = torch.Generator().manual_seed(hash((ctx.recipe.seed, step, ctx.rank)) & 0x7FFF_FFFF)
    mixed = ctx.recipe.sampler.kind == "mixed"
    if ctx.recipe.objective.kind == "naive":  # mixed: the naive baseline; single-task: the losses-alone arm
        loss, comps, done = naive_step(ctx, batch, gen)
        return StepResult(loss, comps, "mixed" if mixed else f"naive:{ctx.sources[batch.source].name}", len(batch),
                          done)
    if mixed:  # CoDiEmb's losses on mixed batches: the sampler-alone arm
        loss, comps, done = mixed_task_step(ctx, batch, gen)
        return StepResult(loss, comps, "mixed", len(batch), done)
    source_index, indices = batch.source, [i for _, i in batch]
    task = ctx.sources[source_index].task
    if task == "ir":
        loss, comps, done = ir_step(ctx, source_index, indices, gen)
    elif task == "unsup":
        loss, comps, done = unsup_step(ctx, source_index, indices)
    else:
        loss, comps, done = sts_step(ctx, source_index, indices)
    return StepResult(loss, comps, f"{task}:{ctx.sources[source_index].name}", len(indices), done)
