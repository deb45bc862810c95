"""Hard-negative mining for IR training files: embed, search exactly, take candidates from a rank range, sample.

    mined = mine_hard_negatives(examples, corpus=None, model=Embedder.load("sentence-transformers/all-MiniLM-L6-v2"),
                                rank_range=(10, 50), n_negatives=4, margin=0.95, seed=0)
    # what `embedlab mine` runs:
    mine_file("wikiqa.jsonl", "wikiqa.mined.jsonl", "sentence-transformers/all-MiniLM-L6-v2")

For each query (in order):
1. the corpus is ranked by cosine similarity to the query (exact search, ``evaluate.retrieval.exact_search``); the
   corpus defaults to every positive and negative text in the file, deduplicated in first-seen order;
2. texts that must not be negatives are removed from the ranking: the query's positives and the query itself
   (compared after collapsing whitespace), and with ``keep_existing`` its existing negatives;
3. candidates are ``ranking[lo:hi]`` for ``rank_range=(lo, hi)``: the (lo+1)-th to hi-th best remaining texts,
   skipping the top ``lo`` because the very closest texts are often unlabelled positives;
4. with ``margin`` m, a candidate scoring above ``m × s(query, weakest positive)`` is dropped (false-negative guard:
   a text the model ranks like a positive probably is one; the weakest positive is the conservative reference);
5. ``n_negatives`` candidates are drawn without replacement by a generator seeded with (seed, example index), so the
   choice does not depend on chunking or resuming, and are written in rank order. A query with fewer candidates gets
   fewer negatives (counted in ``MiningStats.short``; the IR loss resamples with repetition).
The mined negatives replace the file's ``neg`` (``keep_existing=True``: appended after them).

Resumable: with a ``cache_dir``, the corpus embeddings go to ``cache_dir/<corpus fingerprint>/corpus.npy`` (model
weights, max length, corpus prompt and texts: shared by runs that differ only in seed, rank range or margin) and one
result file per chunk of queries to ``run-<run fingerprint>/`` below it (examples and every setting), each written
atomically. An interrupted run started again with the same inputs reuses what is there and continues where
it stopped; the result is identical to an uninterrupted run. Different inputs get a different folder.

It does not re-rank with a cross-encoder, deduplicate near-identical negatives across queries, or use per-example
``prompt`` fields (pass ``query_prompt``: one prompt for all queries).
"""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..atomic import atomic_path, check_output_file, check_writable_folder, write_json
from ..data.pairs import iter_sentences, load_ir_examples
from ..data.readers import BadRows, check_file
from ..data.records import IRExample
from ..data.retrieval import load_corpus
from ..data.training import write_ir_examples
from ..errors import ConfigError, DataError
from ..evaluate.retrieval import exact_search
from ..text.embedder import Embedder

log = logging.getLogger("embedlab.mining")

# (texts, prompt, show progress) -> float32 [n, dim] unit-norm embeddings; one closure carries the encode settings.
Encode = Callable[[list, "str | None", bool], np.ndarray]
_FORMAT_VERSION = 1  # bump when the chunk layout or the selection rule changes: old work folders are then ignored


@dataclass
class MiningStats:
    queries: int = 0
    corpus_size: int = 0
    negatives: int = 0  # mined negatives written in total
    short: int = 0  # queries that got fewer than n_negatives
    margin_dropped: int = 0  # candidates removed by the margin guard
    chunks_reused: int = 0  # chunks read back from the work folder (resume)
    chunks_computed: int = 0
    seconds: float = 0.0
    work_dir: str | None = None


def _key(text: str) -> str:
    """Texts compared for exclusion: whitespace collapsed, so a re-spaced copy of a positive is still a positive."""
    return " ".join(text.split())


def default_corpus(examples: Sequence[IRExample]) -> list[str]:
    """Every positive and negative of the examples, deduplicated, in first-seen order."""
    return list(dict.fromkeys(t for ex in examples for t in (*ex.pos, *ex.neg)))


