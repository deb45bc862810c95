"""Ingest of the Med-VQA dataset tool (embedlab/medvqa/dataset_tool/ingest.py): layouts, validation, hostile uploads."""
from __future__ import annotations

import io
import os
import stat
import struct
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from embedlab.errors import DataError
from embedlab.medvqa.dataset_tool import ingest as ingest_module
from embedlab.medvqa.dataset_tool.ingest import IngestError, Limits, Problem, ingest_into
from embedlab.medvqa.dataset_tool.project import Project


# -- helpers --------------------------------------------------------------------------------------------------------
def png(color=(200, 30, 30), size=(24, 16)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "PNG")
    return buf.getvalue()


def jpeg(size=(64, 64)) -> bytes:
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def write_tree(root: Path, files: dict[str, bytes | str]) -> Path:
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return root


def zip_folder(folder: Path, target: Path, prefix: str = "") -> Path:
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.write(path, prefix + path.relative_to(folder).as_posix())
    return target


def snapshot(project: Project):
    """What a failed ingest must not change: cases.jsonl and every file under images/ (names and bytes)."""
    cases = project.root / "cases.jsonl"
    return (cases.read_bytes() if cases.exists() else None,
            {p.name: p.read_bytes() for p in sorted(project.images_dir.iterdir())})


def problems_of(err: IngestError) -> list[tuple[str, str, str]]:
    return [(p.case_id, p.file, p.message) for p in err.problems]


def has_problem(err: IngestError, case_id: str, file_part: str, message_part: str) -> bool:
    return any(c == case_id and file_part in f and message_part in m for c, f, m in problems_of(err))


@pytest.fixture
def project(tmp_path):
    return Project.create(tmp_path / "project")


@pytest.fixture
def samples(data_root):
    folder = data_root / "medvqa" / "case-samples"
    if not (folder / "case_samples.csv").is_file():
        pytest.skip("medvqa/case-samples not in the data mirror")
    return folder


# -- layouts ------------------------------------------------------------------------------------------------------
def check_case_samples(project: Project, samples: Path, report, prefix: str = ""):
    assert (report.cases_added, report.images_added) == (3, 4)
    assert report.layout == "upload"
    assert report.formats == {"png": 4}  # the sample ".jpg" files are PNG inside: the content decides
    cases = {c.case_id: c for c in project.cases()}
    assert list(cases) == ["3", "2", "1"]  # the CSV's order
    assert [i.source for i in cases["2"].images] == [prefix + "image/2.jpg", prefix + "image/1.jpg"]  # one txt
    assert [i.file for i in cases["2"].images] == ["2-1.png", "2-2.png"]
    assert cases["1"].report == (samples / "txt" / "1.txt").read_text(encoding="utf-8").replace("\r\n", "\n").strip()
    for case in cases.values():
        for image in case.images:
            assert image.width > 0 and image.height > 0
            stored = project.images_dir / image.file
            assert stored.read_bytes() == (samples / image.source[len(prefix):]).read_bytes()  # byte for byte
    assert sorted(p.name for p in project.images_dir.iterdir()) == ["1-1.png", "2-1.png", "2-2.png", "3-1.png"]
    assert project.info["stages"]["ingest"]["cases_added"] == 3
    assert report.to_json()["case_ids"] == ["3", "2", "1"]


def test_case_samples_folder(project, samples):
    report = ingest_into(project, samples)
    check_case_samples(project, samples, report)


def test_case_samples_zip_with_wrapping_folder(project, samples, tmp_path, monkeypatch):
    archive = zip_folder(samples, tmp_path / "upload.zip", prefix="case-samples/")
    work = tmp_path / "tmp"
    work.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(work))  # the extraction folder must be gone afterwards
    report = ingest_into(project, archive)
    check_case_samples(project, samples, report, prefix="case-samples/")  # the name inside the archive
    assert list(work.iterdir()) == []
    assert project.cases()[0].source == "upload.zip"


@pytest.fixture
def iu_folder(data_root):
    folder = data_root / "medvqa" / "iu-xray"
    if not (folder / "indiana_reports.csv").is_file():
        pytest.skip("medvqa/iu-xray not in the data mirror")
    return folder


