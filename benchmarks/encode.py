"""Encode throughput: embedlab's Embedder.encode vs sentence-transformers' encode, same model, same texts, one process.

Workloads: 2000 SciFact documents (title + text) at max_length 256, and 2000 short sentences from the unlabelled
sentence file. For each: median of --repeats timed runs per tool (interleaved, after one warm-up each), texts/s, the
ratio, the peak RSS growth during the runs (sampled every 5 ms), and the largest absolute difference between the two
tools' embeddings. embedlab is also timed with bf16 autocast, reported with its cosine agreement to fp32.

    .venv/bin/python benchmarks/encode.py [--n 2000] [--repeats 3] [--batch-size 32] [--out docs/results/encode.json]

Results go to docs/results/encode.json (raw numbers) and are summarised in docs/benchmarks.md.
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

import numpy as np  # noqa: E402
import psutil  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from embedlab import __version__  # noqa: E402
from embedlab.atomic import write_json  # noqa: E402
from embedlab.data import catalog  # noqa: E402
from embedlab.data.pairs import iter_sentences  # noqa: E402
from embedlab.text import Embedder  # noqa: E402
from embedlab.pretrained import resolve  # noqa: E402
from peak_rss import PeakRSS  # noqa: E402


def timed(fn, repeats: int, warmup) -> tuple[float, list[float], float, object]:
    warmup()  # a short warm-up (allocator, thread pool, lazy init) on a slice of the texts
    times, out = [], None
    with PeakRSS() as mem:
        for _ in range(repeats):
            t0 = time.perf_counter()
            out = fn()
            times.append(time.perf_counter() - t0)
    return statistics.median(times), times, mem.added_mb, out


def workloads(n: int) -> dict[str, tuple[list[str], int]]:
    scifact = catalog.load_retrieval("scifact", "test")
    docs = [d.full_text() for d in list(scifact.corpus.values())[:n]]
    sentences = []
    for s in iter_sentences(catalog.dataset_path("unsup-sentences") / "sentences.txt"):
        sentences.append(s)
        if len(sentences) == n:
            break
    return {"scifact_docs_256": (docs, 256), "short_sentences": (sentences, 128)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2")
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--out", default=str(ROOT / "docs" / "results" / "encode.json"))
    args = ap.parse_args()

    from sentence_transformers import SentenceTransformer

    ours = Embedder.load(args.model)
    ref = SentenceTransformer(resolve(args.model).location, device="cpu")
    record = {"benchmark": "encode", "model": args.model, "n_texts": args.n, "repeats": args.repeats,
              "batch_size": args.batch_size, "embedlab": __version__, "torch": torch.__version__,
              "sentence_transformers": __import__("sentence_transformers").__version__,
              "threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
              "date": time.strftime("%Y-%m-%d"), "workloads": {}}
    for name, (texts, max_len) in workloads(args.n).items():
        ref.max_seq_length = max_len
        head = texts[:64]
        t_ref, all_ref, mem_ref, e_ref = timed(lambda: ref.encode(texts, batch_size=args.batch_size), args.repeats,
                                               lambda: ref.encode(head, batch_size=args.batch_size))
        t_our, all_our, mem_our, e_our = timed(
            lambda: ours.encode(texts, batch_size=args.batch_size, max_length=max_len), args.repeats,
            lambda: ours.encode(head, batch_size=args.batch_size, max_length=max_len))
        t_bf, all_bf, mem_bf, e_bf = timed(
            lambda: ours.encode(texts, batch_size=args.batch_size, max_length=max_len,
                                autocast_dtype=torch.bfloat16), args.repeats,
            lambda: ours.encode(head, batch_size=args.batch_size, max_length=max_len, autocast_dtype=torch.bfloat16))
        cos_bf = (e_bf * e_our).sum(1) / (np.linalg.norm(e_bf, axis=1) * np.linalg.norm(e_our, axis=1))
        row = {
            "texts": len(texts), "max_length": max_len,
            "sentence_transformers_texts_per_s": len(texts) / t_ref,
            "embedlab_texts_per_s": len(texts) / t_our,
            "speedup": t_ref / t_our,
            "embedlab_bf16_texts_per_s": len(texts) / t_bf,
            "bf16_speedup_vs_sentence_transformers": t_ref / t_bf,
            "bf16_min_cosine_to_fp32": float(cos_bf.min()),
            "max_abs_diff_fp32": float(np.abs(e_our - e_ref).max()),
            "peak_rss_added_mb": {"sentence_transformers": mem_ref, "embedlab": mem_our, "embedlab_bf16": mem_bf},
            "seconds": {"sentence_transformers": all_ref, "embedlab": all_our, "embedlab_bf16": all_bf},
        }
        record["workloads"][name] = row
        print(f"{name:18s} ST {row['sentence_transformers_texts_per_s']:7.1f}/s  embedlab "
              f"{row['embedlab_texts_per_s']:7.1f}/s  ratio {row['speedup']:.2f}x  max|diff| "
              f"{row['max_abs_diff_fp32']:.1e}  bf16 {row['embedlab_bf16_texts_per_s']:7.1f}/s "
              f"(min cos {row['bf16_min_cosine_to_fp32']:.5f})  peak RSS +MB ST {mem_ref:.0f} / ours {mem_our:.0f}",
              flush=True)
    record["peak_rss_process_mb"] = psutil.Process().memory_info().rss / 2**20
    write_json(args.out, record)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
