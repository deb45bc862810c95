"""CSE-SFP's cost claim: one forward pass per batch vs the two-pass baseline, at equal batch size and sequence length.

Both arms are embedlab's trainer on the same model, template, sentences (the first B·steps lines of the shared
unlabelled file, each cut to 32 tokens before templating), LoRA settings and precision; they differ only in the
objective: ``cse_sfp`` (one forward pass, Rep2 vs Rep1) vs ``simcse_prompt`` (two forward passes with LoRA dropout,
view 1 vs view 2). Per batch size B, each arm runs in its own subprocess for --warmup + --steps optimizer steps:
  * time: mean wall time of the last --steps steps (from the trainer's per-step log, log_every=1);
  * memory: the activation memory of a step — the bytes autograd saves for backward during the step's forward
    pass(es), counted once per storage (saved_tensors_hooks; parameters and autocast's bf16 copies of 2-D weights
    — recognised by shape — excluded) — which is what a second pass
    doubles; also the process's RSS growth over the whole run from the end of setup (weights excluded; optimizer
    state, gradients and the allocator's reserve included, so it dilutes the difference) and, on CUDA,
    torch.cuda.max_memory_allocated above the post-setup allocation.
Ratios single/two-pass are printed (the claim to test: ≤ 0.6 for both).

    .venv/bin/python benchmarks/cse_sfp_cost.py [--batch-sizes 16,32,64] [--steps 4] [--warmup 2] [--threads 2]
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

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from peak_rss import PeakRSS  # noqa: E402


class SavedTensors:
    """Bytes autograd keeps for backward during one step's forward pass(es) — the activation memory — counted once
    per storage through ``torch.autograd.graph.saved_tensors_hooks``; parameters (saved by matmuls) are excluded."""

    def __init__(self, params):
        params = list(params)
        self.param_ptrs = {p.data_ptr() for p in params}
        # bf16 autocast saves its cast copies of the weights (shared by both passes of a step): not activations.
        self.weight_shapes = {tuple(p.shape) for p in params if p.dim() == 2}
        self.peak = 0

    def __call__(self, fn):
        def wrapped(*args, **kwargs):
            seen: dict[int, int] = {}

            def pack(t):
                ptr = t.untyped_storage().data_ptr()
                cast_weight = t.dim() == 2 and t.dtype != torch.float32 and tuple(t.shape) in self.weight_shapes
                if ptr not in self.param_ptrs and not cast_weight:
                    seen[ptr] = t.untyped_storage().nbytes()
                return t

            with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                out = fn(*args, **kwargs)
            self.peak = max(self.peak, sum(seen.values()))
            return out

        return wrapped


def worker(objective: str, batch: int, args) -> dict:
    import embedlab.train.trainer as trainer_module
    from embedlab.config import load_recipe

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
        trainer = trainer_module.Trainer(recipe, show_progress=False)
        trainer.setup()
        # Steps only: the final save (a merged copy of the model) would dominate the memory window of both arms.
        trainer._save = lambda: None
        trainer.model.save = lambda *a, **k: None
        saved = SavedTensors(trainer.model.parameters())
        trainer_module.run_step = saved(trainer_module.run_step)
        cuda = torch.cuda.is_available()
        if cuda:
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        with PeakRSS() as rss:  # warm-up included: optimizer state is allocated alike in both arms
            trainer.train()
        log = [json.loads(line) for line in open(Path(tmp) / "out" / "train_log.jsonl")]
        times = [batch / r["examples_per_s"] for r in log][-args.steps:]
        row = {"objective": objective, "batch": batch, "steps": len(times),
               "seconds_per_step": sum(times) / len(times), "activation_mb": saved.peak / 2**20,
               "rss_growth_mb": rss.added_mb, "device": torch.cuda.get_device_name() if cuda else platform.machine()}
        if cuda:
            row["cuda_peak_mb"] = (torch.cuda.max_memory_allocated() - base) / 2**20
        return row


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
            print(f"B={batch:4d} {objective:14s} {row['seconds_per_step']:7.2f} s/step  activations "
                  f"{row['activation_mb']:7.0f} MB  RSS growth {row['rss_growth_mb']:6.0f} MB", flush=True)
    summary = {}
    print(f"\n{'B':>4s} {'single s':>9s} {'two s':>8s} {'time':>6s} {'single act':>10s} {'two act':>8s} {'act':>6s}")
    for batch in sorted({r["batch"] for r in rows}):
        one, two = (next(r for r in rows if (r["objective"], r["batch"]) == (o, batch))
                    for o in ("cse_sfp", "simcse_prompt"))
        t, m = one["seconds_per_step"] / two["seconds_per_step"], one["activation_mb"] / two["activation_mb"]
        rss = one["rss_growth_mb"] / max(two["rss_growth_mb"], 1e-9)
        summary[str(batch)] = {"time_ratio": t, "activation_ratio": m, "rss_growth_ratio": rss}
        print(f"{batch:4d} {one['seconds_per_step']:9.2f} {two['seconds_per_step']:8.2f} {t:6.2f} "
              f"{one['activation_mb']:10.0f} {two['activation_mb']:8.0f} {m:6.2f}   RSS growth ratio {rss:.2f}")
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