def test_iu_xray_real_csv(iu_folder, tmp_path):
    refused = Project.create(tmp_path / "refused")
    with pytest.raises(IngestError) as info:
        ingest_into(refused, iu_folder)  # no image files in the mirror: refused without allow_missing_images
    err = info.value
    assert has_problem(err, "1", "1_IM-0001-4001.dcm.png", "not in the upload")
    assert has_problem(err, "16", "indiana_reports.csv line", "report is empty")  # 25 studies have no text
    assert len(err.problems) == 7466 + 25
    assert "... and 7441 more" in str(err)
    assert snapshot(refused) == (None, {})

    project = Project.create(tmp_path / "iu")
    report = ingest_into(project, iu_folder, allow_missing_images=True, skip_empty_reports=True)
    assert report.layout == "iu-xray"
    assert report.cases_added + len(report.skipped_cases) == 3851
    assert len(report.skipped_cases) == 25 and "16" in report.skipped_cases
    assert report.images_added == 0 and report.formats == {"missing": report.missing_images}
    assert any("format 'missing'" in w for w in report.warnings)
    cases = project.cases()
    assert len(cases) == report.cases_added
    first = cases[0]
    assert first.case_id == "1"
    assert "FINDINGS: The cardiac silhouette" in first.report and "IMPRESSION: Normal chest x-XXXX." in first.report
    assert first.report.startswith("FINDINGS: ") and "Positive TB test" not in first.report  # indication: metadata
    assert first.metadata["MeSH"] == "normal" and first.metadata["indication"] == "Positive TB test"
    assert [(i.format, i.file, i.source, i.metadata) for i in first.images] == [
        ("missing", "", "1_IM-0001-4001.dcm.png", {"projection": "Frontal"}),
        ("missing", "", "1_IM-0001-3001.dcm.png", {"projection": "Lateral"})]
    assert list(project.images_dir.iterdir()) == []


def test_iu_xray_images_found_anywhere(tmp_path, project):
    upload = write_tree(tmp_path / "iu", {
        "indiana_reports.csv": "uid,MeSH,Problems,image,indication,comparison,findings,impression\n"
                               "7,Cardiomegaly/mild,Cardiomegaly,Xray Chest,Dyspnea.,,Mild cardiomegaly.,\n",
        "indiana_projections.csv": "uid,filename,projection\n7,7_a.dcm.png,Frontal\n7,7_b.dcm.png,Lateral\n",
        "images/images_normalized/7_a.dcm.png": png(),
    })
    with pytest.raises(IngestError) as info:
        ingest_into(project, upload)
    assert problems_of(info.value) == [("7", "7_b.dcm.png", info.value.problems[0].message)]
    report = ingest_into(project, upload, allow_missing_images=True)
    (case,) = project.cases()
    assert case.report == "FINDINGS: Mild cardiomegaly." and case.metadata["indication"] == "Dyspnea."
    assert [(i.format, i.source, i.metadata["projection"]) for i in case.images] == [
        ("png", "images/images_normalized/7_a.dcm.png", "Frontal"), ("missing", "7_b.dcm.png", "Lateral")]
    assert (report.images_added, report.missing_images) == (1, 1)


