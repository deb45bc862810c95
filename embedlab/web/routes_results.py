"""Model evaluation pages: leaderboards from the results store, Med-VQA and text tables, a grouped bar chart, run
comparison, provenance pages and CSV / JSON downloads of what is shown.

| page / endpoint                          | what                                                                     |
|------------------------------------------|--------------------------------------------------------------------------|
| ``GET /results``                         | choose experiment, domain, split (and a dataset); the leaderboard: best  |
|                                          | configuration per model, mean ± std over seeds, n; per-task and per-     |
|                                          | category tables; for Med-VQA closed / open, per question type and image  |
|                                          | reliance (blank / shuffled images) where rows have them; a grouped bar   |
|                                          | chart (Altair spec drawn by the vendored vega-embed); the runs behind it |
|                                          | with boxes to compare 2-4 of them                                        |
| ``GET /results/cell``                    | where one number comes from: its rows (seed, task, value) and their runs |
| ``GET /results/runs/{run_id}``           | a run's provenance: config, seed, model dir, code version, time, rows    |
| ``GET /results/compare?run=A&run=B``     | 2-4 runs side by side (every task and metric)                            |
| ``GET /results/leaderboard.csv``, ``/results/runs/{id}.csv``, ``/results/compare.csv`` | CSV of what is shown |
| ``GET /api/results/leaderboard``, ``/api/results/cell``, ``/api/results/runs/{id}``, ``/api/results/compare`` | JSON |
| ``GET /results/charts.js``               | the script that draws every chart of a page with vega-embed             |

Any signed-in user may read every result: results are shared lab-wide. The job that produced a run is linked (to
``JOB_PAGE``) only for its owner and for admins; other users see that a job produced it, not which. The numbers are
the CLI's: ``embedlab.bench.leaderboard`` chooses each model's best configuration once over the averaged tasks and
gives mean ± std (ddof=1) over seeds, exactly as ``embedlab report`` does; this module only selects rows, lays out the
tables and builds the chart specs (Altair, like the reports, but drawn in the browser, so the leaderboard page sends
``CSP_WITH_EVAL``: Vega compiles its expressions with Function()). For speed it reads the rows with one narrow,
parametrised query (``read_rows``: the columns the tables need, not the JSON of every row) instead of
``ResultsStore.query``; a run's own page reads its rows with ``ResultsStore.query``. With 10,000 rows in the store
the leaderboard answers in ~0.1 s (benchmarks/web_pages.py).

What it does not do: write to the store, launch or cancel jobs (the jobs pages), draw training curves (the reports and
the jobs pages), or show another user's job details.
"""
from __future__ import annotations

import csv
import datetime as dt
import io
import json
import math
import re
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from starlette.responses import JSONResponse, Response

from ..bench.leaderboard import Leaderboard, Stat, leaderboard_from_rows
from ..bench.store import COLUMNS, Result, ResultsStore
from ..errors import ConfigError
from ..results import is_ranked
from .accounts import User
from .deps import AccountsDep, CurrentUser, StoreDep
from .errors import NotFound, WebError
from .render import NavItem, render
from .security import CSP_WITH_EVAL

router = APIRouter()
NAV = [NavItem("Results", "/results", "Leaderboards per dataset, Med-VQA and per-task tables, charts, run "
               "comparison and downloads.", order=300)]

METRIC = "main_score"  # what leaderboards rank on (as `embedlab report`)
JOB_PAGE = "/jobs/{job_id}"  # the jobs page group's page of one job (linked for its owner and admins only)
RUN_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")  # uuid hex from the store; never a path
MAX_COMPARE = 4
MAX_RUNS_LISTED = 200  # runs offered for comparison under a leaderboard (the newest first beyond that)
MAX_CHART_GROUPS = 40  # bars per chart group axis: a wider chart is unreadable
CHARTS_JS = Path(__file__).with_name("templates") / "results" / "charts.js"
Text = Annotated[str | None, Query(max_length=256)]

# Med-VQA tables: (id, title, metrics or a metric prefix, what the columns mean). Shown when rows have the metrics.
VQA_TABLES = (
    ("closed-open", "Closed and open questions", ("closed", "open", "overall"),
     "Accuracy on closed (yes/no, choice) and open questions, and overall."),
    ("question-types", "Per question type", "type/",
     "Accuracy per question type (VQA-RAD's labels: PRES presence, POS position, ABN abnormality, ...)."),
    ("image-reliance", "Image reliance", ("overall", "blank_overall", "shuffled_overall", "image_reliance"),
     "Overall accuracy with the real images, with every image replaced by one grey image (blank) and with each "
     "question asked about another image (shuffled); image reliance = real - blank. A model that ignores the image "
     "has reliance near 0 and shuffled near real."),
)
EXTRA_TASK_TYPES = {"vqa"}  # task types whose rows carry the metrics of VQA_TABLES


# -- the selection -----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Selection:
    """Which rows a leaderboard is of: one experiment (None: every row), domain (None: all), split, dataset."""

    experiment: str | None
    domain: str | None
    split: str | None
    dataset: str | None = None

    def params(self) -> dict[str, str]:
        """Query parameters that select exactly this (an empty value means "all", so defaults are not re-applied)."""
        return {"experiment": self.experiment or "", "domain": self.domain or "", "split": self.split or "",
                "dataset": self.dataset or ""}

    def query(self, **extra: Any) -> str:
        return urlencode({**self.params(), **{k: ("" if v is None else v) for k, v in extra.items()}}, doseq=True)


