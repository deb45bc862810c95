"""Leaderboards: the results store as tables — the best configuration of each model, mean ± std over seeds.

    from embedlab.bench.leaderboard import leaderboard
    lb = leaderboard(store, experiment="codiemb")         # main_score on test splits
    lb.overall_table()     # one row per model: its best configuration, the average over seeds (mean ± std, n)
    lb.task_table()        # one row per (model, task)
    lb.category_table()    # one row per (model, category): category = task_type, or an ``extra`` key
    lb.config_table()      # every configuration of every model, the chosen one marked

What goes in: the store's rows of one metric (``main_score`` by default) and split (``test``), optionally of one
experiment and one domain; of each (model, config_hash, seed, task, metric) only the newest row counts (a re-run
replaces the earlier number). Rows with no value (a failed or undefined score) are left out.

A **configuration** is a ``config_hash`` (what produced the model and the score: recipe, overrides, protocol; the
seeds of one configuration share it). The **best configuration** of a model is chosen once, over all the
leaderboard's averaged tasks — never task by task, which would pick each column's luckiest configuration:

1. per seed, the mean of the metric over the averaged tasks (a seed lacking one of them does not count);
2. the configuration's score is the mean of those per-seed means over its seeds;
3. the highest score wins; ties go to more seeds, then to the smaller config hash (deterministic). A configuration
   with no complete seed ranks below every complete one (among themselves: the most averaged tasks covered, then the
   mean of their per-task means).

The **averaged tasks** are every task of the leaderboard except those of task types a domain registered as unranked
(``embedlab.results.register_task_type(..., ranked=False)``; text's ``geometry``: its main score is uniformity,
neither "higher is better" nor on the 0-100 scale); pass
``average_types`` to choose the types yourself. Tasks that are not averaged still get their per-task and per-category
rows. Every "mean ± std" is over seeds, std with ddof=1 (None with one seed); "n" is the number of seeds behind it.

It computes tables only: no plots, no files (``report_site.build_report`` renders them).
"""
from __future__ import annotations

import math
import statistics
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError
from ..jobkinds import load_domains
from ..results import is_ranked

MISSING_CATEGORY = "(none)"


@dataclass(frozen=True)
class Stat:
    """A number over seeds: ``values`` (one per seed, in ``seeds`` order), their mean and std (ddof=1)."""

    values: tuple[float, ...]
    seeds: tuple[Any, ...]

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.values) if self.values else None

    @property
    def std(self) -> float | None:
        return statistics.stdev(self.values) if len(self.values) > 1 else None

    def format(self, digits: int = 2) -> str:
        """``"mean ± std"`` (``"mean"`` with one seed, ``"-"`` with none)."""
        if not self.values:
            return "-"
        if self.std is None:
            return f"{self.mean:.{digits}f}"
        return f"{self.mean:.{digits}f} ± {self.std:.{digits}f}"


@dataclass
class Entry:
    """One configuration of one model: its numbers per task, per category and on average (all over seeds)."""

    model: str
    config_hash: str | None
    config: Any
    seeds: tuple[Any, ...]  # every seed with at least one row
    tasks: dict[str, Stat]
    categories: dict[str, Stat]
    average: Stat  # the choosing score: per seed mean over the averaged tasks, then over seeds
    coverage: int  # averaged tasks with at least one value
    selected: bool = False
    rank: int | None = None  # rank of the model (selected entries only), 1 = best average

    @property
    def n_seeds(self) -> int:
        return len(self.seeds)

    @property
    def complete(self) -> bool:
        return self.average.n > 0


