"""Ingest clinical cases (images + report text) from an upload (a folder or a .zip) into a dataset-tool project.

    report = ingest_into(project, "cases.zip")                                   # layout detected
    report = ingest_into(project, "iu-xray/", layout="iu-xray", allow_missing_images=True)

Layouts (``layout="auto"`` picks the first that matches the top of the upload):

    upload   the original BESTMVQA upload: ``case_samples.csv`` (columns image,txt; a UTF-8 BOM is fine), ``image/``,
             ``txt/``. One case per txt file (case id = its stem); its images are every row naming that txt.
    iu-xray  ``indiana_reports.csv`` (+ optional ``indiana_projections.csv``): case id = uid; the report is the
             findings and impression sections as "FINDINGS: ..." lines (what iuxray.py evaluates); the case
             metadata keeps MeSH, Problems, indication, comparison and the study title ("study"). Image files are
             looked up by file name anywhere in the upload; absent ones are accepted only with
             ``allow_missing_images`` and recorded as
             ``CaseImage(file="", format="missing", source=<file name>, metadata={"projection": ...})``.
    folder   one subfolder per case (case id = its name) holding its images (PNG, JPEG, DICOM by suffix or by the
             ``DICM`` magic; nested folders included) and exactly one report ``.txt``.

A zip (or folder) whose top holds a single wrapping folder is looked into. Hidden files and ``__MACOSX`` are ignored.

Everything is validated before anything is written: images are decoded (Pillow, and DICOM through
``images.load_image`` with its windowing), report text must be UTF-8 (the byte offset of the first bad byte is named)
and not empty, every case needs an image (unless ``allow_missing_images``), case ids must be unique within the upload
and against the project, CSV rows must name files that exist, and the optional metadata file (CSV or JSON with a
``case_id`` column/key; ``patient``/``patient_id`` fills ``Case.patient``) must name only cases of the upload. Any
problem raises ``IngestError`` listing every problem per case, and the project is left as it was. Cases whose report
is empty can be skipped instead (``skip_empty_reports``: 25 IU X-ray studies have no text at all).

Hostile uploads: zip entries with absolute paths or ``..`` (zip-slip), symlink entries, encrypted entries, entries
over ``Limits.max_file_bytes``, a total over ``Limits.max_total_bytes`` or more than ``Limits.max_files`` entries
are refused; sizes are checked as declared AND counted while reading (a zip bomb with a lying header stops at the
limit). A zip is extracted into a temporary folder that is always removed, under names embedlab chooses. In folders,
symbolic links are refused (never followed), as are special files and files over the limits. Names from the upload
are never used as output paths: images are stored as ``images/<image_id>.<ext>`` (``<case_id>-<n>`` sanitized).

DICOM files are de-identified on the way in (``deidentify``: private tags removed, the elements in ``PHI_KEYWORDS``
blanked, instance UIDs replaced consistently within one ingest, PatientIdentityRemoved = YES); harmless header
fields (``SAFE_KEYWORDS``: Modality, BodyPartExamined, ...) are kept in ``CaseImage.metadata``.

It does not: detect text burned into pixels, strip EXIF/text chunks from PNG/JPEG (those are copied byte for byte),
convert other image formats (BMP, TIFF, GIF are refused), de-duplicate identical images, or extract concepts.
"""
from __future__ import annotations

import csv
import io
import json
import logging
import os
import re
import stat
import tempfile
import zipfile
import zlib
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from ...errors import DataError, UnknownChoiceError
from ..images import is_dicom, load_image
from .project import Project
from .types import Case, CaseImage

log = logging.getLogger(__name__)

LAYOUTS = ("auto", "upload", "iu-xray", "folder")
UPLOAD_CSV = "case_samples.csv"
IU_REPORTS = "indiana_reports.csv"
IU_PROJECTIONS = "indiana_projections.csv"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")  # + DICOM (images.is_dicom: .dcm/.dicom/.dic or the DICM magic)
PILLOW_FORMATS = {"PNG": "png", "JPEG": "jpeg"}  # what Pillow calls the formats we accept -> CaseImage.format
EXTENSIONS = {"png": "png", "jpeg": "jpg", "dicom": "dcm"}  # CaseImage.format -> the stored file's extension
# the report is what describes the image: findings and impression (as iuxray.py evaluates); the indication (why the
# study was ordered: "rule out pneumonia") and the comparison would give concepts that are not in the image, so they
# go to the case metadata
IU_SECTIONS = (("FINDINGS", "findings"), ("IMPRESSION", "impression"))
MAX_LISTED = 50  # problems spelled out in IngestError's message (all of them are in .problems)
MAX_WARNINGS = 100
CHUNK = 1 << 20

