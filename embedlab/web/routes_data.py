"""Data generation pages (issue 17, page 1): upload clinical cases, extract concepts, review them, generate QA pairs,
review those, export a dataset and see it in the registry; with JSON API mirrors under /api/data/.

| page                                  | who                     | what                                              |
|---------------------------------------|-------------------------|---------------------------------------------------|
| /data                                 | researcher, reviewer    | your projects; upload a .zip of cases (researcher) |
| /data/projects/{id}                   | owner, shared reviewers | stages and counts, running step, step forms       |
| /data/projects/{id}/cases/{case}      | owner, shared reviewers | report with concept spans; accept / edit / reject |
| /data/projects/{id}/qa                | owner, shared reviewers | QA pairs (of a case, or by status, paginated)     |
| /data/datasets, /data/datasets/{name} | researcher, reviewer    | registered exports with their card                |

Every step is one call of embedlab.medvqa.dataset_tool, the same as ``embedlab vqa-data``: ``ingest_into`` (layout
auto-detected: the original system's ``case_samples.csv`` + image/ + txt/, IU X-ray, one folder per case),
``extract_into``, ``decide`` (the signed-in user's name is the reviewer), ``generate_into`` with a ``QAConfig``,
``export_project`` + ``register_export``, ``registered_exports``. The pages hold no pipeline logic of their own.

Storage, under the web folder (``--web-dir``): ``uploads/<upload id>.zip`` (the client's file name is only shown,
never a path), ``projects/<project id>/`` (a dataset-tool project, plus ``web-project.json``: display name, upload,
shared reviewers; and ``web-task.json``: the last background step), ``exports/<project id>/<export id>/``.
Ownership is recorded with ``Accounts.own``: another user's project answers 404 exactly like a missing one. The
owner may share a project with reviewers (they see and review it; only the owner or an admin runs its steps).

Long steps (extract, generate, export) run in a background thread, one per project at a time: a second start is
refused with "running" (409 in the API); the project's own folder lock (taken by the dataset-tool functions) also
refuses a step while ``embedlab vqa-data`` works on the same folder. The step's state is kept in ``web-task.json``
(written atomically), so a reload or a restart shows the last state; a step that was running when the server
stopped shows as "interrupted, run it again". The project page polls the state with HTMX every second and reloads
itself when the step ends. The upload's ingest runs in the request itself (it validates everything before writing;
its problems are listed per case and file, and nothing is imported).

It does not: ingest a folder on the server (the CLI does), run paraphrasing (needs a local language model: CLI),
delete projects or exports, report per-case progress inside a step (the dataset-tool functions have no progress
hook: the page shows the step and its running time), or let reviewers start steps.
"""
from __future__ import annotations

import json
import logging
import math
import re
import secrets
import shutil
import threading
import time
import zipfile
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Depends, File, Form, Query, Request, UploadFile
from markupsafe import Markup, escape
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import FileResponse, JSONResponse, Response

from ..atomic import write_json
from ..errors import ConfigError, EmbedlabError
from .accounts import Accounts, User
from .config import WebConfig
from .deps import AccountsDep, ConfigDep, require_role
from .errors import Forbidden, NotFound, PayloadTooLarge, WebError, reference_id
from .render import NavItem, is_htmx, redirect, render

log = logging.getLogger("embedlab.web.data")

router = APIRouter()
NAV = [NavItem("Data", "/data", "Upload cases, review concepts and QA pairs, export datasets.",
               roles=("researcher", "reviewer"), order=10)]

Researcher = Annotated[User, Depends(require_role("researcher"))]
Member = Annotated[User, Depends(require_role("researcher", "reviewer"))]

PROJECT_ID = re.compile(r"[0-9a-f]{16}")
META_FILE = "web-project.json"
TASK_FILE = "web-task.json"
STEP_UNITS = {"extract": "cases", "generate": "cases", "export": "images"}  # what progress counts
STEPS = {"extract": "Concept extraction", "generate": "QA generation", "export": "Export"}
# the categories and question types of the dataset tool (types.py); literal here so the API schema lists them
CATEGORIES = ("modality", "plane", "organ", "finding", "laterality", "location", "size", "count")
QUESTION_TYPES = ("MODALITY", "PLANE", "ORGAN", "PRES", "ABN", "POS", "SIZE", "COUNT")
DATASET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")  # register_export's rule, checked before exporting
QA_PAGE_SIZE = 20
CHUNK = 1 << 20

Layout = Literal["auto", "upload", "iu-xray", "folder"]
ReviewStatus = Literal["accepted", "edited", "rejected"]
SplitBy = Literal["case", "image", "patient"]
Include = Literal["accepted", "reviewed-or-pending", "all-unreviewed"]


class Busy(WebError):
    """A step of this project is running already."""

    status_code = 409


# -- where things live ------------------------------------------------------------------------------------------

def _projects_dir(config: WebConfig) -> Path:
    return config.web_dir / "projects"


def _project_root(config: WebConfig, project_id: str) -> Path:
    if not isinstance(project_id, str) or not PROJECT_ID.fullmatch(project_id):
        raise NotFound(f"no such project {str(project_id)[:40]}")  # checked first: an id is never a path before this
    return _projects_dir(config) / project_id


def _exports_dir(config: WebConfig, project_id: str) -> Path:
    return config.web_dir / "exports" / project_id