@dataclass
class Leaderboard:
    experiment: str | None
    domain: str | None
    metric: str
    split: str
    category_key: str | None
    tasks: list[str]  # grouped by category, in the order they first appear in the store
    task_info: dict[str, dict[str, Any]]  # task -> task_type, dataset, category
    categories: dict[str, list[str]]  # category -> its tasks
    averaged: list[str]  # the tasks in the average (and the choice)
    entries: list[Entry]  # the best configuration of each model, best average first
    configs: list[Entry]  # every configuration of every model (the chosen ones have selected=True)
    rows: list[dict[str, Any]] = field(repr=False)  # the newest rows behind every number

    @property
    def models(self) -> list[str]:
        return [e.model for e in self.entries]

    def configs_of(self, model: str) -> list[Entry]:
        return [e for e in self.configs if e.model == model]

    def overall_table(self) -> list[dict[str, Any]]:
        """One row per model (its best configuration), best average first."""
        return [{"rank": e.rank, "model": e.model, "config_hash": e.config_hash,
                 "n_configs": len(self.configs_of(e.model)), "n_seeds": e.n_seeds, "seeds": list(e.seeds),
                 "mean": e.average.mean, "std": e.average.std, "n": e.average.n} for e in self.entries]

    def task_table(self) -> list[dict[str, Any]]:
        """One row per (model, task) of the best configurations."""
        out = []
        for e in self.entries:
            for task in self.tasks:
                s = e.tasks.get(task, Stat((), ()))
                out.append({"model": e.model, "config_hash": e.config_hash, "task": task, **self.task_info[task],
                            "mean": s.mean, "std": s.std, "n": s.n})
        return out

    def category_table(self) -> list[dict[str, Any]]:
        """One row per (model, category) of the best configurations: per seed the mean over the category's tasks
        (a seed lacking one does not count), then mean ± std over seeds."""
        out = []
        for e in self.entries:
            for cat, members in self.categories.items():
                s = e.categories.get(cat, Stat((), ()))
                out.append({"model": e.model, "config_hash": e.config_hash, "category": cat, "tasks": list(members),
                            "mean": s.mean, "std": s.std, "n": s.n})
        return out

    def config_table(self) -> list[dict[str, Any]]:
        """Every configuration of every model with its average (the choosing score) and whether it was chosen."""
        return [{"model": e.model, "config_hash": e.config_hash, "selected": e.selected, "n_seeds": e.n_seeds,
                 "seeds": list(e.seeds), "mean": e.average.mean, "std": e.average.std, "n": e.average.n,
                 "coverage": e.coverage, "config": e.config} for e in self.configs]


def leaderboard(store: Any, experiment: str | None = None, domain: str | None = None, metric: str = "main_score",
                split: str = "test", *, category_key: str | None = None,
                average_types: Collection[str] | None = None) -> Leaderboard:
    """The leaderboard of ``store`` (a ResultsStore): rows of ``metric`` on ``split``, of one ``experiment`` and
    ``domain`` when given. ``category_key``: the categories come from this key of each row's ``extra`` (e.g. a
    Med-VQA question type) instead of its task_type. ConfigError when nothing matches (naming what the store has)."""
    rows = store.query(experiment=experiment, domain=domain, metric=metric, split=split)
    if not any(r.get("value") is not None for r in rows):
        raise ConfigError(_nothing_found(store, experiment, domain, metric, split))
    return leaderboard_from_rows(rows, experiment=experiment, domain=domain, metric=metric, split=split,
                                 category_key=category_key, average_types=average_types)


def leaderboard_from_rows(rows: Iterable[Mapping[str, Any]], *, experiment: str | None = None,
                          domain: str | None = None, metric: str = "main_score", split: str = "test",
                          category_key: str | None = None,
                          average_types: Collection[str] | None = None) -> Leaderboard:
    """``leaderboard`` over rows already read (store.query's dicts, oldest first); rows of another metric or split
    are ignored."""
    latest: dict[tuple, dict[str, Any]] = {}
    for row in rows:  # oldest first: a later row replaces an earlier one
        if row.get("metric") != metric or row.get("split") != split:
            continue
        latest[(row["model"], row.get("config_hash"), row.get("seed"), row["task"], row["metric"])] = dict(row)
    used = [r for r in latest.values() if r.get("value") is not None and math.isfinite(r["value"])]
    if not used:
        raise ConfigError(f"no {metric} values on split {split!r}"
                          + (f" for experiment {experiment!r}" if experiment else "") + " to tabulate")
    used.sort(key=lambda r: (r.get("created_at") is None, r.get("created_at") or 0, r.get("id") or 0))

    # Tasks and categories, in the order they first appear.
    task_info: dict[str, dict[str, Any]] = {}
    for r in used:
        if r["task"] not in task_info:
            task_info[r["task"]] = {"task_type": r["task_type"], "dataset": r["dataset"],
                                    "category": _category(r, category_key)}
    categories: dict[str, list[str]] = {}
    for task, info in task_info.items():
        categories.setdefault(info["category"], []).append(task)
    tasks = [t for members in categories.values() for t in members]
    if average_types is None:
        load_domains()  # the domains register which of their task types are ranked
        averaged = [t for t in tasks if is_ranked(task_info[t]["task_type"])] or list(tasks)
    else:
        averaged = [t for t in tasks if task_info[t]["task_type"] in set(average_types)]
        if not averaged:
            raise ConfigError(f"no task of type {', '.join(sorted(average_types))} among "
                              f"{', '.join(tasks)}; the average would be empty")

    # (model, config) -> seed -> task -> value
    grouped: dict[tuple[str, str | None], dict[Any, dict[str, float]]] = {}
    configs_seen: dict[tuple[str, str | None], Any] = {}
    for r in used:
        key = (r["model"], r.get("config_hash"))
        grouped.setdefault(key, {}).setdefault(r.get("seed"), {})[r["task"]] = float(r["value"])
        configs_seen[key] = r.get("config")

    entries = [_entry(model, chash, configs_seen[(model, chash)], by_seed, tasks, categories, averaged)
               for (model, chash), by_seed in grouped.items()]
    best: dict[str, Entry] = {}
    for model in dict.fromkeys(e.model for e in entries):
        candidates = sorted((e for e in entries if e.model == model), key=_choice_key)
        best[model] = candidates[0]
        best[model].selected = True
    ranked = sorted(best.values(), key=lambda e: (e.average.mean is None, -(e.average.mean or 0.0), e.model))
    for i, e in enumerate(ranked, 1):
        e.rank = i
    order = {e.model: i for i, e in enumerate(ranked)}
    entries.sort(key=lambda e: (order[e.model], _choice_key(e)))
    return Leaderboard(experiment=experiment, domain=domain, metric=metric, split=split, category_key=category_key,
                       tasks=tasks, task_info={t: task_info[t] for t in tasks}, categories=categories,
                       averaged=averaged, entries=ranked, configs=entries, rows=used)


