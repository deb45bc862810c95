"""Med-VQA data: answer normalisation (acceptance: VQA-RAD's normalised train answers are MEVF's answer list), the
dataset loaders (real VQA-RAD and SLAKE from the data root; PathVQA and VQA-Med-2019 on fixtures), bad input, the
shipped splits (reproduced by their generators), images (PNG written here, pydicom's test DICOM files)."""
from __future__ import annotations

import datetime
import json
import pickle
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from embedlab.errors import DataError, UnknownChoiceError
from embedlab.medvqa import splits as carved
from embedlab.medvqa.datasets import (DATASETS, BadRows, image_path, load_dataset, load_export, read_mevf_json,
                                      read_pathvqa, read_slake_json, read_vqa_med_2019,
                                      read_vqa_rad_official)
from embedlab.medvqa.images import load_image, load_image_tensor
from embedlab.medvqa.normalize import (VQA_RAD_QUESTION_TYPES, answer_vocabulary, canonical_answer_type,
                                       canonical_question_type, normalize_answer)

FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture(scope="module")
def rad_folder(data_root):
    folder = data_root / "medvqa" / "vqa-rad"
    if not (folder / "trainset.json").is_file():
        pytest.skip("VQA-RAD is not in the data root")
    return folder


@pytest.fixture(scope="module")
def rad_train(rad_folder):
    return load_dataset("vqa-rad", "train")


@pytest.fixture
def fixture_root(monkeypatch):
    """The data root is tests/fixtures: its medvqa/ holds the PathVQA and VQA-Med-2019 fixtures."""
    monkeypatch.setenv("EMBEDLAB_DATA", str(FIXTURES))
    return FIXTURES / "medvqa"


def _row(id_, **changes):
    row = {"qid": id_, "image_name": "img1.png", "image_organ": "HEAD", "answer": "Yes", "answer_type": "CLOSED",
           "question_type": "PRES", "question": f"Is there a lesion {id_}?", "phrase_type": "freeform"}
    row.update(changes)
    return {k: v for k, v in row.items() if v is not ...}


def _export(folder: Path, rows: list, name: str = "trainset.json", images=("img1.png",)) -> Path:
    from PIL import Image

    (folder / "images").mkdir(parents=True, exist_ok=True)
    for image in images:
        Image.fromarray(np.zeros((4, 4), dtype=np.uint8)).save(folder / "images" / image)
    path = folder / name
    path.write_text(json.dumps(rows), encoding="utf-8")
    return path


# --------------------------------------------------------------------------------------------------- normalisation


def test_normalised_train_answers_are_mevfs_answer_list(rad_folder):
    """The acceptance check of the normalisation: 514 raw distinct train answers -> MEVF's 458, order included."""
    rows = json.loads((rad_folder / "trainset.json").read_text(encoding="utf-8"))
    expected = json.loads((rad_folder / "answer_all_list.json").read_text(encoding="utf-8"))
    assert len({str(r["answer"]) for r in rows}) == 514
    vocab = answer_vocabulary(r["answer"] for r in rows)
    assert len(vocab) == 458 and set(vocab) == set(expected)
    assert vocab == expected


@pytest.mark.parametrize("raw, normalised", [
    (4, "4"), (12, "12"),  # integer answers in the JSON
    ("None", "0"), ("one", "1"), ("all three vascular distributions", "all 3 vascular distributions"),
    ("Chest X-ray", "chest xray"), ("chest x Ray", "chest xray"), ("Xray - plain film", "xray plain film"),
    ("Cartilage is not well viewed by x rays", "cartilage is not well viewed by xrays"),
    ("5.6cm focal, predominantly hypodense", "5.6cm focal predominantly hypodense"),  # decimal kept, comma gone
    ("On the right shoulder.", "on right shoulder"),  # final period dropped
    ("RUQ pain, jaundice,weight loss?", "ruq pain jaundiceweight loss"),  # ", " seen: every comma deleted
    ("MRI/FLAIR", "mri flair"), ("MRI-DWI", "mri dwi"), ("Heart \tlungs", "heart lungs"),
    ("The aorta and the inferior vena cava", "aorta and inferior vena cava"), ("A bit", "bit"),
    (" superficial to the patient's skin", "superficial to patient's skin"),
    ("1,000", "1000"), ("dont know", "don't know"), ("Yes", "yes"),
])
def test_normalize_answer(raw, normalised):
    assert normalize_answer(raw) == normalised