def _read_json(path: Path) -> dict[str, Any]:
    """The JSON object in ``path``, or {} when it is missing or unreadable (a torn write cannot happen: files here
    are written atomically, but a hand-edited one must not break the page)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# -- background steps ---------------------------------------------------------------------------------------------

class Tasks:
    """The steps running in this server process: at most one per project. The state of the last step of each
    project is in its ``web-task.json``; "running" there while no thread here runs it means the server stopped
    during the step (interrupted)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._running: dict[str, str] = {}  # project id -> step
        self._progress: dict[str, tuple[int, int, float]] = {}  # project id -> (done, total, monotonic time started)

    def running(self, project_id: str) -> str | None:
        with self._lock:
            return self._running.get(project_id)

    def progress(self, project_id: str) -> dict[str, Any] | None:
        """Items done and in all of the running step, with rate (items/s) and estimated seconds left; None before
        the step has reported (in memory only: after a restart the step is interrupted anyway)."""
        with self._lock:
            got = self._progress.get(project_id)
        if got is None:
            return None
        done, total, t0 = got
        seconds = max(time.monotonic() - t0, 1e-6)
        rate = done / seconds
        return {"done": done, "total": total, "rate": round(rate, 2),
                "eta": round((total - done) / rate) if done and total >= done else None}

    def check(self, project_id: str) -> None:
        """Busy when a step of the project runs (checked before anything else is looked at; start() checks again
        under the lock, so two starts at once still run one step)."""
        busy = self.running(project_id)
        if busy:
            raise Busy(f"{STEPS.get(busy, busy)} is running for this project; wait until it has finished")

    def start(self, project_id: str, root: Path, step: str, params: dict[str, Any],
              work: Callable[[Callable[[int, int], None]], dict[str, Any]]) -> dict[str, Any]:
        """Run ``work(progress)`` in a thread; the step calls ``progress(done, total)`` as it goes."""
        with self._lock:
            busy = self._running.get(project_id)
            if busy:
                raise Busy(f"{STEPS.get(busy, busy)} is running for this project; wait until it has finished")
            self._running[project_id] = step
        state = {"step": step, "state": "running", "started": _now(), "finished": None, "params": params,
                 "message": "", "summary": None}
        try:
            write_json(root / TASK_FILE, state)
            thread = threading.Thread(target=self._run, args=(project_id, root, state, work), daemon=True,
                                      name=f"embedlab-data-{step}-{project_id}")
            thread.start()
        except BaseException:
            with self._lock:
                self._running.pop(project_id, None)
            raise
        return state

    def _run(self, project_id: str, root: Path, state: dict[str, Any],
             work: Callable[[Callable[[int, int], None]], dict[str, Any]]) -> None:
        t0 = time.monotonic()

        def progress(done: int, total: int) -> None:
            with self._lock:
                self._progress[project_id] = (int(done), int(total), t0)

        try:
            try:
                state = {**state, "state": "done", "summary": work(progress)}
            except EmbedlabError as exc:  # a refusal the user can act on: its message, as the CLI prints it
                state = {**state, "state": "failed", "message": str(exc)}
            except Exception:  # a bug: the traceback goes to the log, the page shows a reference to it
                ref = reference_id()
                log.exception("data step %s of project %s failed, ref %s", state["step"], project_id, ref)
                state = {**state, "state": "failed",
                         "message": f"unexpected error (ref {ref}); it has been logged, please report the reference"}
            state["finished"] = _now()
            state["seconds"] = round(time.monotonic() - t0, 1)
            write_json(root / TASK_FILE, state)
        except OSError:
            log.exception("cannot record the end of data step %s of project %s", state["step"], project_id)
        finally:
            # after the file is written: a reader never sees "running" on disk with no thread here (= interrupted)
            with self._lock:
                self._running.pop(project_id, None)
                self._progress.pop(project_id, None)


_tasks_lock = threading.Lock()


def _tasks(request: Request) -> Tasks:
    """The app's Tasks (one per app: a second app in the same process, as in tests, is a second server)."""
    state = request.app.state
    with _tasks_lock:
        tasks = getattr(state, "data_tasks", None)
        if tasks is None:
            tasks = state.data_tasks = Tasks()
    return tasks


def task_state(root: Path, tasks: Tasks, project_id: str) -> dict[str, Any] | None:
    """The last step's state as the pages show it: running / done / failed / interrupted, or None (no step yet)."""
    running = tasks.running(project_id)
    state = _read_json(root / TASK_FILE)
    if running:
        if state.get("state") != "running" or state.get("step") != running:  # between the start and its file
            state = {"step": running, "state": "running", "started": _now(), "params": {}, "summary": None,
                     "message": "", "finished": None}
    elif not state:
        return None
    elif state.get("state") == "running":
        state = {**state, "state": "interrupted",
                 "message": "The server stopped while this step ran; its output was not written. Run it again."}
    state.setdefault("step", "?")
    state["label"] = STEPS.get(state["step"], state["step"])
    if state["state"] == "running":
        try:
            started = datetime.fromisoformat(state.get("started") or "")
            state["elapsed"] = max(0, int((datetime.now(timezone.utc) - started).total_seconds()))
        except ValueError:
            state["elapsed"] = 0
        state["progress"] = tasks.progress(project_id)
        state["unit"] = STEP_UNITS.get(state["step"], "items")
    return state


# -- access ---------------------------------------------------------------------------------------------------------

class Opened:
    """A project the user may see: the dataset-tool Project, its web metadata, and what the user may do."""

    def __init__(self, project_id: str, project, meta: dict[str, Any], owner: User | None, can_manage: bool):
        self.id = project_id
        self.project = project
        self.meta = meta
        self.owner = owner
        self.can_manage = can_manage

    @property
    def root(self) -> Path:
        return self.project.root

    @property
    def name(self) -> str:
        return str(self.meta.get("name") or self.project.info.get("name") or self.id)


def _reviewers(meta: dict[str, Any]) -> list[int]:
    """The user ids a project is shared with (a hand-edited file with anything else in it shares with nobody)."""
    found = meta.get("reviewers")
    return [i for i in found if isinstance(i, int)] if isinstance(found, list) else []


def _open(config: WebConfig, accounts: Accounts, user: User, project_id: str, *, manage: bool = False) -> Opened:
    """The project if ``user`` may see it (admin, owner, or a reviewer it is shared with), else NotFound, the same
    as a missing one. ``manage``: the user must also be allowed to run its steps (owner or admin), else Forbidden."""
    from ..medvqa.dataset_tool.project import Project

    root = _project_root(config, project_id)
    owner = accounts.owner_of("project", project_id)
    meta = _read_json(root / META_FILE)
    is_owner = owner is not None and owner.id == user.id
    shared = user.id in _reviewers(meta)
    if not (user.is_admin or is_owner or shared) or not (root / "project.json").is_file():
        raise NotFound(f"no such project {project_id}")
    can_manage = user.is_admin or (is_owner and user.role == "researcher")
    if manage and not can_manage:
        raise Forbidden("only the project's owner (a researcher) or an admin runs its steps")
    return Opened(project_id, Project.open(root), meta, owner, can_manage)


