"""A report folder from the results store: a leaderboard people would rather look at than read.

    from embedlab.bench.report_site import build_report
    report = build_report("sqlite:///embedlab-results.sqlite", "reports/codiemb", experiment="codiemb")
    report.files          # index.html, report.md, leaderboard.csv, results.json, charts/*.svg, charts/*.png

The folder holds:

- ``index.html``: one self-contained page (CSS inline, every chart an inline SVG; no script, no CDN, no web font),
  rendered from the Jinja2 template ``templates/report.html.j2``;
- ``report.md``: the same tables in Markdown, the charts as ``charts/<name>.svg`` with a PNG next to each;
- ``leaderboard.csv``: the numbers of the tables (full precision), one row per (level, model, name);
- ``results.json``: every table, every configuration and the store rows behind them, plus the provenance;
- ``charts/``: the grouped bar chart (models x tasks, error bars = std over seeds), the category bars, the training
  curves (loss per logged step, dev score per evaluation, from each job's ``train_log.jsonl`` / ``dev_log.jsonl``).

Charts are Altair (Vega-Lite) specifications rendered to SVG and PNG by vl-convert, offline, with no network access
allowed. Jobs whose output folder is gone are skipped and listed in the report. The folder is written in a staging
folder and swapped into place (embedlab.atomic.replace_dir): a reader sees the old report or the new one, never a mix,
and a folder embedlab did not write is not replaced unless ``overwrite`` is given.

The numbers come from embedlab.bench.leaderboard (how the best configuration is chosen: see there and
docs/reports.md); this module formats and draws them and computes nothing else.
"""
from __future__ import annotations

import csv
import datetime as dt
import io
import json
import math
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..atomic import check_output_dir, replace_dir, staging_dir, write_text
from ..errors import ConfigError
from .leaderboard import Leaderboard, Stat, leaderboard

FORMATS = ("html", "md")
TEMPLATES = Path(__file__).with_name("templates")
MAX_CURVE_RUNS = 40  # runs drawn in one training-curve chart (the rest are named in a note)
MAX_CURVE_POINTS = 1000  # points per run and curve (a longer log is thinned evenly, its last point kept)


@dataclass
class Chart:
    name: str  # file stem under charts/
    title: str
    caption: str
    svg: str
    spec: dict[str, Any] = field(repr=False)


@dataclass
class Report:
    """What ``build_report`` wrote: the folder, its files, the leaderboard behind it and the notes it shows."""

    out_dir: Path
    files: list[Path]
    leaderboard: Leaderboard
    notes: list[str]
    seconds: dict[str, float]  # time per phase: query, charts, render, write, total


