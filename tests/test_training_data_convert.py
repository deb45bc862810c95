"""Converters on the real local mirror: counts, layouts, and no evaluation split leaking into training data."""
from __future__ import annotations

import json

import pytest

from embedlab.data import catalog
from embedlab.data.splits import load_scifact_dev, normalise, scifact_dev_query_ids
from embedlab.data.training import load_sources, sources_from_manifest
from embedlab.errors import DataError, UnknownChoiceError
from embedlab.prep.convert import CONVERTERS, EvalGuard, convert, convert_all

# Rows each converter writes from the mirror (after the eval guard); a change here is a change in training data.
EXPECTED_ROWS = {
    "scifact-train": 705, "medquad": 14979, "wikiqa": 873, "pubmedqa": 500, "mediqa-rqe": 3170, "nli": 8363,
    "mrpc": 2378, "stsb-train": 3358, "sick-train": 4438,  # stsb-train: 4130 before eval-overlap.tsv (772 more dropped)
}


@pytest.fixture(scope="module")
def converted(data_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("train-data")
    results = {r.name: r for r in convert_all(out, data_root)}
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    loaded = {s.name: s for s in load_sources(sources_from_manifest(out / "manifest.json"))}
    return out, results, manifest, loaded


def pair_keys(pairs):
    return {frozenset((normalise(p.sentence1), normalise(p.sentence2))) for p in pairs}


def test_every_converter_runs_with_expected_counts(converted):
    out, results, manifest, loaded = converted
    assert set(results) == set(CONVERTERS.names()) == set(EXPECTED_ROWS)
    assert {name: r.rows for name, r in results.items()} == EXPECTED_ROWS
    assert {name: len(s) for name, s in loaded.items()} == EXPECTED_ROWS  # every row re-validated as a source
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files left behind


def test_manifest_describes_each_file(converted):
    out, results, manifest, loaded = converted
    entries = {e["name"]: e for e in manifest["sources"]}
    assert entries["stsb-train"]["score_range"] == [0.0, 5.0] and entries["sick-train"]["score_range"] == [1.0, 5.0]
    assert entries["wikiqa"]["score_range"] is None and entries["wikiqa"]["task"] == "ir"
    assert entries["stsb-train"]["source_files"] == ["sts/stsb/sts-train.csv"]
    assert entries["mrpc"]["source_files"] == ["pairs/mrpc/msr_paraphrase_train.txt"]
    assert entries["wikiqa"]["source_files"] == ["pairs/wikiqa/WikiQASent-train.txt"]
    assert entries["sick-train"]["source_files"] == ["sts/sick/SICK_train.txt"]
    for e in entries.values():
        assert (out / e["path"]).is_file() and e["rows"] == EXPECTED_ROWS[e["name"]] and e["splits"]
    assert {"stsb/dev", "stsb/test", "sts12/test", "sts13/test", "scifact/test", "sickr/dev"} <= \
        set(manifest["eval_sets_guarded"])
    # STS scores are scaled only when loaded: the file keeps the source's scale.
    assert all(0 <= p.score <= 1 for p in loaded["sick-train"].examples)
    first = json.loads((out / "sick-train.jsonl").read_text(encoding="utf-8").splitlines()[0])
    assert 1 <= first["score"] <= 5


def test_stsb_train_has_no_eval_pair(converted):
    _, _, _, loaded = converted
    train = pair_keys(loaded["stsb-train"].examples)
    for name, split in [("stsb", "dev"), ("stsb", "test"), ("sts12", "test"), ("sts13", "test")]:
        assert not train & pair_keys(catalog.load_sts(name, split).pairs), (name, split)
    assert not pair_keys(loaded["sick-train"].examples) & pair_keys(catalog.load_sts("sickr", "dev").pairs)


def test_scifact_train_disjoint_from_test_and_dev(converted, data_root):
    _, results, _, loaded = converted
    queries = {normalise(ex.query) for ex in loaded["scifact-train"].examples}
    test = catalog.load_retrieval("scifact", "test")
    assert not queries & {normalise(q) for q in test.queries.values()}
    dev = load_scifact_dev(data_root)
    assert len(dev.queries) == 100 and not queries & {normalise(q) for q in dev.queries.values()}
    assert not {normalise(q) for q in dev.queries.values()} & {normalise(q) for q in test.queries.values()}
    # 101: one claim is repeated under two ids
    assert results["scifact-train"].dropped == {"dev_slice": 101, "eval_query": 2}
    assert scifact_dev_query_ids(data_root) == scifact_dev_query_ids(data_root)  # fixed choice
    # The same slice is the catalog's scifact/dev split, i.e. the `scifact-dev` evaluation task.
    assert catalog.load_retrieval("scifact", "dev").queries == dev.queries
    # Positives are judged documents' title + text.
    train = catalog.load_retrieval("scifact", "train")
    qid = next(q for q in train.qrels if q not in dev.queries and normalise(train.queries[q]) in queries)
    example = next(ex for ex in loaded["scifact-train"].examples if ex.query == train.queries[qid])
    assert set(example.pos) == {train.corpus[d].full_text() for d in train.qrels[qid]}


def test_no_output_pair_or_query_is_in_an_eval_set(converted, data_root):
    _, _, _, loaded = converted
    guard = EvalGuard.from_catalog(data_root)
    for name, source in loaded.items():
        for ex in source.examples:
            if source.task == "sts":
                assert not guard.is_eval_pair(ex.sentence1, ex.sentence2), name
            else:
                assert not guard.is_eval_query(ex.query), name
                assert not any(guard.is_eval_pair(ex.query, t) for t in (*ex.pos, *ex.neg)), name


def test_mrpc_pairs_from_sts12_msrpar_are_dropped(converted):
    _, results, _, loaded = converted
    # STS12's MSRpar subset is built from MRPC pairs: the guard must remove them from training.
    assert results["mrpc"].dropped["eval_pair"] > 0
    msrpar = catalog.load_sts("sts12").pairs
    assert not pair_keys([type(msrpar[0])(e.query, p, 0) for e in loaded["mrpc"].examples for p in e.pos]) & \
        pair_keys(msrpar)


def test_wikiqa_negatives_are_same_question_candidates(converted, data_root):
    _, results, _, loaded = converted
    rows = [line.split("\t") for line in
            (data_root / "pairs/wikiqa/WikiQASent-train.txt").read_text(encoding="utf-8").splitlines()]
    first = next(ex for ex in loaded["wikiqa"].examples if ex.query == "how are glacier caves formed ?")
    assert first.pos == tuple(s for q, s, lab in rows if q == first.query and lab == "1")
    assert first.neg == tuple(s for q, s, lab in rows if q == first.query and lab == "0")
    assert all(ex.pos for ex in loaded["wikiqa"].examples)
    assert results["wikiqa"].dropped["no_positive"] == len({q for q, _, _ in rows}) - EXPECTED_ROWS["wikiqa"]


def test_pubmedqa_leaves_out_test_pmids(converted, data_root):
    _, _, _, loaded = converted
    data = json.loads((data_root / "pairs/medical/pubmedqa/ori_pqal.json").read_text(encoding="utf-8"))
    test = json.loads((data_root / "pairs/medical/pubmedqa/test_ground_truth.json").read_text(encoding="utf-8"))
    questions = {ex.query for ex in loaded["pubmedqa"].examples}
    assert not questions & {data[p]["QUESTION"].strip() for p in test}
    assert all(len(ex.pos) == 2 for ex in loaded["pubmedqa"].examples)  # long answer + contexts


def test_nli_contradiction_is_hard_negative(converted):
    _, _, _, loaded = converted
    first = loaded["nli"].examples[0]
    assert first.query == "Two women are embracing while holding to go packages ."
    assert "Two woman are holding packages ." in first.pos and "The men are fighting outside a deli ." in first.neg
    assert all(not set(ex.pos) & set(ex.neg) for ex in loaded["nli"].examples)


def test_mediqa_uses_training_set_true_pairs_only(converted):
    _, results, manifest, loaded = converted
    entry = next(e for e in manifest["sources"] if e["name"] == "mediqa-rqe")
    assert entry["source_files"] == ["pairs/medical/mediqa2019/RQE/MEDIQA2019-Task2-RQE-TrainingSet-AMIA2016.xml"]
    assert results["mediqa-rqe"].dropped["identical"] > 0
    assert all(normalise(ex.query) not in {normalise(p) for p in ex.pos} for ex in loaded["mediqa-rqe"].examples)


def test_unknown_converter_and_missing_file(tmp_path):
    with pytest.raises(UnknownChoiceError, match="valid choices: mediqa-rqe, medquad"):
        convert("nope", tmp_path / "x.jsonl")
    with pytest.raises(DataError) as err:
        convert("stsb-train", tmp_path / "x.jsonl", data_root=tmp_path)
    assert "sts/stsb/sts-train.csv" in str(err.value) and "file not found" in str(err.value)
    assert not (tmp_path / "x.jsonl").exists()


def test_training_files_from_other_converter_code_stop_training(tmp_path):
    from embedlab.prep.convert import check_current, converter_hash
    from embedlab.errors import ConfigError

    check_current(tmp_path)  # no manifest: not converter output, not checked
    (tmp_path / "manifest.json").write_text(json.dumps({"converter_hash": converter_hash()}))
    check_current(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"converter_hash": "0123456789abcdef"}))
    with pytest.raises(ConfigError, match="other converter code.*embedlab convert --out"):
        check_current(tmp_path)