def visible_project_ids(config: WebConfig, accounts: Accounts, user: User) -> list[str]:
    """The projects a user sees: their own (admins: all recorded), then those shared with them."""
    ids = [i for i in accounts.owned_ids("project", user) if PROJECT_ID.fullmatch(i)]
    if not user.is_admin and _projects_dir(config).is_dir():
        known = set(ids)
        for meta_file in sorted(_projects_dir(config).glob(f"*/{META_FILE}")):
            pid = meta_file.parent.name
            if pid not in known and PROJECT_ID.fullmatch(pid) and user.id in _reviewers(_read_json(meta_file)):
                ids.append(pid)
    return ids


# -- summaries ----------------------------------------------------------------------------------------------------

def project_summary(opened: Opened, tasks: Tasks, *, counts: bool = True) -> dict[str, Any]:
    """What the list and the API show of a project: stages from project.json (cheap), and with ``counts`` the
    counts of cases, concepts, QA pairs and the review status (reads the project's files)."""
    from ..medvqa.dataset_tool.review import review_stats

    p = opened.project
    stages = p.info.get("stages", {}) if isinstance(p.info.get("stages"), dict) else {}
    out: dict[str, Any] = {
        "id": opened.id, "name": opened.name, "created": p.info.get("created", ""),
        "owner": opened.owner.username if opened.owner else None,
        "upload": opened.meta.get("upload_name", ""),
        "stages": {k: (v.get("time", "") if isinstance(v, dict) else "") for k, v in stages.items()},
        "task": task_state(opened.root, tasks, opened.id),
    }
    if counts:
        stats = review_stats(p)
        out.update({"cases": len(p.cases()), "concepts": len(p.concepts()), "qa_pairs": len(p.qa_pairs()),
                    "review": {"concept": stats["concept"], "qa": stats["qa"], "reviewers": stats["reviewers"]}})
    else:
        ingest = stages.get("ingest") or {}
        out.update({"cases": ingest.get("total_cases", 0), "concepts": (stages.get("extract") or {}).get("concepts"),
                    "qa_pairs": (stages.get("generate") or {}).get("pairs")})
    return out


def highlight(report: str, items: list[tuple[Any, str]]) -> Markup:
    """The report as HTML: the text escaped, each concept span a <mark> with its category's class (negated and
    rejected ones marked too). Overlapping spans are cut at every span boundary, so the marks never nest badly;
    a piece covered by several concepts takes the innermost one's class and lists them all in data-concepts."""
    spans = [(c.start, c.end, c, status) for c, status in items
             if isinstance(c.start, int) and isinstance(c.end, int) and 0 <= c.start < c.end <= len(report)]
    points = sorted({0, len(report), *(s[0] for s in spans), *(s[1] for s in spans)})
    out: list[str] = []
    for a, b in zip(points, points[1:]):
        covering = [s for s in spans if s[0] <= a and b <= s[1]]
        if not covering:
            out.append(str(escape(report[a:b])))
            continue
        _, _, concept, status = min(covering, key=lambda s: (s[1] - s[0], s[0]))
        classes = f"concept cat-{concept.category} st-{status}" + (" negated" if concept.negated else "")
        title = "; ".join(f"{c.category}: {c.value}{' (negated)' if c.negated else ''} [{st}]"
                          for _, _, c, st in covering)
        out.append(str(Markup('<mark class="{}" data-concepts="{}" title="{}">{}</mark>').format(
            classes, " ".join(c.concept_id for _, _, c, _ in covering), title, report[a:b])))
    return Markup("".join(out))


def excerpt(report: str, start: int, end: int, width: int = 50) -> Markup:
    """The words around ``report[start:end]`` (whitespace collapsed) with that span marked, all escaped; empty for
    offsets out of range."""
    if not (isinstance(start, int) and isinstance(end, int) and 0 <= start < end <= len(report)):
        return Markup("")

    def flat(text: str) -> str:
        return re.sub(r"\s+", " ", text)

    before = ("…" if start > width else "") + flat(report[max(0, start - width):start])
    after = flat(report[end:end + width]) + ("…" if end + width < len(report) else "")
    return Markup("{}<mark>{}</mark>{}").format(before, flat(report[start:end]), after)


def _case_url(project_id: str, case_id: str) -> str:
    return f"/data/projects/{project_id}/cases/{quote(case_id, safe='')}"


def _qa_url(project_id: str, **params: Any) -> str:
    clean = {k: v for k, v in params.items() if v not in (None, "")}
    return f"/data/projects/{project_id}/qa" + (f"?{urlencode(clean)}" if clean else "")


def _registered() -> dict[str, dict[str, Any]]:
    from ..medvqa.dataset_tool import export

    return export.registered_exports()


def dataset_rows(config: WebConfig, visible: set[str]) -> list[dict[str, Any]]:
    """The registered exports with their card's summary (card.json); ``visible``: project ids the user may open
    (a dataset exported from one of them links back to it)."""
    exports_root = (config.web_dir / "exports").resolve()
    rows = []
    for name, entry in sorted(_registered().items()):
        folder = Path(entry["path"])
        card = _read_json(folder / "card.json")
        splits = card.get("splits") if isinstance(card.get("splits"), dict) else {}
        project_id = None
        try:
            rel = folder.resolve().relative_to(exports_root)
            project_id = rel.parts[0] if rel.parts and rel.parts[0] in visible else None
        except ValueError:
            pass
        rows.append({
            "name": name, "path": str(folder), "registered": entry.get("registered", ""),
            "splits": entry.get("splits", []), "exists": folder.is_dir(), "has_card": bool(card),
            "project": card.get("project", ""), "project_id": project_id, "split_by": card.get("split_by", ""),
            "include": card.get("include", ""), "created": card.get("created", ""),
            "rows": {s: (v.get("json", {}) or {}).get("rows", 0) for s, v in splits.items() if isinstance(v, dict)},
            "qa_review": (card.get("review") or {}).get("qa", {}) if isinstance(card.get("review"), dict) else {},
        })
    return rows


# -- the operations (pages and API call these) --------------------------------------------------------------------

class UploadRefused(WebError):
    """The upload was not imported; ``problems`` (IngestError's) are listed per case and file."""

    def __init__(self, message: str, problems: list[dict[str, str]] | None = None):
        super().__init__(message)
        self.problems = problems or []


