"""Training-step throughput and peak memory: embedlab's CoDiEmb trainer vs sentence-transformers' trainer.

Same model (all-MiniLM-L6-v2, max_length 128), same batches sizes and the same number of texts per step, each task
on its own so the IR/STS mix cannot differ between tools:

- IR:  32 NLI queries, each with 1 positive and 1 hard negative (96 texts a step). embedlab: the CoDiEmb multi-positive
       InfoNCE (P=1, N=1); sentence-transformers: MultipleNegativesRankingLoss on (anchor, positive, negative).
- STS: 32 STS-B train pairs (64 texts a step). embedlab: the CoDiEmb STS losses (Pearson, Rank-KL, PRO and the
       mid-layer InfoNCE, which needs the hidden states of a middle layer); sentence-transformers: CoSENTLoss.

Both tools see the same batches: sentence-transformers' trainer is given a batch sampler that replays embedlab's
sampler order (the same example indices, step by step), so padded lengths match and the ratio compares the steps,
not the luck of the draw. Both include tokenisation, forward, backward, clipping and the AdamW step. Each (tool, task,
precision) runs in its own subprocess (so peak RSS is that configuration's alone: ru_maxrss of the process, which
includes Python, torch and the model) for --warmup + --steps steps; throughput is taken over the last --steps only, from
the per-step wall times (embedlab: its train_log.jsonl with log_every=1; sentence-transformers: a TrainerCallback taking
the time between consecutive step ends; both cover fetching and tokenising the batch, and exclude setup and saving).

    .venv/bin/python benchmarks/train_step.py [--steps 12] [--warmup 3] [--threads 2] \
        [--out docs/results/train_step.json]

Needs the training files (`embedlab convert --names nli,stsb-train --out runs/train-data`; converted if missing).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TASKS = {
    "ir": ["data.sources=[{name: nli, path: nli.jsonl, task: ir, max_examples: 2000}]", "data.n_positives=1",
           "data.n_negatives=1"],
    "sts": ["data.sources=[{name: stsb-train, path: stsb-train.jsonl, task: sts, score_range: [0, 5]}]"],
}


def _overrides(task: str, precision: str, steps: int, threads: int, data_root: str, out: str) -> list[str]:
    return [*TASKS[task], f"data.root={data_root}", f"output_dir={out}", "sampler.batch_size={ir: 32, sts: 32}",
            f"train.max_steps={steps}", "train.log_every=1", "train.save_every=null", "train.eval_every=null",
            "train.select_on=[]", f"train.mixed_precision={precision}", f"train.num_threads={threads}",
            "train.warmup_ratio=0.0"]


class ReplayBatches:
    """A ``batch_sampler`` callable for ST's trainer that yields fixed index batches (embedlab's order). Module-level
    so the trainer can pickle its arguments."""

    def __init__(self, batches: list[list[int]]):
        self.batches = batches

    def __call__(self, dataset, batch_size: int, drop_last: bool, valid_label_columns=None, generator=None, seed=0):
        return _Replay(self.batches)


class _Replay:
    def __init__(self, batches: list[list[int]]):
        self.batches, self.batch_size, self.drop_last = batches, len(batches[0]), True

    def __iter__(self):
        return (list(b) for b in self.batches)

    def __len__(self) -> int:
        return len(self.batches)

    def set_epoch(self, epoch: int) -> None:
        pass


def embedlab_batches(recipe) -> list[list[int]]:
    """The example indices of every step of epoch 0, as embedlab's trainer draws them (one source per task here)."""
    from embedlab.train.steps import make_sampler
    from embedlab.train.trainer import load_recipe_sources

    sampler = make_sampler(recipe, load_recipe_sources(recipe), 0, 1)
    return [[i for _, i in batch] for batch in sampler.global_batches(0)]