def test_folder_layout_png_and_dicom(tmp_path, project):
    pydicom = pytest.importorskip("pydicom")
    from pydicom.data import get_testdata_file

    ct_path, mr_path = get_testdata_file("CT_small.dcm"), get_testdata_file("MR_small.dcm")
    ct = pydicom.dcmread(ct_path)
    assert any(e.tag.is_private for e in ct) and str(ct.PatientName)  # the fixture has something to remove
    upload = write_tree(tmp_path / "cases", {
        "ct1/scan": Path(ct_path).read_bytes(),  # no suffix: DICOM by its magic
        "ct1/report.txt": "CT of the chest. No effusion.",
        "mr1/mr.dcm": Path(mr_path).read_bytes(),
        "mr1/x.png": png(),
        "mr1/report.txt": "MRI head. Normal.",
        "plain case#1/a.png": png((0, 0, 255)),
        "plain case#1/notes.txt": "\ufeffChest X-ray.\r\nNormal heart size.\r\n",
    })
    meta = write_tree(tmp_path, {"meta.csv": "case_id,patient_id,site\nct1,P1,north\nmr1,P2,\n"}) / "meta.csv"
    report = ingest_into(project, upload, metadata=meta)
    assert report.layout == "folder"
    assert report.formats == {"dicom": 2, "png": 2}
    cases = {c.case_id: c for c in project.cases()}
    assert list(cases) == ["ct1", "mr1", "plain case#1"]
    assert cases["plain case#1"].report == "Chest X-ray.\nNormal heart size."  # BOM and CRLF gone
    assert cases["plain case#1"].images[0].file == "plain_case_1-1.png"  # upload names never become paths
    assert (cases["ct1"].patient, cases["ct1"].metadata) == ("P1", {"site": "north"})
    assert cases["mr1"].patient == "P2"

    (image,) = cases["ct1"].images
    assert (image.format, image.file, image.source, image.width, image.height) == ("dicom", "ct1-1.dcm", "ct1/scan",
                                                                                    128, 128)
    assert image.metadata["Modality"] == "CT" and image.metadata["Rows"] == 128
    assert cases["mr1"].images[0].metadata["Modality"] == "MR"
    saved = pydicom.dcmread(project.images_dir / image.file)
    assert not any(e.tag.is_private for e in saved)
    assert str(saved.PatientName) == "" and saved.PatientID == ""
    assert saved.get("InstitutionName", "") == "" and saved.PatientIdentityRemoved == "YES"
    assert saved.SOPInstanceUID != ct.SOPInstanceUID
    assert saved.file_meta.MediaStorageSOPInstanceUID == saved.SOPInstanceUID
    assert saved.Modality == "CT"
    assert np.array_equal(saved.pixel_array, ct.pixel_array)  # pixels untouched
    assert str(pydicom.dcmread(ct_path).PatientName)  # the source file was not modified


def test_validation_errors_named_per_case(tmp_path, project):
    ingest_into(project, write_tree(tmp_path / "first", {"dup/a.png": png(), "dup/r.txt": "first upload"}))
    before = snapshot(project)
    good = png()
    upload = write_tree(tmp_path / "second", {
        "bad-png/x.png": b"\x89PNG\r\n\x1a\n" + b"garbage" * 50, "bad-png/r.txt": "ok",
        "truncated/x.jpg": jpeg()[:1500], "truncated/r.txt": "ok",
        "latin/x.png": good, "latin/r.txt": b"\xef\xbb\xbfFindings: caf\xe9 normal",  # offsets count the BOM
        "noimage/r.txt": "a report but no image",
        "empty/x.png": good, "empty/r.txt": "  \n",
        "dup/x.png": good, "dup/r.txt": "again",
        "fine/x.png": good, "fine/r.txt": "this one is fine",
    })
    meta = write_tree(tmp_path, {"meta.json": '[{"case_id": "fine", "age": 40}, {"case_id": "ghost"}]'}) / "meta.json"
    with pytest.raises(IngestError) as info:
        ingest_into(project, upload, metadata=meta)
    err = info.value
    assert isinstance(err, DataError)
    assert has_problem(err, "bad-png", "bad-png/x.png", "")
    assert has_problem(err, "truncated", "truncated/x.jpg", "truncated")
    assert has_problem(err, "latin", "latin/r.txt", "byte 0xe9 at byte offset 16")
    assert has_problem(err, "noimage", "noimage/", "no image")
    assert has_problem(err, "empty", "empty/r.txt", "report is empty")
    assert has_problem(err, "dup", "dup/r.txt", "already in the project")
    assert has_problem(err, "ghost", "meta.json record 2", "not in the upload")
    assert not any(p.case_id == "fine" for p in err.problems)
    assert len(err.problems) == 7
    for problem in err.problems:  # one line per problem in the message
        assert str(problem) in str(err)
    assert snapshot(project) == before