def _save_upload(upload: UploadFile, target: Path, limit: int) -> int:
    """Copy the uploaded file to ``target`` (a name embedlab chose), counting bytes: over ``limit`` is a 413."""
    size = 0
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(target, "xb") as out:
            while chunk := upload.file.read(CHUNK):
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(f"the upload is larger than the limit of {limit} bytes")
                out.write(chunk)
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    return size


def create_project(config: WebConfig, accounts: Accounts, user: User, upload: UploadFile, name: str,
                   layout: str = "auto", allow_missing_images: bool = False) -> tuple[str, dict[str, Any]]:
    """Save the upload, make a project of it with ``ingest_into`` and record the user as owner of both. Any
    problem (UploadRefused) leaves nothing behind: no upload file, no project folder."""
    from ..medvqa.dataset_tool.ingest import IngestError, ingest_into
    from ..medvqa.dataset_tool.project import Project

    shown = Path((upload.filename or "").replace("\\", "/")).name[:200]  # displayed only, never a path
    name = " ".join((name or "").split()) or Path(shown).stem or "cases"
    if len(name) > 100:
        raise ConfigError("the project name is at most 100 characters")
    upload_id = secrets.token_hex(8)
    saved = config.web_dir / "uploads" / f"{upload_id}.zip"
    _save_upload(upload, saved, config.max_upload_bytes)
    project_id = secrets.token_hex(8)
    root = _projects_dir(config) / project_id
    try:
        if not zipfile.is_zipfile(saved):
            raise UploadRefused(f"{shown or 'the upload'} is not a .zip archive; zip the case folder (image/, txt/, "
                                f"case_samples.csv, or one folder per case) and upload the .zip")
        project = Project.create(root, name=name)
        try:
            report = ingest_into(project, saved, layout=layout, allow_missing_images=allow_missing_images)
        except IngestError as exc:
            problems = [{"case": p.case_id, "file": p.file, "message": p.message} for p in exc.problems]
            raise UploadRefused(f"{len(problems)} problem(s) in {shown or 'the upload'}; nothing was imported",
                                problems) from None
        except EmbedlabError as exc:
            raise UploadRefused(f"{shown or 'the upload'} was not imported: {exc}") from None
        write_json(root / META_FILE, {"name": name, "upload_id": upload_id, "upload_name": shown,
                                      "owner_id": user.id, "created": _now(), "reviewers": [],
                                      "ingest_warnings": report.warnings})
        accounts.own("upload", upload_id, user)
        accounts.own("project", project_id, user)
    except BaseException:
        saved.unlink(missing_ok=True)
        shutil.rmtree(root, ignore_errors=True)
        raise
    log.info("%s created data project %s (%s) from upload %s: %d case(s)", user.username, project_id, name,
             upload_id, report.cases_added)
    return project_id, report.to_json()


def _probe_lock(opened: Opened) -> None:
    """Busy when another process (``embedlab vqa-data ...``) holds the project's folder lock right now."""
    try:
        with opened.project.writing():
            pass
    except ConfigError as exc:
        raise Busy(f"The project is busy (running elsewhere): {exc}") from None


def start_extract(request: Request, opened: Opened) -> dict[str, Any]:
    from ..medvqa.dataset_tool import concepts

    tasks = _tasks(request)
    tasks.check(opened.id)
    _probe_lock(opened)
    project = opened.project
    return tasks.start(opened.id, opened.root, "extract", {},
                       lambda progress: concepts.extract_into(project, progress=progress))


def qa_config(question_types: list[str] | None, variants: int, negatives: int, closed_share: float | None,
              seed: int, use_pending: bool = True, min_confidence: float | None = None):
    """A QAConfig from the form / API fields (QAConfig itself checks every value: ConfigError)."""
    from ..medvqa.dataset_tool.qagen import QAConfig

    options: dict[str, Any] = {"variants": variants, "negatives": negatives, "closed_share": closed_share,
                               "seed": seed, "use_pending": use_pending}
    if question_types is not None:
        options["question_types"] = tuple(question_types)
    if min_confidence is not None:
        options["min_confidence"] = min_confidence
    return QAConfig(**options)


def start_generate(request: Request, opened: Opened, config) -> dict[str, Any]:
    from ..medvqa.dataset_tool import qagen

    tasks = _tasks(request)
    tasks.check(opened.id)
    _probe_lock(opened)
    project = opened.project
    return tasks.start(opened.id, opened.root, "generate", config.to_json(),
                       lambda progress: qagen.generate_into(project, config, progress=progress))


def _register_allowed(web: WebConfig, project_id: str, name: str, folder: Path | None) -> None:
    """A name registered for a folder outside this project's exports is someone else's: refused (the CLI's
    ``--register`` replaces; here several users share one registry, so only the project's own name moves)."""
    entry = _registered().get(name)
    if entry is None:
        return
    old = Path(entry["path"]).resolve()
    mine = _exports_dir(web, project_id).resolve()
    if old != (folder.resolve() if folder else None) and mine not in old.parents:
        raise ConfigError(f"the dataset name {name!r} is registered already for another export; choose another "
                          f"name")


