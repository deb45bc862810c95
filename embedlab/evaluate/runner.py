"""Evaluate one model on a list of tasks: load data, embed, score, return the results (and MTEB-format JSON files).

This is the single function behind ``embedlab eval``, the demo, the jobs and Python users. It owns orchestration
only: the numbers come from sts.py / retrieval.py / geometry.py, the data from embedlab.data.catalog, the
embeddings from the Embedder, the JSON files from mteb_json.py. It never writes the results store: callers turn
results into store rows with ``result_rows`` (through embedlab.results, the one results path) and write them.

Every result says what it was computed on, in ``TaskResult.details`` (and so in the MTEB JSON extras and the store
rows' ``extra``): the evaluated counts, ``skipped_rows`` (rows dropped by ``skip_bad_rows``), the loaded ``rows``
against the standard copy's ``expected_rows`` with ``nonstandard`` when they differ (catalog.check_rows), and
``limit``/``subsampled`` when ``EvalSettings.limit`` evaluated a seeded sample.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..data import catalog
from ..data.readers import BadRows
from ..data.records import STSSet
from ..errors import ConfigError, DataError
from ..text import Embedder
from .cache import EmbeddingCache
from . import geometry
from .mteb_json import mteb_result, result_path, write_result
from .retrieval import exact_search, per_query_ndcg10, score_run
from .sts import pairwise_similarity, sts_scores
from .tasks import TASKS, Task, parse_tasks, query_prompt_name

log = logging.getLogger("embedlab.evaluate")
LIMIT_SEED = 0  # the subsample of EvalSettings.limit: fixed, so two limited runs score the same pairs/queries


@dataclass
class EvalSettings:
    batch_size: int = 32
    max_length: int | None = None  # None: the model's own (256 for all-MiniLM-L6-v2)
    token_budget: int | None = None
    num_threads: int | None = None
    autocast_dtype: object = None  # torch.bfloat16 for the bf16 path
    show_progress: bool = False
    skip_bad_rows: bool = False
    # Evaluate on a seeded subsample of at most `limit` STS pairs / retrieval queries per task (corpus kept whole);
    # the result details record it, so a subsampled score is never mistaken for a full one.
    limit: int | None = None
    # How the backbone runs (embedlab/text/backends.py): None keeps the model as it is (torch fp32 for a name);
    # otherwise evaluate() switches it with set_backend(backend, precision, calibration_texts). Recorded per result.
    backend: str | None = None
    precision: str | None = None
    calibration_texts: tuple[str, ...] | None = None  # openvino int8 (static quantization)

    def __post_init__(self) -> None:
        # Checked here, the one place every entry point (CLI, demo, experiments, fusion, trainer, Python) goes
        # through: batch_size 0 looped forever in the batch planner, and 0 or negative lengths and budgets were read
        # as "the default" or produced nonsense instead of an error.
        _check_count("batch_size", self.batch_size, optional=False)
        for name in ("max_length", "token_budget", "num_threads", "limit"):
            _check_count(name, getattr(self, name), optional=True)
        if self.num_threads is not None and self.num_threads > 1024:  # more crashed torch's thread pool
            raise ConfigError(f"EvalSettings.num_threads must be at most 1024; got {self.num_threads}")
        if self.backend is not None or self.precision is not None:
            from ..text.backends import check_backend

            check_backend(self.backend or "torch", self.precision or "fp32")
            if self.autocast_dtype is not None and (self.backend or "torch") != "torch":
                raise ConfigError(f"EvalSettings: autocast (bf16) applies to the torch backend, not "
                                  f"{self.backend}; use precision='bf16' on openvino instead")


def _check_count(name: str, value, optional: bool) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        allowed = "an integer >= 1" + (" or None (the default)" if optional else "")
        raise ConfigError(f"EvalSettings.{name} must be {allowed}; got {value!r}")


@dataclass
class TaskResult:
    task: Task
    scores: dict[str, float]  # MTEB scale: fractions in 0-1
    evaluation_time: float
    details: dict = field(default_factory=dict)  # counts (pairs, queries, docs), cache hit, ...
    # Per-item outputs behind the main score, for paired bootstrap intervals (embedlab.bench.stats): STS
    # {"gold", "pred"} (cosine per pair), retrieval {"qids", "main"} (nDCG@10 per query). Not written to JSON.
    items: dict | None = None

    @property
    def main_score(self) -> float:
        return self.scores["main_score"]

    def display(self, metric: str = "main_score") -> float:
        """``metric`` on the shown scale (x100 for STS and retrieval; embedlab.results.DISPLAY_SCALES)."""
        return self.task.display(self.scores[metric])


def _encode(model: Embedder, texts: Sequence[str], settings: EvalSettings,
            prompt_name: str | None = None) -> np.ndarray:
    prompt_name = prompt_name if prompt_name in model.prompts else None
    return model.encode(texts, batch_size=settings.batch_size, max_length=settings.max_length, prompt_name=prompt_name,
                        show_progress=settings.show_progress, token_budget=settings.token_budget,
                        num_threads=settings.num_threads, autocast_dtype=settings.autocast_dtype)


def _load(task: Task, settings: EvalSettings, load: Callable) -> tuple:
    """The task's split under the bad-row policy -> (record, details: skipped_rows and the expected-count check).
    Everything that can be wrong with the data is raised here, before anything is embedded."""
    bad = BadRows(skip=settings.skip_bad_rows)
    data = load(task.dataset, task.split, skip_bad_rows=bad)
    return data, {"skipped_rows": bad.count, **catalog.check_rows(task.dataset, task.split, data, warn=False)}


def _subsample(n: int, limit: int | None) -> list[int] | None:
    """Sorted indices of a seeded sample of ``limit`` of ``n`` items; None when there is nothing to drop."""
    if limit is None or n <= limit:
        return None
    return sorted(np.random.default_rng(LIMIT_SEED).choice(n, size=limit, replace=False).tolist())


def _limit_sts(task: Task, data: STSSet, settings: EvalSettings, details: dict) -> STSSet:
    pick = _subsample(len(data), settings.limit)
    if settings.limit is not None:
        details["limit"] = settings.limit
    if pick is not None:
        data = STSSet(data.name, data.split, [data.pairs[i] for i in pick])
        details.update(subsampled=True, nonstandard=True)
        log.info("%s: evaluating a seeded sample of %d of %d pairs (limit)", task.name, len(pick), details["rows"])
    if len(data) < 2:  # a correlation of fewer than 2 pairs is undefined: say so before embedding anything
        cause = f"limit={settings.limit} leaves" if pick is not None else "the data hold"
        raise (ConfigError if pick is not None else DataError)(
            f"task {task.name}: {cause} {len(data)} pair(s); a correlation needs at least 2")
    return data


def run_sts(model: Embedder, task: Task, settings: EvalSettings, cache: EmbeddingCache) -> TaskResult:
    data, details = _load(task, settings, catalog.load_sts)
    data = _limit_sts(task, data, settings, details)
    t0 = time.perf_counter()
    # Each distinct sentence is embedded once, even when it occurs in several pairs or on both sides.
    unique = list(dict.fromkeys(data.sentences1 + data.sentences2))
    index = {s: i for i, s in enumerate(unique)}
    emb = _encode(model, unique, settings, prompt_name=query_prompt_name(model.prompts, task))
    e1 = emb[[index[s] for s in data.sentences1]]
    e2 = emb[[index[s] for s in data.sentences2]]
    scores = sts_scores(e1, e2, np.asarray(data.scores, dtype=np.float64), model_similarity=model.similarity)
    items = {"gold": [float(x) for x in data.scores],
             "pred": pairwise_similarity(e1.astype(np.float64), e2.astype(np.float64), "cosine").tolist()}
    return TaskResult(task, scores, time.perf_counter() - t0,
                      {"pairs": len(data), "sentences": len(unique), **details}, items)


def run_retrieval(model: Embedder, task: Task, settings: EvalSettings, cache: EmbeddingCache) -> TaskResult:
    data, details = _load(task, settings, catalog.load_retrieval)
    t0 = time.perf_counter()
    doc_ids = list(data.corpus)
    doc_texts = [data.corpus[d].full_text() for d in doc_ids]
    queries = data.judged_queries()
    query_ids = list(queries)
    qrels = data.qrels
    # limit samples queries only: the whole corpus stays, so each query competes against every document as usual
    pick = _subsample(len(query_ids), settings.limit)
    if settings.limit is not None:
        details["limit"] = settings.limit
    if pick is not None:
        query_ids = [query_ids[i] for i in pick]
        qrels = {q: data.qrels[q] for q in query_ids}
        details.update(subsampled=True, nonstandard=True)
        log.info("%s: evaluating a seeded sample of %d of %d queries (limit)", task.name, len(pick), details["rows"])
    max_length = settings.max_length or model.max_length
    doc_prompt = "document" if "document" in model.prompts else ("passage" if "passage" in model.prompts else None)
    hits_before = time.perf_counter()
    corpus_emb = cache.get_or_compute(
        model.model_hash(), f"{task.dataset}/corpus", max_length, doc_ids,
        lambda: _encode(model, doc_texts, settings, prompt_name=doc_prompt),
        prompt=model.resolve_prompt(doc_prompt) if doc_prompt else "",
        precision=str(settings.autocast_dtype).replace("torch.", "") if settings.autocast_dtype else "fp32",
        texts=doc_texts,
    )
    corpus_time = time.perf_counter() - hits_before
    query_emb = _encode(model, [queries[q] for q in query_ids], settings,
                        prompt_name=query_prompt_name(model.prompts, task))
    score_kind = "cosine" if model.similarity == "cosine" else "dot"
    run = exact_search(query_emb, corpus_emb, query_ids, doc_ids, top_k=1000, score=score_kind)
    scores = score_run(qrels, run)
    per_query = per_query_ndcg10(qrels, run)
    items = {"qids": list(per_query), "main": list(per_query.values())}
    return TaskResult(task, scores, time.perf_counter() - t0,
                      {**details, "queries": len(query_ids), "documents": len(doc_ids),
                       "corpus_seconds": round(corpus_time, 3)}, items)


def run_geometry(model: Embedder, task: Task, settings: EvalSettings, cache: EmbeddingCache) -> TaskResult:
    data, details = _load(task, settings, catalog.load_sts)
    data = _limit_sts(task, data, settings, details)
    t0 = time.perf_counter()
    report = geometry_report(model, data, settings)
    scores = dict(report["scores"])
    scores["main_score"] = scores["uniformity"]
    return TaskResult(task, scores, time.perf_counter() - t0, {**report["details"], "pairs": len(data), **details})


def geometry_report(model: Embedder, data, settings: EvalSettings, token_sample: int = 1000, seed: int = 0) -> dict:
    """Sentence geometry on an STS set (positives: pairs with gold > 4 on the 0-5 scale; uniformity and anisotropy
    over all its distinct sentences) and token geometry on a seeded sample of ``token_sample`` of those sentences."""
    sentences = list(dict.fromkeys(data.sentences1 + data.sentences2))
    index = {s: i for i, s in enumerate(sentences)}
    emb = _encode(model, sentences, settings)
    positives = [p for p in data.pairs if p.score > 4.0]
    scores = geometry.sentence_geometry(emb[[index[p.sentence1] for p in positives]],
                                        emb[[index[p.sentence2] for p in positives]], emb)
    rng = np.random.default_rng(seed)
    pick = sorted(rng.choice(len(sentences), min(token_sample, len(sentences)), replace=False).tolist())
    tokens = model.encode_tokens([sentences[i] for i in pick], batch_size=settings.batch_size,
                                 max_length=settings.max_length)
    scores.update(geometry.token_geometry(tokens))
    return {"scores": scores, "details": {"sentences": len(sentences), "positive_pairs": len(positives),
                                          "token_sentences": len(pick)}}


RUNNERS: dict[str, Callable[[Embedder, Task, EvalSettings, EmbeddingCache], TaskResult]] = {
    "sts": run_sts, "retrieval": run_retrieval, "geometry": run_geometry,
}


def evaluate(
    model: Embedder | str,
    tasks: str | Sequence[str],
    *,
    settings: EvalSettings | None = None,
    out_dir: str | Path | None = None,
    cache: EmbeddingCache | None = None,
    model_label: str | None = None,
    on_result: Callable[[TaskResult], None] | None = None,
) -> list[TaskResult]:
    """Evaluate ``model`` (an Embedder or a name/path) on ``tasks``; write MTEB-format JSON under ``out_dir`` (if
    given). Results come back in task order; ``on_result`` sees each as it is done (e.g. to store it at once)."""
    if isinstance(settings, dict):  # EvalSettings' fields as a dict: checked like the dataclass itself
        try:
            settings = EvalSettings(**settings)
        except TypeError as e:
            raise ConfigError(f"settings: {e}") from None
    settings = settings or EvalSettings()
    if tasks is None:
        raise ConfigError(f"no tasks given; valid tasks: {', '.join(TASKS.names())}")
    task_list = parse_tasks(list(tasks) if not isinstance(tasks, str) else tasks)  # fail fast on a bad name
    if out_dir is not None:
        _check_out_dir(Path(out_dir))
    if isinstance(model, str):
        model = Embedder.load(model)
    if settings.backend is not None or settings.precision is not None:
        wanted = (settings.backend or "torch", settings.precision or "fp32")
        if (model.backend, model.precision) != wanted:
            model.set_backend(*wanted, calibration_texts=settings.calibration_texts)
    cache = cache or EmbeddingCache()
    label = model_label or model.name
    if out_dir is not None:  # a label that cannot name the JSON folder fails now, not after the first task
        try:
            result_path(out_dir, label, task_list[0].mteb_name)
        except ValueError as e:
            raise ConfigError(f"model label {label!r} cannot name the results folder under {out_dir} ({e}); give "
                              f"another label") from None
    results = []
    for task in task_list:
        log.info("evaluating %s on %s/%s", label, task.name, task.split)
        result = RUNNERS[task.type](model, task, settings, cache)
        results.append(result)
        result.details.update(inference_path(model, settings))
        extra = {"embedlab_task": task.name, "dataset": task.dataset, **result.details}
        if out_dir is not None:
            write_result(out_dir, label, mteb_result(task.mteb_name, task.split, result.scores,
                                                       result.evaluation_time, extra=extra))
        if on_result is not None:
            on_result(result)
    return results


def inference_path(model: Embedder, settings: EvalSettings) -> dict[str, str]:
    """The backend and precision the embeddings were computed with (recorded with every result)."""
    precision = model.precision
    if model.backend == "torch" and settings.autocast_dtype is not None:
        precision = str(settings.autocast_dtype).replace("torch.", "").replace("bfloat16", "bf16")
    return {"backend": model.backend, "precision": precision}


def _check_out_dir(out: Path) -> None:
    """ConfigError before any work when ``out`` cannot become a folder to write the JSON into; otherwise the first
    task would run and then fail."""
    from ..atomic import check_writable_folder

    check_writable_folder(out, "out_dir")


def result_rows(model: Embedder, label: str, result: TaskResult, settings: EvalSettings, **fields) -> list[dict]:
    """Store rows (embedlab.results.make_rows) for one task's result: every numeric score, with the model's path and
    content hash, the evaluation length and the result's details. ``fields`` adds job_id, experiment, seed, config,
    run_id, or more ``extra``."""
    from ..results import make_rows

    extra = {"max_length": settings.max_length or model.max_length, **result.details, **fields.pop("extra", {})}
    return make_rows(domain="text", model=label, model_path=getattr(model, "source_path", None) or model.name,
                     model_hash=model.model_hash(), task=result.task.name, task_type=result.task.type,
                     dataset=result.task.dataset, split=result.task.split, scores=result.scores,
                     duration_s=result.evaluation_time, extra=extra, **fields)
