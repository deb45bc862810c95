"""Training time of finished run folders, split into optimizer steps and the rest (dev scoring, checkpoints).

An experiment table's "train min" is the wall time of the training call, which includes scoring the dev tasks every
``eval_every`` steps — the same cost for a one-pass and a two-pass method, so it hides the difference an equal-time
comparison is about. This prints, per run folder:

- ``wall min``: train_time.json (the steps this process trained; "resumed" when it continued a checkpoint);
- ``dev min``: the dev scoring time from dev_log.jsonl (runs trained since 2026-12-04 log it; "-" before);
- ``step min``: steps × examples per step / the median logged rate. The logged rate covers each ``log_every`` window,
  and the windows that contain a dev evaluation or a checkpoint are slow, so the median is the rate of plain steps.
  Examples per step is the mean of the sampler's batch sizes: exact for one-task recipes (CSE-SFP, SimCSE),
  approximate for multi-task ones.

It reads the folders only; it does not time anything itself (benchmarks/cse_sfp_cost.py does, in one process).

    .venv/bin/python experiments/step_minutes.py runs/experiments/cse_sfp_full/*-s*
"""
from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path


def _jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def summary(folder: Path) -> dict | None:
    """None for a folder that has no training log (an untrained or fused row)."""
    log = [r for r in _jsonl(folder / "train_log.jsonl") if r.get("examples_per_s")]
    if not log:
        return None
    try:
        sizes = json.loads((folder / "recipe.json").read_text(encoding="utf-8"))["sampler"]["batch_size"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise SystemExit(f"{folder / 'recipe.json'}: expected a run's recipe with sampler.batch_size ({e!r})")
    per_step = sum(sizes.values()) / max(len(sizes), 1)
    steps = log[-1]["step"]
    rate = statistics.median(r["examples_per_s"] for r in log)
    timing = json.loads((folder / "train_time.json").read_text()) if (folder / "train_time.json").is_file() else {}
    dev = [r["seconds"] for r in _jsonl(folder / "dev_log.jsonl") if "seconds" in r]
    return {"run": folder.name, "steps": steps, "finished": bool(timing),
            "wall_min": None if not timing or timing.get("resumed_from") else round(timing["seconds"] / 60, 1),
            "dev_min": round(sum(dev) / 60, 1) if dev else None,
            "step_min": round(steps * per_step / rate / 60, 1), "median_examples_per_s": round(rate, 2)}


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__)
        return 2
    print("| run | steps | wall min | dev min | step min | examples/s (median) |")
    print("|---|---|---|---|---|---|")
    for arg in argv:
        s = summary(Path(arg))
        if s is None:
            continue
        wall = s["wall_min"] if s["wall_min"] is not None else ("resumed" if s["finished"] else "running")
        dev = "-" if s["dev_min"] is None else s["dev_min"]
        print(f"| {s['run']} | {s['steps']} | {wall} | {dev} | {s['step_min']} | {s['median_examples_per_s']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
