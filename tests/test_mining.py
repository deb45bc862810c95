"""Hard-negative mining: rank range, exclusion of positives, margin guard, determinism, resume, the file entry point."""
from __future__ import annotations

import json

import numpy as np
import pytest

import embedlab.prep.mining as mining
from embedlab.data.records import IRExample
from embedlab.data.training import load_ir_source, write_ir_examples
from embedlab.errors import ConfigError
from embedlab.prep.mining import MiningStats, default_corpus, mine_file, mine_hard_negatives
from embedlab.text import Embedder

# One intra-op thread everywhere: these models are small, and on a shared 2-core machine two OpenMP threads can be
# a hundred times slower than one when the other core is busy.
THREADS = 1
TOPICS = ["cats", "dogs", "rain", "trains", "bread", "chess", "rivers", "stars"]


def toy_examples() -> list[IRExample]:
    examples = []
    for i, topic in enumerate(TOPICS):
        pos = (f"a passage about {topic}", f"{topic} are discussed here")
        neg = tuple(f"unrelated note {i}-{k} on {TOPICS[(i + k + 1) % len(TOPICS)]} and weather" for k in range(3))
        examples.append(IRExample(f"what about {topic}?", pos, neg))
    # A re-spaced copy of example 0's positive and example 1's query sit in the corpus as other examples' negatives:
    # neither may become a negative of the example it belongs to.
    examples[3] = IRExample(examples[3].query, examples[3].pos, examples[3].neg + ("a  passage about cats ",))
    examples[4] = IRExample(examples[4].query, examples[4].pos, examples[4].neg + ("what about dogs?",))
    return examples


@pytest.fixture
def tiny(tiny_bert):
    backbone, tokenizer = tiny_bert
    return Embedder(backbone, tokenizer, normalize=True, name="tiny-bert")


def reference_ranking(model, example, corpus):
    """(corpus row, cosine) best first, positives / the query (whitespace-insensitive) removed."""
    q = model.encode([example.query], num_threads=THREADS)[0].astype(np.float64)
    emb = model.encode(corpus, num_threads=THREADS).astype(np.float64)
    scores = emb @ q / (np.linalg.norm(emb, axis=1) * np.linalg.norm(q))
    banned = {" ".join(t.split()) for t in (example.query, *example.pos)}
    order = sorted(range(len(corpus)), key=lambda j: (-scores[j], j))
    return [(j, scores[j]) for j in order if " ".join(corpus[j].split()) not in banned], scores


def mine(model, examples, **kw):
    kw = {"rank_range": (1, 12), "n_negatives": 3, "show_progress": False, "num_threads": THREADS, **kw}
    return mine_hard_negatives(examples, None, model, **kw)


def test_candidates_come_from_the_rank_range_and_exclude_positives(tiny):
    examples = toy_examples()
    corpus = default_corpus(examples)
    mined = mine(tiny, examples, rank_range=(2, 9), n_negatives=50)  # more than the range: take all of it
    for ex, out in zip(examples, mined):
        assert out.query == ex.query and out.pos == ex.pos
        ranked, _ = reference_ranking(tiny, ex, corpus)
        assert list(out.neg) == [corpus[j] for j, _ in ranked[2:9]]
        keys = {" ".join(t.split()) for t in (ex.query, *ex.pos)}
        assert not keys & {" ".join(n.split()) for n in out.neg}
    assert "a  passage about cats " not in mined[0].neg and "what about dogs?" not in mined[1].neg


def test_deterministic_with_the_seed(tiny):
    examples = toy_examples()
    a, b = mine(tiny, examples, seed=7), mine(tiny, examples, seed=7)
    assert a == b and all(len(x.neg) == 3 for x in a)
    assert mine(tiny, examples, seed=8) != a
    corpus = default_corpus(examples)
    for ex, out in zip(examples, a):  # sampled negatives are written in rank order
        ranked, _ = reference_ranking(tiny, ex, corpus)
        rank_of = {corpus[j]: r for r, (j, _) in enumerate(ranked)}
        assert [rank_of[n] for n in out.neg] == sorted(rank_of[n] for n in out.neg)


def test_margin_drops_candidates_scoring_near_the_positive(tiny):
    examples = toy_examples()
    corpus = default_corpus(examples)
    plain = mine(tiny, examples, rank_range=(0, 40), n_negatives=40)
    stats = MiningStats()
    guarded = mine(tiny, examples, rank_range=(0, 40), n_negatives=40, margin=0.98, stats=stats)
    assert stats.margin_dropped > 0
    for ex, p, g in zip(examples, plain, guarded):
        _, scores = reference_ranking(tiny, ex, corpus)
        weakest = min(scores[corpus.index(t)] for t in ex.pos)
        expected = [n for n in p.neg if scores[corpus.index(n)] <= 0.98 * weakest + 1e-9]
        assert list(g.neg) == expected
    assert stats.margin_dropped == sum(len(p.neg) - len(g.neg) for p, g in zip(plain, guarded))


