"""Encode throughput on CPU: every embedlab inference path against sentence-transformers' PyTorch, ONNX and OpenVINO
paths, same model, same texts, one script run; with the hardware's matmul peaks measured in the same run.

Workloads: --n SciFact documents (title + text) at max_length 256, and --n short sentences (the unlabelled sentence
file) at 128. For each path: load (and export, once: the time is reported apart), a warm-up on 64 texts, then the
median of --repeats timed runs; texts/s; the ratio to sentence-transformers' PyTorch fp32 and to its fastest path;
the achieved GFLOP/s (useful FLOPs of the transformer on the real, unpadded tokens) and its share of the matmul peak
of the precision the path computes in (fp32, bf16 or int8, each measured here on 2048^3 products); and the agreement
with sentence-transformers' fp32 embeddings (max |difference|, min cosine).

embedlab paths: torch fp32, torch bf16 (autocast), onnx fp32, onnx int8 (dynamic), openvino fp32, openvino bf16,
openvino int8 (static, calibrated on 300 texts of the same source that are not timed), and openvino int8 with 4
batches in flight (streams).
sentence-transformers paths: st-torch-fp32 (in this process, sentence-transformers 6) and, through
benchmarks/st_peers.py in the peers environment (sentence-transformers 5.7 with its onnx/openvino extras, which
cannot be installed next to sentence-transformers 6: see that file), st-onnx-fp32, st-onnx-int8 (avx512_vnni),
st-openvino-fp32, st-openvino-default (OpenVINO's own default precision: bf16 on a CPU that has it), st-openvino-int8.

    make peers-venv                                  # once: runs/peers-venv (benchmarks/peers-requirements.txt)
    .venv/bin/python benchmarks/encode.py [--n 2000] [--repeats 3] [--threads 2] [--models a,b] \
        [--peers-python runs/peers-venv/bin/python] [--out docs/results/encode.json]

Results go to docs/results/encode.json (raw numbers) and are summarised in docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from embedlab import __version__  # noqa: E402
from embedlab.atomic import write_json  # noqa: E402
from embedlab.data import catalog  # noqa: E402
from embedlab.data.pairs import iter_sentences  # noqa: E402
from embedlab.pretrained import resolve  # noqa: E402
from embedlab.text import Embedder  # noqa: E402
from peak_rss import PeakRSS  # noqa: E402

OURS = [("torch", "fp32", 1), ("torch", "bf16", 1), ("onnx", "fp32", 1), ("onnx", "int8", 1), ("openvino", "fp32", 1),
        ("openvino", "bf16", 1), ("openvino", "int8", 1), ("openvino", "int8", 4)]  # (backend, precision, streams)
PEER_PRECISION = {"st-torch-fp32": "fp32", "st-onnx-fp32": "fp32", "st-onnx-int8": "int8",
                  "st-openvino-fp32": "fp32", "st-openvino-default": "bf16", "st-openvino-int8": "int8"}
CALIBRATION = 300


def timed(fn, repeats: int, warmup) -> tuple[float, list[float], float, object]:
    warmup()  # allocator, thread pool, lazy initialisation, on a slice of the texts
    times, out = [], None
    with PeakRSS() as mem:
        for _ in range(repeats):
            t0 = time.perf_counter()
            out = fn()
            times.append(time.perf_counter() - t0)
    return statistics.median(times), times, mem.added_mb, out


def matmul_peaks(threads: int, size: int = 2048, repeats: int = 5) -> dict[str, float]:
    """GFLOP/s (GOP/s for int8) of one size^3 matrix product per precision, median of ``repeats``."""
    torch.set_num_threads(threads)
    out = {}
    a32, b32 = torch.randn(size, size), torch.randn(size, size)
    a16, b16 = a32.bfloat16(), b32.bfloat16()
    a8 = torch.randint(-128, 127, (size, size), dtype=torch.int8)
    b8 = torch.randint(-128, 127, (size, size), dtype=torch.int8)
    cases = {"fp32": lambda: a32 @ b32, "bf16": lambda: a16 @ b16, "int8": lambda: torch._int_mm(a8, b8)}
    for name, fn in cases.items():
        fn()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        out[name] = 2 * size ** 3 / statistics.median(times) / 1e9
    return out


def useful_flops(model: Embedder, texts: list[str], max_length: int) -> float:
    """FLOPs of the transformer on the real tokens (no padding): per layer and token 2 x (4h^2 + 2hI) for the
    projections and feed-forward, plus 2 x 2nh for the attention products of a text of n tokens."""
    cfg = model.backbone.config
    h, inter, layers = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers
    total = 0.0
    for ids in model._token_ids(texts, max_length):
        n = len(ids)
        total += layers * 2 * (n * (4 * h * h + 2 * h * inter) + 2 * n * n * h)
    return total


def workloads(n: int) -> dict[str, tuple[list[str], list[str], int]]:
    """name -> (timed texts, calibration texts from the same source, max length)."""
    scifact = catalog.load_retrieval("scifact", "test")
    docs = [d.full_text() for d in list(scifact.corpus.values())[:n + CALIBRATION]]
    sentences = []
    for s in iter_sentences(catalog.dataset_path("unsup-sentences") / "sentences.txt"):
        sentences.append(s)
        if len(sentences) == n + CALIBRATION:
            break
    return {"scifact_docs_256": (docs[:n], docs[n:], 256), "short_sentences": (sentences[:n], sentences[n:], 128)}


def agreement(emb: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    cos = (emb * ref).sum(1) / (np.linalg.norm(emb, axis=1) * np.linalg.norm(ref, axis=1))
    return {"max_abs_diff_to_st_fp32": float(np.abs(emb - ref).max()), "min_cosine_to_st_fp32": float(cos.min())}


def run_peers(python: str, model_dir: str, texts: list[str], calibration: list[str], max_length: int,
              args, workdir: Path) -> dict:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "texts.json").write_text(json.dumps(texts))
    (workdir / "calibration.json").write_text(json.dumps(calibration))
    out = workdir / f"peers-{max_length}.json"
    paths = ",".join(p for p in PEER_PRECISION if p != "st-torch-fp32")
    cmd = [python, str(ROOT / "benchmarks" / "st_peers.py"), "--model", model_dir, "--texts",
           str(workdir / "texts.json"), "--calibration", str(workdir / "calibration.json"), "--max-length",
           str(max_length), "--batch-size", str(args.batch_size), "--repeats", str(args.repeats), "--threads",
           str(args.threads), "--paths", paths, "--workdir", str(workdir), "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"st_peers.py failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(out.read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="sentence-transformers/all-MiniLM-L6-v2")
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--peers-python", default=os.environ.get("EMBEDLAB_PEERS_PYTHON")
                    or str(ROOT / "runs" / "peers-venv" / "bin" / "python"))
    ap.add_argument("--out", default=str(ROOT / "docs" / "results" / "encode.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from sentence_transformers import SentenceTransformer

    peers = Path(args.peers_python).is_file()
    if not peers:
        print(f"note: no peers environment at {args.peers_python} (make peers-venv): only st-torch-fp32 is timed")
    peaks = matmul_peaks(args.threads)
    print("matmul peak (2048^3): " + ", ".join(f"{k} {v:.0f} G{'OP' if k == 'int8' else 'FLOP'}/s"
                                               for k, v in peaks.items()), flush=True)
    record = {"benchmark": "encode", "n_texts": args.n, "repeats": args.repeats, "batch_size": args.batch_size,
              "threads": args.threads, "embedlab": __version__, "torch": torch.__version__,
              "sentence_transformers": __import__("sentence_transformers").__version__,
              "cpu": platform.processor() or platform.machine(), "date": time.strftime("%Y-%m-%d"),
              "matmul_peak_gflops": peaks, "models": {}}
    data = workloads(args.n)
    with tempfile.TemporaryDirectory(prefix="embedlab-bench-") as tmp:
        for name in args.models.split(","):
            model_dir = resolve(name).location
            base = Embedder.load(name)
            record["models"][name] = {}
            for wname, (texts, calibration, max_len) in data.items():
                flops = useful_flops(base, texts, max_len)
                head = texts[:64]
                st = SentenceTransformer(model_dir, device="cpu")
                st.max_seq_length = max_len
                t_ref, all_ref, mem_ref, e_ref = timed(
                    lambda: st.encode(texts, batch_size=args.batch_size), args.repeats,
                    lambda: st.encode(head, batch_size=args.batch_size))
                rows = {"st-torch-fp32": {"median_s": t_ref, "seconds": all_ref, "precision": "fp32",
                                          "peak_rss_added_mb": mem_ref, **agreement(e_ref, e_ref)}}
                st = None  # free it before the next paths load
                if peers:
                    got = run_peers(args.peers_python, model_dir, texts, calibration, max_len, args,
                                    Path(tmp) / name.replace("/", "_"))
                    record["models"][name]["peers_sentence_transformers"] = got["sentence_transformers"]
                    for path, r in got["paths"].items():
                        rows[path] = {"median_s": r["median_s"], "seconds": r["seconds"], "load_s": r["load_s"],
                                      "precision": PEER_PRECISION[path],
                                      **agreement(np.load(r["embeddings"]), e_ref)}
                for backend, precision, streams in OURS:
                    t0 = time.perf_counter()
                    ours = Embedder.load(name, backend=backend, precision=precision, streams=streams,
                                         calibration_texts=calibration if precision == "int8" else None)
                    load_s = time.perf_counter() - t0

                    def run(batch):
                        return ours.encode(batch, batch_size=args.batch_size, max_length=max_len,
                                           num_threads=args.threads)

                    t, times, mem, emb = timed(lambda: run(texts), args.repeats, lambda: run(head))
                    rows[f"embedlab-{backend}-{precision}" + (f"-{streams}streams" if streams > 1 else "")] = {
                        "median_s": t, "seconds": times, "load_s": load_s, "precision": precision,
                        "peak_rss_added_mb": mem, **agreement(emb, e_ref)}
                    ours = None
                fastest_st = min(r["median_s"] for k, r in rows.items() if k.startswith("st-"))
                for key, r in rows.items():
                    r["texts_per_s"] = len(texts) / r["median_s"]
                    r["ratio_to_st_torch_fp32"] = t_ref / r["median_s"]
                    r["ratio_to_st_fastest"] = fastest_st / r["median_s"]
                    r["gflops"] = flops / r["median_s"] / 1e9
                    r["share_of_peak"] = r["gflops"] / peaks[r["precision"]]
                record["models"][name][wname] = {"texts": len(texts), "max_length": max_len,
                                                 "useful_gflop": flops / 1e9, "paths": rows}
                print(f"\n{name} {wname} ({len(texts)} texts, max_length {max_len})")
                print(f"{'path':26s} {'texts/s':>8s} {'vs ST':>6s} {'vs ST best':>10s} {'GFLOP/s':>8s} "
                      f"{'of peak':>7s} {'max|diff|':>9s} {'min cos':>8s}")
                for key, r in sorted(rows.items(), key=lambda kv: kv[1]["median_s"]):
                    print(f"{key:26s} {r['texts_per_s']:8.1f} {r['ratio_to_st_torch_fp32']:6.2f} "
                          f"{r['ratio_to_st_fastest']:10.2f} {r['gflops']:8.1f} {100 * r['share_of_peak']:6.1f}% "
                          f"{r['max_abs_diff_to_st_fp32']:9.1e} {r['min_cosine_to_st_fp32']:8.5f}", flush=True)
    write_json(args.out, record)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
