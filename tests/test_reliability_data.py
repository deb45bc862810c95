"""Reliability of evaluation inputs: what a score was computed on must be what the user thinks it was.

One section per fault fixed at its root:
1. the corpus-embedding cache is keyed on the document texts (and the tokenizer / lower-casing, via model_hash);
2. a model folder that cannot produce meaningful embeddings fails at load time (ModelError naming the folder);
3. evaluation settings and encode arguments out of range are ConfigErrors; EvalSettings.limit subsamples;
4. empty evaluation files fail with DataError naming the file, before anything is embedded;
5. rows skipped with skip_bad_rows are stored with the score;
6. a standard set with the wrong row count is flagged (warning + details);
7. recipe / experiment paths that are folders or binary files are ConfigErrors naming the path.
Everything runs on a 2-layer random BERT and hand-made files in tmp_path.
"""
from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from embedlab.errors import ConfigError, DataError, ModelError
from embedlab.evaluate.cache import EmbeddingCache
from embedlab.evaluate.runner import EvalSettings, evaluate
from embedlab.text import Embedder

STS_ROWS = [("A man plays a guitar.", "A person plays guitar.", 4.6), ("A dog runs.", "A cat sleeps.", 0.8),
            ("Kids play football.", "Children are playing soccer.", 4.2), ("It rains.", "The sun shines.", 0.4),
            ("A woman cooks.", "A woman is cooking food.", 4.8), ("Stocks fell.", "A bird sings.", 0.0)]
DOCS = {"d1": "Guitars have six strings.", "d2": "Dogs are loyal animals.", "d3": "Soccer is football.",
        "d4": "Rain falls from clouds.", "d5": "Cooking needs heat."}
QUERIES = [("q1", "how many strings on a guitar"), ("q2", "where does rain come from"), ("q3", "are dogs loyal")]
QRELS = "query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td4\t1\nq3\td2\t1\n"


def stsb_text(rows=STS_ROWS) -> str:
    return "".join(f"main-captions\tMSRvid\t2012test\t{i:04d}\t{s:.3f}\t{a}\t{b}\n" for i, (a, b, s) in enumerate(rows))


def write_beir(folder, docs=DOCS, queries=QUERIES, qrels=QRELS):
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    (folder / "corpus.jsonl").write_text("".join(json.dumps({"_id": k, "title": "", "text": v}) + "\n"
                                                 for k, v in docs.items()))
    (folder / "queries.jsonl").write_text("".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in queries))
    (folder / "qrels" / "test.tsv").write_text(qrels)


@pytest.fixture
def tiny_root(tmp_path, monkeypatch):
    """A data root laid out like the mirror: a 6-pair STS-B (every split) and a 5-document, 3-query SciFact."""
    root = tmp_path / "data"
    (root / "sts" / "stsb").mkdir(parents=True)
    for split in ("test", "dev", "train"):
        (root / "sts" / "stsb" / f"sts-{split}.csv").write_text(stsb_text())
    write_beir(root / "retrieval" / "scifact")
    monkeypatch.setenv("EMBEDLAB_DATA", str(root))
    return root




@pytest.fixture
def saved_model(tiny_bert, tmp_path):
    backbone, tok = tiny_bert
    return Embedder(backbone, tok, max_length=32, name="tiny-bert").save(tmp_path / "model")


class EncodeSpy:
    """Counts the texts of each encode call on ``model`` (or fails the test when ``forbid``)."""

    def __init__(self, model, forbid: bool = False):
        self.model, self.forbid, self.calls = model, forbid, []
        self.original = model.encode

    def __enter__(self):
        def spy(texts, **kw):
            if self.forbid:
                pytest.fail(f"encode was called ({len(texts)} texts) before the data were checked")
            self.calls.append(len(texts))
            return self.original(texts, **kw)

        self.model.encode = spy
        return self

    def __exit__(self, *exc):
        del self.model.encode


# --------------------------------------------------------------------------------------------------- 1. cache key


def test_edited_corpus_with_the_same_ids_is_embedded_again(tiny_root, tiny_model, tmp_path):
    cache = EmbeddingCache(tmp_path / "cache")
    evaluate(tiny_model, ["scifact"], cache=cache)
    # Same ids, new texts: each relevant document now holds its query's text (and the others are swapped around).
    edited = {"d1": QUERIES[0][1], "d4": QUERIES[1][1], "d2": QUERIES[2][1], "d3": DOCS["d5"], "d5": DOCS["d3"]}
    write_beir(tiny_root / "retrieval" / "scifact", docs=edited)
    with EncodeSpy(tiny_model) as spy:
        cached_run = evaluate(tiny_model, ["scifact"], cache=cache)[0]
    assert spy.calls == [5, 3]  # the 5 edited documents were embedded again, then the 3 queries
    fresh = evaluate(tiny_model, ["scifact"], cache=EmbeddingCache(enabled=False))[0]
    assert cached_run.main_score == pytest.approx(fresh.main_score)
    assert fresh.main_score == pytest.approx(1.0)  # each query's document is its own text now
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 2