# DICOM elements blanked on ingest (wherever they occur, sequences included): names, ids, addresses, dates and
# free-text fields that identify the patient, the staff or the institution (after DICOM PS3.15's basic profile).
PHI_KEYWORDS = (
    "PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientBirthTime", "PatientBirthName",
    "PatientMotherBirthName", "PatientAddress", "PatientTelephoneNumbers", "OtherPatientIDs", "OtherPatientNames",
    "OtherPatientIDsSequence", "PatientAge", "MedicalRecordLocator", "PatientComments", "AdditionalPatientHistory",
    "MilitaryRank", "BranchOfService", "CountryOfResidence", "RegionOfResidence", "ResponsiblePerson",
    "PatientInsurancePlanCodeSequence", "InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName",
    "ReferringPhysicianName", "ReferringPhysicianAddress", "ReferringPhysicianTelephoneNumbers",
    "PerformingPhysicianName", "NameOfPhysiciansReadingStudy", "PhysiciansOfRecord", "OperatorsName",
    "RequestingPhysician", "ScheduledPerformingPhysicianName", "StationName", "DeviceSerialNumber",
    "AccessionNumber", "StudyID", "AdmissionID", "RequestAttributesSequence", "ImageComments", "StudyComments",
    "StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate", "AcquisitionDateTime", "InstanceCreationDate",
    "StudyTime", "SeriesTime", "AcquisitionTime", "ContentTime", "InstanceCreationTime",
)
# Instance UIDs often embed a site root, dates or record numbers: replaced by new ones (the same old UID gets the
# same new UID within one ingest, so series and studies stay grouped). Class UIDs are standard and kept.
UID_KEYWORDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID",
                "ReferencedSOPInstanceUID", "ReferencedFrameOfReferenceUID", "SynchronizationFrameOfReferenceUID",
                "IrradiationEventUID", "ConcatenationUID", "DimensionOrganizationUID")
# Header fields kept in CaseImage.metadata: acquisition facts with no identity in them.
SAFE_KEYWORDS = ("Modality", "BodyPartExamined", "PatientPosition", "ViewPosition", "ImageLaterality", "Laterality",
                 "SeriesDescription", "Rows", "Columns", "NumberOfFrames", "PhotometricInterpretation", "BitsStored",
                 "PixelSpacing", "SliceThickness")


