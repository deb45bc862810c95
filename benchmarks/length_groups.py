"""Training-step time with length-grouped embedding (embedlab/train/steps.py ``_embed``) against one padded batch per
text group — the way embedlab trained before 2026-12-04 and the way sentence-transformers pads each column.

The batches are experiments/codiemb_full.yaml's (all-MiniLM-L6-v2, the full training mix, batch 32, max length 256,
its common overrides): the naive baseline's mixed batches, where a few 256-token SciFact abstracts among short NLI
and STS sentences used to pad every text of the group to 256, and CoDiEmb's single-task batches, where lengths are
already similar. The same batches run both ways, interleaved (grouped, then one padded batch, per batch), in one
process: forward, loss and backward (no optimizer step), in train mode, fp32 and bf16 autocast. Reported per
(objective, precision): median seconds per step each way, the ratio, padded tokens per step each way; and the
largest loss difference between the two ways in eval mode on the first two measured batches (no dropout; only
float rounding may differ).

    .venv/bin/python benchmarks/length_groups.py [--steps 8] [--threads 2] [--out docs/results/length_groups.json]

Needs runs/train-data (experiments/codiemb_full.yaml's header says how to make it).
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ONE_PADDED_BATCH = 10 ** 12  # an overhead no split can pay for: every text group is one padded batch


def _measure(recipe_path: str, overrides: list[str], steps: int, precision: str) -> dict:
    import torch

    from embedlab.config import load_recipe
    from embedlab.text import Embedder
    from embedlab.train import steps as train_steps
    from embedlab.train.steps import StepContext, make_sampler, run_step
    from embedlab.train.trainer import load_recipe_sources

    recipe = load_recipe(recipe_path, overrides)
    sources = load_recipe_sources(recipe)
    model = Embedder.load(recipe.model.name, max_length=recipe.model.max_length)
    ctx = StepContext(recipe=recipe, model=model, sources=sources, device=torch.device("cpu"))
    tokens: list[int] = []
    original = Embedder.tokenize_groups

    def counting(self, *a, **kw):  # padded tokens of every group this step embeds
        out = original(self, *a, **kw)
        tokens.append(sum(int(f["input_ids"].numel()) for _, f in out))
        return out

    Embedder.tokenize_groups = counting
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")
    sampler = iter(make_sampler(recipe, sources, rank=0, world=1))
    batches = [next(sampler) for _ in range(steps + 1)]  # the first one warms up
    times = {"grouped": [], "one padded batch": []}
    padded = {"grouped": [], "one padded batch": []}

    def step(batch, i, overhead) -> tuple[float, int, float]:
        train_steps.LENGTH_GROUP_OVERHEAD_TOKENS = overhead
        tokens.clear()
        model.zero_grad(set_to_none=True)
        t0 = time.perf_counter()
        with autocast:
            result = run_step(ctx, batch, step=i)
        result.loss.backward()
        elapsed = time.perf_counter() - t0
        return elapsed, sum(tokens), float(result.loss.detach())

    default = train_steps.LENGTH_GROUP_OVERHEAD_TOKENS
    try:
        model.train(True)
        for i, batch in enumerate(batches):
            for way, overhead in (("grouped", default), ("one padded batch", ONE_PADDED_BATCH)):
                elapsed, n_tokens, _ = step(batch, i, overhead)
                if i:
                    times[way].append(elapsed)
                    padded[way].append(n_tokens)
            print(f"  {Path(recipe_path).stem} {precision} step {i}: grouped {times['grouped'][-1] if i else 0:.2f} s, "
                  f"one padded batch {times['one padded batch'][-1] if i else 0:.2f} s", flush=True)
        model.train(False)
        loss_diff = max(abs(step(b, i, default)[2] - step(b, i, ONE_PADDED_BATCH)[2])
                        for i, b in enumerate(batches[1:3], start=1))
    finally:
        train_steps.LENGTH_GROUP_OVERHEAD_TOKENS = default
        Embedder.tokenize_groups = original
    med = {way: statistics.median(t) for way, t in times.items()}
    return {"seconds_per_step": med, "speedup": med["one padded batch"] / med["grouped"],
            "padded_tokens_per_step": {way: statistics.mean(t) for way, t in padded.items()},
            "max_abs_loss_difference_eval_mode": loss_diff, "steps": steps, "seconds_each": times}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(ROOT / "docs" / "results" / "length_groups.json"))
    args = parser.parse_args()
    import torch
    import yaml

    from embedlab.atomic import write_json

    torch.set_num_threads(args.threads)
    spec = yaml.safe_load((ROOT / "experiments" / "codiemb_full.yaml").read_text())
    data = ROOT / "runs" / "train-data"
    if not (data / "scifact-mined.jsonl").is_file():
        raise SystemExit(f"{data}/scifact-mined.jsonl is missing: see experiments/codiemb_full.yaml's header")
    overrides = [*spec["common_overrides"], f"data.root={data}", "seed=49", "output_dir=runs/bench-length-groups"]
    results = {}
    for recipe in ("recipes/naive.yaml", "recipes/codiemb.yaml"):
        for precision in ("bf16", "fp32"):
            r = _measure(str(ROOT / recipe), overrides, args.steps, precision)
            results[f"{Path(recipe).stem} {precision}"] = r
            s = r["seconds_per_step"]
            t = r["padded_tokens_per_step"]
            diff = r["max_abs_loss_difference_eval_mode"]
            print(f"{Path(recipe).stem:8s} {precision}: grouped {s['grouped']:.2f} s/step vs one padded batch "
                  f"{s['one padded batch']:.2f} s/step = {r['speedup']:.2f}x; padded tokens {t['grouped']:.0f} vs "
                  f"{t['one padded batch']:.0f}; eval-mode loss difference {diff:.1e}", flush=True)
    write_json(Path(args.out), {"benchmark": "length_groups", "date": time.strftime("%Y-%m-%d %H:%M"),
                                "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}",
                                "threads": args.threads, "results": results})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