def build_report(store: Any, out_dir: str | Path, experiment: str | None = None, title: str | None = None,
                 formats: Sequence[str] = ("html", "md"), *, domain: str | None = None, metric: str = "main_score",
                 split: str = "test", category_key: str | None = None, metrics: Sequence[str] = (),
                 overwrite: bool = False) -> Report:
    """Write the report of ``experiment`` (every row of the store when None) to the folder ``out_dir``.

    ``store``: a ResultsStore, or a URL / SQLite path opened read-only (None: the default store). ``formats``: any
    of "html" (index.html) and "md" (report.md, with PNG copies of the charts); leaderboard.csv, results.json and
    the SVG charts are always written. ``domain``, ``metric``, ``split``, ``category_key``: as in
    ``leaderboard.leaderboard``. ``metrics``: more metrics shown for each model's chosen configuration, per task
    and split (e.g. closed, open, overall, blank_overall for Med-VQA), in a "Metrics" table: mean ± std over seeds,
    every split the rows have, named in the column. ConfigError when the store has no rows for the experiment, for
    an unknown format or metric, or when ``out_dir`` is a folder embedlab did not write (unless ``overwrite``)."""
    t0 = time.perf_counter()
    formats = tuple(dict.fromkeys(formats))
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ConfigError(f"unknown report format(s) {', '.join(map(str, unknown))}; choose from {', '.join(FORMATS)}")
    out_dir = Path(out_dir)
    check_output_dir(out_dir, overwrite=overwrite, what="report folder")

    from .store import ResultsStore

    opened = not isinstance(store, ResultsStore)
    if opened:
        store = ResultsStore(store, create=False)
    try:
        lb = leaderboard(store, experiment=experiment, domain=domain, metric=metric, split=split,
                         category_key=category_key)
        all_rows = store.query(experiment=experiment, domain=domain)
        from .jobs import JobQueue

        jobs = [j for j in JobQueue(store).list(experiment=experiment) if domain is None or j["domain"] == domain]
        store_url = store.display_url
    finally:
        if opened:
            store.close()
    seconds = {"query": time.perf_counter() - t0}

    t = time.perf_counter()
    notes: list[str] = []
    curves, curve_notes = _training_curves(jobs)
    notes += curve_notes
    charts = _charts(lb, curves)
    seconds["charts"] = time.perf_counter() - t

    t = time.perf_counter()
    generated = dt.datetime.now(dt.timezone.utc)
    title = title or (f"{experiment}: leaderboard" if experiment else "embedlab leaderboard")
    provenance = _provenance(jobs, all_rows)
    tables = _tables(lb)
    tables["metrics"] = _metrics_table(lb, all_rows, metrics) if metrics else None
    meta = {"title": title, "experiment": experiment, "domain": domain, "metric": metric, "split": split,
            "category": category_key or "task_type", "store": store_url,
            "generated": generated.strftime("%Y-%m-%d %H:%M UTC"), "n_models": len(lb.entries),
            "n_configs": len(lb.configs), "n_tasks": len(lb.tasks), "n_rows": len(lb.rows), "n_jobs": len(jobs),
            "averaged": lb.averaged, "not_averaged": [t for t in lb.tasks if t not in lb.averaged]}
    outputs: dict[str, str | bytes] = {
        "leaderboard.csv": _csv(lb),
        "results.json": json.dumps(_results_json(lb, meta, provenance, notes), indent=2, ensure_ascii=False,
                                   default=str) + "\n",
    }
    for chart in charts:
        outputs[f"charts/{chart.name}.svg"] = chart.svg
        if "md" in formats:
            import vl_convert

            outputs[f"charts/{chart.name}.png"] = vl_convert.svg_to_png(chart.svg, scale=2)
    if "md" in formats:
        outputs["report.md"] = _markdown(meta, tables, charts, provenance, notes)
    if "html" in formats:
        outputs["index.html"] = _html(meta, tables, charts, provenance, notes)
    seconds["render"] = time.perf_counter() - t

    t = time.perf_counter()
    staging = staging_dir(out_dir, "report")
    try:
        for name, content in outputs.items():
            target = staging / name
            if isinstance(content, bytes):
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(content)
            else:
                write_text(target, content)
        replace_dir(staging, out_dir, overwrite=overwrite)
    except BaseException:
        import shutil

        shutil.rmtree(staging, ignore_errors=True)
        raise
    seconds["write"] = time.perf_counter() - t
    seconds["total"] = time.perf_counter() - t0
    return Report(out_dir=out_dir, files=sorted(out_dir / name for name in outputs), leaderboard=lb, notes=notes,
                  seconds=seconds)