@dataclass(frozen=True)
class Limits:
    """Size limits for one upload (the defaults fit a few thousand radiographs)."""
    max_file_bytes: int = 50 * 1024 * 1024
    max_total_bytes: int = 2 * 1024 ** 3
    max_files: int = 100_000


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an upload: the case (or "" when none), the file inside the upload, what is wrong."""
    case_id: str
    file: str
    message: str

    def __str__(self) -> str:
        return f"case {self.case_id or '-'}: {self.file or '-'}: {self.message}"


class IngestError(DataError):
    """The upload was refused; ``.problems`` lists every problem found, and nothing was written to the project."""

    def __init__(self, problems: list[Problem], source: str | Path | None = None):
        self.problems = list(problems)
        lines = [str(p) for p in self.problems[:MAX_LISTED]]
        if len(self.problems) > MAX_LISTED:
            lines.append(f"... and {len(self.problems) - MAX_LISTED} more")
        super().__init__(f"{len(self.problems)} problem(s) in the upload; nothing was ingested:\n" + "\n".join(lines),
                         source)


@dataclass
class IngestReport:
    source: str
    layout: str
    cases_added: int = 0
    images_added: int = 0  # image files copied into the project (missing ones not counted)
    formats: dict[str, int] = field(default_factory=dict)  # CaseImage.format -> count, "missing" included
    missing_images: int = 0
    case_ids: list[str] = field(default_factory=list)
    skipped_cases: list[str] = field(default_factory=list)  # empty reports skipped (skip_empty_reports)
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


# -- internal records ---------------------------------------------------------------------------------------------
@dataclass
class _Entry:
    name: str  # the name inside the upload, "/"-separated: for messages and CaseImage.source, never an output path
    path: Path  # the real file to read: the file itself (folder) or its extracted copy (zip)
    size: int


@dataclass
class _Image:
    source: str
    entry: _Entry | None  # None: the file is not in the upload (iu-xray with allow_missing_images)
    metadata: dict[str, Any] = field(default_factory=dict)
    format: str = ""
    width: int = 0
    height: int = 0
    staged: Path | None = None  # the file to copy into the project (the de-identified DICOM, else entry.path)


@dataclass
class _Case:
    case_id: str
    report_file: str
    report: str | None  # None: unreadable (a problem was recorded)
    images: list[_Image] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    patient: str = ""
    unfound: int = 0  # images named for it (CSV) that are not in the upload: already problems, not "no image"


class _TooLarge(Exception):
    pass


class _Context:
    """What one ingest collects while it reads: problems, warnings, the limits, the work folder."""

    def __init__(self, limits: Limits, work: Path, allow_missing_images: bool):
        self.limits = limits
        self.work = work
        self.allow_missing_images = allow_missing_images
        self.problems: list[Problem] = []
        self.warnings: list[str] = []
        self.uid_map: dict[str, str] = {}
        self.staged = 0  # de-identified DICOM files written to the work folder so far

    def problem(self, case_id: str, file: str, message: str) -> None:
        self.problems.append(Problem(case_id, file, message))


# -- public entry point ---------------------------------------------------------------------------------------------
def ingest_into(project: Project, source: str | Path, *, layout: str = "auto", metadata: str | Path | None = None,
                allow_missing_images: bool = False, skip_empty_reports: bool = False,
                limits: Limits | None = None) -> IngestReport:
    """Validate the upload at ``source`` (folder or .zip) and add its cases to ``project`` (module docstring).
    Raises IngestError (nothing written) when anything is wrong."""
    if layout not in LAYOUTS:
        raise UnknownChoiceError("ingest layout", layout, LAYOUTS)
    limits = limits or Limits()
    source = Path(source)
    if not source.exists():
        raise DataError("upload not found", source)
    is_zip = source.is_file()
    if is_zip and not zipfile.is_zipfile(source):
        raise DataError("expected a folder or a .zip archive", source)
    if not is_zip and not source.is_dir():
        raise DataError("expected a folder or a .zip archive", source)
    if metadata is not None and not Path(metadata).is_file():
        raise DataError("metadata file not found", metadata)
    if not is_zip:
        inside = project.root.resolve()
        outside = source.resolve()
        if inside == outside or outside in inside.parents or inside in outside.parents:
            raise DataError(f"the upload folder and the project folder {project.root} overlap; upload from a "
                            f"folder outside the project", source)

    with project.writing(), tempfile.TemporaryDirectory(prefix="embedlab-ingest-") as tmp:
        ctx = _Context(limits, Path(tmp), allow_missing_images)
        files = _extract_zip(source, ctx) if is_zip else _scan_folder(source, ctx)
        _raise_if_problems(ctx, source)  # a hostile or oversized upload: stop before reading any content
        files = _unwrap(files)
        chosen = _detect(files) if layout == "auto" else layout
        reader = {"upload": _upload_cases, "iu-xray": _iu_cases, "folder": _folder_cases}[chosen]
        cases = reader(files, ctx)

        if metadata is not None:
            _apply_metadata(Path(metadata), cases, ctx)
        skipped = []
        if skip_empty_reports:
            skipped = [c.case_id for c in cases if c.report is not None and not c.report.strip()]
            cases = [c for c in cases if c.report is None or c.report.strip()]
            if skipped:
                ctx.warnings.append(f"{len(skipped)} case(s) with an empty report skipped: {_some(skipped)}")
                gone = set(skipped)  # what was found wrong with their files no longer matters
                ctx.problems = [p for p in ctx.problems if p.case_id not in gone]
        missing = sum(1 for case in cases for image in case.images if image.entry is None)
        if missing:
            ctx.warnings.append(f"{missing} image file(s) named in the upload's tables are not in it: recorded as "
                                f"format 'missing' (allow_missing_images)")
        existing = project.cases()
        _check_cases(cases, existing, ctx)
        for case in cases:
            for image in case.images:
                if image.entry is not None:
                    _check_image(image, case.case_id, ctx)
        _raise_if_problems(ctx, source)

        new_cases = _commit(project, cases, existing, source.name, ctx)
        formats = Counter(img.format for case in new_cases for img in case.images)
        report = IngestReport(
            source=str(source), layout=chosen, cases_added=len(new_cases),
            images_added=sum(n for fmt, n in formats.items() if fmt != "missing"), formats=dict(formats),
            missing_images=missing, case_ids=[c.case_id for c in new_cases], skipped_cases=skipped,
            warnings=_capped(ctx.warnings))
        project.mark_stage("ingest", source=source.name, layout=chosen, cases_added=report.cases_added,
                           images_added=report.images_added, total_cases=len(existing) + len(new_cases))
    log.info("ingested %d case(s), %d image(s) from %s (%s layout)", report.cases_added, report.images_added,
             source, chosen)
    return report


def _raise_if_problems(ctx: _Context, source: Path) -> None:
    if ctx.problems:
        order: dict[str, int] = {}  # grouped by case, in the order the cases were first named
        for p in ctx.problems:
            order.setdefault(p.case_id, len(order))
        raise IngestError(sorted(ctx.problems, key=lambda p: order[p.case_id]), source)


# -- reading the upload safely ----------------------------------------------------------------------------------------
def _ignored(part: str) -> bool:
    """Hidden files (.DS_Store, AppleDouble ._x) and macOS archive clutter are not part of anyone's upload."""
    return part.startswith(".") or part == "__MACOSX"


