"""Fusion cost: wall time and peak RSS of embedlab's streaming merge vs a naive in-memory merge, 2/4/8 checkpoints.

Checkpoints are made once (under --work, default runs/bench-fuse): the base model plus seeded noise (σ = 0.01) on
every weight, saved in the sentence-transformers layout — the merge cost does not depend on how the checkpoints were
trained. Models: all-MiniLM-L6-v2 (22.7M parameters, 91 MB) and SmolLM2-135M-Instruct (dequantised to fp32 safetensors,
135M parameters, 540 MB). Each (model, K, mode) runs in its own subprocess; memory is the peak RSS *added* during the
merge (sampled every 5 ms from just before it — ru_maxrss would only show the imports' transient peak), and the RSS
before the merge (Python + torch + embedlab imported) is reported too.
Methods: delta_guided (the default) for both modes; the naive mode is `fuse(..., streaming=False)`, which loads every
state dict first, as a script built on `torch.load`/`load_file` would.

    .venv/bin/python benchmarks/fuse.py [--counts 2,4,8] [--models minilm,smollm2] [--out docs/results/fuse.json]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from peak_rss import PeakRSS  # noqa: E402

MODELS = {"minilm": "sentence-transformers/all-MiniLM-L6-v2", "smollm2": "HuggingFaceTB/SmolLM2-135M-Instruct"}


def make_checkpoints(key: str, work: Path, n: int) -> tuple[Path, list[Path]]:
    import torch

    from embedlab.text import Embedder

    folder = work / key
    base = folder / "base"
    paths = [folder / f"ckpt{i}" for i in range(n)]
    if all((p / "model.safetensors").is_file() for p in [base, *paths]):
        return base, paths
    model = Embedder.load(MODELS[key])
    model.save(base)
    original = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    for i, path in enumerate(paths):
        if (path / "model.safetensors").is_file():
            continue
        g = torch.Generator().manual_seed(i)
        with torch.no_grad():
            for name, p in model.backbone.named_parameters():
                p.copy_(original[name] + 0.01 * torch.randn(p.shape, generator=g))
        model.save(path)
    return base, paths


def worker(key: str, k: int, mode: str, work: str) -> dict:
    from embedlab.fusion import fuse
    import embedlab.pretrained as _warm  # imported before timing: fuse() would import it lazily

    del _warm
    folder = Path(work) / key
    t0 = time.perf_counter()
    with PeakRSS() as mem:
        fuse([folder / f"ckpt{i}" for i in range(k)], "delta_guided", out=folder / f"fused-{mode}-{k}",
             base=folder / "base", streaming=(mode == "streaming"), show_progress=False)
    seconds = time.perf_counter() - t0
    return {"model": key, "checkpoints": k, "mode": mode, "seconds": seconds, "peak_added_mb": mem.added_mb,
            "rss_before_mb": mem.start / 2**20, "process_max_rss_mb": resource.getrusage(
                resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--counts", default="2,4,8")
    ap.add_argument("--models", default="minilm,smollm2")
    ap.add_argument("--work", default=str(ROOT / "runs" / "bench-fuse"))
    ap.add_argument("--out", default=str(ROOT / "docs" / "results" / "fuse.json"))
    ap.add_argument("--worker", nargs=3, metavar=("MODEL", "K", "MODE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        key, k, mode = args.worker
        print(json.dumps(worker(key, int(k), mode, args.work)))
        return
    counts = [int(c) for c in args.counts.split(",")]
    rows = []
    for key in args.models.split(","):
        base, _ = make_checkpoints(key, Path(args.work), max(counts))
        size_mb = (base / "model.safetensors").stat().st_size / 2**20
        for k in counts:
            for mode in ("streaming", "in-memory"):
                done = subprocess.run([sys.executable, __file__, "--worker", key, str(k), mode, "--work", args.work],
                                      capture_output=True, text=True)
                if done.returncode != 0:
                    sys.exit(f"worker {key} {k} {mode} failed:\n{done.stderr[-3000:]}")
                row = json.loads(done.stdout.strip().splitlines()[-1])
                row["model_mb"] = size_mb
                rows.append(row)
                print(f"{key:8s} K={k} {mode:10s} {row['seconds']:7.1f}s  memory added {row['peak_added_mb']:7.0f} MB "
                      f"(RSS before {row['rss_before_mb']:.0f} MB; one model {size_mb:.0f} MB)", flush=True)
    print(f"\n{'model':8s} {'K':>2s} {'stream s':>9s} {'naive s':>8s} {'stream +MB':>10s} {'naive +MB':>9s} "
          f"{'mem ratio':>9s}")
    summary = {}
    for key in args.models.split(","):
        for k in counts:
            s, n = (next(r for r in rows if (r["model"], r["checkpoints"], r["mode"]) == (key, k, m))
                    for m in ("streaming", "in-memory"))
            summary[f"{key}_{k}"] = {"memory_ratio": s["peak_added_mb"] / n["peak_added_mb"],
                                     "time_ratio": n["seconds"] / s["seconds"]}
            print(f"{key:8s} {k:2d} {s['seconds']:9.1f} {n['seconds']:8.1f} {s['peak_added_mb']:10.0f} "
                  f"{n['peak_added_mb']:9.0f} {s['peak_added_mb'] / n['peak_added_mb']:9.2f}")
    import torch

    from embedlab import __version__
    from embedlab.atomic import write_json

    write_json(Path(args.out), {"benchmark": "fuse", "method": "delta_guided", "embedlab": __version__,
                                "torch": torch.__version__, "cpu": platform.machine(),
                                "date": time.strftime("%Y-%m-%d"), "rows": rows, "summary": summary})
    print(f"\nwritten: {args.out}")


if __name__ == "__main__":
    main()