def test_normalize_rejects_none():
    with pytest.raises(ValueError):
        normalize_answer(None)


@pytest.mark.parametrize("raw, canonical", [
    ("PRES", "PRES"), ("PRES, POS", "PRES"), ("ATTRIB, SIZE", "ATTRIB"), ("ATRIB", "ATTRIB"), ("PRSE", "PRES"),
    ("Other", "OTHER"), (" size ", "SIZE"), (None, ""), ("", ""),
])
def test_canonical_question_type(raw, canonical):
    assert canonical_question_type(raw) == canonical


def test_canonical_answer_type():
    assert canonical_answer_type("CLOSED ") == "CLOSED" and canonical_answer_type("open") == "OPEN"


# --------------------------------------------------------------------------------------------------- VQA-RAD


def test_vqa_rad_train_records(rad_train):
    assert len(rad_train) == 3064 and len({r.qid for r in rad_train}) == 3064
    assert len({r.image for r in rad_train}) == 314
    assert Counter(r.answer_type for r in rad_train) == {"CLOSED": 1823, "OPEN": 1241}  # two "CLOSED " stripped
    assert Counter(r.phrase_type for r in rad_train) == {"frame": 1267, "freeform": 1206, "para": 591}
    assert Counter(r.organ for r in rad_train) == {"CHEST": 1088, "ABD": 999, "HEAD": 977}
    assert {r.question_type for r in rad_train} == set(VQA_RAD_QUESTION_TYPES)
    types = Counter(r.question_type for r in rad_train)
    assert types["PRES"] == 1214 + 10 + 5 + 1 + 2  # PRES + "PRES, ATTRIB" / "PRES, POS" / "PRES, ABN" + PRSE
    by_qid = {r.qid: r for r in rad_train}
    assert all(isinstance(r.answer, str) for r in rad_train)
    assert sum(r.answer.isdigit() for r in rad_train) >= 10  # the integer answers, cast
    assert by_qid["1"].answer == "Yes" and by_qid["1"].closed and by_qid["1"].split == "train"
    assert image_path(by_qid["1"]).is_file()


def test_vqa_rad_test_split_kept_back_is_a_clear_error(tmp_path, monkeypatch):
    folder = tmp_path / "medvqa" / "vqa-rad"
    _export(folder, [_row(1), _row(2, answer="No")])
    monkeypatch.setenv("EMBEDLAB_DATA", str(tmp_path))
    assert len(load_dataset("vqa-rad", "train")) == 2
    with pytest.raises(DataError) as err:
        load_dataset("vqa-rad", "test")
    assert "testset.json" in str(err.value) and "kept back" in str(err.value)
    _export(folder, [_row(5, phrase_type="para")], name="testset.json")  # a user who has the standard file
    test = load_dataset("vqa-rad", "test")
    assert [(r.qid, r.split, r.phrase_type) for r in test] == [("5", "test", "para")]


def test_vqa_rad_test_split_on_the_data_root(rad_folder):
    if (rad_folder / "testset.json").is_file():
        test = load_dataset("vqa-rad", "test")
        assert len(test) == 451 and Counter(r.answer_type for r in test) == {"CLOSED": 272, "OPEN": 179}
    else:
        with pytest.raises(DataError, match="kept back"):
            load_dataset("vqa-rad", "test")


def test_vqa_rad_official_release_rows(rad_folder, rad_train):
    records = load_dataset("vqa-rad-official", "train")
    assert len(records) == 1797
    assert Counter(r.phrase_type for r in records) == {"freeform": 1206, "para": 591}
    assert Counter(r.answer_type for r in records) == {"CLOSED": 1027, "OPEN": 770}
    assert records[0].qid == "0" and records[0].extra["qid_linked_id"] and "question_frame" not in records[0].extra
    mevf = {(r.image, r.question) for r in rad_train}
    assert all((r.image, r.question) in mevf for r in records)
    with_frames = read_vqa_rad_official(rad_folder / "vqa_rad_public_train_rows.json", frames=True)
    frames = [r for r in with_frames if r.phrase_type == "frame"]
    assert len(frames) == 983 and all(r.qid.endswith("-frame") for r in frames)
    assert sum((r.image, r.question) in mevf for r in frames) == 983
    with pytest.raises(DataError, match="kept back"):
        load_dataset("vqa-rad-official", "test")