def worker(tool: str, task: str, precision: str, steps: int, warmup: int, threads: int, data_root: str) -> dict:
    from embedlab.config import load_recipe

    with tempfile.TemporaryDirectory() as tmp:
        overrides = _overrides(task, precision, warmup + steps, threads, data_root, tmp)
        if tool == "embedlab":
            from embedlab.train.trainer import Trainer

            recipe = load_recipe(ROOT / "recipes" / "codiemb.yaml", overrides)
            Trainer(recipe, show_progress=False).train()
            log = [json.loads(line) for line in open(Path(tmp) / "train_log.jsonl")]
            n = {"ir": 32, "sts": 32}[task]
            times = [n / r["examples_per_s"] for r in log]  # log_every=1: one step per record
        else:
            from transformers import TrainerCallback

            from embedlab.train.st_peer import train_st_peer

            class StepTimer(TrainerCallback):
                """Wall time between consecutive step ends: like embedlab's log, it covers the whole cycle
                (fetching and tokenising the batch, forward, backward, optimizer step)."""

                def __init__(self):
                    self.times: list[float] = []

                def on_train_begin(self, args, state, control, **kw):
                    self.last = time.perf_counter()

                def on_step_end(self, args, state, control, **kw):
                    now = time.perf_counter()
                    self.times.append(now - self.last)
                    self.last = now

            timer = StepTimer()
            recipe = load_recipe(ROOT / "recipes" / "st_peer.yaml", overrides)
            train_st_peer(recipe, show_progress=False, callbacks=[timer],
                          batch_sampler=ReplayBatches(embedlab_batches(recipe)))
            times = timer.times
    measured = times[warmup:]
    examples = 32 * len(measured)
    return {"tool": tool, "task": task, "precision": precision, "steps_measured": len(measured),
            "seconds": sum(measured), "examples_per_s": examples / sum(measured),
            "texts_per_step": 96 if task == "ir" else 64,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--data-root", default=str(ROOT / "runs" / "train-data"))
    ap.add_argument("--out", default=str(ROOT / "docs" / "results" / "train_step.json"))
    ap.add_argument("--worker", nargs=3, metavar=("TOOL", "TASK", "PRECISION"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(*args.worker, args.steps, args.warmup, args.threads, args.data_root)))
        return
    root = Path(args.data_root)
    if not ((root / "nli.jsonl").is_file() and (root / "stsb-train.jsonl").is_file()):
        from embedlab.prep.convert import convert_all

        convert_all(root, names=["nli", "stsb-train"])
    rows = []
    for precision in ("fp32", "bf16"):
        for task in ("ir", "sts"):
            for tool in ("sentence-transformers", "embedlab"):
                cmd = [sys.executable, __file__, "--worker", tool, task, precision, "--steps", str(args.steps),
                       "--warmup", str(args.warmup), "--threads", str(args.threads), "--data-root", str(root)]
                done = subprocess.run(cmd, capture_output=True, text=True)
                if done.returncode != 0:
                    sys.exit(f"worker {tool} {task} {precision} failed:\n{done.stderr[-3000:]}")
                row = json.loads(done.stdout.strip().splitlines()[-1])
                rows.append(row)
                print(f"{precision} {task:3s} {tool:21s} {row['examples_per_s']:7.2f} ex/s  "
                      f"peak RSS {row['peak_rss_mb']:6.0f} MB", flush=True)
    summary = {}
    print(f"\n{'precision':9s} {'task':4s} {'ST ex/s':>8s} {'embedlab':>9s} {'ratio':>6s} {'ST MB':>7s} "
          f"{'ours MB':>8s}")
    for precision in ("fp32", "bf16"):
        for task in ("ir", "sts"):
            st, ours = (next(r for r in rows if (r["tool"], r["task"], r["precision"]) == (t, task, precision))
                        for t in ("sentence-transformers", "embedlab"))
            ratio = ours["examples_per_s"] / st["examples_per_s"]
            summary[f"{task}_{precision}"] = {"ratio": ratio, "memory_ratio": ours["peak_rss_mb"] / st["peak_rss_mb"]}
            print(f"{precision:9s} {task:4s} {st['examples_per_s']:8.2f} {ours['examples_per_s']:9.2f} {ratio:6.2f} "
                  f"{st['peak_rss_mb']:7.0f} {ours['peak_rss_mb']:8.0f}")
    import sentence_transformers
    import torch

    from embedlab import __version__
    from embedlab.atomic import write_json

    write_json(Path(args.out), {
        "benchmark": "train_step", "model": "sentence-transformers/all-MiniLM-L6-v2", "max_length": 128,
        "batch": 32, "steps": args.steps, "warmup": args.warmup, "threads": args.threads,
        "embedlab": __version__, "torch": torch.__version__, "sentence_transformers": sentence_transformers.__version__,
        "cpu": platform.machine(), "date": time.strftime("%Y-%m-%d"), "rows": rows, "summary": summary})
    print(f"\nwritten: {args.out}")


if __name__ == "__main__":
    main()
