"""Batch samplers over several training sources: single-task global batches (CoDiEmb) and mixed batches (baseline).

Indices are global: every batch is a list of ``(source, index_within_source)`` pairs, so one map-style dataset over
all sources can fetch examples (``torch.utils.data.DataLoader(dataset, batch_sampler=sampler)`` works as is).
Each batch also carries ``.source`` and ``.task`` (``None`` for mixed batches).

``SingleTaskBatchSampler`` — every step uses ONE task and ONE source file on every rank.
Each task t has a *global* batch size G_t (= per-device batch × world size; must divide by the world size). Each
epoch e, with a ``torch.Generator`` seeded ``seed + e`` (so every rank computes the same plan):
  1. every source s (in the order given) is permuted and cut into k_s = n_s // G_t full global batches; the rest of
     the permutation is dropped this epoch (the next epoch permutes again, so every example gets its turn);
  2. the global batches are ordered by the policy (below);
  3. at each step, rank r yields the r-th contiguous chunk (size G_t / world_size) of the same global batch.
Policies, with K_t = Σ k_s over the sources of task t (a task's full global batches):
- ``proportional`` (the paper's): all global batches of all sources shuffled together; K_t steps per task.
- ``round_robin``: tasks take turns in order of first appearance (ir, sts, ir, sts, ...), each turn the next batch of
  that task's shuffled batches (its sources mixed); a task that runs out drops out of the rotation; K_t steps.
- ``temperature`` (T > 0) and ``ratio`` (explicit weights, e.g. ``{"ir": 3, "sts": 1}``): task t gets weight
  w_t = K_t^(1/T), resp. the given ratio, and the epoch is the longest in which every task's share of steps follows
  the weights without using any batch twice:
      b = argmin_t K_t / w_t   (the task that runs out first; ties: first task),   c_t = floor(w_t · K_b / w_b) ≤ K_t
  steps for task t (so c_b = K_b). The epoch's task sequence is a seeded random permutation of the multiset
  {t × c_t}; each occurrence takes the next of the task's shuffled batches (the other K_t − c_t are unused this
  epoch). T = 1 gives exactly the proportional counts; larger T moves towards equal shares; a ratio weight of 0 leaves
  a task out.
``__len__`` is exact and the same every epoch: Σ_t K_t, or Σ_t c_t for temperature/ratio (see ``steps_per_task``).

``MixedBatchSampler`` — the naive co-training baseline: each epoch one seeded permutation of all examples of all
sources, cut into full global batches of one size (remainder dropped), rank-th chunk per rank.

Both samplers: ``set_epoch(e)`` selects the epoch's plan (calling it with the current epoch keeps a resume point);
``state_dict()`` / ``load_state_dict()`` save the epoch and the number of batches already yielded, so that after a
restart the next batch is exactly the one that would have come. A ``DataLoader`` with workers draws batches ahead of
the training step, so a trainer that knows how many batches it consumed passes ``state_dict(batches_done=n)``.
The global batch sequence does not depend on the world size, so a run may resume on a different number of ranks.

It does not load, tokenise or collate examples; it does not repeat (upsample) a source within an epoch.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Iterator, Mapping, Sequence

import torch

from ..errors import ConfigError, UnknownChoiceError

log = logging.getLogger("embedlab.data")

POLICIES = ("proportional", "round_robin", "temperature", "ratio")


@dataclass(frozen=True)
class SourceInfo:
    """What a sampler needs to know about a source: its name, task type and number of examples."""

    name: str
    task: str
    size: int


def as_source_info(source: Any) -> SourceInfo:
    """A SourceInfo from a SourceInfo or anything with ``name``, ``task`` and ``len()`` (e.g. a LoadedSource)."""
    if isinstance(source, SourceInfo):
        return source
    try:
        return SourceInfo(str(source.name), str(source.task), len(source))
    except (AttributeError, TypeError):
        raise TypeError(f"a source needs name, task and a length; got {type(source).__name__}") from None


class Batch(list):
    """One rank's share of a global batch: ``[(source, index), ...]`` plus the batch's ``source`` and ``task``."""

    def __init__(self, items, source: int | None = None, task: str | None = None):
        super().__init__(items)
        self.source = source
        self.task = task

    def __repr__(self) -> str:
        return f"Batch(source={self.source}, task={self.task!r}, {list.__repr__(self)})"


def _world(world_size: int | None, rank: int | None) -> tuple[int, int]:
    """Explicit values, else the initialised process group's, else a single process."""
    if world_size is None or rank is None:
        dist = torch.distributed
        initialised = dist.is_available() and dist.is_initialized()
        world_size = world_size if world_size is not None else (dist.get_world_size() if initialised else 1)
        rank = rank if rank is not None else (dist.get_rank() if initialised else 0)
    if world_size < 1 or not 0 <= rank < world_size:
        raise ConfigError(f"need 0 <= rank < world_size, got rank {rank}, world_size {world_size}")
    return int(world_size), int(rank)