def _options(store: ResultsStore) -> list[dict[str, Any]]:
    """Every (experiment, domain, split, dataset) with main_score rows: how many and the newest (one grouped query)."""
    stmt = (select(Result.experiment, Result.domain, Result.split, Result.dataset, func.count(),
                   func.max(Result.created_at))
            .where(Result.metric == METRIC)
            .group_by(Result.experiment, Result.domain, Result.split, Result.dataset))
    with Session(store.engine) as session:
        return [{"experiment": e, "domain": d, "split": s, "dataset": ds, "rows": n, "newest": newest}
                for e, d, s, ds, n, newest in session.execute(stmt)]


def _newest(options: Sequence[Mapping[str, Any]]) -> Mapping[str, Any]:
    return max(options, key=lambda o: (o["newest"] is not None, o["newest"] or dt.datetime.min, o["rows"]))


def choose(options: Sequence[Mapping[str, Any]], experiment: str | None, domain: str | None, split: str | None,
           dataset: str | None) -> tuple[Selection, list[str]]:
    """The selection a request asks for, and notes on what was changed. A missing parameter gets a default (the
    newest experiment, its domain, the test split if it has one, else its most populated split; every dataset); an
    empty one means "all". A domain, split or dataset the chosen experiment does not have (the form still held the
    previous experiment's) falls back to the default, with a note."""
    notes: list[str] = []
    if not options:
        return Selection(experiment or None, domain or None, split or None, dataset or None), notes
    if experiment is None:
        experiment = _newest(options)["experiment"]
    pool = [o for o in options if not experiment or o["experiment"] == experiment]
    if not pool:  # an unknown experiment: nothing to fall back to (the page says so)
        return Selection(experiment or None, domain or None, split or None, dataset or None), notes
    where = f"experiment {experiment}" if experiment else "the store"
    if domain and domain not in {o["domain"] for o in pool}:
        notes.append(f"{where} has no domain {domain!r}")
        domain = None
    if domain is None:
        domains = {o["domain"] for o in pool}
        domain = domains.pop() if len(domains) == 1 else _newest(pool)["domain"]
    pool = [o for o in pool if not domain or o["domain"] == domain]
    counts: dict[str, int] = {}
    for o in pool:
        counts[o["split"]] = counts.get(o["split"], 0) + o["rows"]
    if split and split not in counts:
        notes.append(f"{where} has no split {split!r}")
        split = None
    if not split:
        split = "test" if "test" in counts else max(counts, key=lambda s: (counts[s], s))
    if dataset and dataset not in {o["dataset"] for o in pool if o["split"] == split}:
        notes.append(f"{where} has no dataset {dataset!r} on split {split!r}")
        dataset = None
    if notes:
        notes[-1] += "; showing " + ", ".join(f"{k} {v}" for k, v in (("domain", domain), ("split", split),
                                                                         ("dataset", dataset)) if v) + "."
    return Selection(experiment or None, domain or None, split or None, dataset or None), notes


def _option_lists(options: Sequence[Mapping[str, Any]], sel: Selection) -> dict[str, list]:
    """The choices the form offers: experiments (all), and the domains, splits, datasets of the chosen experiment."""
    exp = [o for o in options if sel.experiment is None or o["experiment"] == sel.experiment]
    dom = [o for o in exp if sel.domain is None or o["domain"] == sel.domain]
    spl = [o for o in dom if sel.split is None or o["split"] == sel.split]
    return {"experiments": sorted({o["experiment"] for o in options if o["experiment"] is not None}),
            "unnamed": any(o["experiment"] is None for o in options),
            "domains": sorted({o["domain"] for o in exp}),
            "splits": sorted({o["split"] for o in dom}),
            "datasets": sorted({o["dataset"] for o in spl})}


# -- reading rows ------------------------------------------------------------------------------------------------------

# The columns the tables, the runs list and the links need: not ``extra`` and ``config`` (JSON decoded per row, most of
# the cost of reading 10,000 rows as ResultsStore.query's ORM objects). The numbers are still computed by
# embedlab.bench.leaderboard from these rows, as for `embedlab report`.
ROW_COLUMNS = ("id", "model", "task", "task_type", "dataset", "split", "metric", "value", "created_at", "run_id",
               "job_id", "seed", "config_hash", "domain", "experiment", "embedlab_version", "git_commit")


def read_rows(store: ResultsStore, sel: Selection, *, metric: str | None = None, model: str | None = None,
              metrics: Sequence[str] = (), metric_prefixes: Sequence[str] = (),
              config_hashes: Iterable[str | None] | None = None) -> list[dict[str, Any]]:
    """The rows of ``sel`` (oldest first, as ResultsStore.query), ROW_COLUMNS only; optionally of one ``metric``, or
    of ``metrics`` / metric name prefixes, and of some configurations. One parametrised SQLAlchemy query."""
    from sqlalchemy import false, or_

    cols = [getattr(Result, c) for c in ROW_COLUMNS]
    where = [c == v for c, v in ((Result.experiment, sel.experiment), (Result.domain, sel.domain),
                                 (Result.split, sel.split), (Result.dataset, sel.dataset), (Result.metric, metric),
                                 (Result.model, model))
             if v is not None]
    if metrics or metric_prefixes:
        where.append(or_(Result.metric.in_(list(metrics)) if metrics else false(),
                         *[Result.metric.startswith(p, autoescape=True) for p in metric_prefixes]))
    if config_hashes is not None:
        hashes = set(config_hashes)
        named = sorted(h for h in hashes if h is not None)
        where.append(or_(Result.config_hash.in_(named) if named else false(),
                         Result.config_hash.is_(None) if None in hashes else false()))
    stmt = select(*cols).where(*where).order_by(Result.created_at, Result.id)
    with Session(store.engine) as session:
        return [dict(zip(ROW_COLUMNS, r)) for r in session.execute(stmt)]


# -- cells and tables --------------------------------------------------------------------------------------------------

