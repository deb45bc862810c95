"""Cross-device helpers for contrastive losses: all-gather that keeps gradients, rank/offset queries, row means.

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
gradients back onto their owner: an all-to-all + sum on gloo, a reduce-scatter on NCCL):

* row-decomposable losses (InfoNCE-style: the loss is a mean of per-anchor terms) compute only the local anchors'
  rows against the gathered candidates, with labels offset by the rows of the lower ranks. ``row_mean`` turns the
  local sum of row losses into ``W · Σ_local / N_global``: summed over ranks by the all-gather backward and averaged
  by DDP, that is the gradient of the global mean. This costs 1/W of computing the full matrix on every rank.
* list-wise losses (Pearson, Rank-KL, PRO, CoSENT: not a sum over rows) gather the scores and compute the full global
  loss on every rank; the all-gather backward then delivers ``W ∂L/∂x_r``.

Ranks may hold different numbers of rows (the naive baseline drops low-score STS pairs, so its anchor count varies):
``gather_with_grad`` first gathers the sizes (one tiny collective), pads to the largest, gathers, and trims. Trailing
dimensions must match. Every rank must call a loss the same number of times (it contains collectives).
"""
from __future__ import annotations

import warnings
from typing import Sequence

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    """True when a process group is initialised (with any world size)."""
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def rank_offset(local_batch: int | Sequence[int]) -> int:
    """Index of this rank's first row in a gathered (rank-ordered) batch.

    ``local_batch`` an int (every rank holds that many rows): ``rank() * local_batch``; a list of every rank's row
    count (from ``gather_sizes``): the rows of the lower ranks. Turns local anchor indices into label columns."""
    if isinstance(local_batch, int):
        return rank() * local_batch
    return int(sum(local_batch[: rank()]))


def gather_sizes(n: int, device: torch.device | str = "cpu") -> list[int]:
    """Every rank's row count, in rank order (``[n]`` when single-process). ``device``: where the backend wants
    tensors (CPU for gloo, the rank's GPU for NCCL) — pass the embeddings' device."""
    if world_size() == 1:
        return [n]
    mine = torch.tensor([n], dtype=torch.long, device=device)
    out = [torch.empty_like(mine) for _ in range(world_size())]
    dist.all_gather(out, mine)
    return [int(t.item()) for t in out]


def _pad_rows(x: torch.Tensor, rows: int) -> torch.Tensor:
    if x.shape[0] == rows:
        return x
    return torch.cat([x, x.new_zeros((rows - x.shape[0], *x.shape[1:]))])


def gather_with_grad(x: torch.Tensor, sizes: Sequence[int] | None = None) -> torch.Tensor:
    """All-gather ``x`` along dim 0 across ranks, keeping gradients; returns [Σ sizes, ...] in rank order.

    The local shard is the caller's own tensor (not the received copy), so its autograd path is the direct one;
    the other shards come from ``torch.distributed.nn.functional.all_gather``, whose backward sends each rank the
    sum of all ranks' gradients for its shard. ``sizes`` (every rank's row count) is gathered when not given.
    Returns ``x`` unchanged when not distributed or world size is 1.
    """
    if world_size() == 1:
        return x
    # imported lazily: not every torch build ships torch.distributed.nn
    from torch.distributed.nn.functional import all_gather

    sizes = list(sizes) if sizes is not None else gather_sizes(x.shape[0], x.device)
    with warnings.catch_warnings():
        # torch >= 2.9 marks it deprecated in favour of a private API (_functional_collectives); it is still the
        # public autograd-aware all-gather, so we keep it and keep the warning out of every training log.
        warnings.simplefilter("ignore", FutureWarning)
        shards = list(all_gather(_pad_rows(x, max(sizes)).contiguous()))
    # The received shards' gradients must be contiguous before they reach all_gather's backward: on gloo it is an
    # all-to-all built from dist.scatter into buffers made with empty_like(grad), which keeps a non-contiguous
    # gradient's strides, and gloo's scatter ignores strides (pytorch/pytorch#192920, open) -- the other ranks'
    # gradient contributions arrive scrambled. An einsum or a transposed matmul over the gathered tensor is enough
    # to produce such a gradient; tests/test_objectives_distributed.py caught it (errors up to 1e-5 in fp64).
    shards = [_ContiguousGrad.apply(s)[:n] for s, n in zip(shards, sizes)]
    shards[rank()] = x
    return torch.cat(shards, dim=0)


class _ContiguousGrad(torch.autograd.Function):
    """Identity forward; backward hands on a contiguous copy of the gradient (see gather_with_grad)."""

    @staticmethod
    def forward(ctx, x):  # noqa: D102
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        return grad.contiguous()


@torch.no_grad()
def gather_nograd(x: torch.Tensor, sizes: Sequence[int] | None = None) -> torch.Tensor:
    """All-gather without gradients (labels, text ids, masks); ``x`` unchanged when not distributed."""
    if world_size() == 1:
        return x
    sizes = list(sizes) if sizes is not None else gather_sizes(x.shape[0], x.device)
    padded = _pad_rows(x, max(sizes)).contiguous()
    shards = [torch.empty_like(padded) for _ in range(world_size())]
    dist.all_gather(shards, padded)
    return torch.cat([s[:n] for s, n in zip(shards, sizes)], dim=0)


@torch.no_grad()
def sum_over_ranks(values: torch.Tensor) -> torch.Tensor:
    """Element-wise sum of a (detached) tensor over ranks; one all-reduce. ``values`` itself when single-process."""
    if world_size() == 1:
        return values.detach()
    out = values.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def mean_over_ranks(values: torch.Tensor) -> torch.Tensor:
    """Element-wise mean of a (detached) tensor over ranks; one all-reduce."""
    return sum_over_ranks(values) / world_size()


def row_mean(local_sum: torch.Tensor, global_rows: int, gathering: bool) -> torch.Tensor:
    """The local share of a mean over ``global_rows`` rows, scaled for the convention above.

    ``local_sum`` is the sum of this rank's row losses. Gathering: ``W · local_sum / global_rows`` — its gradient is
    W × the global mean's gradient w.r.t. this rank's rows (the all-gather backward adds the other ranks' shares for
    the candidates). Not gathering: the plain mean ``local_sum / global_rows``. 0 rows: 0 (still in the graph)."""
    scale = (world_size() if gathering else 1) / max(global_rows, 1)
    return local_sum * scale


def with_global_value(local: torch.Tensor, global_value: torch.Tensor) -> torch.Tensor:
    """A tensor whose *value* is ``global_value`` and whose *gradient* is that of ``local``.

    Row-decomposable losses compute their own rows only (see the module docstring); this makes the number every
    rank logs and returns the global-batch loss without changing what backward does."""
    if global_value is local:
        return local
    return local + (global_value.to(local.dtype) - local.detach())