def _check_batch_size(size: Any, what: str, world_size: int) -> int:
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ConfigError(f"{what} must be a positive integer, got {size!r}")
    if size % world_size:
        raise ConfigError(f"{what} {size} is a global batch size and must be divisible by the world size "
                          f"{world_size} (each rank takes an equal slice)")
    return size


class _EpochSampler:
    """Epoch, resume point, rank slicing and state; subclasses define the epoch plan."""

    def __init__(self, world_size: int | None, rank: int | None, seed: int):
        self.world_size, self.rank = _world(world_size, rank)
        self.seed = int(seed)
        self.epoch = 0
        self._resume = 0  # batches to skip at the start of the next iteration (set by load_state_dict)
        self._position = 0  # batches of the current epoch yielded so far (including skipped ones)
        self._cache: tuple[int, Any] | None = None

    # ------------------------------------------------------------------ subclass interface
    def _make_plan(self, generator: torch.Generator) -> Any:
        raise NotImplementedError

    def _global_batch(self, plan: Any, step: int) -> Batch:
        raise NotImplementedError

    def _config(self) -> dict[str, Any]:
        raise NotImplementedError

    def __len__(self) -> int:
        raise NotImplementedError

    # ------------------------------------------------------------------ shared behaviour
    def _plan(self, epoch: int) -> Any:
        if self._cache is None or self._cache[0] != epoch:
            generator = torch.Generator().manual_seed(self.seed + epoch)
            self._cache = (epoch, self._make_plan(generator))
        return self._cache[1]

    def _rank_slice(self, batch: Batch) -> Batch:
        share = len(batch) // self.world_size
        start = self.rank * share
        return Batch(batch[start:start + share], batch.source, batch.task)

    def __iter__(self) -> Iterator[Batch]:
        plan = self._plan(self.epoch)
        start, self._resume = self._resume, 0
        self._position = start
        for step in range(start, len(self)):
            self._position = step + 1  # counted when handed out: the consumer trains on it next
            yield self._rank_slice(self._global_batch(plan, step))

    def global_batches(self, epoch: int | None = None) -> list[Batch]:
        """Every full global batch of an epoch in order (the same on every rank); for inspection and tests."""
        plan = self._plan(self.epoch if epoch is None else epoch)
        return [self._global_batch(plan, step) for step in range(len(self))]

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch; a different epoch starts from its first batch, the current one keeps a resume point."""
        if epoch != self.epoch:
            self.epoch = int(epoch)
            self._resume = self._position = 0

    @property
    def position(self) -> int:
        """Batches of the current epoch handed out so far."""
        return self._position

    def state_dict(self, batches_done: int | None = None) -> dict[str, Any]:
        position = self._position if batches_done is None else int(batches_done)
        if not 0 <= position <= len(self):
            raise ValueError(f"batches_done must be in [0, {len(self)}], got {position}")
        return {"epoch": self.epoch, "position": position, "config": self._config()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state.get("config") != self._config():
            raise ConfigError(f"{type(self).__name__} state was saved with a different configuration "
                              f"(saved {state.get('config')}, now {self._config()}); cannot resume mid-epoch")
        position = int(state["position"])
        if not 0 <= position <= len(self):
            raise ConfigError(f"sampler state position {position} is outside [0, {len(self)}]")
        self.epoch = int(state["epoch"])
        self._resume = self._position = position


# --------------------------------------------------------------------------------------------------- single task


@dataclass
class _SingleTaskPlan:
    perms: list[torch.Tensor]  # per source: the epoch's permutation of its indices
    order: list[tuple[int, int]]  # per step: (source, j) -> the j-th global batch of that source


class SingleTaskBatchSampler(_EpochSampler):
    """Single-task, single-source global batches; see the module docstring for the exact policies.

    Args:
        sources: per source its name, task and size (``SourceInfo`` or e.g. ``LoadedSource``), in a fixed order.
        batch_sizes: global batch size per task, e.g. ``{"ir": 64, "sts": 32}``.
        policy: proportional | round_robin | temperature | ratio.
        temperature: T for the temperature policy.
        ratio: task weights for the ratio policy; must name every task of the sources.
        world_size, rank: default: the initialised process group, else 1 and 0.
    """

    def __init__(
        self,
        sources: Sequence[Any],
        batch_sizes: Mapping[str, int],
        *,
        policy: str = "proportional",
        temperature: float = 2.0,
        ratio: Mapping[str, float] | None = None,
        seed: int = 0,
        world_size: int | None = None,
        rank: int | None = None,
    ):
        super().__init__(world_size, rank, seed)
        self.sources = [as_source_info(s) for s in sources]
        if not self.sources:
            raise ConfigError("the sampler needs at least one source")
        if policy not in POLICIES:
            raise UnknownChoiceError("sampling policy", policy, POLICIES)
        self.policy = policy
        self.tasks = list(dict.fromkeys(s.task for s in self.sources))  # order of first appearance
        missing = [t for t in self.tasks if t not in batch_sizes]
        if missing:
            raise ConfigError(f"no batch size for task(s) {', '.join(missing)} (batch_sizes has "
                              f"{', '.join(batch_sizes) or 'none'})")
        self.batch_sizes = {t: _check_batch_size(batch_sizes[t], f"batch size of task {t!r}", self.world_size)
                            for t in self.tasks}
        self.temperature = float(temperature)
        self.ratio = dict(ratio) if ratio is not None else None
        self.batches_per_source = [s.size // self.batch_sizes[s.task] for s in self.sources]
        for s, k in zip(self.sources, self.batches_per_source):
            if k == 0:
                log.warning("source %r has %d examples, fewer than one global batch of %d: it is never sampled",
                            s.name, s.size, self.batch_sizes[s.task])
        self._steps = self._steps_per_task()
        if sum(self._steps.values()) == 0:
            raise ConfigError("no source has a full global batch: lower the batch sizes or add data")

    # ------------------------------------------------------------------ counts
    def batches_per_task(self) -> dict[str, int]:
        """K_t: full global batches of each task per epoch."""
        counts = dict.fromkeys(self.tasks, 0)
        for s, k in zip(self.sources, self.batches_per_source):
            counts[s.task] += k
        return counts

    def steps_per_task(self) -> dict[str, int]:
        """Steps each task gets per epoch under the policy (the same every epoch)."""
        return dict(self._steps)

    def _steps_per_task(self) -> dict[str, int]:
        available = self.batches_per_task()
        if self.policy in ("proportional", "round_robin"):
            return available
        return _capped_shares(available, self._weights(available))

    def _weights(self, available: dict[str, int]) -> dict[str, Fraction | float]:
        if self.policy == "temperature":
            if not self.temperature > 0:
                raise ConfigError(f"temperature must be > 0, got {self.temperature}")
            return {t: k ** (1.0 / self.temperature) for t, k in available.items()}
        if self.ratio is None:
            raise ConfigError("policy 'ratio' needs ratio, e.g. {'ir': 3, 'sts': 1}")
        unknown = [t for t in self.ratio if t not in available]
        missing = [t for t in available if t not in self.ratio]
        if unknown or missing:
            raise ConfigError(f"ratio must name exactly the tasks of the sources ({', '.join(available)}); "
                              f"missing: {', '.join(missing) or 'none'}, unknown: {', '.join(unknown) or 'none'}")
        weights = {}
        for t, w in self.ratio.items():
            if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
                raise ConfigError(f"ratio of task {t!r} must be a number >= 0, got {w!r}")
            if w > 0 and available[t] == 0:
                raise ConfigError(f"ratio gives task {t!r} weight {w} but it has no full global batch")
            weights[t] = Fraction(w)  # exact arithmetic: 3:1 must give exactly three times the steps
        if not any(weights.values()):
            raise ConfigError("ratio gives every task weight 0")
        return weights

    def __len__(self) -> int:
        return sum(self._steps.values())

    # ------------------------------------------------------------------ plan
    def _make_plan(self, generator: torch.Generator) -> _SingleTaskPlan:
        perms = [torch.randperm(s.size, generator=generator) for s in self.sources]
        if self.policy == "proportional":
            every = [(s, j) for s, k in enumerate(self.batches_per_source) for j in range(k)]
            return _SingleTaskPlan(perms, _shuffled(every, generator))
        # Each task's batches (its sources mixed), shuffled once; policies decide how many and in what task order.
        queues = {t: _shuffled([(s, j) for s, k in enumerate(self.batches_per_source)
                                if self.sources[s].task == t for j in range(k)], generator)
                  for t in self.tasks}
        if self.policy == "round_robin":
            sequence = _round_robin(self.tasks, {t: len(q) for t, q in queues.items()})
        else:
            labels = [t for t in self.tasks for _ in range(self._steps[t])]
            sequence = _shuffled(labels, generator)
        cursor = dict.fromkeys(self.tasks, 0)
        order = []
        for t in sequence:
            order.append(queues[t][cursor[t]])
            cursor[t] += 1
        return _SingleTaskPlan(perms, order)

    def _global_batch(self, plan: _SingleTaskPlan, step: int) -> Batch:
        s, j = plan.order[step]
        task = self.sources[s].task
        size = self.batch_sizes[task]
        indices = plan.perms[s][j * size:(j + 1) * size].tolist()
        return Batch([(s, i) for i in indices], s, task)

    def _config(self) -> dict[str, Any]:
        return {"sampler": "single_task", "sources": [[s.name, s.task, s.size] for s in self.sources],
                "batch_sizes": self.batch_sizes, "policy": self.policy, "seed": self.seed,
                "temperature": self.temperature if self.policy == "temperature" else None,
                "ratio": {t: float(w) for t, w in self.ratio.items()} if self.policy == "ratio" and self.ratio
                else None}


def _shuffled(items: list, generator: torch.Generator) -> list:
    return [items[i] for i in torch.randperm(len(items), generator=generator).tolist()]


def _round_robin(tasks: list[str], counts: dict[str, int]) -> list[str]:
    left = dict(counts)
    sequence: list[str] = []
    while any(left.values()):
        for t in tasks:
            if left[t]:
                sequence.append(t)
                left[t] -= 1
    return sequence


def _capped_shares(available: dict[str, int], weights: Mapping[str, Fraction | float]) -> dict[str, int]:
    """c_t = floor(w_t · K_b / w_b) with b = argmin K_t / w_t: the longest epoch whose task shares follow the weights
    without any task needing more batches than it has."""
    active = [t for t in available if weights[t] > 0 and available[t] > 0]
    if not active:
        return dict.fromkeys(available, 0)
    b = min(active, key=lambda t: available[t] / weights[t])
    steps = {}
    for t in available:
        if t not in active:
            steps[t] = 0
            continue
        share = weights[t] * available[b] / weights[b]
        # Floats (temperature) may land a hair under an integer; the bound keeps c_t <= K_t either way.
        exact = math.floor(share) if isinstance(share, Fraction) else math.floor(share + 1e-9)
        steps[t] = min(available[t], exact)
    return steps


# --------------------------------------------------------------------------------------------------- mixed


class MixedBatchSampler(_EpochSampler):
    """Batches that mix examples of all sources (the naive co-training baseline); one global batch size."""

    def __init__(self, sources: Sequence[Any], batch_size: int, *, seed: int = 0, world_size: int | None = None,
                 rank: int | None = None):
        super().__init__(world_size, rank, seed)
        self.sources = [as_source_info(s) for s in sources]
        self.batch_size = _check_batch_size(batch_size, "batch_size", self.world_size)
        self._offsets = torch.tensor([0] + [s.size for s in self.sources]).cumsum(0)
        self.total = int(self._offsets[-1])
        if self.total < self.batch_size:
            raise ConfigError(f"{self.total} examples in all sources, fewer than one global batch of "
                              f"{self.batch_size}")

    def __len__(self) -> int:
        return self.total // self.batch_size

    def _make_plan(self, generator: torch.Generator) -> torch.Tensor:
        return torch.randperm(self.total, generator=generator)

    def _global_batch(self, plan: torch.Tensor, step: int) -> Batch:
        flat = plan[step * self.batch_size:(step + 1) * self.batch_size]
        source = torch.searchsorted(self._offsets, flat, right=True) - 1
        index = flat - self._offsets[source]
        return Batch(list(zip(source.tolist(), index.tolist())), None, None)

    def _config(self) -> dict[str, Any]:
        return {"sampler": "mixed", "sources": [[s.name, s.task, s.size] for s in self.sources],
                "batch_size": self.batch_size, "seed": self.seed}