def test_vqa_rad_official_full_release_split_by_phrase_type(tmp_path):
    rows = [dict(_row(0), qid_linked_id="a", question_frame="NULL", question_rephrase="NULL"),
            dict(_row(1, phrase_type="test_freeform"), qid_linked_id="b", question_frame="Is/Are there x?"),
            dict(_row(2, phrase_type="test_para", answer_type="OPEN", answer="Left"), qid_linked_id="b")]
    path = _export(tmp_path, rows, name="VQA_RAD Dataset Public.json")
    test = read_vqa_rad_official(path, split="test", frames=True)
    assert [(r.qid, r.phrase_type, r.split) for r in test] == [
        ("1", "freeform", "test"), ("1-frame", "frame", "test"), ("2", "para", "test")]
    assert [r.qid for r in read_vqa_rad_official(path, split="train")] == ["0"]
    assert len(read_vqa_rad_official(path, split="all")) == 3


# --------------------------------------------------------------------------------------------------- other datasets


def test_slake_english_subset_image_free(data_root):
    if not (data_root / "medvqa" / "slake" / "train.json").is_file():
        pytest.skip("SLAKE is not in the data root")
    train = load_dataset("slake", "train")  # its images are not in the mirror: no image check, still loads
    assert len(train) == 4919 - 1 and {r.extra["q_lang"] for r in train} == {"en"}
    assert Counter(r.answer_type for r in train) == {"OPEN": 2976 - 1, "CLOSED": 1943}
    with pytest.raises(DataError, match=r"train.json: record 1623 \(qid 1622\): field 'answer': is empty"):
        read_slake_json(data_root / "medvqa" / "slake" / "train.json")  # the release's one known defect
    assert train[0].image == "xmlab1/source.jpg" and train[0].question_type == "MODALITY"
    assert train[0].organ == "Abdomen" and train[0].extra["modality"] == "MRI"
    assert len(load_dataset("slake", "val")) == 1053
    with pytest.raises(DataError, match="kept back"):
        load_dataset("slake", "test")
    with pytest.raises(DataError, match="image file"):
        load_dataset("slake", "val", check_images=True)


def test_pathvqa_fixture(fixture_root):
    train = load_dataset("pathvqa", "train")  # qas/train/train_qa.pkl
    assert [(r.qid, r.image, r.answer_type) for r in train] == [
        ("train-0", "train_0000.jpg", "CLOSED"), ("train-1", "train_0000.jpg", "OPEN"),
        ("train-2", "train_0001.jpg", "CLOSED"), ("train-3", "train_0001.jpg", "OPEN")]
    assert image_path(train[0]) == fixture_root / "pathvqa" / "images" / "train" / "train_0000.jpg"
    assert load_image(image_path(train[0]), 4).shape == (1, 4, 4)
    val = load_dataset("pathvqa", "val")  # the same content as JSON
    assert len(val) == 2 and val[1].answer == "metastatic carcinoma" and val[1].split == "val"
    with pytest.raises(DataError, match="not available"):
        load_dataset("pathvqa", "test")


def test_pathvqa_pickle_may_not_run_code(tmp_path):
    path = tmp_path / "qas" / "train" / "train_qa.pkl"
    path.parent.mkdir(parents=True)
    path.write_bytes(pickle.dumps([{"image": "x", "question": "q?", "answer": datetime.date(2020, 1, 1)}]))
    with pytest.raises(DataError, match="only lists, dicts"):
        read_pathvqa(path)
    path.write_bytes(b"not a pickle")
    with pytest.raises(DataError, match=str(path.name)):
        read_pathvqa(path)


