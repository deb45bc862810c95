"""Malformed input: every error names the file, the 1-based line and what was expected; skip_bad_rows counts."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from embedlab.data import catalog
from embedlab.data.pairs import iter_sentences, load_cmteb_pairs, load_ir_examples, load_sentences
from embedlab.data.readers import BadRows
from embedlab.data.records import STSPair
from embedlab.data.retrieval import load_beir, missing_judged_docs
from embedlab.data.sts import load_pairs_table, load_senteval_sts, load_sick, load_stsb
from embedlab.errors import DataError

GOOD_STSB = "g\tf\t2012\t{i}\t{score}\t{s1}\t{s2}\n"


def stsb_line(i=1, score="1.0", s1="a", s2="b"):
    return GOOD_STSB.format(i=i, score=score, s1=s1, s2=s2)


def expect_error(call, path: Path, line: int, *fragments: str) -> DataError:
    with pytest.raises(DataError) as err:
        call()
    message = str(err.value)
    assert err.value.path == str(path) and err.value.line == line
    assert message.startswith(f"{path}:{line}: ")
    for fragment in fragments:
        assert fragment in message, message
    return err.value


# --------------------------------------------------------------------------------------------------- STS tables


def test_wrong_column_count(tmp_path):
    path = tmp_path / "sts-test.csv"
    path.write_text(stsb_line() + "g\tf\t2012\n" + stsb_line(3), encoding="utf-8")
    expect_error(lambda: load_stsb(path), path, 2, "expected at least 7 tab-separated columns, got 3")


def test_non_numeric_score(tmp_path):
    path = tmp_path / "sts-test.csv"
    path.write_text(stsb_line() + stsb_line(2, score="abc"), encoding="utf-8")
    expect_error(lambda: load_stsb(path), path, 2, "score 'abc' is not a number")


def test_non_finite_score(tmp_path):
    path = tmp_path / "sts-test.csv"
    path.write_text(stsb_line(score="nan"), encoding="utf-8")
    expect_error(lambda: load_stsb(path), path, 1, "not a finite number")


def test_empty_sentence(tmp_path):
    path = tmp_path / "sts-test.csv"
    path.write_text(stsb_line() + stsb_line(2) + stsb_line(3, s2="  "), encoding="utf-8")
    expect_error(lambda: load_stsb(path), path, 3, "empty sentence2")


def test_invalid_utf8_bytes(tmp_path):
    path = tmp_path / "sts-test.csv"
    path.write_bytes(stsb_line().encode() + stsb_line(2).encode() + b"g\tf\t2012\t3\t1\tcaf\xe9\tb\n")
    expect_error(lambda: load_stsb(path), path, 3, "invalid UTF-8", "expected UTF-8 text")


def test_skip_bad_rows_counts_and_warns(tmp_path, caplog):
    path = tmp_path / "sts-test.csv"
    data = (stsb_line(1) + "g\tf\n" + stsb_line(3, score="x") + stsb_line(4, s1="") + stsb_line(5)).encode()
    path.write_bytes(data + b"g\tf\t2012\t6\t1\t\xff\tb\n")
    bad = BadRows(skip=True)
    with caplog.at_level(logging.WARNING, logger="embedlab.data"):
        pairs = load_stsb(path, skip_bad_rows=bad)
    assert pairs == [STSPair("a", "b", 1.0), STSPair("a", "b", 1.0)]
    assert bad.count == 4 and bad.by_file == {str(path): 4}
    assert [r.split(": ", 1)[0] for r in bad.reasons] == [f"{path}:{n}" for n in (2, 3, 4, 6)]
    assert any("skipped 4 bad row(s)" in r.message and str(path) in r.message for r in caplog.records)
    assert len(load_stsb(path, skip_bad_rows=True)) == 2  # plain True works too


def test_catalog_load_skips_through_the_same_policy(tmp_path, monkeypatch):
    folder = tmp_path / "sts" / "stsb"
    folder.mkdir(parents=True)
    (folder / "sts-dev.csv").write_text(stsb_line() + stsb_line(2, score="?"), encoding="utf-8")
    monkeypatch.setenv("EMBEDLAB_DATA", str(tmp_path))
    expect_error(lambda: catalog.load_sts("stsb", "dev"), folder / "sts-dev.csv", 2, "score '?' is not a number")
    bad = BadRows(skip=True)
    assert len(catalog.load_sts("stsb", "dev", skip_bad_rows=bad)) == 1 and bad.count == 1


def test_sick_header_and_row_width(tmp_path):
    path = tmp_path / "SICK_test_annotated.txt"
    path.write_text("pair_ID\tsentence_A\tsentence_B\n1\ta\tb\n", encoding="utf-8")
    expect_error(lambda: load_sick(path), path, 1, "header lacks column(s) relatedness_score")
    path.write_text("pair_ID\tsentence_A\tsentence_B\trelatedness_score\tentailment_judgment\n1\ta\tb\t4\n",
                    encoding="utf-8")
    expect_error(lambda: load_sick(path), path, 2, "expected 5 tab-separated columns, got 4")


def test_senteval_line_counts_must_match(tmp_path):
    (tmp_path / "STS.input.x.txt").write_text("a\tb\nc\td\n", encoding="utf-8")
    (tmp_path / "STS.gs.x.txt").write_text("1\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"STS\.input\.x\.txt: has 2 lines but STS\.gs\.x\.txt has 1"):
        load_senteval_sts(tmp_path)


def test_senteval_bad_gold_names_the_gold_file(tmp_path):
    (tmp_path / "STS.input.x.txt").write_text("a\tb\nc\td\n", encoding="utf-8")
    gold = tmp_path / "STS.gs.x.txt"
    gold.write_text("1\nfive\n", encoding="utf-8")
    expect_error(lambda: load_senteval_sts(tmp_path), gold, 2, "score 'five' is not a number")
    inputs = tmp_path / "STS.input.x.txt"
    inputs.write_text("a\tb\nc\n", encoding="utf-8")
    expect_error(lambda: load_senteval_sts(tmp_path), inputs, 2, "expected 2 tab-separated columns, got 1")


def test_generic_table_errors(tmp_path):
    path = tmp_path / "pairs.csv"
    path.write_text("a,b,score\nx,y,1\nx,y\n", encoding="utf-8")
    expect_error(lambda: load_pairs_table(path, "a", "b", "score"), path, 3,
                 "expected 3 comma-separated columns, got 2")
    with pytest.raises(DataError, match="header lacks column"):
        load_pairs_table(path, "sentence1", "sentence2", "score")
    multi = tmp_path / "multi.csv"
    multi.write_text('a,b,score\n"x\nspans lines",y,1\n"z",w,oops\n', encoding="utf-8")
    expect_error(lambda: load_pairs_table(multi, "a", "b", "score"), multi, 4, "score 'oops' is not a number")


def test_cmteb_wrong_width(tmp_path):
    path = tmp_path / "x.tsv"
    path.write_text("a\tb\t1\nc\td\n", encoding="utf-8")
    expect_error(lambda: load_cmteb_pairs(path), path, 2, "expected 3 tab-separated columns, got 2")
    path.write_text("a\tb\n", encoding="utf-8")
    expect_error(lambda: load_cmteb_pairs(path), path, 1, "expected 3 (sentence1, sentence2, label) or 4")


# --------------------------------------------------------------------------------------------------- retrieval


def beir(tmp_path: Path, corpus: str, queries: str, qrels: str) -> Path:
    (tmp_path / "qrels").mkdir(exist_ok=True)
    (tmp_path / "corpus.jsonl").write_text(corpus, encoding="utf-8")
    (tmp_path / "queries.jsonl").write_text(queries, encoding="utf-8")
    (tmp_path / "qrels" / "test.tsv").write_text(qrels, encoding="utf-8")
    return tmp_path


CORPUS = '{"_id": "d1", "title": "", "text": "one"}\n{"_id": "d2", "title": "", "text": "two"}\n'
QUERIES = '{"_id": "q1", "text": "a"}\n{"_id": "q2", "text": "b"}\n'
HEADER = "query-id\tcorpus-id\tscore\n"


def test_malformed_json_line(tmp_path):
    folder = beir(tmp_path, '{"_id": "d1", "text": "one"}\n{"_id": "d2", "text": "two"\n', QUERIES, HEADER)
    expect_error(lambda: load_beir(folder), folder / "corpus.jsonl", 2, "malformed JSON",
                 "expected one JSON object per line")


def test_missing_field_and_duplicate_id(tmp_path):
    folder = beir(tmp_path, CORPUS, '{"_id": "q1", "text": "a"}\n{"_id": "q2"}\n', HEADER)
    expect_error(lambda: load_beir(folder), folder / "queries.jsonl", 2, "missing field 'text'")
    beir(tmp_path, CORPUS + '{"_id": "d1", "text": "again"}\n', QUERIES, HEADER)
    expect_error(lambda: load_beir(folder), folder / "corpus.jsonl", 3, "duplicate document _id 'd1' (first on line 1)")


def test_non_integer_grade(tmp_path):
    folder = beir(tmp_path, CORPUS, QUERIES, HEADER + "q1\td1\t1\nq1\td2\t0.5\n")
    expect_error(lambda: load_beir(folder), folder / "qrels/test.tsv", 3, "score '0.5' is not an integer")


def test_unknown_qrel_ids_fail_or_are_skipped_and_counted(tmp_path):
    qrels = HEADER + "q1\td1\t1\nq9\td1\t1\nq2\td7\t2\nq2\td2\t1\n"
    folder = beir(tmp_path, CORPUS, QUERIES, qrels)
    qrels_path = folder / "qrels/test.tsv"
    expect_error(lambda: load_beir(folder), qrels_path, 3, "query-id 'q9' is not in queries.jsonl")
    bad = BadRows(skip=True)
    ds = load_beir(folder, skip_bad_rows=bad)
    assert ds.qrels == {"q1": {"d1": 1}, "q2": {"d2": 1}} and bad.count == 2
    assert bad.reasons[1].startswith(f"{qrels_path}:4: corpus-id 'd7' is not in corpus.jsonl")


def test_allow_missing_docs_keeps_judgements(tmp_path, caplog):
    folder = beir(tmp_path, CORPUS, QUERIES, HEADER + "q1\td1\t1\nq1\tgone\t2\n")
    expect_error(lambda: load_beir(folder), folder / "qrels/test.tsv", 3, "corpus-id 'gone' is not in corpus.jsonl")
    with caplog.at_level(logging.WARNING, logger="embedlab.data"):
        ds = load_beir(folder, allow_missing_docs=True)
    assert ds.qrels == {"q1": {"d1": 1, "gone": 2}}  # still counts in the ideal ranking
    assert missing_judged_docs(ds) == {"q1": ["gone"]}
    assert any("1 judgement(s) reference documents absent" in r.message for r in caplog.records)


def test_duplicate_judgement(tmp_path):
    folder = beir(tmp_path, CORPUS, QUERIES, HEADER + "q1\td1\t1\nq1\td1\t2\n")
    expect_error(lambda: load_beir(folder), folder / "qrels/test.tsv", 3, "duplicate judgement", "first on line 2")


def test_missing_beir_file(tmp_path):
    with pytest.raises(DataError, match=r"corpus\.jsonl: file not found"):
        load_beir(tmp_path)


# --------------------------------------------------------------------------------------------------- pairs, sentences


def test_ir_example_validation(tmp_path):
    path = tmp_path / "train.jsonl"
    rows = [{"query": "q", "pos": ["p"]}, {"query": "q", "pos": []}, {"query": "q", "pos": "p"},
            {"pos": ["p"]}, {"query": "q", "pos": ["p"], "neg": ["n", 3]}, {"query": "q", "pos": ["p"], "prompt": 1}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + "[1, 2]\n", encoding="utf-8")
    expect_error(lambda: load_ir_examples(path), path, 2, "pos is empty (expected at least one passage)")
    bad = BadRows(skip=True)
    assert len(load_ir_examples(path, bad)) == 1
    assert [r.split(": ", 1)[1] for r in bad.reasons] == [
        "pos is empty (expected at least one passage)",
        "pos must be a list of strings, got str",
        "missing field 'query' (fields present: pos)",
        "neg[1] must be a string, got int",
        "prompt must be a string, got int",
    ]
    assert bad.count == 6  # the keep_reasons=5 cap leaves the last reason (not an object) unrecorded


def test_empty_sentence_line(tmp_path):
    path = tmp_path / "s.txt"
    path.write_text("one\n\nthree\n   \n", encoding="utf-8")
    expect_error(lambda: load_sentences(path), path, 2, "empty line (expected one sentence per line)")
    bad = BadRows(skip=True)
    assert list(iter_sentences(path, bad)) == ["one", "three"] and bad.count == 2