def start_export(request: Request, web: WebConfig, opened: Opened, *, register: str, split_by: str,
                 include: str | None, fractions: tuple[float, float, float], seed: int) -> dict[str, Any]:
    from ..medvqa.dataset_tool import export

    # The values export_project and register_export would refuse are refused here already, so that a typo is a
    # message on the form and not a failed step (or an export written and then not registered).
    if len(fractions) != 3 or any(f < 0 for f in fractions) or fractions[0] <= 0 or abs(sum(fractions) - 1) > 1e-6:
        raise ConfigError(f"fractions must be three non-negative numbers (train, val, test) summing to 1 with "
                          f"train > 0, got {', '.join(str(f) for f in fractions)}")
    register = (register or "").strip()
    if register:
        from ..medvqa.datasets import DATASETS

        if not DATASET_NAME.fullmatch(register):
            raise ConfigError(f"a dataset name is letters, digits, '.', '_' or '-' (starting with a letter or "
                              f"digit, at most 100), got {register!r}")
        from ..medvqa.tasks import TASKS

        if register.lower() in {n.lower() for n in DATASETS.names() + TASKS.names()}:
            raise ConfigError(f"{register!r} is a built-in Med-VQA dataset or task; choose another name")
        _register_allowed(web, opened.id, register, None)
    tasks = _tasks(request)
    tasks.check(opened.id)
    _probe_lock(opened)
    # a new folder per export, named by embedlab (never by the dataset name the user typed)
    out = _exports_dir(web, opened.id) / f"{datetime.now(timezone.utc):%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"
    params = {"register": register or None, "split_by": split_by, "include": include, "fractions": list(fractions),
              "seed": seed}
    project = opened.project

    def work(progress) -> dict[str, Any]:
        out.parent.mkdir(parents=True, exist_ok=True)
        card = export.export_project(project, out, split_by=split_by, fractions=fractions, seed=seed,
                                     include=include, progress=progress)
        summary = {"folder": str(out), "include": card.get("include"), "split_by": card.get("split_by"),
                   "rows": {s: v["json"]["rows"] for s, v in card["splits"].items()},
                   "images": {s: v["json"]["images"] for s, v in card["splits"].items()}, "registered": None}
        if register:
            _register_allowed(web, opened.id, register, out)
            export.register_export(register, out, replace=True)
            summary["registered"] = register
        return summary

    return tasks.start(opened.id, opened.root, "export", params, work)


def _original(project, kind: str, item_id: str):
    items = project.concepts() if kind == "concept" else project.qa_pairs()
    for item in items:
        if (item.concept_id if kind == "concept" else item.qa_id) == item_id:
            return item
    raise NotFound(f"no {kind} {item_id!r} in this project")


def form_edit(project, kind: str, item_id: str, fields: dict[str, Any]) -> dict[str, Any]:
    """The edit a form makes: the fields whose new value differs from the generated item (the latest decision
    replaces earlier ones, so an edit always states every changed field, not just the last one touched)."""
    item = _original(project, kind, item_id)
    edit = {k: v for k, v in fields.items() if v is not None and getattr(item, k) != v}
    if not edit:
        raise ConfigError("the edit changes nothing; use Accept to keep it as it is")
    return edit


def make_decision(opened: Opened, user: User, kind: str, item_id: str, status: str,
                  edit: dict[str, Any] | None = None, note: str = ""):
    from ..medvqa.dataset_tool.review import decide

    if edit:
        if "category" in edit and edit["category"] not in CATEGORIES:
            raise ConfigError(f"category must be one of {', '.join(CATEGORIES)}, got {edit['category']!r}")
        if "negated" in edit and not isinstance(edit["negated"], bool):
            raise ConfigError(f"negated must be true or false, got {edit['negated']!r}")
    return decide(opened.project, kind, item_id, status, reviewer=user.username, edit=edit, note=note)


# -- page contexts ------------------------------------------------------------------------------------------------

def _case_context(opened: Opened, case_id: str) -> dict[str, Any]:
    from ..medvqa.dataset_tool.review import effective_concepts, effective_qa

    p = opened.project
    cases = p.cases()
    index = next((i for i, c in enumerate(cases) if c.case_id == case_id), None)
    if index is None:
        raise NotFound(f"no case {case_id!r} in this project")
    case = cases[index]
    concepts = [(c, s) for c, s in effective_concepts(p) if c.case_id == case_id]
    concepts.sort(key=lambda x: (x[0].start, x[0].end))
    qa = [s for q, s in effective_qa(p) if q.case_id == case_id]
    counts = {s: sum(1 for _, st in concepts if st == s) for s in ("pending", "accepted", "edited", "rejected")}
    return {
        "p": opened, "case": case, "report": highlight(case.report, concepts), "concepts": concepts,
        "counts": counts, "qa_count": len(qa), "qa_pending": qa.count("pending"),
        "position": index + 1, "total": len(cases),
        "prev_url": _case_url(opened.id, cases[index - 1].case_id) if index > 0 else None,
        "next_url": _case_url(opened.id, cases[index + 1].case_id) if index + 1 < len(cases) else None,
        "case_url": _case_url(opened.id, case_id), "qa_url": _qa_url(opened.id, case=case_id),
        "categories": CATEGORIES,
    }


def _qa_context(opened: Opened, case: str | None, status: str, page: int) -> dict[str, Any]:
    from ..medvqa.dataset_tool.review import effective_qa, review_stats

    pairs = effective_qa(opened.project)
    reports = {c.case_id: c.report for c in opened.project.cases()}
    if case:
        pairs = [x for x in pairs if x[0].case_id == case]
    shown = pairs if status == "all" else [x for x in pairs if x[1] == status]
    pages = max(1, math.ceil(len(shown) / QA_PAGE_SIZE))
    page = min(max(1, page), pages)
    return {
        "p": opened, "pairs": shown[(page - 1) * QA_PAGE_SIZE: page * QA_PAGE_SIZE], "matching": len(shown),
        "counts": review_stats(opened.project)["qa"], "case": case or "", "status": status, "page": page,
        "pages": pages, "statuses": ("pending", "accepted", "edited", "rejected", "all"),
        "prev_url": _qa_url(opened.id, case=case, status=status, page=page - 1) if page > 1 else None,
        "next_url": _qa_url(opened.id, case=case, status=status, page=page + 1) if page < pages else None,
        "filter_url": lambda s: _qa_url(opened.id, case=case, status=s),
        "evidence": lambda q: [excerpt(reports.get(q.case_id, ""), *span) for span in q.spans[:2]
                               if isinstance(span, (list, tuple)) and len(span) == 2],
        "case_url": lambda c: _case_url(opened.id, c), "self_url": _qa_url(opened.id, case=case, status=status,
                                                                            page=page),
    }


