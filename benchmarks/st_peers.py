"""sentence-transformers' own fast CPU backends, timed for benchmarks/encode.py (run by it, in the peers environment).

sentence-transformers 6 (embedlab's environment) needs transformers >= 5, while its ONNX backend needs optimum-onnx,
which needs transformers < 4.58: the two cannot be installed together today. encode.py therefore runs this script
with the Python of a second environment holding sentence-transformers 5.7 with its `onnx` and `openvino` extras
(benchmarks/peers-requirements.txt; `make peers-venv` builds it) and reads back what it prints: for each path the
median time of the repeats, every time, and the embeddings (saved as .npy for encode.py to compare).

Paths, as sentence-transformers documents them (Speeding up Inference):
  st-torch-fp32       SentenceTransformer(model)                     the PyTorch path (the same as ST 6's)
  st-onnx-fp32        backend="onnx"                                 exported by optimum on first load
  st-onnx-int8        export_dynamic_quantized_onnx_model(..., "avx512_vnni") then file_name=onnx/model_qint8_...
  st-openvino-fp32    backend="openvino", INFERENCE_PRECISION_HINT f32 (OpenVINO's CPU default is bf16 where the
                      CPU has it: that is st-openvino-default)
  st-openvino-default backend="openvino" with OpenVINO's default configuration
  st-openvino-int8    export_static_quantized_openvino_model(...) calibrated on the same texts embedlab calibrates on

    /path/to/peers/bin/python benchmarks/st_peers.py --model DIR --texts texts.json --max-length 256 \
        --calibration calib.json --workdir runs/bench-peers --out result.json
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

PATHS = ("st-torch-fp32", "st-onnx-fp32", "st-onnx-int8", "st-openvino-fp32", "st-openvino-default",
         "st-openvino-int8")


def load(path: str, model_dir: Path, calibration: list[str], workdir: Path):
    from sentence_transformers import (SentenceTransformer, export_dynamic_quantized_onnx_model,
                                       export_static_quantized_openvino_model)

    if path == "st-torch-fp32":
        return SentenceTransformer(str(model_dir), device="cpu")
    if path == "st-onnx-fp32":
        return SentenceTransformer(str(model_dir), device="cpu", backend="onnx")
    if path == "st-onnx-int8":
        if not (model_dir / "onnx" / "model_qint8_avx512_vnni.onnx").is_file():
            base = SentenceTransformer(str(model_dir), device="cpu", backend="onnx")
            export_dynamic_quantized_onnx_model(base, "avx512_vnni", str(model_dir))
        return SentenceTransformer(str(model_dir), device="cpu", backend="onnx",
                                   model_kwargs={"file_name": "onnx/model_qint8_avx512_vnni.onnx"})
    if path == "st-openvino-fp32":
        return SentenceTransformer(str(model_dir), device="cpu", backend="openvino",
                                   model_kwargs={"ov_config": {"INFERENCE_PRECISION_HINT": "f32"}})
    if path == "st-openvino-default":
        return SentenceTransformer(str(model_dir), device="cpu", backend="openvino")
    if path == "st-openvino-int8":
        if not (model_dir / "openvino" / "openvino_model_qint8_quantized.xml").is_file():
            from optimum.intel import OVQuantizationConfig

            calib_dir = workdir / "calibration"
            calib_dir.mkdir(parents=True, exist_ok=True)
            (calib_dir / "train.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in calibration))
            base = SentenceTransformer(str(model_dir), device="cpu", backend="openvino")
            export_static_quantized_openvino_model(base, OVQuantizationConfig(num_samples=len(calibration)),
                                                   str(model_dir), dataset_name=str(calib_dir),
                                                   dataset_config_name="default", dataset_split="train",
                                                   column_name="text")
        return SentenceTransformer(str(model_dir), device="cpu", backend="openvino",
                                   model_kwargs={"file_name": "openvino/openvino_model_qint8_quantized.xml"})
    raise SystemExit(f"unknown path {path}")


def main() -> None:
    import numpy as np
    import sentence_transformers
    import torch

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="a sentence-transformers folder (copied into --workdir first)")
    ap.add_argument("--texts", required=True, help="JSON list of texts")
    ap.add_argument("--calibration", required=True, help="JSON list of calibration texts")
    ap.add_argument("--max-length", type=int, required=True)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--paths", default=",".join(PATHS))
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    texts = json.loads(Path(args.texts).read_text())
    calibration = json.loads(Path(args.calibration).read_text())
    workdir = Path(args.workdir)
    model_dir = workdir / "model"  # a copy: ST writes its exports into the model folder
    if not model_dir.is_dir():
        shutil.copytree(args.model, model_dir, ignore=shutil.ignore_patterns(".embedlab-exports"))
    out = {"sentence_transformers": sentence_transformers.__version__, "torch": torch.__version__, "paths": {}}
    for path in args.paths.split(","):
        t0 = time.perf_counter()
        model = load(path, model_dir, calibration, workdir)
        load_s = time.perf_counter() - t0
        model.max_seq_length = args.max_length
        model.encode(texts[:64], batch_size=args.batch_size)  # warm-up
        times, emb = [], None
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            emb = model.encode(texts, batch_size=args.batch_size, convert_to_numpy=True)
            times.append(time.perf_counter() - t0)
        npy = workdir / f"{path}-{args.max_length}.npy"
        np.save(npy, emb.astype(np.float32))
        out["paths"][path] = {"seconds": times, "median_s": statistics.median(times), "load_s": load_s,
                              "embeddings": str(npy)}
        print(f"{path:20s} {len(texts) / statistics.median(times):8.1f} texts/s", flush=True)
        del model
    Path(args.out).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