def test_upload_csv_errors(tmp_path, project, samples):
    with pytest.raises(IngestError) as info:  # the mirror's extra folder names files it does not hold
        ingest_into(project, samples / "report_retrieval_extra")
    assert has_problem(info.value, "3", "image/4.jpg", "named in case_samples.csv line 2 but not in the upload")
    assert has_problem(info.value, "3", "txt/3.txt", "not in the upload")
    upload = write_tree(tmp_path / "up", {
        "case_samples.csv": "\ufeffimage,txt\r\na.png,x.txt\r\na.png,sub/x.txt\r\n"
                            "missing.png,x.txt\r\na.png,nope.txt\r\n",
        "image/a.png": png(), "txt/x.txt": "one", "txt/sub/x.txt": "two",
    })
    with pytest.raises(IngestError) as info:
        ingest_into(project, upload)
    err = info.value
    assert has_problem(err, "x", "x.txt", "appears 2 times in the upload")
    assert has_problem(err, "x", "image/missing.png", "line 4 but not in the upload")
    assert has_problem(err, "nope", "txt/nope.txt", "line 5 but not in the upload")
    assert len(err.problems) == 3
    assert snapshot(project) == (None, {})


def test_second_ingest_appends_and_refuses_duplicates(tmp_path, project):
    first = write_tree(tmp_path / "a", {"a/x.png": png(), "a/r.txt": "first"})
    ingest_into(project, first)
    report = ingest_into(project, write_tree(tmp_path / "b", {"b/x.png": png(), "b/y.png": png(), "b/r.txt": "2nd"}))
    assert report.case_ids == ["b"]
    assert [c.case_id for c in project.cases()] == ["a", "b"]
    assert sorted(p.name for p in project.images_dir.iterdir()) == ["a-1.png", "b-1.png", "b-2.png"]
    before = snapshot(project)
    with pytest.raises(IngestError, match="already in the project"):
        ingest_into(project, first)
    assert snapshot(project) == before


def test_failure_while_writing_removes_what_it_wrote(tmp_path, project, monkeypatch):
    def disk_full(cases):
        raise OSError("disk full")

    monkeypatch.setattr(project, "write_cases", disk_full)
    with pytest.raises(OSError, match="disk full"):
        ingest_into(project, write_tree(tmp_path / "a", {"a/x.png": png(), "a/y.png": png(), "a/r.txt": "text"}))
    assert snapshot(project) == (None, {})  # no image and no temporary file left behind