def _project_context(request: Request, web: WebConfig, opened: Opened, accounts: Accounts) -> dict[str, Any]:
    from ..medvqa.dataset_tool.review import effective_concepts, effective_qa

    summary = project_summary(opened, _tasks(request))
    p = opened.project
    per_case: dict[str, dict[str, int]] = {}
    for c, s in effective_concepts(p):
        row = per_case.setdefault(c.case_id, {"concepts": 0, "concepts_pending": 0, "qa": 0, "qa_pending": 0})
        row["concepts"] += 1
        row["concepts_pending"] += s == "pending"
    for q, s in effective_qa(p):
        row = per_case.setdefault(q.case_id, {"concepts": 0, "concepts_pending": 0, "qa": 0, "qa_pending": 0})
        row["qa"] += 1
        row["qa_pending"] += s == "pending"
    empty = {"concepts": 0, "concepts_pending": 0, "qa": 0, "qa_pending": 0}
    cases = [{"id": c.case_id, "url": _case_url(opened.id, c.case_id), "images": len(c.images),
              **per_case.get(c.case_id, empty)} for c in p.cases()]
    reviewers = [u for u in (accounts.get(i) for i in _reviewers(opened.meta)) if u]
    stages = p.info.get("stages", {}) if isinstance(p.info.get("stages"), dict) else {}
    return {"p": opened, "s": summary, "task": summary["task"], "cases": cases, "stages": stages,
            "reviewers": reviewers, "question_types": QUESTION_TYPES,
            "first_case_url": cases[0]["url"] if cases else None, "qa_url": _qa_url(opened.id)}


def _list_context(web: WebConfig, accounts: Accounts, user: User, request: Request) -> dict[str, Any]:
    tasks = _tasks(request)
    rows = []
    for pid in visible_project_ids(web, accounts, user):
        try:
            rows.append(project_summary(_open(web, accounts, user, pid), tasks, counts=False))
        except EmbedlabError:  # a folder gone or damaged: not listed, the others still are
            log.warning("data project %s not listed: cannot open it", pid)
    return {"projects": rows, "can_upload": user.is_admin or user.role == "researcher", "problems": [],
            "error": None}


def _task_view(request: Request, opened: Opened) -> Response:
    state = task_state(opened.root, _tasks(request), opened.id)
    headers = {}
    # the step this panel was showing as running has ended: reload the page so its counts are fresh
    if request.query_params.get("was") == "running" and (state or {}).get("state") != "running":
        headers["HX-Refresh"] = "true"
    return render(request, "data/_task.html", {"p": opened, "task": state}, headers=headers)


# -- pages --------------------------------------------------------------------------------------------------------

@router.get("/data", include_in_schema=False)
def data_home(request: Request, user: Member, accounts: AccountsDep, web: ConfigDep) -> Response:
    return render(request, "data/list.html", _list_context(web, accounts, user, request))


@router.post("/data/upload", include_in_schema=False)
def upload_page(request: Request, user: Researcher, accounts: AccountsDep, web: ConfigDep,
                file: Annotated[UploadFile, File()], name: Annotated[str, Form(max_length=200)] = "",
                layout: Annotated[Layout, Form()] = "auto",
                allow_missing_images: Annotated[bool, Form()] = False) -> Response:
    try:
        project_id, report = create_project(web, accounts, user, file, name, layout, allow_missing_images)
    except UploadRefused as exc:
        ctx = _list_context(web, accounts, user, request)
        ctx.update(problems=exc.problems, error=str(exc))
        return render(request, "data/list.html", ctx, status_code=400)
    except ConfigError as exc:
        ctx = _list_context(web, accounts, user, request)
        ctx.update(error=str(exc))
        return render(request, "data/list.html", ctx, status_code=400)
    warnings = f" ({len(report['warnings'])} warning(s): {report['warnings'][0]})" if report["warnings"] else ""
    return redirect(request, f"/data/projects/{project_id}", f"Imported {report['cases_added']} case(s) with "
                    f"{report['images_added']} image(s){warnings}.", "success")


@router.get("/data/projects/{project_id}", include_in_schema=False)
def project_page(request: Request, project_id: str, user: Member, accounts: AccountsDep,
                 web: ConfigDep) -> Response:
    opened = _open(web, accounts, user, project_id)
    return render(request, "data/project.html", _project_context(request, web, opened, accounts))


@router.get("/data/projects/{project_id}/task", include_in_schema=False)
def task_panel(request: Request, project_id: str, user: Member, accounts: AccountsDep, web: ConfigDep) -> Response:
    return _task_view(request, _open(web, accounts, user, project_id))


def _started(request: Request, project_id: str, what: str, start: Callable[[], Any]) -> Response:
    back = f"/data/projects/{project_id}"
    try:
        start()
    except Busy as exc:
        return redirect(request, back, str(exc), "error")
    except ConfigError as exc:
        return redirect(request, back, str(exc), "error")
    return redirect(request, back, f"{what} started.", "info")


@router.post("/data/projects/{project_id}/extract", include_in_schema=False)
def extract_page(request: Request, project_id: str, user: Researcher, accounts: AccountsDep,
                 web: ConfigDep) -> Response:
    opened = _open(web, accounts, user, project_id, manage=True)
    return _started(request, project_id, "Concept extraction", lambda: start_extract(request, opened))


def _optional_float(value: str, name: str) -> float | None:
    value = (value or "").strip()
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        raise ConfigError(f"{name} must be a number (or empty), got {value!r}") from None


@router.post("/data/projects/{project_id}/generate", include_in_schema=False)
def generate_page(request: Request, project_id: str, user: Researcher, accounts: AccountsDep, web: ConfigDep,
                  question_types: Annotated[list[str], Form(max_length=20)] = [],  # noqa: B006 (FastAPI copies it)
                  variants: Annotated[int, Form()] = 1, negatives: Annotated[int, Form()] = 2,
                  closed_share: Annotated[str, Form(max_length=40)] = "", seed: Annotated[int, Form()] = 0,
                  use_pending: Annotated[bool, Form()] = False) -> Response:
    opened = _open(web, accounts, user, project_id, manage=True)

    def start():
        _tasks(request).check(opened.id)  # "running" first: the form's values do not matter while a step runs
        config = qa_config(question_types, variants, negatives, _optional_float(closed_share, "closed share"),
                           seed, use_pending)
        return start_generate(request, opened, config)

    return _started(request, project_id, "QA generation", start)


def _fractions(text: str) -> tuple[float, float, float]:
    try:
        values = tuple(float(x) for x in text.replace(" ", "").split(","))
    except ValueError:
        values = ()
    if len(values) != 3:
        raise ConfigError(f"fractions must be three numbers like 0.8,0.1,0.1 (train, val, test), got {text!r}")
    return values  # type: ignore[return-value]