def _scan_folder(root: Path, ctx: _Context) -> dict[str, _Entry]:
    limits, entries, total = ctx.limits, {}, 0

    def unreadable(exc: OSError) -> None:
        ctx.problem("", _relative(Path(exc.filename or root), root), f"cannot read: {exc.strerror}")

    for folder, dirs, names in os.walk(root, onerror=unreadable):  # followlinks=False: linked folders are not entered
        here = Path(folder)
        kept = []
        for d in sorted(dirs):
            if _ignored(d):
                continue
            if (here / d).is_symlink():
                ctx.problem("", _relative(here / d, root), "is a symbolic link: refused (links in an upload are "
                                                           "never followed)")
                continue
            kept.append(d)
        dirs[:] = kept
        for name in sorted(names):
            if _ignored(name):
                continue
            path = here / name
            rel = _relative(path, root)
            try:
                st = os.lstat(path)
            except OSError as exc:
                ctx.problem("", rel, f"cannot read: {exc.strerror}")
                continue
            if stat.S_ISLNK(st.st_mode):
                ctx.problem("", rel, "is a symbolic link: refused (links in an upload are never followed)")
            elif not stat.S_ISREG(st.st_mode):
                ctx.problem("", rel, "is not a regular file (a device, pipe or socket): refused")
            elif st.st_size > limits.max_file_bytes:
                ctx.problem("", rel, f"is {st.st_size} bytes, over the limit of {limits.max_file_bytes} per file")
            else:
                total += st.st_size
                entries[rel] = _Entry(rel, path, st.st_size)
                if len(entries) > limits.max_files:  # stop walking: a huge tree is refused as a whole
                    raise IngestError([Problem("", "", f"more than {limits.max_files} files: refused")], root)
                if total > limits.max_total_bytes:
                    raise IngestError([Problem("", "", f"more than {limits.max_total_bytes} bytes in all: refused")],
                                      root)
    return entries


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def _member_name(raw: str) -> tuple[str, str | None]:
    """The zip member's name, normalised to "a/b/c", or a reason to refuse it."""
    name = raw.replace("\\", "/")  # zips made on Windows may use backslashes: check them as separators too
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        return "", "absolute path: refused (zip-slip)"
    if any(ord(c) < 32 for c in name):
        return "", "control characters in the name: refused"
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        return "", "'..' in the path: refused (zip-slip)"
    return "/".join(parts), None


def _extract_zip(archive: Path, ctx: _Context) -> dict[str, _Entry]:
    limits = ctx.limits
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as exc:
        raise IngestError([Problem("", archive.name, f"not a readable zip archive: {exc}")], archive) from None
    with zf:
        infos = zf.infolist()
        if len(infos) > limits.max_files:
            raise IngestError([Problem("", archive.name, f"{len(infos)} entries, over the limit of "
                                                         f"{limits.max_files}: refused")], archive)
        plan: list[tuple[zipfile.ZipInfo, str]] = []
        declared = 0
        seen: set[str] = set()
        for info in infos:
            name, refused = _member_name(info.filename)
            if refused:
                ctx.problem("", info.filename, refused)
                continue
            if stat.S_ISLNK(info.external_attr >> 16):
                ctx.problem("", info.filename, "is a symbolic link: refused")
                continue
            if info.is_dir() or not name or any(_ignored(p) for p in name.split("/")):
                continue
            if info.flag_bits & 0x1:
                ctx.problem("", info.filename, "is encrypted: refused")
                continue
            if info.file_size > limits.max_file_bytes:
                ctx.problem("", info.filename, f"declares {info.file_size} bytes, over the limit of "
                                               f"{limits.max_file_bytes} per file: refused")
                continue
            if name in seen:
                ctx.problem("", info.filename, "appears twice in the archive: refused")
                continue
            seen.add(name)
            declared += info.file_size
            plan.append((info, name))
        if declared > limits.max_total_bytes:
            ctx.problem("", archive.name, f"declares {declared} bytes in all, over the limit of "
                                          f"{limits.max_total_bytes}: refused")
        if ctx.problems:
            return {}

        folder = ctx.work / "zip"
        folder.mkdir()
        entries: dict[str, _Entry] = {}
        total = 0
        for number, (info, name) in enumerate(plan):
            # the member's own name is never a path: files are numbered; only a plain suffix is kept (is_dicom)
            suffix = PurePosixPath(name).suffix.lower()
            target = folder / (f"{number:06d}" + (suffix if re.fullmatch(r"\.[a-z0-9]{1,10}", suffix) else ""))
            # bytes are counted while reading: a member may decompress to more than its header says
            limit = min(limits.max_file_bytes, info.file_size, limits.max_total_bytes - total)
            try:
                with zf.open(info) as src, open(target, "wb") as dst:
                    size = _copy_limited(src, dst, limit)
            except _TooLarge:
                target.unlink(missing_ok=True)
                raise IngestError([Problem("", info.filename, f"decompresses to more than {limit} bytes (its "
                                                              f"declared size or the limit): refused (a zip bomb?)")],
                                  archive) from None
            except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, OSError) as exc:
                target.unlink(missing_ok=True)
                ctx.problem("", info.filename, f"corrupt archive entry (or a lying header): {exc}")
                continue
            total += size
            entries[name] = _Entry(name, target, size)
    return entries


def _copy_limited(src: BinaryIO, dst: BinaryIO, limit: int) -> int:
    """Copy in chunks; raise _TooLarge as soon as more than ``limit`` bytes were read (never buffers more)."""
    copied = 0
    while True:
        chunk = src.read(min(CHUNK, limit - copied + 1))
        if not chunk:
            return copied
        copied += len(chunk)
        if copied > limit:
            raise _TooLarge(copied)
        dst.write(chunk)


def _read_bytes(entry: _Entry, ctx: _Context) -> bytes:
    buffer = io.BytesIO()
    with open(entry.path, "rb") as f:
        _copy_limited(f, buffer, ctx.limits.max_file_bytes)  # a folder's file may have grown since the scan
    return buffer.getvalue()


