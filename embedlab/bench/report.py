"""Markdown report of one or more evaluation runs: a results table plus the settings and data sizes behind it.

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
        scale = 100.0 if t.type in ("sts", "retrieval") else 1.0
        other = ", ".join(f"{label} {r.scores[key] * scale:.2f}" for key, label in _COLUMNS.get(t.type, [])
                          if key in r.scores and key != "main_score")
        if t.type == "geometry":
            other = ", ".join(f"{k} {v:.3f}" for k, v in r.scores.items() if k != "main_score")
        size = ", ".join(f"{k} {v}" for k, v in r.details.items() if isinstance(v, int))
        published = f"{ref[t.name]:.2f}" if t.name in ref else ""
        lines.append(f"| {t.name} | {t.split} | {r.main_score * scale:.2f} | {other} | {published} | {size} | "
                     f"{r.evaluation_time:.1f} |")
    lines += ["", "Main score: Spearman of cosine x100 (STS), nDCG@10 x100 (retrieval), uniformity (geometry).",
              "MTEB-format JSON for each task sits next to this report."]
    return "\n".join(lines) + "\n"


def write_report(path: str | Path, model_label: str, results: Sequence, settings: dict, **kwargs) -> Path:
    return write_text(path, render_markdown(model_label, results, settings, **kwargs))
