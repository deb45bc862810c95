"""Format loaders on the real local mirror (counts, exact first/last records) and on small files written here."""
from __future__ import annotations

import json

import pytest

from embedlab.data import catalog
from embedlab.data.pairs import iter_sentences, load_cmteb_pairs, load_ir_examples, load_sentences
from embedlab.data.records import IRExample, STSPair
from embedlab.data.retrieval import load_beir, missing_judged_docs
from embedlab.data.sts import load_pairs_table, load_senteval_sts, load_senteval_subsets, load_stsb
from embedlab.settings import data_root


@pytest.fixture(scope="module")
def root():
    path = data_root()
    if path is None:
        pytest.skip("no local data root (set EMBEDLAB_DATA)")
    return path


# --------------------------------------------------------------------------------------------------- real data: STS


def test_stsb_counts_and_exact_records(root):
    assert [len(catalog.load_sts("stsb", s)) for s in ("train", "dev", "test")] == [5749, 1500, 1379]
    test = catalog.load_sts("stsb")  # default split is test
    assert test.split == "test"
    assert test.pairs[0] == STSPair("A girl is styling her hair.", "A girl is brushing her hair.", 2.5)
    assert test.pairs[-1] == STSPair(
        "South Korea declares end to MERS outbreak", "North Korea Delegation Meets With South Korean Officials", 0.0
    )


def test_stsb_extra_columns_and_trailing_spaces_pass_through(root):
    # Line 626 of sts-test.csv has 9 columns and both sentences end in a space: read 7, keep the text as stored.
    pair = catalog.load_sts("stsb").pairs[625]
    assert pair.sentence1.startswith("I remained under the banyan tree")
    assert pair.sentence1.endswith("every two hours. ") and pair.sentence2.endswith("every two hours. ")
    assert pair.score == 3.0


def test_senteval_sts12_sts13(root):
    sts12 = catalog.load_sts("sts12")
    assert len(sts12) == 3108 and len(catalog.load_sts("sts13")) == 1500
    # Subsets are concatenated in sorted order: MSRpar first, surprise.SMTnews last.
    assert sts12.pairs[0] == STSPair(
        "the problem likely will mean corrective changes before the shuttle fleet starts flying again .",
        "he said the problem needs to be corrected before the space shuttle fleet is cleared to fly again .",
        4.4,
    )
    assert sts12.pairs[-1] == STSPair(
        "he did , but the initiative did not get very far .",
        "what it did without the initiative not going very far .",
        3.5,
    )
    by_subset = load_senteval_subsets(root / "sts/sts12")
    assert list(by_subset) == ["MSRpar", "MSRvid", "SMTeuroparl", "surprise.OnWN", "surprise.SMTnews"]
    assert [len(v) for v in by_subset.values()] == [750, 750, 459, 750, 399]


def test_sick(root):
    train = catalog.load_sts("sickr", "train")
    assert len(train) == 4500 and len(catalog.load_sts("sickr", "dev")) == 500
    assert train.pairs[0] == STSPair(
        "A group of kids is playing in a yard and an old man is standing in the background",
        "A group of boys in a yard is playing and a man is standing in the background",
        4.5,
    )
    assert catalog.load_sts("sickr", "dev").pairs[-1] == STSPair(
        "A young man is pushing a motocross bike down a dirt hill", "A dog is swimming after a tennis ball", 1.0
    )


# ------------------------------------------------------------------------------------------ real data: retrieval


def test_scifact(root):
    test = catalog.load_retrieval("scifact")
    train = catalog.load_retrieval("scifact", "train")
    assert len(test.corpus) == 5183
    assert (len(test.queries), sum(map(len, test.qrels.values()))) == (300, 339)
    assert (len(train.queries), sum(map(len, train.qrels.values()))) == (809, 919)
    doc = test.corpus["4983"]
    assert doc.title.startswith("Microstructural development of human newborn cerebral white matter")
    assert test.qrels["1"] == {"31715818": 1}
    assert test.judged_queries() == test.queries


def test_msmarco_sample_qrels_without_header_keep_first_row(root):
    ds = catalog.load_retrieval("msmarco-sample")
    assert len(ds.corpus) == 5000 and len(ds.queries) == 43
    assert sum(map(len, ds.qrels.values())) == 4102
    assert ds.qrels["19335"]["1720389"] == 1  # line 1 of a file with no header row
    assert {g for judged in ds.qrels.values() for g in judged.values()} == {1, 2, 3}


def test_nfcorpus_pp_judged_docs_all_present(root):
    ds = catalog.load_retrieval("nfcorpus-pp")
    assert (len(ds.corpus), len(ds.queries), sum(map(len, ds.qrels.values()))) == (3395, 323, 12334)
    # The 238 documents missing relative to BEIR are unjudged distractors: no judged document is absent.
    assert missing_judged_docs(ds) == {}
    assert not catalog.get_spec("nfcorpus-pp").allow_missing_docs


# --------------------------------------------------------------------------------------------------- real data: pairs


def test_unsup_sentences_load_and_stream(root):
    sentences = catalog.load_sentences("unsup-sentences")
    assert len(sentences.sentences) == 111387
    assert sentences.sentences[0] == "YMCA in South Australia"
    assert next(iter_sentences(root / "unsup/sentences.txt")) == "YMCA in South Australia"