def _num(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def _stat_cell(stat: Stat | None, href: str | None = None, n_expected: int | None = None) -> dict[str, Any]:
    """A table cell of mean ± std over seeds (and the raw numbers for CSV / JSON); "(n=k)" when fewer seeds stand
    behind it than behind the row. Formatted as Stat.format does, with mean and std computed once (Stat computes
    them on every access, with exact fractions)."""
    if stat is None or not stat.n:
        return {"text": "-", "num": True, "mean": None, "std": None, "n": 0, "seeds": [], "href": None}
    mean, std = _num(stat.mean), _num(stat.std)
    text = "-" if mean is None else (f"{mean:.2f}" if std is None else f"{mean:.2f} ± {std:.2f}")
    if n_expected is not None and stat.n != n_expected:
        text += f" (n={stat.n})"
    return {"text": text, "num": True, "mean": mean, "std": std, "n": stat.n, "seeds": list(stat.seeds),
            "href": href, "title": f"{stat.n} seed(s): " + ", ".join(f"{s}: {v:.2f}" for s, v in
                                                                    zip(stat.seeds, stat.values))}


def _text_cell(text: Any, href: str | None = None, code: bool = False, num: bool = False) -> dict[str, Any]:
    return {"text": "-" if text is None else str(text), "href": href, "code": code, "num": num}


def _mark_best(rows: list[dict[str, Any]], column: int, higher_is_better: bool = True) -> None:
    """Bold the best mean of a column (2 decimals, as shown), when two or more rows have one."""
    means = [r["cells"][column].get("mean") for r in rows]
    known = [m for m in means if m is not None]
    if len(known) < 2 or not higher_is_better:
        return
    top = round(max(known), 2)
    for r, m in zip(rows, means):
        if m is not None and round(m, 2) == top:
            r["cells"][column]["best"] = True


def _short(config_hash: str | None) -> str:
    return config_hash[:8] if config_hash else "-"


def _sorted_seeds(seeds: Iterable[Any]) -> list[Any]:
    # as the leaderboard orders them: numbers first, None last
    return sorted(seeds, key=lambda s: (s is None, s if isinstance(s, (int, float)) else str(s)))


def _cell_href(sel: Selection, model: str, config_hash: str | None, task: str = "", metric: str = METRIC) -> str:
    return "/results/cell?" + _base_query(sel) + "&" + urlencode({"model": model, "config": config_hash or "",
                                                                   "task": task, "metric": metric})


@lru_cache(maxsize=256)
def _base_query(sel: Selection) -> str:
    return sel.query()  # the same for every cell of a page


def _run_href(run_id: str) -> str:
    return f"/results/runs/{run_id}"


def _newest_per_seed(rows: Iterable[Mapping[str, Any]]) -> dict[tuple, Mapping[str, Any]]:
    """(model, config_hash, seed, task, metric) -> the newest row with a finite value (rows come oldest first)."""
    out: dict[tuple, Mapping[str, Any]] = {}
    for r in rows:
        v = r.get("value")
        if v is None or not math.isfinite(v):
            continue
        out[(r["model"], r.get("config_hash"), r.get("seed"), r["task"], r["metric"])] = r
    return out


def _extra_tables(all_rows: Sequence[Mapping[str, Any]], lb: Leaderboard, sel: Selection) -> list[dict[str, Any]]:
    """The Med-VQA tables (VQA_TABLES) of each model's chosen configuration: mean ± std over its seeds."""
    chosen = {e.model: e.config_hash for e in lb.entries}
    latest = _newest_per_seed(r for r in all_rows if r["model"] in chosen
                              and r.get("config_hash") == chosen[r["model"]]
                              and r.get("task_type") in EXTRA_TASK_TYPES)
    grouped: dict[tuple[str, str, str], dict[Any, float]] = {}
    for (model, _, seed, task, metric), r in latest.items():
        grouped.setdefault((model, task, metric), {})[seed] = float(r["value"])
    metrics_present = {m for (_, _, m) in grouped}
    tasks = [t for t in lb.tasks if any(t == k[1] for k in grouped)]
    tables = []
    for table_id, title, wanted, caption in VQA_TABLES:
        metrics = (sorted(m for m in metrics_present if m.startswith(wanted)) if isinstance(wanted, str)
                   else [m for m in wanted if m in metrics_present])
        if isinstance(wanted, tuple) and table_id == "image-reliance" and not (
                {"blank_overall", "shuffled_overall", "image_reliance"} & set(metrics)):
            continue  # overall alone is in the closed / open table
        if not metrics:
            continue
        labels = [m[len(wanted):] if isinstance(wanted, str) else m.replace("_", " ") for m in metrics]
        per_task = len(tasks) > 1
        columns = ["model"] + (["task"] if per_task else []) + labels
        rows = []
        for e in lb.entries:
            for task in tasks:
                cells = [_text_cell(e.model)] + ([_text_cell(task)] if per_task else [])
                for m in metrics:
                    by_seed = grouped.get((e.model, task, m), {})
                    seeds = _sorted_seeds(by_seed)
                    stat = Stat(tuple(by_seed[s] for s in seeds), tuple(seeds))
                    cells.append({**_stat_cell(stat, _cell_href(sel, e.model, e.config_hash, task, m),
                                               e.n_seeds), "metric": m})
                if all(c.get("mean") is None for c in cells if c.get("num")):
                    continue
                rows.append({"key": {"model": e.model, "config_hash": e.config_hash, "task": task}, "cells": cells})
        first = len(columns) - len(metrics)
        for i, m in enumerate(metrics):
            if m != "image_reliance":  # larger reliance is not "better": it is what the table is for
                _mark_best(rows, first + i)
        tables.append({"id": table_id, "title": title, "caption": caption, "columns": columns, "rows": rows,
                       "metrics": metrics})
    return tables


def _run_index(rows: Iterable[Mapping[str, Any]]) -> dict[tuple, list[str]]:
    """(model, config_hash, seed) -> the run ids behind it, oldest first."""
    out: dict[tuple, list[str]] = {}
    for r in rows:
        runs = out.setdefault((r["model"], r.get("config_hash"), r.get("seed")), [])
        if r["run_id"] not in runs:
            runs.append(r["run_id"])
    return out


def _tables(lb: Leaderboard, sel: Selection) -> list[dict[str, Any]]:
    runs = _run_index(lb.rows)
    overall = {"id": "leaderboard", "title": "Leaderboard",
               "caption": "Each model with its best configuration (chosen once over the averaged tasks), the average "
                          f"of {METRIC} over those tasks as mean ± std over seeds. Click a number for the runs behind "
                          "it, a seed for its run.",
               "columns": ["#", "model", "config", "seeds", "average", "configs tried"], "rows": []}
    for e in lb.entries:
        seed_links = [{"text": str(s), "href": _run_href(runs[(e.model, e.config_hash, s)][-1])
                       if runs.get((e.model, e.config_hash, s)) else None} for s in e.seeds]
        overall["rows"].append({"key": {"model": e.model, "config_hash": e.config_hash}, "cells": [
            _text_cell(e.rank, num=True), _text_cell(e.model),
            {**_text_cell(_short(e.config_hash), code=True), "title": e.config_hash or "no config recorded"},
            {"text": str(e.n_seeds), "links": seed_links, "num": True},
            _stat_cell(e.average, _cell_href(sel, e.model, e.config_hash), e.n_seeds),
            _text_cell(len(lb.configs_of(e.model)), num=True)]})
    _mark_best(overall["rows"], 4)

    per_task = {"id": "tasks", "title": "Per task", "caption": f"{METRIC} per task, mean ± std over seeds (the "
                "header names the task type; tasks outside the average are not bold).",
                "columns": ["model"] + lb.tasks, "subtitles": [""] + [lb.task_info[t]["category"] for t in lb.tasks],
                "rows": []}
    for e in lb.entries:
        per_task["rows"].append({"key": {"model": e.model, "config_hash": e.config_hash}, "cells": [
            _text_cell(e.model)] + [{**_stat_cell(e.tasks.get(t), _cell_href(sel, e.model, e.config_hash, t),
                                                  e.n_seeds), "task": t} for t in lb.tasks]})
    for i, t in enumerate(lb.tasks, 1):
        if t in lb.averaged:
            _mark_best(per_task["rows"], i)
    tables = [overall, per_task]

    if len(lb.categories) > 1:
        cats = list(lb.categories)
        per_cat = {"id": "categories", "title": "Per task type",
                   "caption": "Per seed the mean over the type's tasks, then mean ± std over seeds.",
                   "columns": ["model"] + cats, "subtitles": [""] + [", ".join(lb.categories[c]) for c in cats],
                   "rows": [{"key": {"model": e.model, "config_hash": e.config_hash},
                             "cells": [_text_cell(e.model)] + [_stat_cell(e.categories.get(c), None, e.n_seeds)
                                                               for c in cats]} for e in lb.entries]}
        for i, c in enumerate(cats, 1):
            if all(t in lb.averaged for t in lb.categories[c]):
                _mark_best(per_cat["rows"], i)
        tables.append(per_cat)
    return tables


# -- charts ------------------------------------------------------------------------------------------------------------

def _bars_spec(title: str, data: list[dict[str, Any]], groups: list[str], models: list[str],
               y_title: str) -> dict[str, Any]:
    """A grouped bar chart (groups on x, one bar per model, error bars = std over seeds) as a Vega-Lite spec: the
    chart of the reports (report_site._bars), left as a spec for vega-embed to draw in the page."""
    spec = json.loads(_bars_layout(title, tuple(groups), tuple(models), y_title))
    spec["data"] = {"values": data}
    return spec


@lru_cache(maxsize=64)
def _bars_layout(title: str, groups: tuple[str, ...], models: tuple[str, ...], y_title: str) -> str:
    """The chart without its data, as JSON, built by Altair once per (groups, models): building it costs more than the
    rest of the page (Altair checks every channel against the schema)."""
    import altair as alt

    base = alt.Chart(alt.Data(values=[]))
    x = alt.X("group:N", sort=list(groups), title=None,
              axis=alt.Axis(labelAngle=-30 if len(groups) > 4 else 0, labelLimit=180))
    offset = alt.XOffset("model:N", sort=list(models))
    bars = base.mark_bar().encode(
        x=x, xOffset=offset, y=alt.Y("mean:Q", title=y_title),
        color=alt.Color("model:N", sort=list(models), scale=alt.Scale(scheme="tableau10" if len(models) <= 10
                                                                       else "category20"),
                        legend=alt.Legend(title="model", labelLimit=320, orient="bottom", columns=2)),
        tooltip=["model:N", "group:N", alt.Tooltip("mean:Q", format=".2f"), alt.Tooltip("std:Q", format=".2f"),
                 "n:Q"])
    errors = base.transform_filter("isValid(datum.std)").mark_errorbar(ticks=True, color="black").encode(
        x=x, xOffset=offset, y=alt.Y("low:Q", title=y_title), y2="high:Q")
    width = max(360, min(1000, len(groups) * (len(models) * 14 + 24)))
    return json.dumps((bars + errors).properties(width=width, height=260, title=title).to_dict())


def _point(model: str, group: str, stat: Stat | None) -> dict[str, Any] | None:
    if stat is None or not stat.n:
        return None
    std = stat.std
    return {"model": model, "group": group, "mean": stat.mean, "std": std, "n": stat.n,
            "low": stat.mean - std if std is not None else None, "high": stat.mean + std if std is not None else None}


def _charts(lb: Leaderboard, extra: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The scores per averaged task (plus the average), and for Med-VQA the per-question-type accuracies."""
    groups = list(lb.averaged)[:MAX_CHART_GROUPS]
    with_avg = len(lb.averaged) > 1
    data = [p for e in lb.entries for p in
            [_point(e.model, t, e.tasks.get(t)) for t in groups]
            + ([_point(e.model, "average", e.average)] if with_avg else []) if p is not None]
    charts = []
    if data:
        charts.append({"id": "chart-scores", "title": "Scores per task", "caption":
                       "Best configuration of each model; bars: mean over seeds, error bars: std over seeds.",
                       "spec": _bars_spec("Scores per task", data, groups + (["average"] if with_avg else []),
                                          lb.models, f"{lb.metric} ({lb.split})")})
    types = next((t for t in extra if t["id"] == "question-types"), None)
    if types is not None and types["rows"]:
        per_task = "task" in types["columns"]
        first = 2 if per_task else 1
        labels = types["columns"][first:][:MAX_CHART_GROUPS]
        data = []
        for row in types["rows"]:
            if per_task and row["key"]["task"] != types["rows"][0]["key"]["task"]:
                continue  # one task per chart: the first (the tables have the rest)
            for label, cell in zip(labels, row["cells"][first:]):
                if cell.get("mean") is not None:
                    std = cell["std"]
                    data.append({"model": row["key"]["model"], "group": label, "mean": cell["mean"], "std": std,
                                 "n": cell["n"], "low": cell["mean"] - std if std is not None else None,
                                 "high": cell["mean"] + std if std is not None else None})
        if data:
            charts.append({"id": "chart-types", "title": "Accuracy per question type", "caption":
                           "Best configuration of each model; error bars: std over seeds.",
                           "spec": _bars_spec("Accuracy per question type", data, labels, lb.models,
                                              f"accuracy ({lb.split})")})
    return charts


# -- the leaderboard view ----------------------------------------------------------------------------------------------

def _job_links(accounts, user: User, job_ids: Iterable[str | None]) -> dict[str, str]:
    """job id -> its page, for the jobs this user may open (their own; every job for an admin)."""
    ids = {j for j in job_ids if j}
    if not ids:
        return {}
    mine = ids if user.is_admin else ids & set(accounts.owned_ids("job", user))
    return {j: JOB_PAGE.format(job_id=j) for j in mine}


def _runs_listed(rows: Sequence[Mapping[str, Any]], lb: Leaderboard, links: Mapping[str, str]) -> list[dict]:
    """The runs behind the leaderboard's numbers (chosen configurations first, by rank), for comparison."""
    by_run: dict[str, dict[str, Any]] = {}
    for r in rows:
        run = by_run.setdefault(r["run_id"], {"run_id": r["run_id"], "model": r["model"],
                                              "config_hash": r.get("config_hash"), "seed": r.get("seed"),
                                              "tasks": [], "created_at": r["created_at"], "job_id": r.get("job_id")})
        if r["task"] not in run["tasks"]:
            run["tasks"].append(r["task"])
        run["created_at"] = max(run["created_at"], r["created_at"])
    rank = {(e.model, e.config_hash): e.rank for e in lb.entries}
    out = sorted(by_run.values(), key=lambda x: (rank.get((x["model"], x["config_hash"])) is None,
                                                  rank.get((x["model"], x["config_hash"])) or 0, x["model"],
                                                  str(x["config_hash"]), str(x["seed"]), x["created_at"]))
    for run in out:
        run["chosen"] = (run["model"], run["config_hash"]) in rank
        run["job_href"] = links.get(run["job_id"] or "")
    return out[:MAX_RUNS_LISTED]


def leaderboard_view(store: ResultsStore, accounts, user: User, sel: Selection,
                     options: Sequence[Mapping[str, Any]] | None = None, charts: bool = True) -> dict[str, Any]:
    """Everything the leaderboard page, its JSON and its CSV show for ``sel``."""
    options = _options(store) if options is None else options
    view: dict[str, Any] = {"selection": sel, "options": _option_lists(options, sel), "tables": [], "charts": [],
                            "runs": [], "message": None, "summary": None, "notes": []}
    if not options:
        view["message"] = ("The results store holds no results yet. Run an experiment or a job matrix (the Jobs page, "
                           "or `embedlab experiment` / `embedlab jobs submit`) and its numbers appear here.")
        return view
    rows = [] if sel.split is None else read_rows(store, sel, metric=METRIC)
    try:
        lb = leaderboard_from_rows(rows, experiment=sel.experiment, domain=sel.domain, metric=METRIC,
                                   split=sel.split or "")
    except ConfigError:
        what = ", ".join(f"{k} {v!r}" for k, v in sel.params().items() if v) or "this selection"
        view["message"] = f"No {METRIC} results for {what}. Choose another experiment, domain, split or dataset."
        return view
    extra: list[dict[str, Any]] = []
    if any(r["task_type"] in EXTRA_TASK_TYPES for r in lb.rows):
        # the metrics of the Med-VQA tables (closed / open, question types, blank / shuffled), chosen configs only
        named = sorted({m for _, _, wanted, _ in VQA_TABLES if not isinstance(wanted, str) for m in wanted})
        prefixes = [wanted for _, _, wanted, _ in VQA_TABLES if isinstance(wanted, str)]
        extra_rows = read_rows(store, sel, metrics=named, metric_prefixes=prefixes,
                               config_hashes={e.config_hash for e in lb.entries})
        extra = _extra_tables(extra_rows, lb, sel)
    view["tables"] = _tables(lb, sel) + extra
    view["charts"] = _charts(lb, extra) if charts else []
    links = _job_links(accounts, user, {r.get("job_id") for r in lb.rows})
    view["runs"] = _runs_listed(lb.rows, lb, links)
    view["summary"] = {"models": len(lb.entries), "configurations": len(lb.configs), "tasks": len(lb.tasks),
                       "averaged": lb.averaged, "not_averaged": [t for t in lb.tasks if t not in lb.averaged],
                       "rows": len(lb.rows), "metric": METRIC, "split": sel.split,
                       "runs": len({r["run_id"] for r in lb.rows})}
    return view


# -- one number: the rows and runs behind it ---------------------------------------------------------------------------

def cell_view(store: ResultsStore, accounts, user: User, sel: Selection, model: str, config_hash: str | None,
              task: str | None, metric: str) -> dict[str, Any]:
    """The rows behind one number of a table: per seed the newest row of each task (one task, or every ranked task
    for an average), the mean ± std as the table computes it, and the runs with their provenance."""
    from ..jobkinds import load_domains

    load_domains()  # the domains register which task types are ranked (averaged)
    rows = read_rows(store, sel, metric=metric, model=model, config_hashes=[config_hash])
    if task:
        rows = [r for r in rows if r["task"] == task]
    else:
        rows = [r for r in rows if is_ranked(r["task_type"])]
    latest = sorted(_newest_per_seed(rows).values(), key=lambda r: (str(r["task"]), _seed_key(r.get("seed"))))
    if not latest:
        raise NotFound("no stored value behind this number (the results may have changed); reload the leaderboard")
    tasks = list(dict.fromkeys(r["task"] for r in latest))
    by_seed: dict[Any, dict[str, float]] = {}
    for r in latest:
        by_seed.setdefault(r.get("seed"), {})[r["task"]] = float(r["value"])
    seeds = [s for s in _sorted_seeds(by_seed) if all(t in by_seed[s] for t in tasks)]
    stat = Stat(tuple(statistics.fmean(by_seed[s][t] for t in tasks) for s in seeds), tuple(seeds))
    links = _job_links(accounts, user, {r.get("job_id") for r in latest})
    return {"selection": sel, "model": model, "config_hash": config_hash, "task": task or None, "metric": metric,
            "tasks": tasks, "stat": _stat_cell(stat), "rows": [_row_json(r, links) for r in latest],
            "averaged": not task}


def _seed_key(seed: Any) -> tuple:
    return (seed is None, seed if isinstance(seed, (int, float)) else str(seed))


def _iso(value: Any) -> Any:
    return value.isoformat() if isinstance(value, dt.datetime) else value


def _row_json(r: Mapping[str, Any], links: Mapping[str, str]) -> dict[str, Any]:
    """A store row as the pages show it: every column (times as ISO 8601), its run's page, its job's page if the
    user may open it (else no job id at all)."""
    out = {k: _iso(r[k]) for k in COLUMNS if k in r}  # read_rows' rows lack extra and config
    job = r.get("job_id")
    out["run_href"] = _run_href(r["run_id"])
    out["job_href"] = links.get(job or "")
    if job and not out["job_href"]:
        out["job_id"] = "(another user's job)"
    if "extra" in r:
        out["model_dir"] = (r.get("extra") or {}).get("model_dir") or r.get("model_path")
    return out


# -- one run, and runs side by side ----------------------------------------------------------------------------------

def _check_run_id(run_id: str) -> str:
    if not RUN_ID_RE.fullmatch(run_id or ""):
        raise NotFound("no such run")
    return run_id


def run_view(store: ResultsStore, accounts, user: User, run_id: str) -> dict[str, Any]:
    """A run's provenance (what produced it, with which code, when) and every row it stored."""
    rows = store.query(run_id=_check_run_id(run_id))
    if not rows:
        raise NotFound(f"no run {run_id} in the results store")
    links = _job_links(accounts, user, {r.get("job_id") for r in rows})
    first, newest = rows[0], max(rows, key=lambda r: r["created_at"])

    def one(key: str) -> Any:
        values = list(dict.fromkeys(json.dumps(r.get(key), sort_keys=True, default=str) for r in rows))
        return rows[-1].get(key) if len(values) == 1 else [json.loads(v) for v in values]

    per_task: dict[str, float] = {}
    for r in rows:  # a task's duration repeats on each of its metrics' rows
        if r.get("duration_s") is not None:
            per_task[r["task"]] = r["duration_s"]
    job_id = first.get("job_id")
    job = None
    if job_id and links.get(job_id):
        from ..bench.jobs import JobQueue

        try:
            j = JobQueue(store).get(job_id)
            prov = (j.get("timings") or {}).get("provenance") or {}
            job = {"id": job_id, "href": links[job_id], "kind": j.get("kind"), "name": j.get("name"),
                   "status": j.get("status"), "output_dir": j.get("output_dir"), "provenance": prov,
                   "started_at": _iso(j.get("started_at")), "finished_at": _iso(j.get("finished_at"))}
        except ConfigError:  # the job row is gone (forgotten): the results stay
            job = {"id": job_id, "href": None, "gone": True}
    extras = [r.get("extra") or {} for r in rows]
    model_dirs = list(dict.fromkeys(str(e["model_dir"]) for e in extras if e.get("model_dir")))
    return {
        "run_id": run_id, "model": one("model"), "model_path": one("model_path"), "model_hash": one("model_hash"),
        "model_dirs": model_dirs, "experiment": one("experiment"), "domain": one("domain"), "seed": one("seed"),
        "config_hash": one("config_hash"), "config": first.get("config"), "embedlab_version": one("embedlab_version"),
        "git_commit": one("git_commit"), "created_at": _iso(newest["created_at"]),
        "duration_s": sum(per_task.values()) if per_task else None, "status": one("status"),
        "job_produced": bool(job_id), "job": job, "tasks": list(dict.fromkeys(r["task"] for r in rows)),
        "rows": [_row_json(r, links) for r in rows],
    }


def compare_view(store: ResultsStore, accounts, user: User, run_ids: Sequence[str]) -> dict[str, Any]:
    """2-4 runs side by side: one row per (task, split, metric) any of them has, one column per run."""
    run_ids = list(dict.fromkeys(run_ids))
    if not 2 <= len(run_ids) <= MAX_COMPARE:
        raise WebError(f"choose 2 to {MAX_COMPARE} different runs to compare (got {len(run_ids)})")
    runs = [run_view(store, accounts, user, r) for r in run_ids]
    order: dict[tuple, None] = {}
    values: list[dict[tuple, float | None]] = []
    for run in runs:
        mine: dict[tuple, float | None] = {}
        for r in sorted(run["rows"], key=lambda r: r["created_at"]):  # a re-stored metric: the newest counts
            key = (r["task"], r["split"], r["metric"])
            order.setdefault(key, None)
            mine[key] = r["value"]
        values.append(mine)
    keys = sorted(order, key=lambda k: (k[0], k[1], k[2] != METRIC, k[2]))
    table = []
    for key in keys:
        vals = [v.get(key) for v in values]
        known = [x for x in vals if x is not None]
        top = round(max(known), 2) if len(known) > 1 and len({round(x, 2) for x in known}) > 1 else None
        table.append({"task": key[0], "split": key[1], "metric": key[2],
                      "values": [{"value": x, "text": "-" if x is None else f"{x:.2f}",
                                  "best": top is not None and x is not None and round(x, 2) == top} for x in vals]})
    return {"runs": runs, "rows": table}


# -- CSV ---------------------------------------------------------------------------------------------------------------

def _csv_response(text: str, filename: str) -> Response:
    return Response(text, media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="{filename}"'})


def _csv_safe(value: Any) -> Any:
    """A text cell that a spreadsheet would run as a formula (=, +, -, @ first) is prefixed with a quote: model and
    task names come from users."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r") and not _is_number(value):
        return "'" + value
    return value


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def leaderboard_csv(view: Mapping[str, Any]) -> str:
    """Every number of the page's tables, one line each: table, model, config hash, task (for per-task tables),
    column, mean, std, n, seeds (full precision; std empty with one seed)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["table", "model", "config_hash", "task", "column", "mean", "std", "n", "seeds"])
    for table in view["tables"]:
        for row in table["rows"]:
            key = row["key"]
            for column, cell in zip(table["columns"], row["cells"]):
                if "mean" not in cell:
                    continue
                w.writerow([_csv_safe(x) for x in (
                    table["id"], key.get("model"), key.get("config_hash") or "", cell.get("task") or key.get("task")
                    or "", cell.get("metric") or column, "" if cell["mean"] is None else repr(cell["mean"]),
                    "" if cell["std"] is None else repr(cell["std"]), cell["n"],
                    " ".join(str(s) for s in cell["seeds"]))])
    return buf.getvalue()


def rows_csv(rows: Iterable[Mapping[str, Any]]) -> str:
    buf = io.StringIO()
    ResultsStore.to_csv([{k: (_csv_safe(v) if k in ("model", "task", "dataset", "experiment") else v)
                          for k, v in r.items()} for r in rows], buf)
    return buf.getvalue()


def compare_csv(view: Mapping[str, Any]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["task", "split", "metric"] + [r["run_id"] for r in view["runs"]])
    w.writerow(["", "", "model"] + [_csv_safe(str(r["model"])) for r in view["runs"]])
    w.writerow(["", "", "seed"] + [r["seed"] for r in view["runs"]])
    for row in view["rows"]:
        w.writerow([_csv_safe(row["task"]), row["split"], row["metric"]]
                   + ["" if v["value"] is None else repr(v["value"]) for v in row["values"]])
    return buf.getvalue()


# -- JSON --------------------------------------------------------------------------------------------------------------

def _json_view(view: Mapping[str, Any]) -> dict[str, Any]:
    sel = view["selection"]
    return {"selection": sel.params(), "options": view["options"], "message": view["message"],
            "summary": view["summary"], "tables": view["tables"],
            "charts": [{"id": c["id"], "title": c["title"], "spec": c["spec"]} for c in view["charts"]],
            "runs": [{k: _iso(v) for k, v in r.items()} for r in view["runs"]],
            "downloads": {"csv": "/results/leaderboard.csv?" + sel.query()}}


def _json(data: Any) -> JSONResponse:
    return JSONResponse(json.loads(json.dumps(data, default=_iso_default)))


def _iso_default(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, Selection):
        return value.params()
    raise TypeError(type(value).__name__)


# -- routes ------------------------------------------------------------------------------------------------------------

def _selection(store: ResultsStore, experiment, domain, split, dataset) -> tuple[Selection, list, list[str]]:
    options = _options(store)
    sel, notes = choose(options, experiment, domain, split, dataset)
    return sel, options, notes


@router.get("/results", include_in_schema=False)
def results_page(request: Request, user: CurrentUser, store: StoreDep, accounts: AccountsDep,
                 experiment: Text = None, domain: Text = None, split: Text = None,
                 dataset: Text = None, shown: Text = None) -> Response:
    if shown is not None and experiment is not None and shown != experiment:
        # the form was sent with another experiment chosen: its domain / split / dataset belonged to the previous one
        domain = split = dataset = None
    sel, options, notes = _selection(store, experiment, domain, split, dataset)
    view = leaderboard_view(store, accounts, user, sel, options)
    view["notes"] = notes
    # Vega compiles expressions with Function(): this page needs 'unsafe-eval' (scripts still only from this site).
    return render(request, "results/leaderboard.html", {"view": view, "sel": sel, "max_compare": MAX_COMPARE},
                  headers={"Content-Security-Policy": CSP_WITH_EVAL})


@router.get("/results/leaderboard.csv", tags=["results"], summary="The leaderboard's tables as CSV")
def leaderboard_csv_download(user: CurrentUser, store: StoreDep, accounts: AccountsDep, experiment: Text = None,
                             domain: Text = None, split: Text = None, dataset: Text = None) -> Response:
    """Every number the leaderboard page shows for the same parameters, one line per number (full precision)."""
    sel, options, _ = _selection(store, experiment, domain, split, dataset)
    view = leaderboard_view(store, accounts, user, sel, options, charts=False)
    return _csv_response(leaderboard_csv(view), f"leaderboard-{_slug(sel)}.csv")


def _slug(sel: Selection) -> str:
    parts = [p for p in (sel.experiment, sel.domain, sel.split, sel.dataset) if p] or ["all"]
    return re.sub(r"[^A-Za-z0-9._-]+", "_", "-".join(parts))[:100]


@router.get("/api/results/leaderboard", tags=["results"], summary="A leaderboard: tables, chart specs, runs")
def leaderboard_api(user: CurrentUser, store: StoreDep, accounts: AccountsDep, experiment: Text = None,
                    domain: Text = None, split: Text = None, dataset: Text = None) -> Response:
    """What GET /results shows: ``tables`` (each cell with mean, std, n, seeds and the link to its rows), the chart
    specs (Vega-Lite), the runs behind the numbers, the selection made (missing parameters get the page's defaults;
    an empty one means all) and the choices there are."""
    sel, options, notes = _selection(store, experiment, domain, split, dataset)
    return _json({**_json_view(leaderboard_view(store, accounts, user, sel, options)), "notes": notes})


@router.get("/results/cell", include_in_schema=False)
def cell_page(request: Request, user: CurrentUser, store: StoreDep, accounts: AccountsDep,
              model: Annotated[str, Query(max_length=512)], experiment: Text = None, domain: Text = None,
              split: Text = None, dataset: Text = None, config: Text = None, task: Text = None,
              metric: Annotated[str, Query(max_length=128)] = METRIC) -> Response:
    sel = Selection(experiment or None, domain or None, split or None, dataset or None)
    view = cell_view(store, accounts, user, sel, model, config or None, task or None, metric)
    return render(request, "results/cell.html", {"cell": view, "sel": sel})


@router.get("/api/results/cell", tags=["results"], summary="The rows and runs behind one number")
def cell_api(user: CurrentUser, store: StoreDep, accounts: AccountsDep,
             model: Annotated[str, Query(max_length=512)], experiment: Text = None, domain: Text = None,
             split: Text = None, dataset: Text = None, config: Text = None, task: Text = None,
             metric: Annotated[str, Query(max_length=128)] = METRIC) -> Response:
    """One number of a leaderboard table (model, config hash, task; no task: the model's average): per seed the
    newest row of each task behind it and the mean ± std over seeds. 404 when no stored value matches."""
    sel = Selection(experiment or None, domain or None, split or None, dataset or None)
    return _json(cell_view(store, accounts, user, sel, model, config or None, task or None, metric))


@router.get("/results/compare", include_in_schema=False)
def compare_page(request: Request, user: CurrentUser, store: StoreDep, accounts: AccountsDep,
                 run: Annotated[list[str], Query()] = []) -> Response:  # noqa: B006 - FastAPI copies it
    view = compare_view(store, accounts, user, run)
    return render(request, "results/compare.html", {"cmp": view, "query": urlencode({"run": run}, doseq=True)})


@router.get("/results/compare.csv", tags=["results"], summary="2-4 runs side by side as CSV")
def compare_csv_download(user: CurrentUser, store: StoreDep, accounts: AccountsDep,
                         run: Annotated[list[str], Query()] = []) -> Response:  # noqa: B006
    return _csv_response(compare_csv(compare_view(store, accounts, user, run)), "compare.csv")


@router.get("/api/results/compare", tags=["results"], summary="2-4 runs side by side")
def compare_api(user: CurrentUser, store: StoreDep, accounts: AccountsDep,
                run: Annotated[list[str], Query()] = []) -> Response:  # noqa: B006
    """``?run=A&run=B`` (2 to 4 run ids): each run's provenance and rows, and one row per (task, split, metric)
    with each run's value. 400 for fewer than 2 or more than 4 runs, 404 for an unknown one."""
    return _json(compare_view(store, accounts, user, run))


@router.get("/results/runs/{run_id}.csv", tags=["results"], summary="A run's rows as CSV")
def run_csv_download(run_id: str, user: CurrentUser, store: StoreDep, accounts: AccountsDep) -> Response:
    rows = store.query(run_id=_check_run_id(run_id))
    if not rows:
        raise NotFound(f"no run {run_id} in the results store")
    return _csv_response(rows_csv(rows), f"run-{run_id}.csv")


@router.get("/results/runs/{run_id}", include_in_schema=False)
def run_page(request: Request, run_id: str, user: CurrentUser, store: StoreDep, accounts: AccountsDep) -> Response:
    view = run_view(store, accounts, user, run_id)
    config_json = json.dumps(view["config"], indent=2, sort_keys=True) if view["config"] is not None else None
    return render(request, "results/run.html", {"run": view, "config_json": config_json})


@router.get("/api/results/runs/{run_id}", tags=["results"], summary="A run's provenance and rows")
def run_api(run_id: str, user: CurrentUser, store: StoreDep, accounts: AccountsDep) -> Response:
    """Model, seed, config (and its hash), model folder, embedlab version and git commit, time, and every row of
    the run. The producing job is named (with its provenance) only for its owner and admins."""
    return _json(run_view(store, accounts, user, run_id))


@router.get("/results/charts.js", include_in_schema=False)
def charts_js() -> Response:
    """The page script that draws the charts (a file, not inline: the Content-Security-Policy forbids inline
    scripts)."""
    return Response(CHARTS_JS.read_text(encoding="utf-8"), media_type="text/javascript; charset=utf-8")
