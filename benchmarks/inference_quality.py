"""What each inference path costs in quality: the score of every embedlab backend / precision on STS-B, STS12, STS13,
SciFact, the MS MARCO sample and NFCorpus, against the same model's torch fp32 score (issue 18's quality guard).

Every (path, task) is one ``evaluate`` call with ``EvalSettings(backend=..., precision=...)`` (openvino int8
calibrated on the first 300 sentences of the unlabelled sentence file, which no task evaluates); the score goes to
the JSON as soon as it is done, so an interrupted run resumes where it stopped (done pairs are not rerun). Quality,
not speed: timings are benchmarks/encode.py's.

    .venv/bin/python benchmarks/inference_quality.py [--model M] [--threads 2] \
        [--out docs/results/inference_quality.json]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from embedlab import __version__  # noqa: E402
from embedlab.atomic import write_json  # noqa: E402
from embedlab.data import catalog  # noqa: E402
from embedlab.data.pairs import iter_sentences  # noqa: E402

TASKS = ["stsb", "sts12", "sts13", "scifact", "msmarco-sample", "nfcorpus-pp"]
PATHS = [("torch", "fp32"), ("torch", "bf16"), ("onnx", "fp32"), ("onnx", "int8"), ("openvino", "fp32"),
         ("openvino", "bf16"), ("openvino", "int8")]
GOAL = 0.1  # issue 18: every score within 0.1 of fp32


def calibration_texts(n: int = 300) -> tuple[str, ...]:
    out = []
    for s in iter_sentences(catalog.dataset_path("unsup-sentences") / "sentences.txt"):
        out.append(s)
        if len(out) == n:
            break
    return tuple(out)


def main() -> None:
    import torch

    from embedlab.evaluate.cache import EmbeddingCache
    from embedlab.evaluate.runner import EvalSettings, evaluate
    from embedlab.text import Embedder
    from embedlab.text.backends import EXPORT_FORMAT

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2")
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "docs" / "results" / "inference_quality.json"))
    args = ap.parse_args()
    out = Path(args.out)
    record = json.loads(out.read_text()) if out.is_file() else {}
    if record.get("model") not in (None, args.model) or record.get("max_length") not in (None, args.max_length):
        raise SystemExit(f"{out} holds another model or length; give another --out")
    if record.get("export_format") not in (None, EXPORT_FORMAT):
        raise SystemExit(f"{out} was made by export format {record['export_format']} (this code writes "
                         f"{EXPORT_FORMAT}): its exported-path scores are stale; give another --out")
    record.update(benchmark="inference_quality", model=args.model, max_length=args.max_length,
                  embedlab=__version__, torch=torch.__version__, tasks=TASKS, export_format=EXPORT_FORMAT)
    scores = record.setdefault("scores", {})
    calibration = calibration_texts()
    for backend, precision in PATHS:
        key = f"{backend}-{precision}"
        todo = [t for t in TASKS if t not in scores.get(key, {})]
        if not todo:
            continue
        model = Embedder.load(args.model)
        settings = EvalSettings(max_length=args.max_length, num_threads=args.threads,
                                autocast_dtype=torch.bfloat16 if (backend, precision) == ("torch", "bf16") else None,
                                backend=None if backend == "torch" else backend,
                                precision=None if backend == "torch" else precision,
                                calibration_texts=calibration if precision == "int8" else None)
        for task in todo:
            t0 = time.perf_counter()
            result = evaluate(model, [task], settings=settings, cache=EmbeddingCache())[0]
            scores.setdefault(key, {})[task] = {"main_score": result.display(), "seconds": time.perf_counter() - t0,
                                                "backend": result.details["backend"],
                                                "precision": result.details["precision"]}
            write_json(out, record)
            print(f"{key:15s} {task:15s} {result.display():6.2f}", flush=True)
    base = scores["torch-fp32"]
    print(f"\n{'path':15s} " + " ".join(f"{t:>14s}" for t in TASKS) + "   max |delta|")
    for key, per_task in scores.items():
        deltas = [per_task[t]["main_score"] - base[t]["main_score"] for t in TASKS]
        flag = "" if max(abs(d) for d in deltas) <= GOAL else "  (beyond 0.1)"
        print(f"{key:15s} " + " ".join(f"{per_task[t]['main_score']:7.2f} ({d:+.2f})" for t, d in zip(TASKS, deltas))
              + f"   {max(abs(d) for d in deltas):.2f}{flag}")
    write_json(out, record)


if __name__ == "__main__":
    main()