def test_vqa_med_2019_fixture(fixture_root):
    train = load_dataset("vqa-med-2019", "train")  # four QAPairsByCategory files, one blank line
    assert len(train) == 8
    assert Counter(r.question_type for r in train) == {"MODALITY": 2, "PLANE": 2, "ORGAN": 2, "ABN": 2}
    closed = {r.answer for r in train if r.closed}
    assert closed == {"no", "yes"}
    assert train[0].qid == "C1_Modality_train:1" and train[0].image == "synpic100001.jpg"
    assert image_path(train[0]).is_file()
    organ = [r for r in train if r.question_type == "ORGAN"]
    assert [r.qid for r in organ] == ["C3_Organ_train:1", "C3_Organ_train:3"]  # line numbers of the file
    test = load_dataset("vqa-med-2019", "test")  # image|category|question|answer
    assert [r.question_type for r in test] == ["MODALITY", "PLANE", "ORGAN", "ABN"]
    all_pairs = read_vqa_med_2019(fixture_root / "vqa-med-2019" / "ImageClef-2019-VQA-Med-Training" /
                                  "All_QA_Pairs_train.txt", category="C1")
    assert len(all_pairs) == 8
    with pytest.raises(DataError, match="not available"):
        load_dataset("vqa-med-2019", "val")


def test_dataset_tool_export_loads_by_path(tmp_path):
    export = tmp_path / "my-cases"
    _export(export, [_row("c1"), _row("c2", answer="Left lobe", answer_type="OPEN", question_type="POS")],
            images=("img1.png",))
    records = load_dataset(export, "train")
    assert [r.qid for r in records] == ["c1", "c2"] and records[0].dataset == "my-cases"
    assert load_export(export / "trainset.json") == records
    with pytest.raises(DataError, match="valset.json"):
        load_export(export, "val")


def test_registry_and_unknown_names():
    assert DATASETS.names() == ["pathvqa", "slake", "vqa-med-2019", "vqa-rad", "vqa-rad-official"]
    with pytest.raises(UnknownChoiceError, match="vqa-rad"):
        load_dataset("vqa-radd")
    with pytest.raises(UnknownChoiceError, match="val-train"):
        load_dataset("vqa-rad", "dev")


# --------------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("change, field_name", [
    (dict(answer=...), "answer"), (dict(question=""), "question"), (dict(image_name=None), "image_name"),
    (dict(answer_type="MAYBE"), "answer_type"), (dict(qid=...), "qid"),
])
def test_bad_record_names_file_record_and_field(tmp_path, change, field_name):
    path = _export(tmp_path, [_row(1), _row(2, **change), _row(3)])
    with pytest.raises(DataError) as err:
        read_mevf_json(path)
    message = str(err.value)
    assert str(path) in message and "record 2" in message and repr(field_name) in message
    assert err.value.path == str(path)
    bad = BadRows(skip=True)
    records = read_mevf_json(path, skip_bad_rows=bad)
    assert [r.qid for r in records] == ["1", "3"] and bad.count == 1 and bad.by_file == {str(path): 1}
    assert "record 2" in bad.reasons[0]


def test_bad_record_names_qid(tmp_path):
    path = _export(tmp_path, [_row(7), _row(8, answer=...)])
    with pytest.raises(DataError, match=r"record 2 \(qid 8\): field 'answer': is missing"):
        read_mevf_json(path)


def test_missing_image_names_file_record_and_field(tmp_path):
    path = _export(tmp_path, [_row(1), _row(2, image_name="gone.png")])
    with pytest.raises(DataError) as err:
        read_mevf_json(path)
    assert "gone.png" in str(err.value) and "qid 2" in str(err.value) and "'image_name'" in str(err.value)
    assert len(read_mevf_json(path, check_images=False)) == 2
    assert len(read_mevf_json(path, skip_bad_rows=True)) == 1


def test_duplicate_qid_and_non_object_rows(tmp_path):
    path = _export(tmp_path, [_row(1), _row(1), ["not", "a", "record"]])
    with pytest.raises(DataError, match="duplicate qid"):
        read_mevf_json(path)
    bad = BadRows(skip=True)
    assert len(read_mevf_json(path, skip_bad_rows=bad)) == 1 and bad.count == 2


def test_unreadable_files(tmp_path):
    broken = tmp_path / "trainset.json"
    broken.write_text('[{"qid": 1,\n "answer": }]', encoding="utf-8")
    with pytest.raises(DataError, match=r"trainset.json:2: not valid JSON"):
        read_mevf_json(broken)
    broken.write_text('{"qid": 1}', encoding="utf-8")
    with pytest.raises(DataError, match="expected a JSON list"):
        read_mevf_json(broken)
    with pytest.raises(DataError, match="file not found"):
        read_mevf_json(tmp_path / "absent.json")
    every_row_bad = _export(tmp_path / "b", [_row(1, answer=...)])
    with pytest.raises(DataError, match="all 1 record"):
        read_mevf_json(every_row_bad, skip_bad_rows=True)