def test_cmteb_layouts(root):
    afqmc = catalog.load_sts("afqmc")  # JSONL with string labels
    assert len(afqmc) == 4316 and afqmc.pairs[0] == STSPair("双十一花呗提额在哪", "里可以提花呗额度", 0.0)
    atec = catalog.load_sts("atec", "train")  # 4 columns (id first), CRLF ends; a stray BOM is kept
    assert len(atec) == 39346 and atec.pairs[0].sentence1 == "\ufeff怎么更改花呗手机号码" and atec.pairs[0].score == 1
    assert not atec.pairs[0].sentence2.endswith("\r")
    assert len(catalog.load_sts("bq")) == 10000  # comma CSV with a header row
    assert len(catalog.load_sts("lcqmc")) == 12500  # TSV without header
    assert catalog.load_sts("stsb-zh").pairs[0] == STSPair("一个女孩在给她的头发做发型。", "一个女孩在梳头。", 2.0)
    examples = catalog.load_pairs("bge-ft-zh")
    assert len(examples) == 2701 and examples[0].query == "一架飞机要起飞了。"
    assert examples[0].pos == ("一架飞机正在起飞。",) and len(examples[0].neg) > 0


# --------------------------------------------------------------------------------------------------- small files


def test_stsb_reads_first_seven_columns(tmp_path):
    path = tmp_path / "sts.csv"
    path.write_text('g\tf\t2012\t1\t4.0\t"Quoted" start \t end\textra\tmore\ng\tf\t2012\t2\t0\ta\tb\n',
                    encoding="utf-8")
    assert load_stsb(path) == [STSPair('"Quoted" start ', " end", 4.0), STSPair("a", "b", 0.0)]


def test_crlf_line_ends_are_terminators(tmp_path):
    path = tmp_path / "sts.csv"
    path.write_bytes(b"g\tf\t2012\t1\t4.0\ta \tb\r\n")
    assert load_stsb(path) == [STSPair("a ", "b", 4.0)]


def test_senteval_skips_unscored_pairs(tmp_path):
    (tmp_path / "STS.input.b.txt").write_text("b1\tb2\nc1\tc2\n", encoding="utf-8")
    (tmp_path / "STS.gs.b.txt").write_text("\n2.5\n", encoding="utf-8")
    (tmp_path / "STS.input.a.txt").write_text("a1\ta2\n", encoding="utf-8")
    (tmp_path / "STS.gs.a.txt").write_text("5\n", encoding="utf-8")
    assert load_senteval_sts(tmp_path) == [STSPair("a1", "a2", 5.0), STSPair("c1", "c2", 2.5)]


def test_generic_pairs_table_jsonl_csv_and_indices(tmp_path):
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text(json.dumps({"q": "x", "d": "y", "rel": "3"}) + "\n\n", encoding="utf-8")
    assert load_pairs_table(jsonl, "q", "d", "rel") == [STSPair("x", "y", 3.0)]
    csv_file = tmp_path / "p.csv"
    csv_file.write_text('score,a,b\n1.5,"x, with comma","multi\nline"\n', encoding="utf-8")
    assert load_pairs_table(csv_file, "a", "b", "score") == [STSPair("x, with comma", "multi\nline", 1.5)]
    tsv = tmp_path / "p.tsv"
    tsv.write_text("x\ty\t1\n", encoding="utf-8")
    assert load_pairs_table(tsv, 0, 1, 2) == [STSPair("x", "y", 1.0)]  # no header: first score is a number
    tsv.write_text("s1\ts2\tlabel\nx\ty\t0\n", encoding="utf-8")
    assert load_pairs_table(tsv, 0, 1, 2) == [STSPair("x", "y", 0.0)]  # header recognised


def test_cmteb_jsonl_with_score_key(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text(json.dumps({"sentence1": "一", "sentence2": "二", "score": 4}) + "\n", encoding="utf-8")
    assert load_cmteb_pairs(path) == [STSPair("一", "二", 4.0)]


def test_ir_examples_optional_fields(tmp_path):
    path = tmp_path / "train.jsonl"
    rows = [{"query": "q", "pos": ["p"]}, {"query": "q2", "pos": ["p1", "p2"], "neg": ["n"], "prompt": "Represent: ",
                                           "pos_scores": [1.0, 0.5]}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    assert load_ir_examples(path) == [IRExample("q", ("p",)), IRExample("q2", ("p1", "p2"), ("n",), "Represent: ")]


def test_sentences_keep_text_exactly(tmp_path):
    path = tmp_path / "s.txt"
    path.write_bytes(b"\xef\xbb\xbf first \nsecond\r\nthird")
    assert load_sentences(path).sentences == [" first ", "second", "third"]


def test_beir_small_and_queries_limited_to_split(tmp_path):
    (tmp_path / "qrels").mkdir()
    (tmp_path / "corpus.jsonl").write_text(
        '{"_id": "d1", "title": "T", "text": "one"}\n{"_id": "d2", "text": ""}\n', encoding="utf-8")
    (tmp_path / "queries.jsonl").write_text('{"_id": "q1", "text": "a"}\n{"_id": "q2", "text": "b"}\n',
                                            encoding="utf-8")
    (tmp_path / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t2\nq1\td2\t0\n",
                                                 encoding="utf-8")
    ds = load_beir(tmp_path, "test", name="tiny")
    assert ds.queries == {"q1": "a"} and ds.qrels == {"q1": {"d1": 2, "d2": 0}}
    assert ds.corpus["d1"].full_text() == "T one" and ds.corpus["d2"].title == ""
