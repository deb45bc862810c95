"""Cross-device helpers for contrastive losses: all-gather that keeps gradients, rank/offset queries.

Every function is a no-op (or returns the single-process answer) when no process group is initialised, so the losses
run unchanged in a plain Python process, under ``torchrun`` with one process, or with many.

The gradient convention every loss in ``embedlab.objectives`` follows with ``gather=True``
-----------------------------------------------------------------------------------------------
Let L be the loss of the *global* batch (all ranks' examples concatenated in rank order), exactly what one process
would compute on that concatenated batch. With W ranks:

* the returned loss value equals L on every rank (so logs agree and equal the single-process number);
* the gradient that reaches rank r's local inputs x_r is ``W · ∂L/∂x_r``.

Why W×: DistributedDataParallel *averages* parameter gradients over ranks. Each rank's parameter gradient is
``(∂loss_r/∂x_r) · ∂x_r/∂θ``; averaging ``W · ∂L/∂x_r · ∂x_r/∂θ`` over r gives ``Σ_r ∂L/∂x_r · ∂x_r/∂θ = ∂L/∂θ``,
i.e. exactly the single-process gradient of the global batch. (No choice of per-rank loss can give both the
single-process *input* gradient and, after averaging, the single-process *parameter* gradient: the encoder's
backward is linear in the upstream gradient. We pick the one that makes training identical.) A trainer that sums
instead of averaging, or accumulates embedding gradients by hand (GradCache), divides by ``world_size()``.

Two ways the losses reach that convention, both with ``gather_with_grad`` (whose backward sums the gathered copies'
gradients back onto their owner, an all-to-all + sum on gloo, a reduce-scatter on NCCL):

* row-decomposable losses (InfoNCE-style: the loss is a mean of per-anchor terms) compute only the local anchors'
  rows against the gathered candidates; labels are offset by ``rank_offset(b)``. Rank r's loss gradient is then
  ``Σ_r' ∂L_r'/∂x_r = W ∂L/∂x_r`` (L = mean_r L_r), and ``with_global_value`` makes the reported value L.
  This costs 1/W of computing the full matrix on every rank.
* list-wise losses (Pearson, Rank-KL, PRO, CoSENT: not a sum over rows) gather the scores and compute the full global
  loss on every rank; the all-gather backward then delivers ``W ∂L/∂x_r``.

Every rank must pass tensors of the same shape (``all_gather`` requires it; the single-task sampler gives equal local
batches) and call the loss the same number of times (it contains collectives).
"""
from __future__ import annotations

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    """True when a process group is initialised (with any world size)."""
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def rank_offset(local_batch: int) -> int:
    """Index of this rank's first row in a gathered (rank-ordered) batch: ``rank() * local_batch``.

    Use it to turn local anchor indices into label columns of gathered candidates."""
    return rank() * local_batch


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """All-gather ``x`` along dim 0 across ranks, keeping gradients; returns [world_size * b, ...] in rank order.

    The local shard is the caller's own tensor (not the received copy), so its autograd path is the direct one;
    the other shards come from ``torch.distributed.nn.functional.all_gather``, whose backward sends each rank the
    sum of all ranks' gradients for its shard. Returns ``x`` unchanged when not distributed or world size is 1.
    """
    if world_size() == 1:
        return x
    from torch.distributed.nn.functional import all_gather  # imported lazily: not every build ships torch.distributed.nn

    shards = list(all_gather(x.contiguous()))
    shards[rank()] = x
    return torch.cat(shards, dim=0)


@torch.no_grad()
def gather_nograd(x: torch.Tensor) -> torch.Tensor:
    """All-gather without gradients (labels, text ids, masks); ``x`` unchanged when not distributed."""
    if world_size() == 1:
        return x
    shards = [torch.empty_like(x) for _ in range(world_size())]
    dist.all_gather(shards, x.contiguous())
    return torch.cat(shards, dim=0)


@torch.no_grad()
def mean_over_ranks(values: torch.Tensor) -> torch.Tensor:
    """Element-wise mean of a (detached) tensor over ranks; one all-reduce. ``values`` unchanged when single-process."""
    if world_size() == 1:
        return values.detach()
    out = values.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / world_size()


def with_global_value(local: torch.Tensor, global_value: torch.Tensor) -> torch.Tensor:
    """A tensor whose *value* is ``global_value`` and whose *gradient* is that of ``local``.

    Row-decomposable losses compute their own rows only (see the module docstring); this makes the number every
    rank logs and returns the global-batch loss without changing what backward does."""
    if global_value is local:
        return local
    return local + (global_value.to(local.dtype) - local.detach())