# -- numbers as text -------------------------------------------------------------------------------------------
def _num(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _short(config_hash: str | None) -> str:
    return config_hash[:8] if config_hash else "-"


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 120:
        return f"{value:.2f} s"
    if value < 7200:
        return f"{value / 60:.2f} min"
    return f"{value / 3600:.2f} h"


def _cell(stat: Stat | None, n_expected: int | None = None, best: bool = False) -> dict[str, Any]:
    """A table cell of mean ± std over seeds; "(n=k)" when fewer seeds stand behind it than the row has."""
    if stat is None or not stat.n:
        return {"text": "-", "best": False, "num": True}
    text = stat.format(2)
    if n_expected is not None and stat.n != n_expected:
        text += f" (n={stat.n})"
    return {"text": text, "best": best, "num": True}


def _text(value: Any, num: bool = False, code: bool = False) -> dict[str, Any]:
    return {"text": str(value), "best": False, "num": num, "code": code}


def _best_mask(stats: Sequence[Stat | None]) -> list[bool]:
    means = [s.mean if s is not None and s.n else None for s in stats]
    known = [m for m in means if m is not None]
    if len(known) < 2:
        return [False] * len(stats)
    top = max(known)
    return [m is not None and round(m, 2) == round(top, 2) for m in means]


def _tables(lb: Leaderboard) -> dict[str, dict[str, Any]]:
    """The report's tables, each {"title", "columns", "num" (right-aligned columns), "rows": [[cell]]}; one
    structure that both the HTML and the Markdown render."""
    entries = lb.entries
    avg_best = _best_mask([e.average for e in entries])
    overall = {"title": "Leaderboard", "columns": ["#", "model", "config", "seeds", "average", "configs tried"],
               "rows": []}
    for e, best in zip(entries, avg_best):
        overall["rows"].append([_text(e.rank, num=True), _text(e.model), _text(_short(e.config_hash), code=True),
                                _text(e.n_seeds, num=True), _cell(e.average, e.n_seeds, best),
                                _text(len(lb.configs_of(e.model)), num=True)])

    per_task = {"title": "Per task", "columns": ["model"] + lb.tasks,
                "subtitles": [""] + [f"{lb.task_info[t]['category']}" for t in lb.tasks], "rows": []}
    masks = {t: (_best_mask([e.tasks.get(t) for e in entries]) if t in lb.averaged else [False] * len(entries))
             for t in lb.tasks}
    for i, e in enumerate(entries):
        per_task["rows"].append([_text(e.model)] + [_cell(e.tasks.get(t), e.n_seeds, masks[t][i]) for t in lb.tasks])

    cats = list(lb.categories)
    per_cat = {"title": "Per category", "columns": ["model"] + cats,
               "subtitles": [""] + [", ".join(lb.categories[c]) for c in cats], "rows": []}
    cat_masks = {c: (_best_mask([e.categories.get(c) for e in entries])
                     if all(t in lb.averaged for t in lb.categories[c]) else [False] * len(entries)) for c in cats}
    for i, e in enumerate(entries):
        per_cat["rows"].append([_text(e.model)] + [_cell(e.categories.get(c), e.n_seeds, cat_masks[c][i])
                                                   for c in cats])

    configs = {"title": "Every configuration", "columns": ["model", "config", "seeds", "average",
                                                           "averaged tasks covered", "chosen"], "rows": []}
    for e in lb.configs:
        configs["rows"].append([_text(e.model), _text(_short(e.config_hash), code=True), _text(e.n_seeds, num=True),
                                _cell(e.average, e.n_seeds), _text(f"{e.coverage}/{len(lb.averaged)}", num=True),
                                _text("yes" if e.selected else "")])
    return {"overall": overall, "tasks": per_task, "categories": per_cat, "configs": configs}


def _metrics_table(lb: Leaderboard, rows: Iterable[Mapping[str, Any]], metrics: Sequence[str]) -> dict[str, Any]:
    """Each leaderboard model's chosen configuration: mean ± std over seeds of each of ``metrics`` on every (task,
    split) it has them for, the latest row per seed winning as in the leaderboard."""
    wanted = list(dict.fromkeys(metrics))
    chosen = {(e.model, e.config_hash) for e in lb.entries}
    cells: dict[tuple, dict[Any, float]] = {}  # (model, config, task, split, metric) -> {seed: value}
    for r in rows:  # oldest first: a later row of the same seed replaces an earlier one
        key = (r["model"], r.get("config_hash"))
        if key in chosen and r.get("metric") in wanted and r.get("value") is not None:
            cells.setdefault(key + (r["task"], r.get("split"), r["metric"]), {})[r.get("seed")] = float(r["value"])
    missing = [m for m in wanted if not any(k[4] == m for k in cells)]
    if missing:
        raise ConfigError(f"no rows of metric(s) {', '.join(missing)} for the leaderboard's models (the metrics "
                          f"the rows have are listed by `embedlab results --experiment ...`)")
    present = {k[2:] for k in cells}
    header = [(t, sp, m) for t, sp in dict.fromkeys(k[2:4] for k in cells) for m in wanted
              if (t, sp, m) in present]  # task by task, metrics in the order asked; none a task lacks
    table = {"title": "Metrics", "columns": ["model"] + [m for _, _, m in header],
             "subtitles": [""] + [f"{t}, {sp}" for t, sp, _ in header], "rows": []}
    for e in lb.entries:
        row = [_text(e.model)]
        for t, sp, m in header:
            by_seed = sorted(cells.get((e.model, e.config_hash, t, sp, m), {}).items(), key=lambda sv: str(sv[0]))
            row.append(_cell(Stat(tuple(v for _, v in by_seed), tuple(sd for sd, _ in by_seed)), e.n_seeds))
        table["rows"].append(row)
    return table


# -- training curves ---------------------------------------------------------------------------------------------
def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The JSON objects of a log, skipping lines that are not (a line cut by an interruption)."""
    out = []
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return out
    for line in text.splitlines():
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict):
            out.append(obj)
    return out


def _points(records: Iterable[Mapping[str, Any]], key: str) -> list[tuple[float, float, str]]:
    """(step, value, task) of every record with a finite ``key``; thinned evenly per task to MAX_CURVE_POINTS. A
    log written per epoch (no ``step``; Med-VQA's trainer) is drawn over epochs completed (``epoch`` + 1)."""
    by_task: dict[str, list[tuple[float, float, str]]] = {}
    for r in records:
        step, value = r.get("step"), r.get(key)
        if step is None and isinstance(r.get("epoch"), int) and not isinstance(r.get("epoch"), bool):
            step = r["epoch"] + 1
        if isinstance(step, (int, float)) and isinstance(value, (int, float)) and not isinstance(value, bool) \
                and math.isfinite(value):
            task = str(r.get("task") or "")
            by_task.setdefault(task, []).append((float(step), float(value), task))
    out = []
    for pts in by_task.values():
        if len(pts) > MAX_CURVE_POINTS:
            stride = -(-len(pts) // MAX_CURVE_POINTS)
            pts = pts[::stride] + ([pts[-1]] if (len(pts) - 1) % stride else [])
        out += pts
    return sorted(out)


MAX_GONE_NOTES = 3  # more jobs without their folder than this are summed up in one note


def _training_curves(jobs: Sequence[Mapping[str, Any]]) -> tuple[dict[str, list[dict[str, Any]]], list[str]]:
    """{"loss": [...], "dev": [...]} points (run, step, value) from the jobs' output folders, and notes on the jobs
    whose folder is gone."""
    notes, loss, dev = [], [], []
    hashes_of: dict[str, set] = {}
    for j in jobs:
        hashes_of.setdefault(j["name"], set()).add(j["config_hash"])
    drawn = 0
    skipped_cap = []
    gone: list[tuple[Mapping[str, Any], str, Path]] = []
    for j in jobs:
        folder = j.get("output_dir")
        if not folder:
            continue
        folder = Path(folder)
        label = f"{j['name']} s{j['seed']}" + (f" [{j['config_hash'][:8]}]" if len(hashes_of[j["name"]]) > 1 else "")
        if not folder.is_dir():
            if j["status"] != "queued":  # a queued job has no folder yet: nothing is missing
                gone.append((j, label, folder))
            continue
        # A job trains in its folder, or (a job that trains one model per task, as vqa-train) in one sub-folder
        # per task: each log is one curve, labelled with its sub-folder.
        runs = [(label, folder)] + [(f"{label} {sub.name}", sub) for sub in sorted(folder.iterdir())
                                    if sub.is_dir() and (sub / "train_log.jsonl").is_file()]
        for run_label, run_dir in runs:
            train = run_dir / "train_log.jsonl"
            dev_log = run_dir / "dev_log.jsonl"
            if not train.is_file() and not dev_log.is_file():
                continue
            if drawn >= MAX_CURVE_RUNS:
                skipped_cap.append(run_label)
                continue
            drawn += 1
            loss += [{"run": run_label, "step": s, "value": v, "task": t}
                     for s, v, t in _points(_read_jsonl(train), "loss")]
            dev += [{"run": run_label, "step": s, "value": v} for s, v, _ in _points(_read_jsonl(dev_log), "mean")]
    if len(gone) <= MAX_GONE_NOTES:
        notes += [f"job {j['id'][:8]} ({label}, {j['kind']}, {j['status']}): its output folder {folder} "
                  f"is gone; no training curves or logs from it" for j, label, folder in gone]
    else:  # many (rows imported from a results file on a machine that never ran the jobs): one note, not a page
        parents = sorted({str(folder.parent) for _, _, folder in gone})
        notes.append(f"{len(gone)} jobs' output folders are gone (under {', '.join(parents)}; their rows may have "
                     f"been imported from a results file): no training curves or logs from "
                     + ", ".join(label for _, label, _ in gone))
    if skipped_cap:
        notes.append(f"training curves drawn for the first {MAX_CURVE_RUNS} runs only; not drawn: "
                     + ", ".join(skipped_cap))
    return {"loss": loss, "dev": dev}, notes


# -- charts ------------------------------------------------------------------------------------------------------
def _render(name: str, title: str, caption: str, chart: Any) -> Chart:
    import altair as alt
    import vl_convert

    spec = chart.to_dict()
    # The Vega-Lite version Altair wrote the spec for ("v6.4.1" -> "6.4"); no URL may be fetched while rendering.
    version = ".".join(alt.SCHEMA_VERSION.lstrip("v").split(".")[:2])
    svg = vl_convert.vegalite_to_svg(spec, vl_version=version, allowed_base_urls=[])
    # Several SVGs inline in one page share one id space: make every id (clip paths, gradients) the chart's own.
    ids = set(re.findall(r'\bid="([^"]+)"', svg))
    for old in sorted(ids, key=len, reverse=True):
        new = f"{name}-{old}"
        svg = re.sub(rf'\bid="{re.escape(old)}"', f'id="{new}"', svg)
        svg = svg.replace(f"url(#{old})", f"url(#{new})").replace(f'href="#{old}"', f'href="#{new}"')
    return Chart(name=name, title=title, caption=caption, svg=svg, spec=spec)


def _colors(n: int) -> Any:
    import altair as alt

    return alt.Scale(scheme="tableau10" if n <= 10 else "category20")


def _bars(name: str, title: str, caption: str, data: list[dict[str, Any]], groups: list[str], models: list[str],
          y_title: str) -> Chart:
    import altair as alt

    base = alt.Chart(alt.Data(values=data))
    x = alt.X("group:N", sort=groups, title=None, axis=alt.Axis(labelAngle=-30 if len(groups) > 4 else 0,
                                                                 labelLimit=180))
    offset = alt.XOffset("model:N", sort=models)
    bars = base.mark_bar().encode(
        x=x, xOffset=offset, y=alt.Y("mean:Q", title=y_title),
        color=alt.Color("model:N", sort=models, scale=_colors(len(models)),
                        legend=alt.Legend(title="model", labelLimit=320, orient="bottom", columns=2)),
        tooltip=["model:N", "group:N", alt.Tooltip("mean:Q", format=".2f"), alt.Tooltip("std:Q", format=".2f")])
    errors = base.transform_filter("isValid(datum.std)").mark_errorbar(ticks=True, color="black").encode(
        x=x, xOffset=offset, y=alt.Y("low:Q", title=y_title), y2="high:Q")
    width = max(360, min(1100, len(groups) * (len(models) * 16 + 24)))
    chart = (bars + errors).properties(width=width, height=260, title=title)
    return _render(name, title, caption, chart)


def _panels(data: Sequence[Mapping[str, Any]]) -> tuple[str | None, list[str]]:
    """How to split a loss chart: one panel per training task when the log names 2-4 of them (the losses of
    different tasks have different scales), else per task family (the part before ":", e.g. "ir" / "sts") when
    that gives 2-4, else one panel."""
    tasks = list(dict.fromkeys(d.get("task") or "" for d in data))
    if 2 <= len(tasks) <= 4:
        return "task", tasks
    families = list(dict.fromkeys(t.split(":", 1)[0] for t in tasks))
    if 2 <= len(families) <= 4:
        return "family", families
    return None, []


def _curve(name: str, title: str, caption: str, data: list[dict[str, Any]], y_title: str, points: bool) -> Chart:
    import altair as alt

    runs = list(dict.fromkeys(d["run"] for d in data))
    field, panels = _panels(data) if not points else (None, [])
    if field == "family":
        data = [{**d, "family": (d.get("task") or "").split(":", 1)[0]} for d in data]
    per_series: dict[tuple, int] = {}
    for d in data:
        key = (d["run"], d.get(field) if field else None)
        per_series[key] = per_series.get(key, 0) + 1
    # Markers on sparse series (a line of one point is invisible), none on dense ones (they would hide the line).
    marks = alt.OverlayMarkDef(size=14) if points or max(per_series.values()) <= 60 else False
    chart = alt.Chart(alt.Data(values=data)).mark_line(point=marks, strokeWidth=1.5).encode(
        x=alt.X("step:Q", title="step"), y=alt.Y("value:Q", title=y_title, scale=alt.Scale(zero=False)),
        color=alt.Color("run:N", sort=runs, scale=_colors(len(runs)),
                        legend=alt.Legend(title="run", labelLimit=320, orient="bottom", columns=2)),
    )
    if field is None:
        chart = chart.properties(width=640, height=260, title=title)
    else:
        chart = chart.properties(width=max(220, 640 // len(panels)), height=240).facet(
            column=alt.Column(f"{field}:N", sort=panels, title=None), title=title
        ).resolve_scale(y="independent")
    return _render(name, title, caption, chart)


def _charts(lb: Leaderboard, curves: Mapping[str, list[dict[str, Any]]]) -> list[Chart]:
    models = lb.models
    y_title = f"{lb.metric} ({lb.split})"

    def point(model: str, group: str, stat: Stat | None) -> dict[str, Any] | None:
        if stat is None or not stat.n:
            return None
        std = stat.std
        return {"model": model, "group": group, "mean": stat.mean, "std": std, "n": stat.n,
                "low": stat.mean - std if std is not None else None,
                "high": stat.mean + std if std is not None else None}

    charts = []
    groups = list(lb.averaged) + (["average"] if len(lb.averaged) > 1 else [])
    data = [p for e in lb.entries for p in
            [point(e.model, t, e.tasks.get(t)) for t in lb.averaged]
            + ([point(e.model, "average", e.average)] if len(lb.averaged) > 1 else []) if p is not None]
    charts.append(_bars("scores", "Scores per task (best configuration of each model)",
                        "Mean over seeds; error bars: std over seeds (ddof=1; none with one seed). "
                        "Tasks outside the average are in the tables only.", data, groups, models, y_title))
    cats = [c for c, members in lb.categories.items() if all(t in lb.averaged for t in members)]
    if len(cats) > 1:
        data = [p for e in lb.entries for p in [point(e.model, c, e.categories.get(c)) for c in cats] if p is not None]
        charts.append(_bars("categories", f"Scores per category ({lb.category_key or 'task type'})",
                            "Per seed the mean over the category's tasks, then mean over seeds; error bars: std "
                            "over seeds.", data, cats, models, y_title))
    if curves.get("loss"):
        charts.append(_curve("loss", "Training loss", "The loss at each logged step (train_log.jsonl), one line per "
                             "run (job name and seed); one panel per training task when there are several.",
                             curves["loss"], "loss", points=False))
    if curves.get("dev"):
        charts.append(_curve("dev", "Dev score during training", "The mean dev score at each evaluation "
                             "(dev_log.jsonl), on the display scale.", curves["dev"], "dev score (mean)",
                             points=True))
    return charts


# -- provenance --------------------------------------------------------------------------------------------------
def _packages(packages: Mapping[str, str] | None) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted((packages or {}).items())) or "not recorded"


def _data(rows: Sequence[Mapping[str, Any]], fallback: Sequence[str] = ()) -> list[str]:
    seen = dict.fromkeys((r["task"], r["dataset"], r["split"]) for r in rows)
    return [f"{t} ({d}, {s})" for t, d, s in seen] or list(fallback)


def _one(values: Iterable[Any]) -> str:
    found = sorted({str(v) for v in values if v is not None})
    return ", ".join(found) if found else "not recorded"


def _wall_from_rows(rows: Sequence[Mapping[str, Any]]) -> float | None:
    """The evaluation time behind the numbers: per task, the duration of its newest run (rows repeat a task's
    duration once per metric; an older re-run does not count)."""
    per_task: dict[str, float] = {}
    for r in sorted(rows, key=lambda r: r["created_at"]):
        if r.get("duration_s") is not None:
            per_task[r["task"]] = r["duration_s"]
    return sum(per_task.values()) if per_task else None


def _when(value: dt.datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if value else "-"


def _provenance(jobs: Sequence[Mapping[str, Any]], rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Where each number came from: one entry per job, then one per (model, configuration, seed) of the stored
    rows no job of the report produced (plain evaluations, rows imported without a job)."""
    out = []
    by_job: dict[str | None, list] = {}
    for r in rows:
        by_job.setdefault(r.get("job_id"), []).append(r)
    job_ids = set()
    for j in sorted(jobs, key=lambda j: (j["name"], str(j["config_hash"]), j["seed"])):
        job_ids.add(j["id"])
        mine = by_job.get(j["id"], [])
        timings = j.get("timings") or {}
        prov = timings.get("provenance") or {}
        wall = timings.get("seconds")
        if wall is None and j.get("started_at") and j.get("finished_at"):
            wall = (j["finished_at"] - j["started_at"]).total_seconds()
        if wall is None:
            wall = _wall_from_rows(mine)
        spec = dict(j.get("spec") or {})
        folder = j.get("output_dir")
        out.append({
            "label": f"{j['name']} s{j['seed']}", "model": j["name"], "kind": j["kind"], "status": j["status"],
            "id": j["id"][:8], "seed": j["seed"], "config_hash": j["config_hash"],
            "config": {k: v for k, v in spec.items() if k not in ("threads", "resources", "seed")},
            "git_commit": prov.get("git_commit") or _one(r.get("git_commit") for r in mine),
            "embedlab_version": prov.get("embedlab_version") or _one(r.get("embedlab_version") for r in mine),
            "packages": _packages(prov.get("packages")), "python": prov.get("python") or "not recorded",
            "machine": " / ".join(str(prov[k]) + (" CPUs" if k == "cpus" else "") for k in ("machine", "host", "cpus")
                                  if prov.get(k) is not None) or "not recorded",
            "data": _data(mine, spec.get("tasks") or ()), "wall": _seconds(wall), "wall_s": wall,
            # a queued job has no folder yet: not missing
            "output_dir": folder or "-",
            "folder_missing": bool(folder) and j["status"] != "queued" and not Path(folder).is_dir(),
            "finished": _when(j.get("finished_at")), "imported": bool(timings.get("imported")),
        })
    groups: dict[tuple, list] = {}
    for r in rows:
        if r.get("job_id") not in job_ids:
            groups.setdefault((r["model"], r.get("config_hash"), r.get("seed")), []).append(r)
    for (model, chash, seed), mine in sorted(groups.items(), key=lambda kv: (kv[0][0], str(kv[0][1]),
                                                                             str(kv[0][2]))):
        run_ids = list(dict.fromkeys(r["run_id"] for r in sorted(mine, key=lambda r: r["created_at"])))
        newest = max(mine, key=lambda r: r["created_at"])
        wall = _wall_from_rows(mine)
        out.append({
            "label": model + (f" s{seed}" if seed is not None else ""), "model": model, "kind": "evaluation",
            "status": _one(r.get("status") for r in mine),
            "id": run_ids[-1][:8] + (f" (+{len(run_ids) - 1} older)" if len(run_ids) > 1 else ""), "seed": seed,
            "config_hash": chash, "config": newest.get("config"),
            "git_commit": _one(r.get("git_commit") for r in mine),
            "embedlab_version": _one(r.get("embedlab_version") for r in mine), "packages": "not recorded",
            "python": "not recorded", "machine": "not recorded", "data": _data(mine), "wall": _seconds(wall),
            "wall_s": wall, "output_dir": "-", "folder_missing": False, "finished": _when(newest["created_at"]),
            "imported": False,
        })
    return out


def _provenance_view(prov: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The provenance as the page shows it: a table (one row per job / run), the package versions (each distinct
    set once, with the runs that used it) and the configurations (each config hash once, its JSON)."""
    table = {"title": "Provenance", "columns": ["run", "kind", "status", "id", "config", "git commit", "embedlab",
                                                "python", "machine", "wall time", "data", "output folder"],
             "rows": []}
    for p in prov:
        commit = p["git_commit"]
        table["rows"].append([
            _text(p["label"]), _text(p["kind"]), _text(p["status"]), _text(p["id"], code=True),
            {**_text(_short(p["config_hash"]), code=True), "title": p["config_hash"] or "-"},
            {**_text(commit[:12] if commit != "not recorded" else commit, code=commit != "not recorded"),
             "title": commit},
            _text(p["embedlab_version"]), _text(p["python"]), _text(p["machine"]), _text(p["wall"], num=True),
            _text(", ".join(p["data"]) or "-"),
            {**_text(p["output_dir"] + (" (gone)" if p["folder_missing"] else ""), code=p["output_dir"] != "-"),
             "warn": p["folder_missing"]}])
    packages: dict[str, list[str]] = {}
    for p in prov:
        packages.setdefault(p["packages"], []).append(p["label"])
    configs: dict[str, dict[str, Any]] = {}
    for p in prov:
        key = p["config_hash"] or "-"
        if key not in configs:
            configs[key] = {"hash": key, "short": _short(p["config_hash"]), "models": [],
                            "json": json.dumps(p["config"], indent=2, sort_keys=True) if p["config"] else "-"}
        if p["model"] not in configs[key]["models"]:
            configs[key]["models"].append(p["model"])
    groups = []
    for k, labels in packages.items():
        labels = list(dict.fromkeys(labels))
        groups.append({"packages": k, "runs": labels if len(labels) <= 12 else labels[:12] + [
            f"and {len(labels) - 12} more"]})
    return {"table": table, "packages": groups,
            "configs": list(configs.values())}


# -- outputs -----------------------------------------------------------------------------------------------------
def _csv(lb: Leaderboard) -> str:
    """The numbers of the tables, full precision: one row per (level, model, name); level = average | category |
    task; mean and std over seeds (std empty with one seed), n = seeds behind the number."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["level", "rank", "model", "config_hash", "name", "category", "mean", "std", "n", "seeds"])

    def num(x: float | None) -> str:
        return "" if x is None else repr(float(x))

    for e in lb.entries:
        rows = [("average", "average", "", e.average)]
        rows += [("category", c, c, e.categories.get(c)) for c in lb.categories]
        rows += [("task", t, lb.task_info[t]["category"], e.tasks.get(t)) for t in lb.tasks]
        for level, name, cat, s in rows:
            s = s or Stat((), ())
            w.writerow([level, e.rank, e.model, e.config_hash or "", name, cat, num(s.mean), num(s.std), s.n,
                        " ".join(str(x) for x in s.seeds)])
    return buf.getvalue()


def _jsonable(row: Mapping[str, Any]) -> dict[str, Any]:
    return {k: (v.isoformat() if isinstance(v, dt.datetime) else v) for k, v in row.items()}


def _results_json(lb: Leaderboard, meta: Mapping[str, Any], provenance: Sequence[Mapping[str, Any]],
                  notes: Sequence[str]) -> dict[str, Any]:
    return {
        "meta": dict(meta), "averaged_tasks": lb.averaged, "categories": lb.categories, "tasks": lb.task_info,
        "leaderboard": lb.overall_table(), "per_task": lb.task_table(), "per_category": lb.category_table(),
        "configurations": lb.config_table(), "notes": list(notes),
        "provenance": [{k: v for k, v in p.items()} for p in provenance],
        "rows": [_jsonable(r) for r in lb.rows],
    }


def _md_escape(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _md_table(table: Mapping[str, Any]) -> list[str]:
    cols = table["columns"]
    subs = table.get("subtitles")
    head = [f"{c} ({s})" if subs and s else str(c) for c, s in zip(cols, subs or [""] * len(cols))]
    num_cols = [any(row[i].get("num") for row in table["rows"]) for i in range(len(cols))]
    lines = ["| " + " | ".join(_md_escape(h) for h in head) + " |",
             "|" + "|".join("---:" if n else "---" for n in num_cols) + "|"]
    for row in table["rows"]:
        cells = []
        for c in row:
            text = _md_escape(c["text"])
            if c.get("code") and text != "-":
                text = f"`{text}`"
            cells.append(f"**{text}**" if c.get("best") else text)
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _how_to_read(meta: Mapping[str, Any]) -> list[str]:
    not_avg = meta["not_averaged"]
    return [
        f"All numbers: {meta['metric']} on the {meta['split']} split, on the display scale (x100 for correlations, "
        "nDCG and accuracies), mean ± std over seeds (std with ddof=1; one seed: the mean alone), 2 decimals; "
        "\"(n=k)\": only k seeds stand behind that cell. Of each (model, configuration, seed, task) the newest "
        "stored row counts.",
        "A configuration is a config hash (recipe, overrides, evaluation protocol). Each model is shown with its best "
        "configuration, chosen once over all averaged tasks: per seed the mean over those tasks (a seed lacking "
        "one does not count), then the mean over seeds; the highest wins (ties: more seeds, then the smaller "
        "hash). A configuration lacking an averaged task ranks below every complete one.",
        "Averaged tasks: " + ", ".join(meta["averaged"]) + "."
        + (f" Not averaged (not a higher-is-better percentage): {', '.join(not_avg)}." if not_avg else "")
        + " Bold: the best mean of a column.",
    ]


def _markdown(meta: Mapping[str, Any], tables: Mapping[str, Any], charts: Sequence[Chart],
              provenance: Sequence[Mapping[str, Any]], notes: Sequence[str]) -> str:
    chart = {c.name: c for c in charts}

    def figure(name: str) -> list[str]:
        if name not in chart:
            return []
        c = chart[name]
        return [f"![{c.title}](charts/{name}.svg)", "", f"*{c.caption}* ([PNG](charts/{name}.png))", ""]

    out = [f"# {meta['title']}", "",
           f"- experiment: {meta['experiment'] or 'all rows of the store'}"
           + (f", domain {meta['domain']}" if meta["domain"] else ""),
           f"- metric: `{meta['metric']}` on split `{meta['split']}`; categories: `{meta['category']}`",
           f"- {meta['n_models']} models, {meta['n_configs']} configurations, {meta['n_tasks']} tasks, "
           f"{meta['n_rows']} store rows, {meta['n_jobs']} jobs",
           f"- store: `{meta['store']}`; generated {meta['generated']}",
           "- downloads: [leaderboard.csv](leaderboard.csv), [results.json](results.json)", ""]
    if notes:
        out += ["> **Notes**", ">"] + [f"> - {_md_escape(n)}" for n in notes] + [""]
    out += ["## Leaderboard", ""] + _md_table(tables["overall"]) + [""] + figure("scores")
    out += ["## Per task", ""] + _md_table(tables["tasks"]) + [""]
    out += ["## Per category", ""] + _md_table(tables["categories"]) + [""] + figure("categories")
    if tables.get("metrics"):
        out += ["## Metrics", "", "Each model's chosen configuration; each column: metric (task, split)."] + [""] \
            + _md_table(tables["metrics"]) + [""]
    out += ["## Every configuration", ""] + _md_table(tables["configs"]) + [""]
    out += ["## Training curves", ""]
    if "loss" in chart or "dev" in chart:
        out += figure("loss") + figure("dev")
    else:
        out += ["No training logs (train_log.jsonl / dev_log.jsonl) in the jobs' output folders.", ""]
    view = _provenance_view(provenance)
    out += ["## Provenance", "", "One row per job (or per model, configuration and seed of stored rows no job of "
            "this report produced).", ""] + _md_table(view["table"]) + ["", "**Package versions**", ""]
    out += [f"- {_md_escape(g['packages'])}: {_md_escape(', '.join(g['runs']))}" for g in view["packages"]] + [""]
    out += ["**Configurations**", ""]
    for c in view["configs"]:
        out += [f"<details><summary><code>{c['short']}</code>: {_md_escape(', '.join(c['models']))}</summary>", "",
                f"config hash `{c['hash']}`", "", "```json", c["json"], "```", "", "</details>", ""]
    out += ["## How to read this report", ""] + [f"- {x}" for x in _how_to_read(meta)] + [""]
    return "\n".join(out)


def _html(meta: Mapping[str, Any], tables: Mapping[str, Any], charts: Sequence[Chart],
          provenance: Sequence[Mapping[str, Any]], notes: Sequence[str]) -> str:
    import jinja2
    from markupsafe import Markup

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    charts_by_name = {c.name: {"title": c.title, "caption": c.caption, "svg": Markup(c.svg), "name": c.name}
                      for c in charts}
    return env.get_template("report.html.j2").render(meta=meta, tables=tables, charts=charts_by_name,
                                                     provenance=_provenance_view(provenance), notes=notes,
                                                     how_to_read=_how_to_read(meta))