@router.post("/data/projects/{project_id}/export", include_in_schema=False)
def export_page(request: Request, project_id: str, user: Researcher, accounts: AccountsDep, web: ConfigDep,
                register_as: Annotated[str, Form(alias="register", max_length=200)] = "",
                split_by: Annotated[SplitBy, Form()] = "case",
                include: Annotated[Include, Form()] = "accepted",
                fractions: Annotated[str, Form(max_length=60)] = "0.8,0.1,0.1",
                seed: Annotated[int, Form()] = 0) -> Response:
    opened = _open(web, accounts, user, project_id, manage=True)
    return _started(request, project_id, "Export", lambda: start_export(
        request, web, opened, register=register_as, split_by=split_by, include=include,
        fractions=_fractions(fractions), seed=seed))


@router.post("/data/projects/{project_id}/reviewers", include_in_schema=False)
def share_page(request: Request, project_id: str, user: Researcher, accounts: AccountsDep, web: ConfigDep,
               username: Annotated[str, Form(max_length=200)], action: Annotated[Literal["add", "remove"], Form()]
               ) -> Response:
    opened = _open(web, accounts, user, project_id, manage=True)
    back = f"/data/projects/{project_id}"
    other = accounts.get_by_name(username)
    if other is None:
        return redirect(request, back, f"no user {username.strip()!r}", "error")
    reviewers = _reviewers(opened.meta)
    if action == "add" and other.id not in reviewers:
        reviewers.append(other.id)
    elif action == "remove":
        reviewers = [i for i in reviewers if i != other.id]
    write_json(opened.root / META_FILE, {**opened.meta, "reviewers": reviewers})
    verb = "can now see and review" if action == "add" else "no longer sees"
    return redirect(request, back, f"{other.username} {verb} this project.", "success")


@router.get("/data/projects/{project_id}/cases/{case_id:path}", include_in_schema=False)
def case_page(request: Request, project_id: str, case_id: str, user: Member, accounts: AccountsDep,
              web: ConfigDep) -> Response:
    opened = _open(web, accounts, user, project_id)
    return render(request, "data/case.html", _case_context(opened, case_id))


@router.get("/data/projects/{project_id}/images/{image_id}", include_in_schema=False)
def image_file(project_id: str, image_id: str, user: Member, accounts: AccountsDep, web: ConfigDep) -> Response:
    """An ingested PNG or JPEG, looked up by its id in the project's cases (the path is embedlab's own name)."""
    opened = _open(web, accounts, user, project_id)
    for case in opened.project.cases():
        for image in case.images:
            if image.image_id == image_id and image.format in ("png", "jpeg") and image.file:
                path = (opened.project.images_dir / image.file).resolve()
                if path.parent == opened.project.images_dir.resolve() and path.is_file():
                    return FileResponse(path, media_type=f"image/{image.format}")
    raise NotFound(f"no viewable image {image_id!r} in this project")


@router.get("/data/projects/{project_id}/qa", include_in_schema=False)
def qa_page(request: Request, project_id: str, user: Member, accounts: AccountsDep, web: ConfigDep,
            case: Annotated[str | None, Query(max_length=200)] = None,
            status: Annotated[Literal["pending", "accepted", "edited", "rejected", "all"] | None, Query()] = None,
            page: Annotated[int, Query(ge=1, le=100_000)] = 1) -> Response:
    opened = _open(web, accounts, user, project_id)
    ctx = _qa_context(opened, case, status or ("all" if case else "pending"), page)
    return render(request, "data/qa.html", ctx)


@router.post("/data/projects/{project_id}/decisions", include_in_schema=False)
def decision_page(request: Request, project_id: str, user: Member, accounts: AccountsDep, web: ConfigDep,
                  kind: Annotated[Literal["concept", "qa"], Form()], item_id: Annotated[str, Form(max_length=300)],
                  status: Annotated[ReviewStatus, Form()],
                  value: Annotated[str | None, Form(max_length=500)] = None,
                  category: Annotated[Literal[CATEGORIES] | None, Form()] = None,  # type: ignore[valid-type]
                  negated: Annotated[bool, Form()] = False,
                  question: Annotated[str | None, Form(max_length=2000)] = None,
                  answer: Annotated[str | None, Form(max_length=2000)] = None,
                  answer_type: Annotated[Literal["CLOSED", "OPEN"] | None, Form()] = None,
                  view_case: Annotated[str, Form(max_length=300)] = "",
                  view_status: Annotated[str, Form(max_length=20)] = "pending",
                  view_page: Annotated[int, Form(ge=1)] = 1) -> Response:
    """One review decision from the case view or the QA page. HTMX gets the updated panel back (the report's
    highlighting and the counts change with it); without HTMX the page is reloaded."""
    opened = _open(web, accounts, user, project_id)
    edit = None
    if status == "edited":
        fields = ({"value": value, "category": category, "negated": negated} if kind == "concept"
                  else {"question": question, "answer": answer, "answer_type": answer_type})
        edit = form_edit(opened.project, kind, item_id, fields)
    make_decision(opened, user, kind, item_id, status, edit)
    message = f"{'Concept' if kind == 'concept' else 'QA pair'} {item_id} {status}."
    if kind == "concept":
        if is_htmx(request):
            return render(request, "data/_case_panel.html", _case_context(opened, view_case))
        return redirect(request, _case_url(project_id, view_case), message, "success")
    status_filter = view_status if view_status in ("pending", "accepted", "edited", "rejected", "all") else "pending"
    if is_htmx(request):
        return render(request, "data/_qa_panel.html", _qa_context(opened, view_case or None, status_filter,
                                                                  view_page))
    return redirect(request, _qa_url(project_id, case=view_case or None, status=status_filter, page=view_page),
                    message, "success")


@router.get("/data/datasets", include_in_schema=False)
def datasets_page(request: Request, user: Member, accounts: AccountsDep, web: ConfigDep) -> Response:
    from ..medvqa.dataset_tool.export import registry_path

    visible = set(visible_project_ids(web, accounts, user))
    return render(request, "data/datasets.html", {"datasets": dataset_rows(web, visible),
                                                  "registry": str(registry_path())})