def test_stsb_train_drops_the_listed_overlap_rows(converted, data_root):
    """STS-B train holds 1075 test pairs of STS13-16 (the mirror's eval-overlap.tsv); STS14-16 are kept back, so the
    text guard cannot see most of them: the list is applied by line, and the manifest says why rows went."""
    from embedlab.prep.convert import STSB_EVAL_OVERLAP, STSB_TRAIN, stsb_overlap_lines
    from embedlab.data.sts import load_stsb

    out, results, manifest, loaded = converted
    listed = stsb_overlap_lines(data_root / STSB_EVAL_OVERLAP)
    assert len(listed) == 1075
    entry = {e["name"]: e for e in manifest["sources"]}["stsb-train"]
    by_list = {k: v for k, v in entry["dropped"].items() if k.startswith("eval_overlap_list")}
    assert sum(by_list.values()) == 1075 and "eval_overlap_list (sts14)" in by_list
    raw = load_stsb(data_root / STSB_TRAIN)
    kept = pair_keys(loaded["stsb-train"].examples)
    assert not kept & pair_keys([raw[n - 1] for n in listed])
    # the line numbers point at the right rows: every listed STS13 row is an STS13 test pair
    sts13 = pair_keys(catalog.load_sts("sts13", "test").pairs)
    on13 = [n for n, sets in listed.items() if "sts13" in sets]
    assert on13 and all(pair_keys([raw[n - 1]]) <= sts13 for n in on13)


def test_the_converter_hash_follows_code_not_comments_or_docstrings(tmp_path):
    from embedlab.prep.convert import code_hash

    src = tmp_path / "m.py"
    src.write_text('"""Doc."""\n\ndef f(x):\n    """What f does."""\n    return x + 1  # add one\n')
    before = code_hash([src])
    src.write_text('"""Another doc,\nrewrapped."""\n\n\ndef f(x):\n    """Other words."""\n    # a comment\n'
                   '    return x + 1\n')
    assert code_hash([src]) == before
    src.write_text('"""Doc."""\n\ndef f(x):\n    """What f does."""\n    return x + 2\n')
    assert code_hash([src]) != before