def _read_text(entry: _Entry, case_id: str, ctx: _Context) -> str | None:
    """The file's text (BOM dropped, CRLF -> LF), or None with a problem naming the first bad byte."""
    try:
        data = _read_bytes(entry, ctx)
    except (OSError, _TooLarge) as exc:
        ctx.problem(case_id, entry.name, f"cannot read: {exc}")
        return None
    bom = 3 if data.startswith(b"\xef\xbb\xbf") else 0
    try:
        text = data[bom:].decode("utf-8")
    except UnicodeDecodeError as exc:
        offset = exc.start + bom
        ctx.problem(case_id, entry.name, f"not UTF-8 text: byte 0x{data[offset]:02x} at byte offset {offset} "
                                         f"(save it as UTF-8)")
        return None
    if "\x00" in text:
        ctx.problem(case_id, entry.name, f"contains NUL bytes (first at character {text.index(chr(0))}): not text")
        return None
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _read_csv(entry: _Entry, ctx: _Context, required: tuple[str, ...]) -> list[tuple[int, dict[str, str]]] | None:
    """(line number, row with lower-cased column names) pairs, or None with a problem."""
    text = _read_text(entry, "", ctx)
    if text is None:
        return None
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [h.strip().lower() for h in next(reader, [])]
        missing = [c for c in required if c not in header]
        if missing:
            ctx.problem("", entry.name, f"no column {', '.join(missing)} (the header is {','.join(header) or 'empty'})")
            return None
        rows = []
        for values in reader:
            if not any(v.strip() for v in values):
                continue
            rows.append((reader.line_num, {h: (values[i].strip() if i < len(values) else "")
                                           for i, h in enumerate(header)}))
    except csv.Error as exc:
        ctx.problem("", f"{entry.name} line {reader.line_num}", f"not valid CSV: {exc}")
        return None
    return rows


def _unwrap(files: dict[str, _Entry]) -> dict[str, _Entry]:
    """Look into a single wrapping folder ("cases.zip" holding "cases/..."), keyed by the name below it. A folder
    that looks like one case (report or images directly in it) is not looked into."""
    while files:
        tops = {name.split("/", 1)[0] for name in files}
        if len(tops) != 1 or any("/" not in name for name in files):
            break
        top = next(iter(tops))
        inner = {name[len(top) + 1:]: entry for name, entry in files.items()}
        direct = [name for name in inner if "/" not in name]
        marker = UPLOAD_CSV in direct or IU_REPORTS in direct
        looks_like_case = any(_is_report(n) or n.lower().endswith(IMAGE_SUFFIXES + (".dcm",)) for n in direct)
        if not marker and (looks_like_case or len(direct) == len(inner)):
            break
        files = inner
    return files


def _detect(files: dict[str, _Entry]) -> str:
    if UPLOAD_CSV in files:
        return "upload"
    if IU_REPORTS in files:
        return "iu-xray"
    return "folder"


def _is_report(name: str) -> bool:
    return name.lower().endswith(".txt")


# -- layouts -------------------------------------------------------------------------------------------------------
def _lookup(files: dict[str, _Entry], folder: str, name: str) -> _Entry | None:
    name = name.replace("\\", "/").strip("/")
    return files.get(name if name.startswith(folder + "/") else f"{folder}/{name}") or files.get(name)


def _upload_cases(files: dict[str, _Entry], ctx: _Context) -> list[_Case]:
    table = files.get(UPLOAD_CSV)
    if table is None:
        ctx.problem("", UPLOAD_CSV, "not at the top of the upload (layout 'upload' needs case_samples.csv, image/ "
                                    "and txt/)")
        return []
    rows = _read_csv(table, ctx, ("image", "txt"))
    if rows is None:
        return []
    by_txt: dict[str, _Case] = {}
    named: set[str] = set()
    for line, row in rows:
        where = f"{UPLOAD_CSV} line {line}"
        if not row["image"] or not row["txt"]:
            ctx.problem("", where, "empty image or txt cell")
            continue
        txt_name = row["txt"].replace("\\", "/").strip("/")
        case_id = PurePosixPath(txt_name).stem
        case = by_txt.get(txt_name)
        if case is None:
            report_entry = _lookup(files, "txt", txt_name)
            report = None
            if report_entry is None:
                ctx.problem(case_id, f"txt/{txt_name}", f"named in {where} but not in the upload")
            else:
                named.add(report_entry.name)
                report = _read_text(report_entry, case_id, ctx)
            case = by_txt[txt_name] = _Case(case_id, report_entry.name if report_entry else txt_name, report)
        image_entry = _lookup(files, "image", row["image"])
        if image_entry is None:
            ctx.problem(case_id, f"image/{row['image']}", f"named in {where} but not in the upload")
            case.unfound += 1
            continue
        if any(img.entry is image_entry for img in case.images):
            ctx.warnings.append(f"{where}: {row['image']} is already an image of case {case_id}: ignored")
            continue
        named.add(image_entry.name)
        case.images.append(_Image(image_entry.name, image_entry))
    unlisted = sorted(n for n in files if n.split("/", 1)[0] in ("image", "txt") and files[n].name not in named)
    if unlisted:
        ctx.warnings.append(f"{len(unlisted)} file(s) in image/ and txt/ not named in {UPLOAD_CSV}: skipped "
                            f"({_some(unlisted)})")
    return list(by_txt.values())