def _category(row: Mapping[str, Any], key: str | None) -> str:
    if key is None:
        return str(row["task_type"])
    value = (row.get("extra") or {}).get(key)
    return MISSING_CATEGORY if value is None else str(value)


def _per_seed_mean(by_seed: Mapping[Any, Mapping[str, float]], members: Sequence[str]) -> Stat:
    """Per seed the mean over ``members`` (seeds lacking one are left out), as a Stat over those seeds."""
    seeds, values = [], []
    for seed in _sorted_seeds(by_seed):
        scores = by_seed[seed]
        if members and all(t in scores for t in members):
            seeds.append(seed)
            values.append(statistics.fmean(scores[t] for t in members))
    return Stat(tuple(values), tuple(seeds))


def _sorted_seeds(by_seed: Mapping[Any, Any]) -> list[Any]:
    return sorted(by_seed, key=lambda s: (s is None, s if isinstance(s, (int, float)) else str(s)))


def _entry(model: str, chash: str | None, config: Any, by_seed: Mapping[Any, Mapping[str, float]],
           tasks: Sequence[str], categories: Mapping[str, Sequence[str]], averaged: Sequence[str]) -> Entry:
    per_task = {t: _per_seed_mean(by_seed, [t]) for t in tasks}
    per_task = {t: s for t, s in per_task.items() if s.n}
    per_cat = {c: _per_seed_mean(by_seed, members) for c, members in categories.items()}
    per_cat = {c: s for c, s in per_cat.items() if s.n}
    return Entry(model=model, config_hash=chash, config=config, seeds=tuple(_sorted_seeds(by_seed)), tasks=per_task,
                 categories=per_cat, average=_per_seed_mean(by_seed, averaged),
                 coverage=sum(1 for t in averaged if t in per_task))


def _choice_key(e: Entry) -> tuple:
    """Sort key: the best configuration first (see the module docstring)."""
    if e.complete:
        return (0, 0, -e.average.mean, -e.n_seeds, e.config_hash or "")
    partial = [s.mean for s in e.tasks.values()]
    return (1, -e.coverage, -(statistics.fmean(partial) if partial else 0.0), -e.n_seeds, e.config_hash or "")


def _nothing_found(store: Any, experiment: str | None, domain: str | None, metric: str, split: str) -> str:
    """Why a leaderboard is empty, with what the store does hold (experiments, or metrics and splits)."""
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from .store import Result

    where = "results store " + getattr(store, "display_url", "")
    scope = " and ".join(x for x in (f"experiment {experiment!r}" if experiment else "",
                                      f"domain {domain!r}" if domain else "") if x) or "the store"
    try:
        with Session(store.engine) as session:
            experiments = [e for e in session.scalars(select(Result.experiment).distinct()) if e is not None]
            filt = [c == v for c, v in ((Result.experiment, experiment), (Result.domain, domain)) if v is not None]
            metrics = sorted(session.scalars(select(Result.metric).where(*filt).distinct()))
            splits = sorted(session.scalars(select(Result.split).where(*filt).distinct()))
    except Exception:  # a store-like object without an engine (tests, wrappers): the short message
        return f"no {metric} results on split {split!r} for {scope} in {where}"
    if not metrics:
        known = f"experiments in it: {', '.join(sorted(experiments))}" if experiments else "it holds no experiment"
        return f"no results for {scope} in {where} ({known}); run the experiment first or name another"
    return (f"no {metric} results on split {split!r} for {scope} in {where} (it has metrics "
            f"{', '.join(metrics[:8])}{', ...' if len(metrics) > 8 else ''}; splits {', '.join(splits)})")
