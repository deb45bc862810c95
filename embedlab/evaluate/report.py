"""Markdown reports: one model's evaluation (a results table plus the settings and data sizes behind it), or a
before/after comparison of two models on the same tasks (the demo's: base model vs the model trained from it).

It renders what the runner returns (TaskResult objects); it computes no scores and reads no data files. The report is
written atomically so an interrupted run leaves the previous report intact.
"""
from __future__ import annotations

import datetime as _dt
import platform
from pathlib import Path
from typing import Sequence

import torch

from .. import __version__
from ..atomic import write_text

# The published MTEB numbers for the bundled model, shown next to ours as a sanity check.
REFERENCE = {
    "sentence-transformers/all-MiniLM-L6-v2": {"stsb": 82.03, "sts12": 72.37, "sts13": 80.60, "scifact": 64.51},
}

_COLUMNS = {
    "sts": [("cosine_spearman", "Spearman"), ("cosine_pearson", "Pearson")],
    "retrieval": [("ndcg_at_10", "nDCG@10"), ("mrr_at_10", "MRR@10"), ("recall_at_100", "R@100")],
}


def render_markdown(model_label: str, results: Sequence, settings: dict, title: str = "embedlab evaluation") -> str:
    ref = REFERENCE.get(model_label, {})
    lines = [f"# {title}", "",
             f"- model: `{model_label}`",
             f"- embedlab {__version__}, torch {torch.__version__}, {platform.machine()}, "
             f"{torch.get_num_threads()} threads",
             "- settings: " + ", ".join(f"{k}={v}" for k, v in settings.items()),
             f"- written {_dt.datetime.now(_dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}", "",
             "| task | split | main score | other | published | size | seconds |",
             "|---|---|---:|---|---:|---|---:|"]
    for r in results:
        t = r.task
        other = ", ".join(f"{label} {r.display(key):.2f}" for key, label in _COLUMNS.get(t.type, [])
                          if key in r.scores and key != "main_score")
        if t.type == "geometry":
            other = ", ".join(f"{k} {v:.3f}" for k, v in r.scores.items() if k != "main_score")
        size = ", ".join(f"{k} {v}" for k, v in r.details.items() if isinstance(v, int))
        published = f"{ref[t.name]:.2f}" if t.name in ref else ""
        lines.append(f"| {t.name} | {t.split} | {r.display():.2f} | {other} | {published} | {size} | "
                     f"{r.evaluation_time:.1f} |")
    lines += ["", "Main score: Spearman of cosine x100 (STS), nDCG@10 x100 (retrieval), uniformity (geometry).",
              "MTEB-format JSON for each task sits next to this report."]
    return "\n".join(lines) + "\n"


def write_report(path: str | Path, model_label: str, results: Sequence, settings: dict, **kwargs) -> Path:
    return write_text(path, render_markdown(model_label, results, settings, **kwargs))


def _main_score(r) -> float:
    return r.display()


def render_comparison(base_label: str, before: Sequence, after_label: str, after: Sequence, settings: dict,
                      training: dict, title: str = "embedlab demo: CoDiEmb training, before and after") -> str:
    """Per task: the base model's score, the trained model's, the difference, and MTEB's published base score;
    then the STS / IR averages, the training run behind the second column and both models' geometry."""
    ref = REFERENCE.get(base_label, {})
    after_by = {r.task.name: r for r in after}
    lines = [f"# {title}", "",
             f"- base model: `{base_label}`; trained model: `{after_label}`",
             f"- embedlab {__version__}, torch {torch.__version__}, {platform.machine()}, "
             f"{torch.get_num_threads()} threads",
             "- evaluation: " + ", ".join(f"{k}={v}" for k, v in settings.items()),
             "- training: " + ", ".join(f"{k}={v}" for k, v in training.items()),
             f"- written {_dt.datetime.now(_dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}", "",
             f"| task | split | {base_label.split('/')[-1]} | {after_label} | Δ | published (base) |",
             "|---|---|---:|---:|---:|---:|"]
    groups: dict[str, tuple[list[float], list[float]]] = {"sts": ([], []), "retrieval": ([], [])}
    geometry = []
    for b in before:
        a = after_by.get(b.task.name)
        if b.task.type == "geometry":
            geometry.append((b, a))
            continue
        if a is None:
            continue
        x, y = _main_score(b), _main_score(a)
        if b.task.type in groups:
            groups[b.task.type][0].append(x)
            groups[b.task.type][1].append(y)
        published = f"{ref[b.task.name]:.2f}" if b.task.name in ref else ""
        lines.append(f"| {b.task.name} | {b.task.split} | {x:.2f} | {y:.2f} | {y - x:+.2f} | {published} |")
    for kind, label in (("sts", "STS average"), ("retrieval", "IR average")):
        xs, ys = groups[kind]
        if xs:
            mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
            lines.append(f"| **{label}** | | **{mx:.2f}** | **{my:.2f}** | **{my - mx:+.2f}** | |")
    for b, a in geometry:
        lines += ["", "Geometry (STS-B test sentences; see docs/evaluation.md):", "",
                  "| metric | " + base_label.split("/")[-1] + f" | {after_label} |", "|---|---:|---:|"]
        for key, value in b.scores.items():
            if key == "main_score":
                continue
            other = a.scores.get(key) if a is not None else None
            lines.append(f"| {key} | {value:.3f} | {other:.3f} |" if other is not None
                         else f"| {key} | {value:.3f} | |")
    lines += ["", "Main score: Spearman of cosine x100 (STS), nDCG@10 x100 (retrieval). One training run (one seed) "
              "at demo size: see docs/codiemb.md for the comparison with the baselines over seeds.",
              "Published: MTEB's fp32 scores of the base model; in fp32 (`--fp32`) our base column equals them, "
              "with bf16 autocast it differs by a few hundredths.",
              "MTEB-format JSON for each model sits under `<label>/json` next to this report."]
    return "\n".join(lines) + "\n"


def write_comparison_report(path: str | Path, base_label: str, before: Sequence, after_label: str, after: Sequence,
                            settings: dict, training: dict) -> Path:
    return write_text(path, render_comparison(base_label, before, after_label, after, settings, training))