# -- hostile uploads ---------------------------------------------------------------------------------------------
def hostile_zip(path: Path, entries: list[tuple[zipfile.ZipInfo | str, bytes]]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("ok/x.png", png())
        zf.writestr("ok/r.txt", "a fine case")
        for info, data in entries:
            zf.writestr(info, data)
    return path


def symlink_entry(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.create_system = 3
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


@pytest.mark.parametrize("entries, limits, file, message", [
    ([("../evil.txt", b"x")], None, "../evil.txt", "zip-slip"),
    ([("/abs.txt", b"x")], None, "/abs.txt", "absolute path"),
    ([("ok/..\\..\\evil.txt", b"x")], None, "evil.txt", "zip-slip"),
    ([(symlink_entry("ok/link.png"), b"/etc/passwd")], None, "ok/link.png", "symbolic link"),
    ([("big/x.bin", b"\0" * 5000)], Limits(max_file_bytes=4000), "big/x.bin", "declares 5000 bytes"),
    ([("a/1.bin", b"\0" * 3000), ("a/2.bin", b"\0" * 3000)], Limits(max_total_bytes=5000), "", "in all"),
    ([(f"many/{i}.txt", b"x") for i in range(5)], Limits(max_files=4), "", "entries, over the limit"),
])
def test_hostile_zip_refused(tmp_path, project, monkeypatch, entries, limits, file, message):
    work = tmp_path / "tmp"
    work.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(work))
    archive = hostile_zip(tmp_path / "upload.zip", entries)
    with pytest.raises(IngestError) as info:
        ingest_into(project, archive, limits=limits)
    assert any(file in p.file and message in p.message for p in info.value.problems), info.value.problems
    assert snapshot(project) == (None, {})
    assert list(work.iterdir()) == []
    assert not (tmp_path / "evil.txt").exists() and not Path("/abs.txt").exists()


def header_of(data: bytearray, signature: bytes, name_length_at: int, name_at: int, name: bytes) -> int:
    """Offset of the zip header with ``signature`` whose file name is ``name``."""
    at = data.find(signature)
    while at >= 0:
        length = struct.unpack_from("<H", data, at + name_length_at)[0]
        if data[at + name_at:at + name_at + length] == name:
            return at
        at = data.find(signature, at + 1)
    raise AssertionError(f"no header for {name!r}")


def test_zip_bomb_with_lying_header(tmp_path, project, monkeypatch):
    archive = hostile_zip(tmp_path / "bomb.zip", [("bomb/blob.bin", b"\0" * (4 << 20))])
    data = bytearray(archive.read_bytes())
    # declare 100 bytes where 4 MiB are packed: the local header (size at +22) and the central directory (+24)
    local = header_of(data, b"PK\x03\x04", 26, 30, b"bomb/blob.bin")
    central = header_of(data, b"PK\x01\x02", 28, 46, b"bomb/blob.bin")
    struct.pack_into("<I", data, local + 22, 100)
    struct.pack_into("<I", data, central + 24, 100)
    archive.write_bytes(bytes(data))
    assert zipfile.ZipFile(archive).getinfo("bomb/blob.bin").file_size == 100  # the lie is in place

    written = []
    real_copy = ingest_module._copy_limited

    def counting_copy(src, dst, limit):
        try:
            return real_copy(src, dst, limit)
        finally:
            written.append((limit, dst.tell()))

    monkeypatch.setattr(ingest_module, "_copy_limited", counting_copy)
    with pytest.raises(IngestError) as info:
        ingest_into(project, archive, limits=Limits(max_file_bytes=1 << 20))
    assert has_problem(info.value, "", "bomb/blob.bin", "lying header")
    assert all(size <= limit for limit, size in written)  # never more than declared was written to disk
    assert snapshot(project) == (None, {})


def test_streamed_bytes_are_counted():
    class Endless(io.RawIOBase):  # a stream that never ends, whatever any header said
        served = 0

        def read(self, n=-1):
            n = n if n and n > 0 else 1 << 16
            self.served += n
            if self.served > 64 << 20:  # the copy should have stopped long ago: fail instead of filling memory
                raise AssertionError("kept reading past the limit")
            return b"\0" * n

    sink, stream = io.BytesIO(), Endless()
    with pytest.raises(ingest_module._TooLarge):
        ingest_module._copy_limited(stream, sink, 3 << 20)
    assert sink.tell() <= 3 << 20 and stream.served <= (3 << 20) + 1
    assert ingest_module._copy_limited(io.BytesIO(b"abc"), io.BytesIO(), 3) == 3


def test_folder_symlinks_and_sizes_refused(tmp_path, project):
    upload = write_tree(tmp_path / "up", {"a/x.png": png(), "a/r.txt": "ok", "b/big.png": b"\0" * 3000,
                                          "b/r.txt": "ok"})
    secret = write_tree(tmp_path, {"secret.png": png()}) / "secret.png"
    os.symlink(secret, upload / "a" / "link.png")
    os.symlink(tmp_path, upload / "a" / "linked-dir")
    with pytest.raises(IngestError) as info:
        ingest_into(project, upload, limits=Limits(max_file_bytes=2000))
    err = info.value
    assert has_problem(err, "", "a/link.png", "symbolic link")
    assert has_problem(err, "", "a/linked-dir", "symbolic link")
    assert has_problem(err, "", "b/big.png", "over the limit")
    assert snapshot(project) == (None, {})


def test_problem_list_is_capped_in_the_message():
    err = IngestError([Problem(str(i), "f", "bad") for i in range(60)], "upload")
    assert len(err.problems) == 60
    assert "case 49: f: bad" in str(err) and "case 50: f: bad" not in str(err) and "... and 10 more" in str(err)


def test_bad_arguments(tmp_path, project):
    from embedlab.errors import ConfigError

    with pytest.raises(ConfigError):
        ingest_into(project, tmp_path, layout="nope")
    with pytest.raises(DataError, match="not found"):
        ingest_into(project, tmp_path / "missing")
    not_zip = write_tree(tmp_path, {"x.zip": "not a zip"}) / "x.zip"
    with pytest.raises(DataError, match="folder or a .zip"):
        ingest_into(project, not_zip)
    with pytest.raises(DataError, match="overlap"):
        ingest_into(project, project.root.parent)
