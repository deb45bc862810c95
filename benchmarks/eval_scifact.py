"""A full SciFact evaluation: embedlab's runner vs sentence-transformers' InformationRetrievalEvaluator, one process.

Both embed the 5183 documents (title + text, max_length 256) and the 300 test queries with all-MiniLM-L6-v2 and score
the run; embedlab without its corpus cache (a cold run), then again with the cache warm. Prints wall time, the ratio
and both nDCG@10 values (MTEB's published number: 64.51).

    .venv/bin/python benchmarks/eval_scifact.py [--out docs/results/eval_scifact.json]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from embedlab import __version__  # noqa: E402
from embedlab.atomic import write_json  # noqa: E402
from embedlab.data import catalog  # noqa: E402
from embedlab.evaluate.cache import EmbeddingCache  # noqa: E402
from embedlab.evaluate.runner import EvalSettings, evaluate  # noqa: E402
from embedlab.text import Embedder  # noqa: E402
from embedlab.pretrained import resolve  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2")
    ap.add_argument("--out", default=str(ROOT / "docs" / "results" / "eval_scifact.json"))
    args = ap.parse_args()
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator

    ours = Embedder.load(args.model)
    ref = SentenceTransformer(resolve(args.model).location, device="cpu")
    data = catalog.load_retrieval("scifact", "test")

    with tempfile.TemporaryDirectory() as tmp:
        cache = EmbeddingCache(tmp)
        t0 = time.perf_counter()
        cold = evaluate(ours, ["scifact"], settings=EvalSettings(), cache=cache)[0]
        t_cold = time.perf_counter() - t0
        t0 = time.perf_counter()
        evaluate(ours, ["scifact"], settings=EvalSettings(), cache=cache)[0]
        t_warm = time.perf_counter() - t0
    print(f"embedlab cold {t_cold:.1f}s nDCG@10 {cold.main_score * 100:.2f}; warm cache {t_warm:.1f}s", flush=True)

    t0 = time.perf_counter()
    evaluator = InformationRetrievalEvaluator(
        queries=data.judged_queries(), corpus={d: doc.full_text() for d, doc in data.corpus.items()},
        relevant_docs={q: {d for d, g in rel.items() if g > 0} for q, rel in data.qrels.items()},
        mrr_at_k=[10], ndcg_at_k=[10], accuracy_at_k=[1], precision_recall_at_k=[1, 100], map_at_k=[100],
        write_csv=False,
    )
    st = evaluator(ref)
    t_ref = time.perf_counter() - t0
    st_ndcg = next(v for k, v in st.items() if k.endswith("ndcg@10"))
    print(f"sentence-transformers {t_ref:.1f}s nDCG@10 {st_ndcg * 100:.2f}; speed-up cold {t_ref / t_cold:.2f}x, "
          f"warm {t_ref / t_warm:.2f}x", flush=True)
    write_json(args.out, {
        "benchmark": "eval_scifact", "model": args.model, "embedlab": __version__, "torch": torch.__version__,
        "threads": torch.get_num_threads(), "date": time.strftime("%Y-%m-%d"),
        "documents": len(data.corpus), "queries": len(data.judged_queries()), "max_length": ours.max_length,
        "embedlab_cold_s": t_cold, "embedlab_warm_cache_s": t_warm, "sentence_transformers_s": t_ref,
        "speedup_cold": t_ref / t_cold, "speedup_warm": t_ref / t_warm,
        "ndcg_at_10": {"embedlab": cold.main_score * 100, "sentence_transformers": st_ndcg * 100, "mteb": 64.51},
    })
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
