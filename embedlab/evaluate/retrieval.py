"""Dense retrieval scoring: exact top-k search over precomputed embeddings, and the MTEB metrics of a run.

    run = exact_search(query_emb, corpus_emb, query_ids, doc_ids, top_k=1000)   # {qid: {doc_id: score}}
    scores = score_run(qrels, run)                                               # {"ndcg_at_10": 0.65, ...}

``exact_search`` scores every query against the *whole* corpus (no approximate index): faiss ``IndexFlatIP`` by default,
or a chunked ``torch.topk`` (``backend="torch"``, also usable on a GPU) that returns the same run. Each backend only
proposes candidates; the returned scores are then recomputed for every candidate in float64 by one shared routine,
ranked by (score descending, corpus position ascending) and cut to ``top_k``. That makes both backends agree bit for
bit (float32 BLAS kernels differ in their last bits) and makes ties deterministic. A handful of extra candidates
(``_TIE_MARGIN``) are fetched so that ties at the cut are settled by that rule rather than by the backend; a tie
wider than the margin at exactly the k-th place may still be cut differently.

``score_run`` computes MTEB's retrieval metrics with pytrec_eval, on MTEB's 0-1 scale (not x100), with MTEB's key
names, following ``mteb/_evaluators/retrieval_metrics.py`` (``calculate_retrieval_scores``):

| key                | how                                                                          |
|--------------------|------------------------------------------------------------------------------|
| ndcg_at_k          | pytrec_eval ``ndcg_cut.k`` (graded gains, linear)                            |
| map_at_k           | pytrec_eval ``map_cut.k`` (AP truncated at k, divided by *all* relevant)     |
| recall_at_k        | pytrec_eval ``recall.k``                                                     |
| precision_at_k     | pytrec_eval ``P.k``                                                          |
| hit_rate_at_k      | pytrec_eval ``success.k``                                                    |
| mrr_at_k           | reciprocal rank of the first document with grade > 0 in the top k (own code: |
|                    | trec_eval has no cut-off MRR; MTEB computes it by hand too)                  |
| main_score         | ndcg_at_10 (so k=10 is always computed)                                      |

Conventions, and where they come from:
- Queries without any judgement are dropped before scoring (MTEB ``_filter_queries_without_positives``); every other
  query counts in the mean, a query with no retrieved documents scoring 0 (MTEB's run always holds every query).
- ``ignore_identical_ids=True`` removes a document whose id equals the query id from that query's run before scoring
  (MTEB ``RetrievalEvaluator.evaluate``); used for tasks such as ArguAna/Quora where the query is in the corpus.
- Ties in score are ordered as trec_eval orders them (document id descending), for MRR too, so every metric here sees
  the same ranking. MTEB's own MRR keeps the run's insertion order for ties instead; without ties they agree.
- MTEB rounds the pytrec_eval means to 5 decimals (and result files to 6); nothing is rounded here.
- MTEB's default k values are (1, 3, 5, 10, 20, 100, 1000) and its search keeps the top 1000.

It does not encode text, load datasets or write results.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

# Extra candidates fetched beyond top_k so that ties at the cut are resolved by our rule, not the backend's.
_TIE_MARGIN = 8
# Rescoring gathers [queries, candidates, dim] float64 blocks; this bounds one block (about 128 MB).
_RESCORE_BLOCK_ELEMENTS = 16_000_000

SCORES = ("cosine", "dot")
BACKENDS = ("faiss", "torch")
DEFAULT_K_VALUES = (1, 3, 5, 10, 100, 1000)


def _as_float32(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # torch.Tensor
        x = x.detach().float().cpu().numpy()
    return np.ascontiguousarray(np.asarray(x, dtype=np.float32))


def _unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (float32); an all-zero row stays zero, so its cosine with anything is 0."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x / np.where(norms > 0, norms, 1.0), dtype=np.float32)


def _faiss_candidates(queries: np.ndarray, corpus: np.ndarray, k: int) -> np.ndarray:
    import faiss

    index = faiss.IndexFlatIP(corpus.shape[1])
    index.add(corpus)
    _, ids = index.search(queries, k)
    return ids


def _torch_candidates(
    queries: np.ndarray, corpus: np.ndarray, k: int, corpus_chunk_size: int, query_batch_size: int, device: str | None
) -> np.ndarray:
    import torch

    dev = torch.device(device) if device else torch.device("cpu")
    corpus_t = torch.from_numpy(corpus).to(dev)
    out = np.empty((len(queries), k), dtype=np.int64)
    with torch.inference_mode():
        for qs in range(0, len(queries), query_batch_size):
            q = torch.from_numpy(queries[qs : qs + query_batch_size]).to(dev)
            best_v = best_i = None
            # Chunk the corpus so the score matrix stays [query_batch, chunk]; merge the running top-k per chunk.
            for cs in range(0, len(corpus), corpus_chunk_size):
                sims = q @ corpus_t[cs : cs + corpus_chunk_size].T
                v, i = sims.topk(min(k, sims.shape[1]), dim=1)
                i = i + cs
                if best_v is not None:
                    v, i = torch.cat([best_v, v], dim=1), torch.cat([best_i, i], dim=1)
                    v, pos = v.topk(min(k, v.shape[1]), dim=1)
                    i = i.gather(1, pos)
                best_v, best_i = v, i
            out[qs : qs + len(q)] = best_i.cpu().numpy()
    return out


def _rescore(
    queries: np.ndarray,
    corpus: np.ndarray,
    candidates: np.ndarray,
    top_k: int,
    q_norms: np.ndarray | None,
    c_norms: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact float64 scores of each query's candidates, ranked (score desc, corpus position asc) and cut to top_k."""
    # Sorting the candidate ids first makes the arithmetic independent of the order the backend returned them in.
    candidates = np.sort(candidates, axis=1)
    n_q, n_c = candidates.shape
    block = max(1, _RESCORE_BLOCK_ELEMENTS // max(1, n_c * corpus.shape[1]))
    top_ids = np.empty((n_q, top_k), dtype=np.int64)
    top_scores = np.empty((n_q, top_k), dtype=np.float64)
    for s in range(0, n_q, block):
        cand = candidates[s : s + block]
        docs = corpus[cand].astype(np.float64)  # [b, n_c, dim]
        q = queries[s : s + block].astype(np.float64)
        scores = np.matmul(docs, q[:, :, None])[:, :, 0]
        if q_norms is not None:
            denom = q_norms[s : s + block, None] * c_norms[cand]
            scores = np.divide(scores, denom, out=np.zeros_like(scores), where=denom > 0)
        for r in range(len(cand)):
            order = np.lexsort((cand[r], -scores[r]))[:top_k]
            top_ids[s + r] = cand[r][order]
            top_scores[s + r] = scores[r][order]
    return top_ids, top_scores


def exact_search(
    query_emb: Any,
    corpus_emb: Any,
    query_ids: Sequence[str],
    doc_ids: Sequence[str],
    top_k: int = 1000,
    score: str = "cosine",
    *,
    backend: str = "faiss",
    corpus_chunk_size: int = 50_000,
    query_batch_size: int = 1024,
    device: str | None = None,
) -> dict[str, dict[str, float]]:
    """Top-``top_k`` documents of every query by exact search over the whole corpus.

    Args:
        query_emb: [n_queries, dim] (numpy or torch); row i belongs to ``query_ids[i]``.
        corpus_emb: [n_docs, dim]; row j belongs to ``doc_ids[j]`` (ids must be unique).
        top_k: documents kept per query (fewer if the corpus is smaller).
        score: "cosine" (embeddings L2-normalised first) or "dot" (raw inner product).
        backend: "faiss" (IndexFlatIP) or "torch" (chunked matmul + topk; ``device`` may be a GPU).
        corpus_chunk_size, query_batch_size: memory bounds of the torch backend.

    Returns:
        {query_id: {doc_id: score}}, each inner dict in rank order; scores are Python floats computed in float64.
    """
    if score not in SCORES:
        raise ValueError(f"unknown score {score!r}; valid: {', '.join(SCORES)}")
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; valid: {', '.join(BACKENDS)}")
    queries, corpus = _as_float32(query_emb), _as_float32(corpus_emb)
    if queries.ndim != 2 or corpus.ndim != 2 or queries.shape[1] != corpus.shape[1]:
        raise ValueError(f"need [n, dim] arrays of the same dim; got {queries.shape} and {corpus.shape}")
    if len(query_ids) != len(queries) or len(doc_ids) != len(corpus):
        raise ValueError(
            f"{len(queries)} query rows for {len(query_ids)} ids, {len(corpus)} corpus rows for {len(doc_ids)} ids"
        )
    if len(set(doc_ids)) != len(doc_ids):
        raise ValueError("doc_ids are not unique")
    if top_k < 1:
        raise ValueError("top_k must be >= 1")
    if len(corpus) == 0 or len(queries) == 0:
        return {str(qid): {} for qid in query_ids}

    k = min(top_k, len(corpus))
    n_candidates = min(len(corpus), k + _TIE_MARGIN)
    if score == "cosine":
        q_norms = np.linalg.norm(queries.astype(np.float64), axis=1)
        c_norms = np.linalg.norm(corpus.astype(np.float64), axis=1)
        q_search, c_search = _unit_rows(queries), _unit_rows(corpus)
    else:
        q_norms = c_norms = None
        q_search, c_search = queries, corpus

    if backend == "faiss":
        candidates = _faiss_candidates(q_search, c_search, n_candidates)
    else:
        candidates = _torch_candidates(q_search, c_search, n_candidates, corpus_chunk_size, query_batch_size, device)
    if (candidates < 0).any():  # faiss pads with -1 only when it finds fewer than k; cannot happen for a flat index
        raise RuntimeError("search backend returned fewer candidates than requested")

    top_ids, top_scores = _rescore(queries, corpus, candidates, k, q_norms, c_norms)
    doc_ids = [str(d) for d in doc_ids]
    return {
        str(qid): {doc_ids[j]: float(s) for j, s in zip(ids_row, scores_row)}
        for qid, ids_row, scores_row in zip(query_ids, top_ids.tolist(), top_scores.tolist())
    }


def _trec_ranking(doc_scores: Mapping[str, float]) -> list[str]:
    """Document ids in trec_eval's order: score descending, ties by document id descending."""
    return [d for d, _ in sorted(doc_scores.items(), key=lambda item: (item[1], item[0]), reverse=True)]


def per_query_ndcg10(qrels: Mapping[str, Mapping[str, int]],
                     run: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """nDCG@10 of every judged query (pytrec_eval), in qrels order: the items whose mean is ``score_run``'s main
    score, kept for paired bootstrap intervals."""
    import pytrec_eval

    judged = {str(q): {str(d): int(g) for d, g in docs.items()} for q, docs in qrels.items() if len(docs) > 0}
    evaluated = {q: {str(d): float(s) for d, s in run.get(q, {}).items()} for q in judged}
    per_query = pytrec_eval.RelevanceEvaluator(judged, {"ndcg_cut.10"}).evaluate(evaluated)
    return {q: float(per_query.get(q, {}).get("ndcg_cut_10", 0.0)) for q in judged}


def score_run(
    qrels: Mapping[str, Mapping[str, int]],
    run: Mapping[str, Mapping[str, float]],
    k_values: Iterable[int] = DEFAULT_K_VALUES,
    ignore_identical_ids: bool = False,
) -> dict[str, float]:
    """MTEB retrieval metrics of ``run`` against ``qrels`` (see the module docstring), each a mean over queries.

    Args:
        qrels: {query_id: {doc_id: grade}}; grade > 0 is relevant, ndcg uses the grade as gain.
        run: {query_id: {doc_id: score}}, e.g. from ``exact_search``; queries absent from qrels are ignored.
        k_values: cut-offs; 10 is always added, as main_score is ndcg_at_10.
        ignore_identical_ids: drop doc_id == query_id from the run first (MTEB's option of that name).
    """
    import pytrec_eval

    ks = sorted({int(k) for k in k_values} | {10})
    if ks[0] < 1:
        raise ValueError(f"k values must be >= 1; got {ks}")
    judged = {str(qid): {str(d): int(g) for d, g in docs.items()} for qid, docs in qrels.items() if len(docs) > 0}
    if not judged:
        raise ValueError("qrels hold no judged query")
    evaluated_run: dict[str, dict[str, float]] = {}
    for qid in judged:
        docs = run.get(qid, {})
        evaluated_run[qid] = {
            str(d): float(s) for d, s in docs.items() if not (ignore_identical_ids and str(d) == qid)
        }

    cut = ",".join(map(str, ks))
    measures = {f"ndcg_cut.{cut}", f"map_cut.{cut}", f"recall.{cut}", f"P.{cut}", f"success.{cut}"}
    per_query = pytrec_eval.RelevanceEvaluator(judged, measures).evaluate(evaluated_run)

    families = {"ndcg_at": "ndcg_cut_", "map_at": "map_cut_", "recall_at": "recall_", "precision_at": "P_",
                "hit_rate_at": "success_"}
    n = len(judged)
    scores: dict[str, float] = {}
    for key, measure in families.items():
        for k in ks:
            # A query pytrec_eval did not report (it skips none today) would score 0, as trec_eval -c does.
            scores[f"{key}_{k}"] = sum(per_query.get(qid, {}).get(f"{measure}{k}", 0.0) for qid in judged) / n

    reciprocal = {k: 0.0 for k in ks}
    for qid, grades in judged.items():
        ranking = _trec_ranking(evaluated_run[qid])
        first = next((rank for rank, d in enumerate(ranking, start=1) if grades.get(d, 0) > 0), None)
        if first is not None:
            for k in ks:
                if first <= k:
                    reciprocal[k] += 1.0 / first
    for k in ks:
        scores[f"mrr_at_{k}"] = reciprocal[k] / n

    scores["main_score"] = scores["ndcg_at_10"]
    return scores