def _iu_cases(files: dict[str, _Entry], ctx: _Context) -> list[_Case]:
    table = files.get(IU_REPORTS)
    if table is None:
        ctx.problem("", IU_REPORTS, "not at the top of the upload (layout 'iu-xray' needs indiana_reports.csv)")
        return []
    rows = _read_csv(table, ctx, ("uid", "findings", "impression"))
    if rows is None:
        return []
    projections: dict[str, list[tuple[str, str]]] = {}
    if IU_PROJECTIONS in files:
        for _line, row in _read_csv(files[IU_PROJECTIONS], ctx, ("uid", "filename")) or []:
            projections.setdefault(row["uid"], []).append((row["filename"], row.get("projection", "")))
    else:
        ctx.warnings.append(f"no {IU_PROJECTIONS}: the cases have no images")
    by_basename: dict[str, list[_Entry]] = {}  # images may sit anywhere (Kaggle: images/images_normalized/...)
    for name, entry in files.items():
        by_basename.setdefault(PurePosixPath(name).name, []).append(entry)

    cases = []
    for line, row in rows:
        uid = row["uid"]
        report = "\n".join(f"{label}: {row[col]}" for label, col in IU_SECTIONS if row.get(col))
        meta = {key: row[col] for key, col in (("MeSH", "mesh"), ("Problems", "problems"), ("indication", "indication"),
                                               ("comparison", "comparison"), ("study", "image")) if row.get(col)}
        case = _Case(uid, f"{IU_REPORTS} line {line}", report, metadata=meta)
        for filename, projection in projections.get(uid, []):
            found = by_basename.get(PurePosixPath(filename.replace("\\", "/")).name, [])
            extra = {"projection": projection} if projection else {}
            if len(found) > 1:
                ctx.problem(uid, filename, f"{len(found)} files of that name in the upload: "
                                           f"{', '.join(e.name for e in found[:3])}")
                case.unfound += 1
            elif found:
                case.images.append(_Image(found[0].name, found[0], extra))
            elif ctx.allow_missing_images:
                case.images.append(_Image(filename, None, extra))
            else:
                ctx.problem(uid, filename, f"named in {IU_PROJECTIONS} but not in the upload (pass "
                                           f"allow_missing_images to ingest the reports without it)")
                case.unfound += 1
        cases.append(case)
    return cases


def _natural(name: str) -> list:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def _folder_cases(files: dict[str, _Entry], ctx: _Context) -> list[_Case]:
    members: dict[str, list[str]] = {}
    loose = []
    for name in files:
        if "/" in name:
            members.setdefault(name.split("/", 1)[0], []).append(name)
        else:
            loose.append(name)
    if loose:
        ctx.warnings.append(f"{len(loose)} file(s) at the top of the upload (not in a case folder): ignored "
                            f"({_some(sorted(loose))})")
    if not members:
        ctx.problem("", "", "no case folders found (layout 'folder' needs one subfolder per case)")
    cases = []
    ignored = []
    for case_id in sorted(members, key=_natural):
        names = sorted(members[case_id], key=_natural)
        reports = [n for n in names if _is_report(n)]
        images = [n for n in names if n not in reports and (n.lower().endswith(IMAGE_SUFFIXES)
                                                            or is_dicom(files[n].path))]
        ignored += [n for n in names if n not in reports and n not in images]
        report, report_file = None, ""
        if not reports:
            ctx.problem(case_id, f"{case_id}/", "no report (.txt) file")
        elif len(reports) > 1:
            ctx.problem(case_id, f"{case_id}/", f"{len(reports)} report files ({', '.join(reports[:5])}); expected one")
        else:
            report_file = reports[0]
            report = _read_text(files[report_file], case_id, ctx)
        cases.append(_Case(case_id, report_file, report, [_Image(n, files[n]) for n in images]))
    if ignored:
        ctx.warnings.append(f"{len(ignored)} file(s) that are neither an image nor a .txt report: ignored "
                            f"({_some(ignored)})")
    return cases


# -- metadata -------------------------------------------------------------------------------------------------------
def _apply_metadata(path: Path, cases: list[_Case], ctx: _Context) -> None:
    entry = _Entry(path.name, path, path.stat().st_size)
    records: list[tuple[str, dict[str, Any]]] = []  # (where, record)
    if path.suffix.lower() == ".json":
        text = _read_text(entry, "", ctx)
        if text is None:
            return
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            ctx.problem("", path.name, f"not valid JSON: {exc}")
            return
        if isinstance(data, dict):  # {"case7": {...}, ...}
            data = [{"case_id": k, **v} if isinstance(v, dict) else {"case_id": k, "value": v}
                    for k, v in data.items()]
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            ctx.problem("", path.name, "expected a list of objects with case_id, or an object keyed by case id")
            return
        records = [(f"{path.name} record {i}", r) for i, r in enumerate(data, 1)]
        for where, r in records:
            if "case_id" not in r:
                ctx.problem("", where, "no case_id")
        records = [(w, r) for w, r in records if "case_id" in r]
    else:
        rows = _read_csv(entry, ctx, ("case_id",))
        if rows is None:
            return
        records = [(f"{path.name} line {line}", {k: v for k, v in row.items() if v != ""}) for line, row in rows]
    by_id = {c.case_id: c for c in cases}
    seen: set[str] = set()
    for where, record in records:
        case_id = str(record.get("case_id", "")).strip()
        if case_id in seen:
            ctx.problem(case_id, where, "a second metadata row for this case")
            continue
        seen.add(case_id)
        case = by_id.get(case_id)
        if case is None:
            ctx.problem(case_id, where, "metadata for a case that is not in the upload")
            continue
        extra = {k: v for k, v in record.items() if k != "case_id"}
        for key in ("patient", "patient_id"):
            if key in extra:
                case.patient = str(extra.pop(key)).strip()
        case.metadata.update(extra)


