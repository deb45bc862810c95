"""Paired bootstrap intervals for the difference between two rows of a results table.

A claim "A beats B" is read off an interval, not two means: the items (STS pairs, retrieval queries) of each task are
resampled with replacement, the same resample for both rows and every seed, and the difference of the rows' main
scores (each the mean over its seeds) is recomputed on every resample; the 95 % interval is the 2.5th to 97.5th
percentile (scipy.stats.bootstrap, percentile method). A difference of task averages resamples each task's items
independently in the same replicate and averages the per-task differences. A difference is called real only when
its interval excludes 0.

Items per (row, seed, task), as the evaluation runner returns them (TaskResult.items):
- STS: ``{"gold": [...], "pred": [...]}``; the score on a resample is 100 × Spearman(gold, pred).
- retrieval: ``{"qids": [...], "main": [...]}`` (nDCG@10 per query); the score is 100 × their mean.
Both rows must hold the same items in the same order (the same test set); seeds may differ in number between rows.

It does not run evaluations or draw tables (experiment.py renders what this returns).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np


@dataclass(frozen=True)
class Difference:
    diff: float  # A − B on the full sets (display scale)
    low: float  # 95 % interval
    high: float
    n_resamples: int

    @property
    def real(self) -> bool:
        return self.low > 0 or self.high < 0

    def format(self) -> str:
        return f"{self.diff:+.2f} [{self.low:+.2f}, {self.high:+.2f}]" + (" *" if self.real else "")


def resample_ranks(values: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """``scipy.stats.rankdata(values[idx], axis=-1)`` (ties averaged) without sorting each resample: ``values`` is
    sorted once; a resample's rank of a value is the number of its draws below that value plus the mean position
    among its equal draws, both read off per-resample counts of each distinct value. Exact (ranks are multiples of
    1/2), and O(n) per resample instead of O(n log n): the bootstrap of a Spearman score spent 90 % of its time in
    argsort."""
    values = np.asarray(values)
    idx = np.asarray(idx, dtype=np.int64)
    distinct, group = np.unique(values, return_inverse=True)  # group[j]: the rank order of value j among distinct
    k = len(distinct)
    lead = idx.shape[:-1]
    flat = group[idx].reshape(-1, idx.shape[-1])
    rows = flat.shape[0]
    counts = np.bincount((flat + (np.arange(rows) * k)[:, None]).ravel(), minlength=rows * k).reshape(rows, k)
    below = np.cumsum(counts, axis=1) - counts
    rank_of_group = below + (counts + 1) / 2.0
    return np.take_along_axis(rank_of_group, flat, axis=1).reshape(*lead, idx.shape[-1])


def _score(items: Mapping, idx: np.ndarray) -> np.ndarray:
    """The row's display-scale score on each resample: ``idx`` is [..., n] item indices (vectorised over leading
    dimensions, as scipy.stats.bootstrap calls it)."""
    if "gold" in items:
        # Spearman = Pearson of the (tie-averaged) ranks
        rg, rp = resample_ranks(items["gold"], idx), resample_ranks(items["pred"], idx)
        rg = rg - rg.mean(-1, keepdims=True)
        rp = rp - rp.mean(-1, keepdims=True)
        return 100.0 * (rg * rp).sum(-1) / np.sqrt((rg * rg).sum(-1) * (rp * rp).sum(-1))
    return 100.0 * np.asarray(items["main"])[idx].mean(-1)


def _size(items: Mapping) -> int:
    return len(items["gold"]) if "gold" in items else len(items["main"])


def _check_same_items(tasks_a: Sequence[Sequence[Mapping]], tasks_b: Sequence[Sequence[Mapping]]) -> list[int]:
    sizes = []
    for t, (seeds_a, seeds_b) in enumerate(zip(tasks_a, tasks_b)):
        if not seeds_a or not seeds_b:
            raise ValueError(f"task {t}: both rows need at least one seed's items")
        first = seeds_a[0]
        for other in [*seeds_a[1:], *seeds_b]:
            if _size(other) != _size(first):
                raise ValueError(f"task {t}: the rows were scored on different item sets ({_size(first)} vs "
                                 f"{_size(other)} items)")
            if "gold" in first and list(other.get("gold", [])) != list(first["gold"]):
                raise ValueError(f"task {t}: the rows' gold scores differ: not the same test set")
            if "qids" in first and list(other.get("qids", [])) != list(first["qids"]):
                raise ValueError(f"task {t}: the rows' query ids differ: not the same test set")
        sizes.append(_size(first))
    return sizes


def paired_difference(tasks_a: Sequence[Sequence[Mapping]], tasks_b: Sequence[Sequence[Mapping]],
                      n_resamples: int = 1000, seed: int = 0) -> Difference:
    """Row A − row B, averaged over the tasks given: ``tasks_x[t]`` is the list of row x's per-seed items on task t.
    The interval is the paired bootstrap one described in the module docstring."""
    from scipy.stats import bootstrap

    if len(tasks_a) != len(tasks_b) or not tasks_a:
        raise ValueError("both rows need items for the same, non-empty list of tasks")
    sizes = _check_same_items(tasks_a, tasks_b)

    def statistic(*idx, axis=-1):
        diffs = []
        for t, i in enumerate(idx):
            i = np.asarray(i, dtype=np.int64)
            a = np.mean([_score(items, i) for items in tasks_a[t]], axis=0)
            b = np.mean([_score(items, i) for items in tasks_b[t]], axis=0)
            diffs.append(a - b)
        return np.mean(diffs, axis=0)

    data = tuple(np.arange(n) for n in sizes)
    full = float(statistic(*data))
    res = bootstrap(data, statistic, n_resamples=n_resamples, vectorized=True, paired=False, batch=100,
                    confidence_level=0.95, method="percentile", random_state=np.random.default_rng(seed))
    low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
    if np.isnan(low) or np.isnan(high):  # a degenerate distribution (identical rows): the interval is the point
        low = high = full
    return Difference(full, low, high, n_resamples)
