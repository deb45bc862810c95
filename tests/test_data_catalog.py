"""The dataset registry: every entry is well formed and loads when present; missing data fails with the exact path."""
from __future__ import annotations

import dataclasses
import io
import zipfile
from pathlib import Path

import pytest

from embedlab import settings
from embedlab.data import catalog
from embedlab.errors import ConfigError, DataError, UnknownChoiceError
from embedlab.registry import Registry

SPECS = catalog.list_datasets()
SPLITS = [(spec.name, split) for spec in SPECS for split in spec.splits]
REQUIRED = {"stsb", "sts12", "sts13", "sts14", "sts15", "sts16", "sickr", "scifact", "msmarco-sample", "nfcorpus-pp",
            "dbpedia-sample", "unsup-sentences"}


def test_required_names_registered():
    assert REQUIRED <= {spec.name for spec in SPECS}


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_spec_is_well_formed(spec):
    assert spec.kind in catalog.KINDS and spec.default_split in spec.splits
    assert not Path(spec.path).is_absolute() and ".." not in Path(spec.path).parts
    assert spec.description and spec.licence
    assert "http" in spec.source or "hub:" in spec.source  # a real online location to point users to
    assert set(spec.kept_back) <= set(spec.splits)
    for files in spec.files.values():
        assert files and all(not Path(f).is_absolute() for f in files)


@pytest.mark.parametrize("name,split", SPLITS)
def test_every_present_split_loads_and_absent_ones_say_where(name, split):
    if settings.data_root() is None:
        pytest.skip("no local data root (set EMBEDLAB_DATA)")
    spec = catalog.get_spec(name)
    if catalog.is_available(name, split):
        record = catalog.load(name, split)
        size = len(record.corpus) if spec.kind == "retrieval" else len(
            record.sentences if spec.kind == "sentences" else record)
        assert size > 0
        return
    # Only kept-back splits may be absent from the mirror.
    assert split in spec.kept_back, f"{name}/{split} is missing: {catalog.missing_files(name, split)}"
    with pytest.raises(DataError) as err:
        catalog.load(name, split)
    missing = catalog.missing_files(name, split)[0]
    assert str(missing) in str(err.value) and err.value.path == str(missing)
    assert "kept back" in str(err.value) and "EMBEDLAB_DATA" in str(err.value)


def test_sickr_test_is_the_kept_back_annotated_file():
    spec = catalog.get_spec("sickr")
    assert spec.files["test"] == ("SICK_test_annotated.txt",) and "test" in spec.kept_back
    assert spec.files["train"] == ("SICK_train.txt",) and spec.files["dev"] == ("SICK_trial.txt",)


def test_empty_data_root_names_the_path_looked_at(tmp_path, monkeypatch):
    monkeypatch.setenv("EMBEDLAB_DATA", str(tmp_path))
    with pytest.raises(DataError) as err:
        catalog.load_sts("stsb")
    message = str(err.value)
    assert str(tmp_path / "sts" / "stsb" / "sts-test.csv") in message
    assert "EMBEDLAB_DATA" in message and "mteb/stsbenchmark-sts" in message and "fetch('stsb')" in message
    assert catalog.dataset_path("scifact") == tmp_path / "retrieval" / "scifact"
    with pytest.raises(DataError, match=str(tmp_path / "retrieval" / "scifact")):
        catalog.load_retrieval("scifact")


def test_no_data_root_at_all(tmp_path, monkeypatch):
    monkeypatch.delenv("EMBEDLAB_DATA", raising=False)
    monkeypatch.setattr(settings, "PROJECT_ROOT", tmp_path / "project")
    with pytest.raises(DataError, match="EMBEDLAB_DATA"):
        catalog.load_sts("stsb")


def test_unknown_name_split_and_kind():
    with pytest.raises(UnknownChoiceError, match="stsb"):
        catalog.get_spec("no-such-dataset")
    with pytest.raises(UnknownChoiceError, match="train, dev, test|dev, test, train"):
        catalog.load_sts("stsb", "validation")
    with pytest.raises(ConfigError, match="retrieval"):
        catalog.load_sts("scifact")
    assert {s.kind for s in catalog.list_datasets("retrieval")} == {"retrieval"}


# --------------------------------------------------------------------------------------------------- fetch (offline)


def _tiny_beir_zip(path: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("tiny/corpus.jsonl", '{"_id": "d1", "title": "", "text": "doc"}\n')
        zf.writestr("tiny/queries.jsonl", '{"_id": "q1", "text": "query"}\n')
        zf.writestr("tiny/qrels/test.tsv", "query-id\tcorpus-id\tscore\nq1\td1\t1\n")
        zf.writestr("tiny/README", "not wanted")
    path.write_bytes(buffer.getvalue())


def test_fetch_unpacks_atomically_from_an_archive(tmp_path, monkeypatch):
    # A file:// URL exercises the real download and unpack path without the network.
    archive = tmp_path / "tiny.zip"
    _tiny_beir_zip(archive)
    spec = dataclasses.replace(
        catalog.get_spec("scifact"), name="tiny", path="retrieval/tiny", splits=("test",), default_split="test",
        files={"test": ("corpus.jsonl", "queries.jsonl", "qrels/test.tsv")},
        downloads=(catalog.Download(archive.as_uri(), r"^tiny/(corpus\.jsonl|queries\.jsonl|qrels/test\.tsv)$"),),
    )
    registry = Registry("dataset")
    registry.add("tiny", spec)
    monkeypatch.setattr(catalog, "DATASETS", registry)
    root = tmp_path / "data"
    folder = catalog.fetch("tiny", root)
    assert folder == root / "retrieval" / "tiny"
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) == [
        ".embedlab-output", "corpus.jsonl", "qrels/test.tsv", "queries.jsonl"]  # + embedlab's owner marker
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]  # no staging folder left behind
    monkeypatch.setenv("EMBEDLAB_DATA", str(root))
    assert catalog.load_retrieval("tiny").qrels == {"q1": {"d1": 1}}
    assert catalog.fetch("tiny", root) == folder  # already complete: nothing downloaded


def test_fetch_without_recipe_says_where_to_get_it(tmp_path):
    with pytest.raises(DataError, match="no download recipe.*heidelberg"):
        catalog.fetch("nfcorpus-pp", tmp_path)