def _check_args(rank_range: Sequence[int], n_negatives: int, margin: float | None, chunk_size: int,
                seed: int = 0) -> tuple[int, int]:
    try:
        lo, hi = (int(x) for x in rank_range)
    except (TypeError, ValueError):
        raise ConfigError(f"rank_range must be two integers (lo, hi), got {rank_range!r}") from None
    if not 0 <= lo < hi:
        raise ConfigError(f"rank_range needs 0 <= lo < hi, got ({lo}, {hi})")
    if n_negatives < 1:
        raise ConfigError(f"n_negatives must be >= 1, got {n_negatives}")
    if margin is not None and not margin > 0:
        raise ConfigError(f"margin must be > 0 (e.g. 0.95), got {margin}")
    if chunk_size < 1:
        raise ConfigError(f"chunk_size must be >= 1, got {chunk_size}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:  # numpy seeds: ints >= 0
        raise ConfigError(f"seed must be an integer >= 0, got {seed!r}")
    return lo, hi


def _hash(*parts: Any, texts: Sequence[str] = ()) -> str:
    h = hashlib.blake2b(digest_size=12)
    h.update(json.dumps(parts, sort_keys=True).encode())
    for text in texts:
        h.update(json.dumps(text).encode())
    return h.hexdigest()


def _corpus_fingerprint(model: Embedder, max_length: int, corpus: Sequence[str], corpus_prompt: str | None) -> str:
    """What the corpus embeddings depend on: weights and embedding settings (model_hash), truncation, prompt, texts."""
    return _hash(_FORMAT_VERSION, model.model_hash(), max_length, corpus_prompt, texts=corpus)


def _run_fingerprint(examples: Sequence[IRExample], settings: dict) -> str:
    return _hash(settings, texts=[json.dumps([ex.query, ex.pos, ex.neg]) for ex in examples])


# --------------------------------------------------------------------------------------------------- work folder


def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array)


def _corpus_embeddings(encode: Encode, corpus: Sequence[str], work: Path | None, prompt: str | None,
                       show_progress: bool) -> np.ndarray:
    path = work / "corpus.npy" if work is not None else None
    if path is not None and path.is_file():
        try:
            emb = np.load(path)
            if emb.ndim == 2 and emb.shape[0] == len(corpus) and emb.dtype == np.float32:
                return emb
            log.warning("mining cache %s does not match the corpus (shape %s); recomputing", path, emb.shape)
        except (OSError, ValueError, EOFError) as e:  # emptied or cut short outside embedlab: recompute it
            log.warning("unreadable mining cache %s (%s); recomputing", path, e)
    emb = encode(list(corpus), prompt, show_progress)
    if path is not None:
        _save_npy(path, emb)
    return emb


def _chunk_path(work: Path, start: int) -> Path:
    return work / f"chunk-{start:09d}.json"