@router.get("/data/datasets/{name}", include_in_schema=False)
def card_page(request: Request, name: str, user: Member, accounts: AccountsDep, web: ConfigDep) -> Response:
    visible = set(visible_project_ids(web, accounts, user))
    row = next((r for r in dataset_rows(web, visible) if r["name"] == name), None)
    if row is None:
        raise NotFound(f"no registered dataset {name!r}")
    card_md = Path(row["path"]) / "dataset_card.md"
    try:
        text = card_md.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        text = None
    return render(request, "data/card.html", {"d": row, "card": text})


# -- the JSON API -------------------------------------------------------------------------------------------------

@router.get("/api/data/projects", tags=["data"], summary="List your data projects")
def api_projects(request: Request, user: Member, accounts: AccountsDep, web: ConfigDep) -> list[dict]:
    """Your projects (admins: all; reviewers: those shared with them), with stage times and rough counts."""
    return _list_context(web, accounts, user, request)["projects"]


@router.post("/api/data/projects", tags=["data"], status_code=201, summary="Upload a .zip of cases")
def api_create(user: Researcher, accounts: AccountsDep, web: ConfigDep, file: Annotated[UploadFile, File()],
               name: Annotated[str, Form(max_length=200)] = "", layout: Annotated[Layout, Form()] = "auto",
               allow_missing_images: Annotated[bool, Form()] = False) -> Response:
    """A new project from a .zip of cases (multipart ``file``; ``ingest_into``). 400 with ``problems`` (case, file,
    message) when the upload is refused: nothing is imported then."""
    try:
        project_id, report = create_project(web, accounts, user, file, name, layout, allow_missing_images)
    except UploadRefused as exc:
        return JSONResponse({"error": str(exc), "problems": exc.problems}, status_code=400)
    return JSONResponse({"id": project_id, "url": f"/data/projects/{project_id}", "ingest": report},
                        status_code=201)


@router.get("/api/data/projects/{project_id}", tags=["data"], summary="A project's status")
def api_project(request: Request, project_id: str, user: Member, accounts: AccountsDep, web: ConfigDep) -> dict:
    """Counts (cases, concepts, QA pairs, review status) and the last background step (running / done / failed /
    interrupted, with its message and summary)."""
    return project_summary(_open(web, accounts, user, project_id), _tasks(request))


@router.get("/api/data/projects/{project_id}/cases/{case_id:path}", tags=["data"], summary="A case and its items")
def api_case(project_id: str, case_id: str, user: Member, accounts: AccountsDep, web: ConfigDep) -> dict:
    """The case (report, images) with its concepts and QA pairs, each with its review status (edits applied)."""
    from ..medvqa.dataset_tool.review import effective_qa

    opened = _open(web, accounts, user, project_id)
    ctx = _case_context(opened, case_id)
    return {"case": ctx["case"].to_json(),
            "concepts": [{**c.to_json(), "status": s} for c, s in ctx["concepts"]],
            "qa": [{**q.to_json(), "status": s} for q, s in effective_qa(opened.project) if q.case_id == case_id]}


@router.post("/api/data/projects/{project_id}/extract", tags=["data"], status_code=202,
             summary="Start concept extraction")
def api_extract(request: Request, project_id: str, user: Researcher, accounts: AccountsDep, web: ConfigDep) -> dict:
    """Runs ``extract_into`` in the background; 409 while a step of the project is running."""
    return start_extract(request, _open(web, accounts, user, project_id, manage=True))


class GenerateBody(BaseModel):
    question_types: list[str] | None = Field(None, max_length=20, description=f"of {', '.join(QUESTION_TYPES)}")
    variants: int = 1
    negatives: int = 2
    closed_share: float | None = None
    seed: int = 0
    use_pending: bool = True
    min_confidence: float | None = None


@router.post("/api/data/projects/{project_id}/generate", tags=["data"], status_code=202,
             summary="Start QA generation")
def api_generate(request: Request, project_id: str, body: GenerateBody, user: Researcher, accounts: AccountsDep,
                 web: ConfigDep) -> dict:
    """Runs ``generate_into`` with a ``QAConfig`` of these fields in the background (400 for a bad value)."""
    opened = _open(web, accounts, user, project_id, manage=True)
    config = qa_config(body.question_types, body.variants, body.negatives, body.closed_share, body.seed,
                       body.use_pending, body.min_confidence)
    return start_generate(request, opened, config)


class ExportBody(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    # "register" as in `embedlab vqa-data export --register` (a field of that name would shadow BaseModel's)
    register_as: str | None = Field(None, alias="register", max_length=100,
                                    description="register the export under this dataset name")
    split_by: SplitBy = "case"
    include: Include | None = None
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    seed: int = 0


@router.post("/api/data/projects/{project_id}/export", tags=["data"], status_code=202, summary="Start an export")
def api_export(request: Request, project_id: str, body: ExportBody, user: Researcher, accounts: AccountsDep,
               web: ConfigDep) -> dict:
    """Runs ``export_project`` (+ ``register_export`` with ``register``) in the background."""
    opened = _open(web, accounts, user, project_id, manage=True)
    return start_export(request, web, opened, register=body.register_as or "", split_by=body.split_by,
                        include=body.include, fractions=body.fractions, seed=body.seed)


class DecisionBody(BaseModel):
    kind: Literal["concept", "qa"]
    item_id: str = Field(max_length=300)
    status: ReviewStatus
    edit: dict[str, Any] = Field(default_factory=dict, description="for 'edited': the changed fields")
    note: str = Field("", max_length=2000)


@router.post("/api/data/projects/{project_id}/decisions", tags=["data"], summary="Log a review decision")
def api_decide(project_id: str, body: DecisionBody, user: Member, accounts: AccountsDep, web: ConfigDep) -> dict:
    """``decide(...)`` with you as the reviewer: accept, reject, or edit (``edit`` names the changed fields)."""
    opened = _open(web, accounts, user, project_id)
    return make_decision(opened, user, body.kind, body.item_id, body.status, body.edit, body.note).to_json()


@router.get("/api/data/datasets", tags=["data"], summary="Registered dataset exports")
def api_datasets(user: Member, accounts: AccountsDep, web: ConfigDep) -> list[dict]:
    """``registered_exports()`` with each export's card summary."""
    return dataset_rows(web, set(visible_project_ids(web, accounts, user)))