def test_cache_entry_is_keyed_on_texts_not_only_ids(tmp_path):
    cache = EmbeddingCache(tmp_path)
    ids = ["a", "b"]
    first = cache.get_or_compute("h", "set/corpus", 32, ids, lambda: np.zeros((2, 3)), texts=["x", "y"])
    second = cache.get_or_compute("h", "set/corpus", 32, ids, lambda: np.ones((2, 3)), texts=["x", "edited"])
    again = cache.get_or_compute("h", "set/corpus", 32, ids, lambda: pytest.fail("should be cached"), texts=["x", "y"])
    assert first.sum() == 0 and second.sum() == 6 and again.sum() == 0


def test_model_hash_covers_lowercasing_and_tokenizer(tiny_bert, bos_tokenizer):
    """Corpus caches (the eval cache and mining's work folder) key on model_hash: it must change whenever the
    token ids would, even with the same weights."""
    from embedlab.prep.mining import _corpus_fingerprint

    backbone, tok = tiny_bert
    plain = Embedder(backbone, tok, max_length=32)
    lowered = Embedder(backbone, tok, max_length=32, do_lower_case=True)
    other_vocab = Embedder(backbone, bos_tokenizer, max_length=32)
    hashes = {plain.model_hash(), lowered.model_hash(), other_vocab.model_hash()}
    assert len(hashes) == 3
    corpus = ["Some Text.", "More text."]
    assert _corpus_fingerprint(plain, 32, corpus, None) != _corpus_fingerprint(lowered, 32, corpus, None)
    before = plain.model_hash()
    tok.add_tokens(["newtokenforthehash"])  # the same tokenizer object, grown
    assert plain.model_hash() != before


# --------------------------------------------------------------------------------------------------- 2. model load


def _remove_tokenizer_files(folder):
    for f in folder.iterdir():
        if f.name.startswith(("tokenizer", "vocab", "special_tokens")):
            f.unlink()


def test_model_folder_without_tokenizer_files_is_a_load_error(saved_model):
    _remove_tokenizer_files(saved_model)
    with pytest.raises(ModelError) as err:
        Embedder.load(str(saved_model))
    message = str(err.value)
    assert str(saved_model) in message and "tokenizer" in message and "30522" in message


def test_model_folder_with_missing_weights_is_a_load_error(saved_model):
    from safetensors.torch import load_file, save_file

    weights = load_file(saved_model / "model.safetensors")
    save_file({k: v for k, v in weights.items() if ".layer.1." not in k}, saved_model / "model.safetensors",
              metadata={"format": "pt"})
    with pytest.raises(ModelError, match="lacks 16 tensor") as err:
        Embedder.load(str(saved_model))
    assert str(saved_model) in str(err.value) and "encoder.layer.1." in str(err.value)
    (saved_model / "model.safetensors").unlink()
    with pytest.raises(ModelError, match="cannot load the model weights"):
        Embedder.load(str(saved_model))


@pytest.mark.parametrize("content, fragment", [
    ("{not json", "cannot read JSON"),
    ('{"0": {"path": "", "type": "sentence_transformers.models.Transformer"}}', "expected a list"),
    ("[]", "module list is empty"),
    ('["0_Transformer"]', "entry 0 is a str"),
    ('[{"path": "", "type": "sentence_transformers.models.Transformer"}, {"type": "x.Pooling"}]',
     "entry 1 lacks a string 'path'"),
    ('[{"path": ""}]', "entry 0 lacks a string 'type'"),
])
def test_malformed_modules_json_is_a_model_error_naming_the_file(saved_model, content, fragment):
    (saved_model / "modules.json").write_text(content)
    with pytest.raises(ModelError, match=fragment) as err:
        Embedder.load(str(saved_model))
    assert str(saved_model / "modules.json") in str(err.value)


def test_config_json_that_is_not_an_object_is_a_model_error(saved_model):
    (saved_model / "sentence_bert_config.json").write_text("[256]")
    with pytest.raises(ModelError, match="sentence_bert_config.json: expected an object"):
        Embedder.load(str(saved_model))


def test_intact_saved_model_still_loads(saved_model, tiny_model):
    loaded = Embedder.load(str(saved_model))
    assert loaded.model_hash() == tiny_model.model_hash()


# --------------------------------------------------------------------------------------------------- 3. settings