# -- validation --------------------------------------------------------------------------------------------------------
def _check_cases(cases: list[_Case], existing: list[Case], ctx: _Context) -> None:
    known = {c.case_id for c in existing}
    counts = Counter(c.case_id for c in cases)
    reported: set[str] = set()
    for case in cases:
        cid = case.case_id
        if not cid.strip() or any(ord(ch) < 32 for ch in cid):
            ctx.problem(cid, case.report_file, "empty case id or control characters in it")
        if counts[cid] > 1 and cid not in reported:
            reported.add(cid)
            files = [c.report_file for c in cases if c.case_id == cid]
            ctx.problem(cid, case.report_file, f"case id appears {counts[cid]} times in the upload "
                                               f"({', '.join(files[:5])})")
        if cid in known:
            ctx.problem(cid, case.report_file, "case id is already in the project (ingested earlier)")
        if case.report is not None and not case.report.strip():
            ctx.problem(cid, case.report_file, "the report is empty")
        if not case.images and not case.unfound and not ctx.allow_missing_images:
            ctx.problem(cid, case.report_file, "no image (pass allow_missing_images to ingest text-only cases)")


def _reason(exc: Exception) -> str:
    """The message of a DataError without the (temporary) path it starts with."""
    text = str(exc)
    path = getattr(exc, "path", None)
    return text[len(path) + 2:] if path and text.startswith(path + ": ") else text


def _check_image(image: _Image, case_id: str, ctx: _Context) -> None:
    """Decode the image (fully: a truncated file must fail here, not in training); set format and size. DICOM is
    de-identified into the work folder, and that copy is what is decoded and later stored."""
    entry = image.entry
    if is_dicom(entry.path):
        _check_dicom(image, case_id, ctx)
        return
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(entry.path) as img:
            kind = img.format
            img.verify()  # structure and checksums (PNG CRCs)
        with Image.open(entry.path) as img:  # verify() leaves the image unusable: open again to decode the pixels
            img.load()
            width, height = img.size
    except UnidentifiedImageError:
        ctx.problem(case_id, entry.name, "not an image embedlab can read (PNG, JPEG or DICOM), or corrupt")
        return
    except Image.DecompressionBombError as exc:
        ctx.problem(case_id, entry.name, f"too many pixels: {exc}")
        return
    except Exception as exc:  # noqa: BLE001 - Pillow's decoders raise many types on corrupt data; all mean "corrupt"
        ctx.problem(case_id, entry.name, f"corrupt or truncated image: {exc}")
        return
    if kind not in PILLOW_FORMATS:
        ctx.problem(case_id, entry.name, f"is a {kind} image; embedlab ingests PNG, JPEG and DICOM")
        return
    image.format, image.width, image.height, image.staged = PILLOW_FORMATS[kind], width, height, entry.path


def _check_dicom(image: _Image, case_id: str, ctx: _Context) -> None:
    import pydicom

    entry = image.entry
    try:
        ds = pydicom.dcmread(entry.path)
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types on malformed files
        ctx.problem(case_id, entry.name, f"not a readable DICOM file: {exc}")
        return
    if "PixelData" not in ds:
        ctx.problem(case_id, entry.name, "DICOM file without pixel data (a report or structured document?)")
        return
    image.metadata.update(dicom_metadata(ds))
    deidentify(ds, ctx.uid_map)
    folder = ctx.work / "dicom"
    folder.mkdir(exist_ok=True)
    ctx.staged += 1
    staged = folder / f"{ctx.staged:06d}.dcm"
    try:
        ds.save_as(staged)
        load_image(staged)  # decodes with the modality LUT and windowing, as training will
    except DataError as exc:
        ctx.problem(case_id, entry.name, _reason(exc))
        return
    except Exception as exc:  # noqa: BLE001 - pydicom's writers and decoders raise many types on bad data
        ctx.problem(case_id, entry.name, f"cannot decode the DICOM image: {exc}")
        return
    image.format, image.width, image.height, image.staged = "dicom", int(ds.Columns), int(ds.Rows), staged


def dicom_metadata(ds) -> dict[str, Any]:
    """The SAFE_KEYWORDS present in ``ds`` as JSON values."""
    out: dict[str, Any] = {}
    for keyword in SAFE_KEYWORDS:
        value = ds.get(keyword)
        if value is None or value == "":
            continue
        out[keyword] = _json_value(value)
    return out