def test_vqa_med_bad_line_names_line(tmp_path):
    path = tmp_path / "C2_Plane_train.txt"
    path.write_text("synpic1|which plane?|axial\nsynpic2|no answer field\nsynpic3|which plane?|\n", encoding="utf-8")
    with pytest.raises(DataError) as err:
        read_vqa_med_2019(path)
    assert f"{path}:2:" in str(err.value) and "record line 2" in str(err.value)
    bad = BadRows(skip=True)
    assert [r.qid for r in read_vqa_med_2019(path, skip_bad_rows=bad)] == ["C2_Plane_train:1"]
    assert bad.count == 2 and "'answer'" in bad.reasons[1]


# --------------------------------------------------------------------------------------------------- splits


def test_shipped_splits_are_reproduced_by_their_generators(rad_train):
    generated = carved.generate(rad_train)
    for kind, doc in generated.items():
        assert doc == carved.shipped_split(kind), kind


def test_the_regenerate_command_checks_the_shipped_files_and_writes_nothing(rad_train, capsys):
    from embedlab.medvqa import regenerate_splits

    before = {p.name: p.stat().st_mtime_ns for p in carved.SPLITS_DIR.iterdir()}
    assert regenerate_splits.main(["--check"]) == 0
    out = capsys.readouterr().out
    assert all(f"{name}: matches" in out for name in carved.SPLIT_FILES.values()), out
    assert {p.name: p.stat().st_mtime_ns for p in carved.SPLITS_DIR.iterdir()} == before


