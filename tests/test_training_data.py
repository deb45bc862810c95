"""Training sources: every row validated before training, errors naming file, line and field; STS label scaling."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from embedlab.data.readers import BadRows
from embedlab.data.records import IRExample, STSPair
from embedlab.data.training import (
    LoadedSource,
    MultiSourceDataset,
    TrainingSource,
    load_sources,
    scale_score,
    sources_from_manifest,
    write_ir_examples,
    write_sts_pairs,
)
from embedlab.errors import ConfigError, DataError, UnknownChoiceError


def jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


IR_OK = {"query": "q", "pos": ["p"], "neg": ["n"]}
STS_OK = {"sentence1": "a", "sentence2": "b", "score": 2.5}


def expect_data_error(call, path: Path, line: int, *fragments: str) -> DataError:
    with pytest.raises(DataError) as err:
        call()
    message = str(err.value)
    assert (err.value.path, err.value.line) == (str(path), line), message
    assert message.startswith(f"{path}:{line}: "), message
    for fragment in fragments:
        assert fragment in message, message
    return err.value


# --------------------------------------------------------------------------------------------------- IR rows


def test_ir_source_loads_examples(tmp_path):
    path = jsonl(tmp_path / "ir.jsonl", [IR_OK, {"query": "q2", "pos": ["a", "b"], "prompt": "Find"}])
    loaded = TrainingSource("toy", path, "ir", instruction="Retrieve").load()
    assert loaded.task == "ir" and len(loaded) == 2
    assert loaded[0] == IRExample("q", ("p",), ("n",))
    assert loaded[1] == IRExample("q2", ("a", "b"), (), "Find")  # neg may be absent


@pytest.mark.parametrize("row, fragments", [
    ({"pos": ["p"], "neg": []}, ["missing field 'query'"]),
    ({"query": "q", "neg": []}, ["missing field 'pos'"]),
    ({"query": "q", "pos": [], "neg": []}, ["pos is empty"]),
    ({"query": "q", "pos": "p", "neg": []}, ["pos must be a list"]),
    ({"query": "q", "pos": ["p", 3], "neg": []}, ["pos[1] must be a string"]),
    ({"query": "q", "pos": ["p"], "neg": "n"}, ["neg must be a list"]),
    ({"query": "  ", "pos": ["p"], "neg": []}, ["empty query"]),
    ({"query": "q", "pos": ["p"], "prompt": 5}, ["prompt must be a string"]),
])
def test_ir_row_errors_name_file_line_field(tmp_path, row, fragments):
    path = jsonl(tmp_path / "ir.jsonl", [IR_OK, IR_OK, row, IR_OK])
    expect_data_error(lambda: TrainingSource("toy", path, "ir").load(), path, 3, *fragments)


def test_ir_malformed_json_line(tmp_path):
    path = jsonl(tmp_path / "ir.jsonl", [IR_OK, '{"query": "q", "pos": ["p"]'])
    expect_data_error(lambda: TrainingSource("toy", path, "ir").load(), path, 2, "malformed JSON")


def test_skip_bad_rows_counts(tmp_path):
    path = jsonl(tmp_path / "ir.jsonl", [IR_OK, {"query": "q", "pos": []}, IR_OK])
    bad = BadRows(skip=True)
    loaded = TrainingSource("toy", path, "ir").load(bad)
    assert len(loaded) == 2 and bad.count == 1 and "pos is empty" in bad.reasons[0]


# --------------------------------------------------------------------------------------------------- STS rows


def test_sts_scores_scaled_to_unit_interval(tmp_path):
    path = jsonl(tmp_path / "sts.jsonl", [{**STS_OK, "score": s} for s in (0, 3.8, 5)])
    loaded = TrainingSource("stsb", path, "sts", score_range=(0, 5)).load()
    assert [p.score for p in loaded.examples] == pytest.approx([0.0, 0.76, 1.0])
    sick = jsonl(tmp_path / "sick.jsonl", [{**STS_OK, "score": s} for s in (1, 3.8, 5)])
    assert [p.score for p in TrainingSource("sick", sick, "sts", score_range=[1, 5]).load().examples] == \
        pytest.approx([0.0, 0.7, 1.0])
    assert scale_score(2.5, 0, 5) == 0.5


@pytest.mark.parametrize("row, fragments", [
    ({**STS_OK, "score": 5.5}, ["score 5.5 is outside the declared range [0, 5] of source 'stsb'"]),
    ({**STS_OK, "score": -0.1}, ["score -0.1 is outside the declared range"]),
    ({"sentence1": "a", "sentence2": "b"}, ["missing field 'score'"]),
    ({"sentence1": "a", "score": 1}, ["missing field 'sentence2'"]),
    ({**STS_OK, "score": "high"}, ["score 'high' is not a number"]),
    ({**STS_OK, "sentence1": ""}, ["empty sentence1"]),
])
def test_sts_row_errors_name_file_line_field(tmp_path, row, fragments):
    path = jsonl(tmp_path / "sts.jsonl", [STS_OK, row])
    expect_data_error(lambda: TrainingSource("stsb", path, "sts", score_range=(0, 5)).load(), path, 2, *fragments)


def test_sts_table_with_header(tmp_path):
    path = tmp_path / "sts.tsv"
    path.write_text("sentence1\tsentence2\tscore\na\tb\t4\nc\td\t9\n", encoding="utf-8")
    source = TrainingSource("t", path, "sts", score_range=(0, 5))
    expect_data_error(source.load, path, 3, "score 9 is outside the declared range [0, 5]")
    path.write_text("sentence1\tsentence2\tscore\na\tb\t4\n", encoding="utf-8")
    assert source.load().examples == [STSPair("a", "b", 0.8)]
    path.write_text("s1\ts2\tscore\na\tb\t4\n", encoding="utf-8")
    expect_data_error(source.load, path, 1, "header lacks column(s) sentence1, sentence2")


# --------------------------------------------------------------------------------------------------- source settings


def test_unknown_task_type_lists_choices(tmp_path):
    with pytest.raises(UnknownChoiceError) as err:
        TrainingSource("mine", tmp_path / "x.jsonl", "retrieval")
    message = str(err.value)
    assert "unknown task type 'retrieval'; valid choices: ir, sts" in message
    assert "training source 'mine'" in message and "x.jsonl" in message


def test_score_range_rules(tmp_path):
    with pytest.raises(ConfigError, match="needs score_range"):
        TrainingSource("s", tmp_path / "s.jsonl", "sts")
    with pytest.raises(ConfigError, match="sts sources only"):
        TrainingSource("i", tmp_path / "i.jsonl", "ir", score_range=(0, 5))
    with pytest.raises(ConfigError, match="lo < hi"):
        TrainingSource("s", tmp_path / "s.jsonl", "sts", score_range=(5, 5))
    with pytest.raises(ConfigError, match="two numbers"):
        TrainingSource("s", tmp_path / "s.jsonl", "sts", score_range=("a", 5))


def test_missing_file_and_empty_file(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        TrainingSource("i", tmp_path / "none.jsonl", "ir").load()
    empty = jsonl(tmp_path / "empty.jsonl", [])
    with pytest.raises(DataError, match="no examples"):
        TrainingSource("i", empty, "ir").load()


def test_load_sources_validates_every_file_before_returning(tmp_path):
    good = jsonl(tmp_path / "good.jsonl", [IR_OK])
    bad = jsonl(tmp_path / "bad.jsonl", [STS_OK, {**STS_OK, "score": 7}])
    sources = [TrainingSource("good", good, "ir"), TrainingSource("bad", bad, "sts", score_range=(0, 5))]
    expect_data_error(lambda: load_sources(sources), bad, 2, "outside the declared range")
    with pytest.raises(ConfigError, match="named 'good'"):
        load_sources([sources[0], sources[0]])


def test_writers_round_trip_and_manifest(tmp_path):
    examples = [IRExample("q", ("p1", "p2"), ("n",), "inst"), IRExample("q2", ("p",))]
    assert write_ir_examples(tmp_path / "ir.jsonl", examples) == 2
    assert write_sts_pairs(tmp_path / "sts.jsonl", [STSPair("a", "b", 4.0)]) == 1
    (tmp_path / "manifest.json").write_text(json.dumps({"sources": [
        {"name": "ir", "task": "ir", "path": "ir.jsonl", "instruction": "Find"},
        {"name": "sts", "task": "sts", "path": "sts.jsonl", "score_range": [0, 5]},
    ]}), encoding="utf-8")
    sources = sources_from_manifest(tmp_path / "manifest.json")
    loaded = load_sources(sources)
    assert loaded[0].examples == examples and loaded[0].source.instruction == "Find"
    assert loaded[1].examples == [STSPair("a", "b", 0.8)]
    assert [s.name for s in sources_from_manifest(tmp_path / "manifest.json", ["sts"])] == ["sts"]
    assert sources_from_manifest(tmp_path / "manifest.json", instructions=False)[0].instruction is None
    with pytest.raises(UnknownChoiceError):
        sources_from_manifest(tmp_path / "manifest.json", ["nope"])


def test_dataset_with_dataloader_and_sampler(tmp_path):
    from torch.utils.data import DataLoader

    from embedlab.data.samplers import SingleTaskBatchSampler

    ir = LoadedSource(TrainingSource("ir", tmp_path / "a", "ir"), [IRExample(f"q{i}", ("p",)) for i in range(8)])
    sts = LoadedSource(TrainingSource("sts", tmp_path / "b", "sts", score_range=(0, 1)),
                       [STSPair(f"a{i}", "b", 0.5) for i in range(6)])
    dataset = MultiSourceDataset([ir, sts])
    sampler = SingleTaskBatchSampler([ir, sts], {"ir": 4, "sts": 3}, world_size=1, rank=0)
    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=list)
    batches = list(loader)
    assert len(batches) == len(sampler) == 4 and len(dataset) == 14
    for batch in batches:
        assert len({s for s, _ in batch}) == 1
        s = batch[0][0]
        assert all(isinstance(ex, IRExample if s == 0 else STSPair) for _, ex in batch)