@pytest.mark.parametrize("field, value", [
    ("batch_size", 0), ("batch_size", -4), ("batch_size", None), ("max_length", -1), ("max_length", 0),
    ("num_threads", 0), ("num_threads", -2), ("token_budget", 0), ("token_budget", -100), ("limit", 0),
    ("limit", -1), ("batch_size", 2.5), ("limit", True),
])
def test_eval_settings_out_of_range_is_a_config_error(field, value):
    with pytest.raises(ConfigError) as err:
        EvalSettings(**{field: value})
    message = str(err.value)
    assert field in message and repr(value) in message and ">= 1" in message


def test_eval_settings_in_range_are_accepted():
    s = EvalSettings(batch_size=1, max_length=8, num_threads=1, token_budget=1, limit=1)
    assert s.limit == 1 and EvalSettings().limit is None


@pytest.mark.parametrize("kwargs, field", [
    ({"token_budget": 0}, "token_budget"), ({"max_length": -1}, "max_length"), ({"batch_size": -1}, "batch_size"),
    ({"batch_size": 0}, "batch_size"),  # last: before the fix this one looped forever, growing until out of memory
], ids=["token_budget=0", "max_length=-1", "batch_size=-1", "batch_size=0"])
def test_encode_rejects_batch_settings_below_1(tiny_model, kwargs, field):
    with pytest.raises(ConfigError, match=field):
        tiny_model.encode(["a text", "another text"], **kwargs)


def test_plan_batches_rejects_batch_size_0():
    with pytest.raises(ConfigError, match="batch_size"):
        Embedder.plan_batches([3, 2, 1], batch_size=0, token_budget=None)


def test_limit_subsamples_sts_pairs_and_retrieval_queries(tiny_root, tiny_model):
    settings = EvalSettings(batch_size=4, limit=3)
    sts, ir = evaluate(tiny_model, "stsb,scifact", settings=settings, cache=EmbeddingCache(enabled=False))
    assert sts.details["pairs"] == 3 and sts.details["rows"] == 6 and sts.details["limit"] == 3
    assert sts.details["subsampled"] is True and sts.details["nonstandard"] is True
    again = evaluate(tiny_model, "stsb", settings=settings, cache=EmbeddingCache(enabled=False))[0]
    assert again.main_score == sts.main_score  # seeded: the same 3 pairs
    assert "subsampled" not in ir.details and ir.details["limit"] == 3  # 3 queries: nothing to drop
    ir = evaluate(tiny_model, "scifact", settings=EvalSettings(limit=2), cache=EmbeddingCache(enabled=False))[0]
    assert ir.details["queries"] == 2 and ir.details["documents"] == 5 and ir.details["rows"] == 3
    assert ir.details["subsampled"] is True
    with pytest.raises(ConfigError, match="at least 2"):
        evaluate(tiny_model, "stsb", settings=EvalSettings(limit=1), cache=EmbeddingCache(enabled=False))


# --------------------------------------------------------------------------------------------------- 4. empty files