def _json_value(value: Any) -> Any:
    from pydicom.multival import MultiValue
    from pydicom.valuerep import DSfloat, IS

    if isinstance(value, (list, tuple, MultiValue)):
        return [_json_value(v) for v in value]
    if isinstance(value, (int, IS)) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, (float, DSfloat)):
        return float(value)
    return str(value)


def deidentify(ds, uid_map: dict[str, str] | None = None) -> None:
    """De-identify a pydicom dataset in place: remove private tags, blank PHI_KEYWORDS (sequences emptied), replace
    UID_KEYWORDS by new UIDs (``uid_map`` keeps old -> new, so one ingest maps a UID the same way everywhere), and
    mark it (PatientIdentityRemoved = YES, DeidentificationMethod)."""
    from pydicom.datadict import tag_for_keyword
    from pydicom.uid import generate_uid

    uid_map = {} if uid_map is None else uid_map
    blank = {tag_for_keyword(k) for k in PHI_KEYWORDS} - {None}
    uids = {tag_for_keyword(k) for k in UID_KEYWORDS} - {None}

    def new_uid(old: str) -> str:
        if old not in uid_map:
            uid_map[old] = generate_uid()
        return uid_map[old]

    def visit(_dataset, elem) -> None:
        if elem.tag in blank:
            elem.value = [] if elem.VR == "SQ" else ""
        elif elem.tag in uids and elem.value:
            elem.value = [new_uid(str(v)) for v in elem.value] if elem.VM > 1 else new_uid(str(elem.value))

    ds.remove_private_tags()
    ds.walk(visit)
    meta = getattr(ds, "file_meta", None)
    if meta is not None and "MediaStorageSOPInstanceUID" in meta and "SOPInstanceUID" in ds:
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = "embedlab: private tags removed, PHI blanked, UIDs replaced"  # LO: <= 64 chars


# -- writing ----------------------------------------------------------------------------------------------------------
def _sanitize(text: str) -> str:
    clean = re.sub(r"[^A-Za-z0-9._-]", "_", text).lstrip(".-")[:120]
    return clean or "case"


def _commit(project: Project, cases: list[_Case], existing: list[Case], source_name: str, ctx: _Context) -> list[Case]:
    """Copy the images in under temporary names, rename them, then rewrite cases.jsonl (the commit point). Anything
    that fails before the cases file is written removes every file this call wrote."""
    images_dir = project.images_dir
    images_dir.mkdir(exist_ok=True)
    # lower-case: names must not collide on case-insensitive file systems either
    taken = {img.image_id.lower() for case in existing for img in case.images}
    taken |= {p.name.split(".", 1)[0].lower() for p in images_dir.iterdir()}
    umask = os.umask(0)
    os.umask(umask)
    written: list[Path] = []
    renames: list[tuple[int, Path]] = []  # (index in written, final path)
    new_cases: list[Case] = []
    try:
        for case in cases:
            images = []
            for number, image in enumerate(case.images, 1):
                image_id = _unique(_sanitize(f"{case.case_id}-{number}"), taken)
                if image.entry is None:
                    images.append(CaseImage(image_id, "", image.source, "missing", metadata=image.metadata))
                    continue
                ext = EXTENSIONS[image.format]
                fd, tmp = tempfile.mkstemp(prefix=".ingest-", suffix=f".{ext}", dir=images_dir)
                written.append(Path(tmp))
                with os.fdopen(fd, "wb") as dst, open(image.staged, "rb") as src:
                    _copy_limited(src, dst, ctx.limits.max_file_bytes)
                os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the permissions a plain open() would
                final = images_dir / f"{image_id}.{ext}"
                renames.append((len(written) - 1, final))
                images.append(CaseImage(image_id, final.name, image.source, image.format, image.width, image.height,
                                        image.metadata))
            new_cases.append(Case(case.case_id, case.report.strip(), images, case.patient, source_name,
                                  case.metadata))
        for index, final in renames:
            if final.exists():  # cannot happen under the lock (names are checked above); never overwrite
                raise DataError("exists already; refusing to overwrite it", final)
            os.replace(written[index], final)
            written[index] = final
        project.write_cases(existing + new_cases)
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    return new_cases


def _unique(base: str, taken: set[str]) -> str:
    candidate, n = base, 1
    while candidate.lower() in taken:
        n += 1
        candidate = f"{base}_{n}"
    taken.add(candidate.lower())
    return candidate


# -- small helpers ----------------------------------------------------------------------------------------------
def _some(names: list[str], n: int = 5) -> str:
    return ", ".join(names[:n]) + (f", ... ({len(names) - n} more)" if len(names) > n else "")


def _capped(warnings: list[str]) -> list[str]:
    if len(warnings) <= MAX_WARNINGS:
        return list(warnings)
    return warnings[:MAX_WARNINGS] + [f"... and {len(warnings) - MAX_WARNINGS} more warnings"]


__all__ = ["IngestError", "IngestReport", "Limits", "Problem", "ingest_into", "deidentify", "dicom_metadata",
           "LAYOUTS", "PHI_KEYWORDS", "SAFE_KEYWORDS", "UID_KEYWORDS"]