def _read_chunk(path: Path, n_examples: int, corpus_size: int) -> dict | None:
    """A chunk's saved record when it is complete and well-formed for these examples and this corpus, else None
    (absent, or damaged outside embedlab: recomputed)."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    negatives, dropped = (record.get("negatives"), record.get("margin_dropped")) if isinstance(record, dict) else (
        None, None)
    ok = (isinstance(negatives, list) and isinstance(dropped, list) and len(negatives) == n_examples == len(dropped)
          and all(isinstance(d, int) for d in dropped)
          and all(isinstance(row, list) and all(isinstance(j, int) and not isinstance(j, bool) and 0 <= j < corpus_size
                                                for j in row) for row in negatives))
    if not ok and path.exists():
        log.warning("mining work file %s is damaged; recomputing it", path)
    return record if ok else None


# --------------------------------------------------------------------------------------------------- one chunk


def _excluded(example: IRExample, index: dict[str, list[int]], keep_existing: bool) -> set[int]:
    """Corpus rows that may not be a negative of this example."""
    texts = [example.query, *example.pos, *(example.neg if keep_existing else ())]
    return {j for t in texts for j in index.get(_key(t), ())}


def _mine_chunk(
    chunk: Sequence[IRExample],
    start: int,
    encode: Encode,
    corpus: Sequence[str],
    corpus_emb: np.ndarray,
    index: dict[str, list[int]],
    *,
    lo: int,
    hi: int,
    n_negatives: int,
    margin: float | None,
    seed: int,
    query_prompt: str | None,
    corpus_prompt: str | None,
    keep_existing: bool,
) -> dict[str, Any]:
    """Negatives (corpus rows, rank order) for examples ``start .. start+len(chunk)``; a JSON-ready record."""
    q_emb = encode([ex.query for ex in chunk], query_prompt, False)
    excluded = [_excluded(ex, index, keep_existing) for ex in chunk]
    top_k = min(len(corpus), hi + max(len(e) for e in excluded))
    run = exact_search(q_emb, corpus_emb, [str(i) for i in range(len(chunk))], [str(j) for j in range(len(corpus))],
                       top_k=top_k, score="cosine")
    pos_scores = None
    if margin is not None:
        pos_scores = _weakest_positive_scores(chunk, q_emb, corpus_emb, index, encode, corpus_prompt)
    negatives, dropped = [], []
    for r, ex in enumerate(chunk):
        ranked = [(int(j), s) for j, s in run[str(r)].items() if int(j) not in excluded[r]]
        candidates = ranked[lo:hi]
        before = len(candidates)
        if pos_scores is not None:
            candidates = [(j, s) for j, s in candidates if s <= margin * pos_scores[r]]
        dropped.append(before - len(candidates))
        rng = np.random.default_rng([seed, start + r])
        pick = sorted(rng.choice(len(candidates), size=min(n_negatives, len(candidates)), replace=False).tolist())
        negatives.append([candidates[k][0] for k in pick])
    return {"start": start, "stop": start + len(chunk), "negatives": negatives, "margin_dropped": dropped}


def _weakest_positive_scores(chunk: Sequence[IRExample], q_emb: np.ndarray, corpus_emb: np.ndarray,
                             index: dict[str, list[int]], encode: Encode, corpus_prompt: str | None) -> list[float]:
    """min over each query's positives of cos(query, positive), in float64 like exact_search's scores."""
    outside = list(dict.fromkeys(p for ex in chunk for p in ex.pos if _key(p) not in index))
    extra = encode(outside, corpus_prompt, False) if outside else None
    row_of = {p: i for i, p in enumerate(outside)}
    scores = []
    for r, ex in enumerate(chunk):
        vectors = [corpus_emb[index[_key(p)][0]] if _key(p) in index else extra[row_of[p]] for p in ex.pos]
        sims = np.asarray(vectors, dtype=np.float64) @ q_emb[r].astype(np.float64)
        scores.append(float(sims.min()))
    return scores


# --------------------------------------------------------------------------------------------------- public


def mine_hard_negatives(
    examples: Sequence[IRExample],
    corpus: Sequence[str] | None,
    model: Embedder,
    rank_range: tuple[int, int] = (10, 50),
    n_negatives: int = 4,
    margin: float | None = None,
    seed: int = 0,
    batch_size: int = 64,
    cache_dir: str | Path | None = None,
    show_progress: bool = True,
    *,
    query_prompt: str | None = None,
    corpus_prompt: str | None = None,
    keep_existing: bool = False,
    chunk_size: int = 1024,
    num_threads: int | None = None,
    max_length: int | None = None,
    stats: MiningStats | None = None,
) -> list[IRExample]:
    """Mine ``n_negatives`` hard negatives per example (rules in the module docstring); returns new examples in
    the same order. ``cache_dir`` makes the run resumable; ``num_threads`` sets torch's intra-op threads while
    encoding (None: unchanged); ``max_length`` truncates texts (default: the model's); ``stats`` is filled in."""
    t0 = time.perf_counter()
    lo, hi = _check_args(rank_range, n_negatives, margin, chunk_size, seed)
    if num_threads is not None and not (isinstance(num_threads, int) and 1 <= num_threads <= 1024):
        raise ConfigError(f"num_threads must be an integer from 1 to 1024, got {num_threads!r}")
    examples = list(examples)
    corpus = list(dict.fromkeys(corpus)) if corpus is not None else default_corpus(examples)
    if not corpus:
        raise DataError("the mining corpus is empty (no positives or negatives to mine from)")
    max_length = int(max_length or model.max_length)

    def encode(texts: list[str], prompt: str | None, progress: bool) -> np.ndarray:
        return model.encode(texts, batch_size=batch_size, prompt=prompt, normalize=True, max_length=max_length,
                            show_progress=progress, num_threads=num_threads)

    stats = stats if stats is not None else MiningStats()
    stats.queries, stats.corpus_size = len(examples), len(corpus)
    settings = {"rank_range": [lo, hi], "n_negatives": n_negatives, "margin": margin, "seed": seed,
                "query_prompt": query_prompt, "corpus_prompt": corpus_prompt, "keep_existing": keep_existing,
                "chunk_size": chunk_size}
    corpus_dir = work = None
    if cache_dir is not None:
        # Two levels: corpus embeddings are shared by every run over the same corpus and model (another seed,
        # rank range or margin reuses them); chunk results belong to one exact run.
        corpus_dir = Path(cache_dir) / _corpus_fingerprint(model, max_length, corpus, corpus_prompt)
        work = corpus_dir / f"run-{_run_fingerprint(examples, settings)}"
        work.mkdir(parents=True, exist_ok=True)
        write_json(work / "settings.json", {**settings, "model": model.name, "queries": len(examples),
                                            "corpus": len(corpus)})
        stats.work_dir = str(work)

    index: dict[str, list[int]] = {}
    for j, text in enumerate(corpus):
        index.setdefault(_key(text), []).append(j)
    corpus_emb = _corpus_embeddings(encode, corpus, corpus_dir, corpus_prompt, show_progress)

    from tqdm.auto import tqdm

    results: list[list[int]] = []
    with tqdm(total=len(examples), disable=not show_progress, desc="mine", unit="query", dynamic_ncols=True) as bar:
        for start in range(0, len(examples), chunk_size):
            chunk = examples[start:start + chunk_size]
            record = _read_chunk(_chunk_path(work, start), len(chunk), len(corpus)) if work is not None else None
            if record is not None:
                stats.chunks_reused += 1
            else:
                record = _mine_chunk(chunk, start, encode, corpus, corpus_emb, index, lo=lo, hi=hi,
                                     n_negatives=n_negatives, margin=margin, seed=seed, query_prompt=query_prompt,
                                     corpus_prompt=corpus_prompt, keep_existing=keep_existing)
                stats.chunks_computed += 1
                if work is not None:
                    write_json(_chunk_path(work, start), record)
            results.extend(record["negatives"])
            stats.margin_dropped += sum(record["margin_dropped"])
            bar.update(len(chunk))

    mined = []
    for ex, rows in zip(examples, results):
        negatives = tuple(corpus[j] for j in rows)
        stats.negatives += len(negatives)
        stats.short += len(negatives) < n_negatives
        mined.append(IRExample(ex.query, ex.pos, (*ex.neg, *negatives) if keep_existing else negatives, ex.prompt))
    stats.seconds = time.perf_counter() - t0
    return mined


def _check_cache_dir(cache_dir: str | Path) -> None:
    """ConfigError before any work unless ``cache_dir`` is (or can become) a writable folder."""
    check_writable_folder(cache_dir, "mining cache folder")


def load_corpus_texts(path: str | Path) -> list[str]:
    """A mining corpus: BEIR ``corpus.jsonl`` (title + text per document) or a text file with one passage a line."""
    path = check_file(path)
    if path.suffix.lower() == ".jsonl":
        return [doc.full_text() for doc in load_corpus(path).values()]
    return list(iter_sentences(path))


def mine_file(
    in_path: str | Path,
    out_path: str | Path,
    model_name: str | Embedder,
    *,
    corpus_path: str | Path | None = None,
    rank_range: tuple[int, int] = (10, 50),
    n_negatives: int = 4,
    margin: float | None = None,
    seed: int = 0,
    batch_size: int = 64,
    cache_dir: str | Path | None = None,
    show_progress: bool = True,
    device: str | None = None,
    query_prompt: str | None = None,
    corpus_prompt: str | None = None,
    keep_existing: bool = False,
    chunk_size: int = 1024,
    num_threads: int | None = None,
    max_length: int | None = None,
    skip_bad_rows: bool | BadRows = False,
    overwrite: bool = False,
) -> MiningStats:
    """Read a FlagEmbedding JSONL file (every row validated), mine, write ``out_path`` atomically.

    The work folder defaults to ``.<out name>.mining/`` next to the output and is removed after success; an
    explicit ``cache_dir`` is kept (its corpus embeddings serve later runs with the same inputs). ``out_path`` may
    not be an input; an existing file there is replaced only with ``overwrite=True`` (checked before any work).
    """
    target = Path(out_path)
    if target.exists() and not target.is_file() and not target.is_dir():
        # the file is written next to it and renamed over it: /dev/null (or a pipe) would be replaced by a file
        raise ConfigError(f"mining output {target} is not a regular file (a device, pipe or socket); embedlab "
                          f"writes a new file and renames it into place: give a file path")
    check_output_file(out_path, overwrite=overwrite, inputs=[in_path, corpus_path], what="mining output")
    if cache_dir is not None:
        _check_cache_dir(cache_dir)
    examples = load_ir_examples(in_path, skip_bad_rows)
    if not examples:
        raise DataError("no examples to mine for", in_path)
    corpus = load_corpus_texts(corpus_path) if corpus_path is not None else None
    model = model_name if isinstance(model_name, Embedder) else Embedder.load(model_name, device=device)
    out_path = Path(out_path)
    default_work = cache_dir is None
    work_root = out_path.parent / f".{out_path.name}.mining" if default_work else Path(cache_dir)
    stats = MiningStats()
    mined = mine_hard_negatives(examples, corpus, model, rank_range, n_negatives, margin, seed, batch_size,
                                work_root, show_progress, query_prompt=query_prompt, corpus_prompt=corpus_prompt,
                                keep_existing=keep_existing, chunk_size=chunk_size, num_threads=num_threads,
                                max_length=max_length, stats=stats)
    write_ir_examples(out_path, mined)
    if default_work:
        shutil.rmtree(work_root, ignore_errors=True)
    return stats