def _empty_case(root, case):
    stsb, beir = root / "sts" / "stsb" / "sts-test.csv", root / "retrieval" / "scifact"
    if case == "sts-empty":
        stsb.write_text("")
        return "stsb", stsb
    if case == "corpus-empty":
        (beir / "corpus.jsonl").write_text("\n")
        return "scifact", beir / "corpus.jsonl"
    if case == "queries-empty":
        (beir / "queries.jsonl").write_text("")
        return "scifact", beir / "queries.jsonl"
    if case == "qrels-header-only":
        (beir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n")
        return "scifact", beir / "qrels" / "test.tsv"
    raise AssertionError(case)


@pytest.mark.parametrize("case", ["sts-empty", "corpus-empty", "queries-empty", "qrels-header-only"])
def test_empty_evaluation_files_fail_before_embedding(tiny_root, tiny_model, case):
    task, path = _empty_case(tiny_root, case)
    with EncodeSpy(tiny_model, forbid=True), pytest.raises(DataError) as err:
        evaluate(tiny_model, task, cache=EmbeddingCache(enabled=False))
    assert err.value.path == str(path) and "no " in str(err.value)


def test_every_loader_rejects_a_file_without_rows(tmp_path):
    from embedlab.data.pairs import iter_sentences, load_cmteb_pairs, load_ir_examples, load_sentences
    from embedlab.data.retrieval import load_corpus, load_qrels, load_queries
    from embedlab.data.sts import load_pairs_table, load_senteval_sts, load_sick, load_stsb

    empty = tmp_path / "empty.tsv"
    empty.write_text("")
    sick = tmp_path / "SICK_test_annotated.txt"
    sick.write_text("pair_ID\tsentence_A\tsentence_B\trelatedness_score\tentailment_judgment\n")
    table = tmp_path / "pairs.csv"
    table.write_text("sentence1,sentence2,score\n")
    senteval = tmp_path / "sts12"
    senteval.mkdir()
    (senteval / "STS.input.x.txt").write_text("a\tb\nc\td\n")
    (senteval / "STS.gs.x.txt").write_text("\n\n")  # every pair unscored
    calls = [
        (lambda: load_stsb(empty), empty), (lambda: load_sick(sick), sick), (lambda: load_pairs_table(table), table),
        (lambda: load_cmteb_pairs(empty), empty), (lambda: load_corpus(empty), empty),
        (lambda: load_queries(empty), empty), (lambda: load_qrels(empty), empty),
        (lambda: load_ir_examples(empty), empty), (lambda: load_sentences(empty), empty),
        (lambda: list(iter_sentences(empty)), empty),
        (lambda: load_senteval_sts(senteval, ["x"]), senteval / "STS.gs.x.txt"),
    ]
    for call, path in calls:
        with pytest.raises(DataError) as err:
            call()
        assert err.value.path == str(path), str(err.value)


def test_all_rows_skipped_says_so(tmp_path):
    from embedlab.data.sts import load_stsb

    path = tmp_path / "sts-test.csv"
    path.write_text("only\tthree\tcolumns\n")
    with pytest.raises(DataError, match="all 1 row"):
        load_stsb(path, skip_bad_rows=True)


# --------------------------------------------------------------------------------------------------- 5. skipped rows


def test_skipped_rows_are_stored_with_the_score(tiny_root, tiny_model, tmp_path):
    from embedlab.bench.store import ResultsStore
    from embedlab.evaluate.mteb_json import read_result

    stsb = tiny_root / "sts" / "stsb" / "sts-test.csv"
    stsb.write_text(stsb_text() + "broken row\n" + "g\tf\t2012\t9\tnot-a-number\ta\tb\n")
    store = ResultsStore(f"sqlite:///{tmp_path / 'r.sqlite'}")
    from embedlab.evaluate.runner import result_rows

    settings = EvalSettings(skip_bad_rows=True)
    result = evaluate(tiny_model, "stsb", settings=settings, out_dir=tmp_path / "out",
                      cache=EmbeddingCache(enabled=False))[0]
    store.add_run(result_rows(tiny_model, "tiny-bert", result, settings))
    assert result.details["skipped_rows"] == 2 and result.details["pairs"] == 6
    entry = read_result(next((tmp_path / "out").rglob("STSBenchmark.json")))["scores"]["test"][0]
    assert entry["skipped_rows"] == 2
    row = store.query(model="tiny-bert", metric="main_score")[0]
    assert row["extra"]["skipped_rows"] == 2
    clean = evaluate(tiny_model, "scifact", cache=EmbeddingCache(enabled=False))[0]
    assert clean.details["skipped_rows"] == 0


# --------------------------------------------------------------------------------------------------- 6. row counts


def test_truncated_standard_set_is_flagged(tiny_root, tiny_model, caplog):
    with caplog.at_level(logging.WARNING, logger="embedlab.data"):
        sts, ir = evaluate(tiny_model, "stsb,scifact", cache=EmbeddingCache(enabled=False))
    assert sts.details["rows"] == 6 and sts.details["expected_rows"] == 1379 and sts.details["nonstandard"] is True
    assert ir.details["expected_rows"] == 300 and ir.details["expected_documents"] == 5183
    assert ir.details["nonstandard"] is True
    assert any("stsb/test" in r.getMessage() and "1379" in r.getMessage() for r in caplog.records)


def test_every_standard_split_has_expected_counts():
    from embedlab.data import catalog
    from embedlab.evaluate.tasks import TASKS

    for _, task in TASKS.items():
        assert catalog.get_spec(task.dataset).expected_rows.get(task.split), task.name
    assert catalog.get_spec("stsb").expected_rows["test"] == {"pairs": 1379}
    assert catalog.get_spec("scifact").expected_rows["test"]["queries"] == 300


def test_real_stsb_test_is_standard(data_root):
    from embedlab.data import catalog

    if not catalog.is_available("stsb", "test"):
        pytest.skip("STS-B test not in the mirror")
    data = catalog.load_sts("stsb", "test")
    assert catalog.check_rows("stsb", "test", data) == {"rows": 1379, "expected_rows": 1379, "nonstandard": False}


# --------------------------------------------------------------------------------------------------- 7. config paths


def test_recipe_path_that_is_a_folder_or_binary_is_a_config_error(tmp_path):
    from embedlab.experiment import load_experiment
    from embedlab.config import load_recipe

    folder = tmp_path / "recipes"
    folder.mkdir()
    binary = tmp_path / "model.safetensors"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\x00\x00")
    for load in (load_recipe, load_experiment):
        with pytest.raises(ConfigError, match="is a folder, expected a .* YAML file") as err:
            load(folder)
        assert str(folder) in str(err.value)
        with pytest.raises(ConfigError, match="is not UTF-8 text") as err:
            load(binary)
        assert str(binary) in str(err.value)
        with pytest.raises(ConfigError, match="not found"):
            load(tmp_path / "missing.yaml")
