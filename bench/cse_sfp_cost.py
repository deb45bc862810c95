"""CSE-SFP's cost claim: one forward pass per batch vs the two-pass baseline, at equal batch size and sequence length.

Both arms are embedlab's trainer on the same model, template, sentences (the first B·steps lines of the shared
unlabelled file, each cut to 32 tokens before templating), LoRA settings and precision; they differ only in the
objective: ``cse_sfp`` (one forward pass, Rep2 vs Rep1) vs ``simcse_prompt`` (two forward passes with LoRA dropout,
view 1 vs view 2). Per batch size B, each arm runs in its own subprocess for --warmup + --steps optimizer steps:
  * time: mean wall time of the last --steps steps (from the trainer's per-step log, log_every=1);
  * memory: CPU — peak RSS during those steps minus the RSS before them (sampled every 5 ms; after the warm-up, so
    weights and optimizer state are already there: what remains is activations and gradients); CUDA —
    torch.cuda.max_memory_allocated over the same steps minus the memory allocated before them.
Ratios single/two-pass are printed (the claim to test: ≤ 0.6 for both).

    .venv/bin/python bench/cse_sfp_cost.py [--batch-sizes 16,32,64] [--steps 4] [--warmup 2] [--threads 2]
        [--model HuggingFaceTB/SmolLM2-135M-Instruct] [--full] [--out docs/results/cse_sfp_cost.json]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from peak_rss import PeakRSS  # noqa: E402


def worker(objective: str, batch: int, args) -> dict:
    import torch

    from embedlab.config import load_recipe
    from embedlab.train.trainer import Trainer

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        sentences = Path(tmp) / "sentences.txt"
        src = Path(os.environ.get("EMBEDLAB_DATA", ROOT.parent / "shared" / "data")) / "unsup" / "sentences.txt"
        with open(src, encoding="utf-8") as f, open(sentences, "w", encoding="utf-8") as out:
            for _, line in zip(range(batch * (args.warmup + args.steps)), f):
                out.write(line)
        overrides = [f"model.name={args.model}", f"output_dir={tmp}/out", f"sampler.batch_size={{unsup: {batch}}}",
                     f"data.sources=[{{name: s, path: {sentences}, task: unsup}}]",
                     f"train.max_steps={args.warmup + args.steps}", "train.log_every=1", "train.save_every=null",
                     "train.eval_every=null", "train.select_on=[]", f"train.mixed_precision={args.precision}",
                     "train.warmup_ratio=0.0"]
        if args.full:
            overrides += ["model.lora=null", "model.dropout=0.1"]
        recipe = load_recipe(ROOT / "recipes" / f"{objective}.yaml", overrides)
        trainer = Trainer(recipe, show_progress=False)
        trainer.setup()
        # Steps only: the final save (a merged copy of the model) would dominate the memory window of both arms.
        trainer._save = lambda: None
        trainer.model.save = lambda *a, **k: None
        cuda = torch.cuda.is_available()
        if cuda:
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        trainer.train(stop_after=args.warmup)  # warm-up steps: optimizer state allocated, caches filled
        if cuda:
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        with PeakRSS() as rss:
            trainer.train()
        log = [json.loads(line) for line in open(Path(tmp) / "out" / "train_log.jsonl")]
        times = [batch / r["examples_per_s"] for r in log][-args.steps:]
        return {"objective": objective, "batch": batch, "steps": len(times),
                "seconds_per_step": sum(times) / len(times),
                "train_memory_mb": ((torch.cuda.max_memory_allocated() - base) if cuda else (rss.peak - rss.start))
                / 2**20, "memory_kind": "cuda_max_allocated" if cuda else "cpu_peak_rss_growth",
                "device": torch.cuda.get_device_name() if cuda else platform.machine()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch-sizes", default="16,32,64")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model", default="HuggingFaceTB/SmolLM2-135M-Instruct")
    ap.add_argument("--precision", default="bf16")
    ap.add_argument("--full", action="store_true", help="full fine-tuning (two-pass noise: model dropout 0.1)")
    ap.add_argument("--out", default=str(ROOT / "docs" / "results" / "cse_sfp_cost.json"))
    ap.add_argument("--worker", nargs=2, metavar=("OBJECTIVE", "BATCH"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker[0], int(args.worker[1]), args)))
        return
    rows = []
    passthrough = ["--steps", str(args.steps), "--warmup", str(args.warmup), "--threads", str(args.threads),
                   "--model", args.model, "--precision", args.precision] + (["--full"] if args.full else [])
    for batch in [int(b) for b in args.batch_sizes.split(",")]:
        for objective in ("cse_sfp", "simcse_prompt"):
            done = subprocess.run([sys.executable, __file__, "--worker", objective, str(batch), *passthrough],
                                  capture_output=True, text=True)
            if done.returncode != 0:
                sys.exit(f"worker {objective} B={batch} failed:\n{done.stderr[-3000:]}")
            row = json.loads(done.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(f"B={batch:4d} {objective:14s} {row['seconds_per_step']:7.2f} s/step  "
                  f"{row['train_memory_mb']:8.0f} MB ({row['memory_kind']})", flush=True)
    summary = {}
    print(f"\n{'B':>4s} {'single s':>9s} {'two s':>8s} {'time':>6s} {'single MB':>10s} {'two MB':>8s} {'mem':>6s}")
    for batch in sorted({r["batch"] for r in rows}):
        one, two = (next(r for r in rows if (r["objective"], r["batch"]) == (o, batch))
                    for o in ("cse_sfp", "simcse_prompt"))
        t, m = one["seconds_per_step"] / two["seconds_per_step"], one["train_memory_mb"] / two["train_memory_mb"]
        summary[str(batch)] = {"time_ratio": t, "memory_ratio": m}
        print(f"{batch:4d} {one['seconds_per_step']:9.2f} {two['seconds_per_step']:8.2f} {t:6.2f} "
              f"{one['train_memory_mb']:10.0f} {two['train_memory_mb']:8.0f} {m:6.2f}")
    import torch

    from embedlab import __version__
    from embedlab.atomic import write_json

    write_json(Path(args.out), {"benchmark": "cse_sfp_cost", "model": args.model, "precision": args.precision,
                                "lora": not args.full, "threads": args.threads, "steps": args.steps,
                                "warmup": args.warmup, "embedlab": __version__, "torch": torch.__version__,
                                "date": time.strftime("%Y-%m-%d"), "rows": rows, "summary": summary})
    print(f"\nwritten: {args.out}")


if __name__ == "__main__":
    main()