def test_the_regenerate_command_names_a_missing_trainset(tmp_path, monkeypatch, capsys):
    from embedlab.medvqa import regenerate_splits

    monkeypatch.setenv("EMBEDLAB_DATA", str(tmp_path))
    assert regenerate_splits.main(["--check"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "vqa-rad/trainset.json" in err and "Traceback" not in err


def test_validation_split_properties(rad_train):
    val, train = load_dataset("vqa-rad", "val"), load_dataset("vqa-rad", "val-train")
    doc = carved.shipped_split("val")
    assert {r.split for r in val} == {"val"} and {r.split for r in train} == {"val-train"}
    assert len(val) == round(0.2 * 1027) + round(0.2 * 770) == 359
    assert {r.phrase_type for r in val} == {"freeform", "para"}
    assert not {r.qid for r in val} & {r.qid for r in train}
    assert len(val) + len(train) + len(doc["dropped"]) == 3064
    held = {carved.twin_key(r) for r in val}
    assert not any(carved.twin_key(r) in held for r in train)  # no twin of a held-out question in train
    props = carved.split_properties(train, val)
    assert props == {k: v for k, v in doc["properties"].items() if k != "dropped"} | {"dropped": props["dropped"]}
    assert 0.05 < props["val_answers_unseen_in_train"] < 0.15  # the test: 9.5 %
    assert 0.70 < props["val_image_answer_pairs_seen_in_train"] < 0.85  # the test: 75.4 %


def test_image_disjoint_split(rad_train):
    val, train = load_dataset("vqa-rad", "image-val"), load_dataset("vqa-rad", "image-train")
    assert not {r.image for r in val} & {r.image for r in train}
    doc = carved.shipped_split("image")
    assert len(val) == doc["properties"]["val"]["questions"] and len(train) == doc["properties"]["train"]["questions"]
    assert {r.phrase_type for r in val} == {"freeform", "para"}
    assert Counter(r.organ for r in val).keys() == {"HEAD", "CHEST", "ABD"}


def test_split_of_other_records_is_refused(tmp_path):
    records = read_mevf_json(_export(tmp_path, [_row(1), _row(2)]))
    with pytest.raises(DataError, match="carved from VQA-RAD"):
        carved.apply_split(records, "val")


def test_split_generator_is_seeded():
    from embedlab.medvqa.records import VQARecord

    records = [VQARecord(str(i), f"img{i % 7}.jpg", f"question {i}?", "yes" if i % 2 else "left",
                         "CLOSED" if i % 2 else "OPEN", phrase_type="freeform" if i % 3 else "frame", organ="HEAD")
               for i in range(60)]
    a, b = carved.validation_split(records, seed=0), carved.validation_split(records, seed=0)
    assert a == b and a["val"] != carved.validation_split(records, seed=1)["val"]
    assert len(a["val"]) == round(0.2 * 20) + round(0.2 * 20)


# --------------------------------------------------------------------------------------------------- images


def test_png_grey_and_rgb(tmp_path):
    from PIL import Image

    grey = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4
    Image.fromarray(grey).save(tmp_path / "g.png")
    out = load_image(tmp_path / "g.png")
    assert out.shape == (1, 8, 8) and out.dtype == np.float32
    assert np.allclose(out[0], grey / 255.0)
    assert load_image(tmp_path / "g.png", 4).shape == (1, 4, 4)
    assert load_image(tmp_path / "g.png", (4, 6), grey=False).shape == (3, 4, 6)
    rgb = np.zeros((4, 4, 3), dtype=np.uint8)
    rgb[..., 0] = 255
    Image.fromarray(rgb).save(tmp_path / "red.png")
    assert np.allclose(load_image(tmp_path / "red.png"), 0.299, atol=1e-6)  # luma of pure red
    colour = load_image(tmp_path / "red.png", grey=False)
    assert colour.shape == (3, 4, 4) and np.allclose(colour[0], 1) and np.allclose(colour[1:], 0)
    deep = (np.arange(16, dtype=np.uint16).reshape(4, 4) * 4000)
    Image.fromarray(deep).save(tmp_path / "16bit.png")  # 16-bit grey keeps its range
    assert np.allclose(load_image(tmp_path / "16bit.png")[0], deep / 65535.0, atol=1e-6)
    tensor = load_image_tensor(tmp_path / "g.png", 4)
    assert tuple(tensor.shape) == (1, 4, 4) and str(tensor.dtype) == "torch.float32"


def test_dicom_windowing_and_inversion(tmp_path):
    pydicom = pytest.importorskip("pydicom")
    from pydicom.data import get_testdata_file

    ct = get_testdata_file("CT_small.dcm", download=False)
    full = load_image(ct)
    assert full.shape == (1, 128, 128) and full.min() == 0.0 and full.max() == 1.0
    assert load_image(ct, 84).shape == (1, 84, 84)
    soft = load_image(ct, window=(40, 400))  # Hounsfield window: -160..240 HU
    ds = pydicom.dcmread(ct)
    hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    assert np.allclose(soft[0], np.clip((hu + 160) / 400, 0, 1), atol=1e-6)
    mr = load_image(get_testdata_file("MR_small.dcm", download=False))  # window stored in the file: VOI LUT
    assert mr.shape == (1, 64, 64) and 0 <= mr.min() < mr.max() <= 1
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.save_as(tmp_path / "inverted.dcm")
    assert np.allclose(load_image(tmp_path / "inverted.dcm"), 1 - full)


def test_unreadable_images_name_the_file(tmp_path):
    pytest.importorskip("pydicom")
    from pydicom.data import get_testdata_file

    fake = tmp_path / "scan.png"
    fake.write_text("not an image")
    with pytest.raises(DataError, match="scan.png: cannot read image"):
        load_image(fake)
    with pytest.raises(DataError, match="image file not found"):
        load_image(tmp_path / "absent.jpg")
    fake_dcm = tmp_path / "scan.dcm"
    fake_dcm.write_bytes(b"\0" * 64)
    with pytest.raises(DataError, match="scan.dcm: cannot read DICOM"):
        load_image(fake_dcm)
    truncated = tmp_path / "truncated.dcm"
    shutil.copy(get_testdata_file("MR_truncated.dcm", download=False), truncated)
    with pytest.raises(DataError, match="truncated.dcm: cannot decode DICOM pixel data"):
        load_image(truncated)
    plan = tmp_path / "plan.dcm"
    shutil.copy(get_testdata_file("rtplan.dcm", download=False), plan)
    with pytest.raises(DataError, match="no pixel data"):
        load_image(plan)


def test_vqa_rad_image(rad_train):
    image = load_image(image_path(rad_train[0]), 84)
    assert image.shape == (1, 84, 84) and 0 <= image.min() < image.max() <= 1