def test_explicit_corpus_keep_existing_and_short_queries(tiny):
    examples = toy_examples()[:3]
    corpus = [f"sentence number {i}" for i in range(6)] + ["a passage about cats"]  # holds a positive of ex 0
    stats = MiningStats()
    mined = mine_hard_negatives(examples, corpus, tiny, rank_range=(0, 3), n_negatives=5, margin=2.0,
                                keep_existing=True, show_progress=False, num_threads=THREADS, stats=stats)
    assert mined[0].neg[:3] == examples[0].neg and "a passage about cats" not in mined[0].neg
    assert all(len(m.neg) == len(e.neg) + 3 for m, e in zip(mined, examples))
    assert stats.short == 3 and stats.corpus_size == 7


def test_resume_after_interruption_gives_the_same_output(tiny, tmp_path, monkeypatch):
    examples = toy_examples()
    straight = mine(tiny, examples, chunk_size=2)
    real = mining._mine_chunk
    calls = []

    def flaky(*args, **kwargs):
        calls.append(args[1])
        if len(calls) == 3:
            raise KeyboardInterrupt  # the run is killed while mining its third chunk
        return real(*args, **kwargs)

    monkeypatch.setattr(mining, "_mine_chunk", flaky)
    with pytest.raises(KeyboardInterrupt):
        mine(tiny, examples, chunk_size=2, cache_dir=tmp_path)
    monkeypatch.setattr(mining, "_mine_chunk", real)
    stats = MiningStats()
    resumed = mine(tiny, examples, chunk_size=2, cache_dir=tmp_path, stats=stats)
    assert resumed == straight
    assert (stats.chunks_reused, stats.chunks_computed) == (2, 2)
    # Another seed reuses the corpus embeddings but not the chunks.
    other = MiningStats()
    mine(tiny, examples, chunk_size=2, cache_dir=tmp_path, seed=1, stats=other)
    assert other.chunks_reused == 0 and len(list(tmp_path.glob("*/corpus.npy"))) == 1


def test_mine_file_writes_jsonl_and_cleans_up(tiny, tmp_path):
    src = tmp_path / "in.jsonl"
    write_ir_examples(src, toy_examples())
    out = tmp_path / "out" / "mined.jsonl"
    stats = mine_file(src, out, tiny, rank_range=(1, 12), n_negatives=3, show_progress=False,
                      num_threads=THREADS)
    assert load_ir_source(out) == mine(tiny, toy_examples())
    assert stats.queries == 8 and stats.negatives == 24 and stats.short == 0
    assert [p.name for p in out.parent.iterdir()] == ["mined.jsonl"]  # work folder removed, no temp files
    first = json.loads(out.read_text(encoding="utf-8").splitlines()[0])
    assert set(first) == {"query", "pos", "neg"}
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(f"line {i} about cats" for i in range(20)) + "\n", encoding="utf-8")
    mine_file(src, out, tiny, corpus_path=corpus, rank_range=(0, 5), n_negatives=2, show_progress=False,
              num_threads=THREADS, overwrite=True)  # the file exists now: replacing it must be asked for
    assert all(n.startswith("line ") for ex in load_ir_source(out) for n in ex.neg)


@pytest.mark.parametrize("kwargs, message", [
    ({"rank_range": (5, 5)}, "0 <= lo < hi"),
    ({"rank_range": (-1, 5)}, "0 <= lo < hi"),
    ({"n_negatives": 0}, "n_negatives"),
    ({"margin": 0.0}, "margin"),
])
def test_argument_errors(tiny, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        mine(tiny, toy_examples(), **kwargs)


def test_minilm_on_real_queries(minilm, data_root, tmp_path):
    from embedlab.prep.convert import convert

    convert("nli", tmp_path / "nli.jsonl", data_root)
    examples = load_ir_source(tmp_path / "nli.jsonl")[:100]
    corpus = default_corpus(examples)
    stats = MiningStats()
    kwargs = dict(rank_range=(3, 30), n_negatives=4, margin=0.95, seed=11, batch_size=64, cache_dir=tmp_path / "w",
                  show_progress=False, chunk_size=40, num_threads=THREADS)
    mined = mine_hard_negatives(examples, None, minilm, stats=stats, **kwargs)
    assert stats.chunks_computed == 3 and stats.negatives > 300
    emb = minilm.encode(corpus, batch_size=64, num_threads=THREADS).astype(np.float64)
    q = minilm.encode([e.query for e in examples], num_threads=THREADS).astype(np.float64)
    index = {t: j for j, t in enumerate(corpus)}
    for r, (ex, out) in enumerate(zip(examples, mined)):
        assert not set(out.neg) & set(ex.pos) and ex.query not in out.neg
        weakest = min(emb[index[p]] @ q[r] for p in ex.pos)
        assert all(emb[index[n]] @ q[r] <= 0.95 * weakest + 1e-6 for n in out.neg)
    again = MiningStats()
    assert mine_hard_negatives(examples, None, minilm, stats=again, **kwargs) == mined  # read back, identical
    assert again.chunks_reused == 3


def test_max_length_is_part_of_the_cache_key(tiny, tmp_path):
    examples = toy_examples()
    short = mine(tiny, examples, max_length=4, cache_dir=tmp_path)
    full = mine(tiny, examples, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*/corpus.npy"))) == 2
    assert short != full  # "what about <topic>?" cut to 4 tokens loses the topic: a different ranking
