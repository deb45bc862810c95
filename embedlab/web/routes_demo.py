"""The demo page: ask a trained Med-VQA model about an image, and search a registered corpus with a text model.

| page / endpoint                    | what                                                                           |
|------------------------------------|--------------------------------------------------------------------------------|
| ``GET /demo``                      | the page: pick a model, upload an image or choose one of VQA-RAD val, ask;     |
|                                    | type a query for a text model and a corpus                                      |
| ``POST /demo/vqa``                 | the answer and its top-5 probabilities (an HTMX partial, or the page)          |
| ``GET /demo/vqa/example?image=``   | a VQA-RAD val image's preview and its dataset questions (HTMX partial)         |
| ``GET /demo/text?model&corpus&q``  | the nearest documents with cosine scores (HTMX partial, or the page)           |
| ``GET /api/demo/models``           | the models this user may try (JSON)                                            |
| ``GET /api/demo/examples``         | the VQA-RAD val images and their questions                                     |
| ``POST /api/demo/vqa``             | multipart (model, question, answer_type, image or example) -> the answer (JSON)|
| ``GET /api/demo/text``             | the nearest documents (JSON)                                                   |

**Which models.** Never a path from the request: the page lists the model folders it finds and the request names one
by its id (a hash of the folder's resolved path), which must be in the list the server built for this user. Found:
(1) ``<web dir>/models/`` (an admin puts a model folder, or a symlink to one, there); (2) the folders given to
``embedlab serve --demo-models`` (``WebConfig.demo_models``) and those listed in ``$EMBEDLAB_DEMO_MODELS``
(``os.pathsep``-separated; each a model folder or a folder of them: what the admin starting the server
configures); (3) the output of ``make demo`` (``runs/demo/medvqa`` and ``runs/demo/codiemb/final``, under
the working directory and the project); (4) the output folders of finished jobs, for their owner and admins only (a
model is part of its job's output, as the job's other files are). A Med-VQA model is a folder with ``model.json`` and
``model.safetensors`` (``embedlab vqa train``, a ``vqa-train`` job); a text model a sentence-transformers folder
(``modules.json``), plus the bundled all-MiniLM-L6-v2 (embedlab's offline resolution).

**Images.** An upload is checked by content, never by its name: PNG, JPEG or DICOM by their signature, at most
``MAX_IMAGE_BYTES`` and ``MAX_PIXELS`` (read from the header before decoding), then read by
``embedlab.medvqa.images.load_image`` exactly as training read the dataset (grey, each size the model takes). It is
written to a file with a server-chosen name under ``<web dir>/demo/tmp`` only for that and deleted before the answer is
sent: nothing is kept, so nothing needs an owner. An example is named by its file name, looked up in VQA-RAD's val
split (never joined to a path from the request).

**Answers.** The model scores every answer it was trained on (softmax of its logits). ``answer_type``: ``auto`` shows
that distribution (a CR model decides closed / open itself); ``closed`` renormalises over the closed candidates (the
model's closed answers, else the yes / no of its vocabulary); ``open`` over the other answers. Top 5, most probable
first.

**Text search.** The corpus is a registered retrieval dataset that is present locally (SciFact, ...). To keep the
first query short, at most ``CORPUS_DOCS`` documents are embedded (``$EMBEDLAB_DEMO_CORPUS_DOCS``; the documents
judged relevant for the split's queries first, then the corpus in order); the embeddings are cached per model under
``<web dir>/demo/embeddings`` (embedlab's EmbeddingCache, keyed by the model's weight hash), so a later query, even
after a restart, only embeds itself. Scores are cosine similarities.

What it does not do: train or evaluate (the jobs pages), keep uploads, or let a user reach a model folder that is not
listed for them.
"""
from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import os
import re
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, File, Form, Query, Request, UploadFile
from starlette.responses import JSONResponse, Response

from ..errors import DataError, EmbedlabError
from .accounts import User
from .config import WebConfig
from .deps import AccountsDep, ConfigDep, CurrentUser, StoreDep
from .errors import NotFound, PayloadTooLarge, WebError
from .render import NavItem, is_htmx, render

log = logging.getLogger("embedlab.web.demo")

router = APIRouter()
NAV = [NavItem("Demo", "/demo", "Ask a trained Med-VQA model about an image; search a corpus with a text model.",
               order=400)]

MODELS_ENV = "EMBEDLAB_DEMO_MODELS"
CORPUS_ENV = "EMBEDLAB_DEMO_CORPUS_DOCS"
PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEMO_DIRS = [Path("runs/demo"), PROJECT_ROOT / "runs" / "demo"]  # `make demo`: medvqa/, codiemb/final/
BASE_TEXT_MODELS = {"txt-minilm": "sentence-transformers/all-MiniLM-L6-v2"}  # id -> name resolved offline
MAX_IMAGE_BYTES = 20 * 1024 * 1024
MAX_PIXELS = 40_000_000  # rows x columns (x frames x samples): a 40 Mpx image decodes to ~160 MB of floats
MAX_QUESTION = 300
MAX_QUERY = 500
TOP_K = 5
TEXT_HITS = 10
CORPUS_DOCS = int(os.environ.get(CORPUS_ENV) or 1000)
PREVIEW_PX = 320
MAX_SCAN = 400  # folder entries looked at per root: a huge folder must not stall the page
ID_RE = re.compile(r"(vqa|txt)-[a-z0-9]{1,40}")
EXAMPLE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
YES_NO = ("yes", "no")
AnswerType = Literal["auto", "closed", "open"]


@dataclass(frozen=True)
class DemoModel:
    id: str
    kind: str  # "medvqa" | "text"
    label: str
    source: str  # where it was found, for the user ("web folder", "make demo", "job 1a2b3c4d", ...)
    path: str  # its resolved folder (or a package model name); shown to admins only

    def public(self, user: User) -> dict[str, Any]:
        out = {"id": self.id, "kind": self.kind, "label": self.label, "source": self.source}
        if user.is_admin:
            out["path"] = self.path
        return out


# -- finding models ---------------------------------------------------------------------------------------------------

def _is_vqa(folder: Path) -> bool:
    return (folder / "model.json").is_file() and (folder / "model.safetensors").is_file()


def _is_text(folder: Path) -> bool:
    return (folder / "modules.json").is_file()


def model_id(kind: str, folder: Path) -> str:
    """An id that names a folder without being a path (so a request can never name an arbitrary one)."""
    digest = hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:16]
    return f"{'vqa' if kind == 'medvqa' else 'txt'}-{digest}"


@lru_cache(maxsize=256)
def _vqa_label(folder: str, mtime_ns: int) -> str:
    try:
        meta = json.loads((Path(folder) / "model.json").read_text(encoding="utf-8"))
        info = meta.get("info") or {}
        bits = [f"{meta.get('model', '?')} ({meta.get('profile') or '?'})"]
        if info.get("task"):
            bits.append(str(info["task"]))
        if info.get("seed") is not None:
            bits.append(f"seed {info['seed']}")
        return " · ".join(bits)
    except (OSError, ValueError, AttributeError):
        return "Med-VQA model (model.json unreadable)"


def _candidates(root: Path) -> list[Path]:
    """The root, its sub-folders and theirs (a job folder holds <task>/ model folders), at most MAX_SCAN."""
    out = [root]
    try:
        children = sorted(p for p in root.iterdir() if p.is_dir())[:MAX_SCAN]
    except OSError:
        return out
    out += children
    for child in children:
        if len(out) > MAX_SCAN:
            break
        try:
            out += sorted(p for p in child.iterdir() if p.is_dir())[:MAX_SCAN]
        except OSError:
            continue
    return out[:MAX_SCAN * 2]


def discover_models(config: WebConfig, store, accounts, user: User) -> dict[str, DemoModel]:
    """Every model this user may try, by id (see the module docstring for where they are looked for)."""
    roots: list[tuple[Path, str]] = [(config.web_dir / "models", "web folder")]
    roots += [(Path(p).expanduser(), "configured") for p in config.demo_models]
    roots += [(Path(p).expanduser(), "configured") for p in (os.environ.get(MODELS_ENV) or "").split(os.pathsep)
              if p.strip()]
    for d in DEMO_DIRS:
        roots += [(d / "medvqa", "make demo"), (d / "codiemb" / "final", "make demo")]
    roots += _job_roots(store, accounts, user)
    found: dict[str, DemoModel] = {}
    for name, location in BASE_TEXT_MODELS.items():
        try:
            from ..pretrained import resolve

            resolved = resolve(location)
            if resolved.source != "hub":  # offline: only a model whose files are here
                found[name] = DemoModel(name, "text", f"{location.split('/')[-1]} (pretrained)", "bundled",
                                        resolved.location)
        except EmbedlabError:
            continue
    for root, source in roots:
        if not root.is_dir():
            continue
        for folder in _candidates(root):
            kind = "medvqa" if _is_vqa(folder) else "text" if _is_text(folder) else None
            if kind is None:
                continue
            mid = model_id(kind, folder)
            if mid in found:
                continue
            if kind == "medvqa":
                label = _vqa_label(str(folder), (folder / "model.safetensors").stat().st_mtime_ns)
            else:
                label = folder.name if folder.name != "final" else f"{folder.parent.name}/final"
            found[mid] = DemoModel(mid, kind, f"{label} — {source}", source, str(folder.resolve()))
    return found


def _job_roots(store, accounts, user: User) -> list[tuple[Path, str]]:
    from ..bench.jobs import JobQueue

    jobs = JobQueue(store).list(status="done")
    if not user.is_admin:
        mine = set(accounts.owned_ids("job", user))
        jobs = [j for j in jobs if j["id"] in mine]
    return [(Path(j["output_dir"]), f"job {j['id'][:8]} ({j['name']})") for j in jobs if j.get("output_dir")]


def _model(models: dict[str, DemoModel], model_id_: str, kind: str) -> DemoModel:
    model = models.get(model_id_) if ID_RE.fullmatch(model_id_ or "") else None
    if model is None or model.kind != kind:
        raise NotFound("unknown model: choose one of the models the demo page lists")
    return model


# -- loaded models (kept in memory: loading costs more than answering) -------------------------------------------------

class _LRU:
    def __init__(self, size: int):
        self.size, self.items, self.lock = size, OrderedDict(), threading.Lock()

    def get(self, key, load):
        with self.lock:  # one load at a time: two requests for a new model must not load it twice
            if key in self.items:
                self.items.move_to_end(key)
                return self.items[key]
            value = load()
            self.items[key] = value
            while len(self.items) > self.size:
                self.items.popitem(last=False)
            return value


_VQA = _LRU(3)
_TEXT = _LRU(2)
_CORPORA = _LRU(4)


def _load_vqa(model: DemoModel):
    from ..medvqa.models import load_model
    from ..medvqa.train import QuestionInputs

    weights = Path(model.path) / "model.safetensors"
    key = (model.path, weights.stat().st_mtime_ns)  # a retrained model in the same folder is loaded again

    def load():
        trained = load_model(model.path)
        return trained, QuestionInputs(trained.settings, trained.questions), threading.Lock()

    return _VQA.get(key, load)


def _predictor_class():
    from ..medvqa.evaluate import Predictor
    from ..medvqa.train import prepare

    class DemoPredictor(Predictor):
        """Predictor over one image bank built here (not the on-disk image cache: an upload is used once) and
        question inputs prepared once per model."""

        def __init__(self, trained, inputs, records, bank):
            self.trained, self.records, self.bank = trained, list(records), bank
            self.data = prepare(self.records, bank, inputs, trained.answers)

    return DemoPredictor


def closed_candidates(trained) -> list[str]:
    """The answers a closed question chooses between: the model's closed answers (CR keeps them), else yes / no."""
    answers = set(trained.answers.answers)
    return [a for a in (trained.closed_answers or YES_NO) if a in answers]


def answer_question(model: DemoModel, image: Path, question: str, answer_type: str) -> dict[str, Any]:
    """The model's answer to ``question`` about the image file ``image`` (a server-side file, already validated)."""
    import torch

    from ..medvqa.imagebank import ImageBank
    from ..medvqa.images import load_image
    from ..medvqa.models.network import image_sizes
    from ..medvqa.records import CLOSED, OPEN, VQARecord

    trained, inputs, lock = _load_vqa(model)
    pixels = {s: torch.from_numpy(load_image(image, s, grey=True))[None] for s in image_sizes(trained.settings)}
    bank = ImageBank([str(image)], pixels)
    record = VQARecord(qid="demo", image=str(image), question=question, answer="",
                       answer_type=CLOSED if answer_type == "closed" else OPEN)
    with lock:
        ranked = _predictor_class()(trained, inputs, [record], bank).predict(
            "real", top_k=len(trained.answers.answers))[0]["top"]
    candidates = closed_candidates(trained)
    note = None
    if answer_type == "closed" and candidates:
        ranked = [(a, p) for a, p in ranked if a in candidates]
    elif answer_type == "open" and len(candidates) < len(ranked):
        ranked = [(a, p) for a, p in ranked if a not in candidates]
    elif answer_type == "closed":
        note = "this model has no closed candidates (no yes / no answers): every answer is shown"
    total = sum(p for _, p in ranked) or 1.0
    top = [{"answer": a, "probability": p / total} for a, p in ranked[:TOP_K]]
    return {"answer": top[0]["answer"], "top": top, "answer_type": answer_type,
            "candidates": candidates if answer_type == "closed" else None, "note": note,
            "n_answers": len(trained.answers.answers)}


# -- images -------------------------------------------------------------------------------------------------------

def sniff(head: bytes) -> str | None:
    """The image format by its signature: png, jpeg, dicom (the 'DICM' magic after the 128-byte preamble)."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "dicom"
    return None


SUFFIX = {"png": ".png", "jpeg": ".jpg", "dicom": ".dcm"}
NOT_AN_IMAGE = "the upload is not a PNG, JPEG or DICOM image (checked by its content)"


def _check_pixels(path: Path, kind: str) -> None:
    """Refuse an image whose header announces more than MAX_PIXELS, before anything decodes it."""
    try:
        if kind == "dicom":
            import warnings

            import pydicom

            with warnings.catch_warnings():  # a malformed header warns (naming the server's file) before failing
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(path, stop_before_pixels=True)
            if "Rows" not in ds or "Columns" not in ds:
                raise WebError("the DICOM file has no image (no Rows / Columns)")
            n = int(ds.Rows) * int(ds.Columns) * int(ds.get("NumberOfFrames", 1) or 1) \
                * int(ds.get("SamplesPerPixel", 1) or 1)
        else:
            from PIL import Image

            with Image.open(path) as img:
                if img.format != kind.upper():
                    raise WebError(NOT_AN_IMAGE)
                n = img.size[0] * img.size[1]
    except WebError:
        raise
    except Exception:  # noqa: BLE001 - a damaged header: whatever the reader raises, it is not a usable image
        raise WebError(f"cannot read the image: it is damaged or not a valid {kind.upper()} file") from None
    if n > MAX_PIXELS:
        raise WebError(f"the image is too large: {n / 1e6:.0f} megapixels (the limit is {MAX_PIXELS / 1e6:.0f})")


def _preview(path: Path) -> dict[str, Any]:
    """A small PNG of what the model reads (DICOM windowed as load_image does), as a data: URL."""
    import numpy as np
    from PIL import Image

    from ..medvqa.images import load_image

    arr = load_image(path, grey=False)
    h, w = arr.shape[1:]
    img = Image.fromarray((arr.transpose(1, 2, 0) * 255).round().astype(np.uint8))
    img.thumbnail((PREVIEW_PX, PREVIEW_PX))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return {"src": "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode(), "width": w, "height": h}


class _Upload:
    """The uploaded bytes in a server-named file under <web dir>/demo/tmp, deleted on exit."""

    def __init__(self, config: WebConfig, data: bytes, kind: str):
        folder = config.web_dir / "demo" / "tmp"
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, name = tempfile.mkstemp(prefix="upload-", suffix=SUFFIX[kind], dir=folder)
        self.path = Path(name)
        with os.fdopen(fd, "wb") as f:
            f.write(data)

    def __enter__(self) -> Path:
        return self.path

    def __exit__(self, *exc) -> None:
        self.path.unlink(missing_ok=True)


def _read_upload(upload: UploadFile) -> tuple[bytes, str]:
    data = upload.file.read(MAX_IMAGE_BYTES + 1)
    if len(data) > MAX_IMAGE_BYTES:
        raise PayloadTooLarge(f"the image is larger than {MAX_IMAGE_BYTES // (1024 * 1024)} MiB")
    kind = sniff(data[:132])
    if kind is None:
        raise WebError(NOT_AN_IMAGE)
    return data, kind


# -- VQA-RAD val examples -----------------------------------------------------------------------------------------

@lru_cache(maxsize=1)
def _examples_cached(root: str) -> dict[str, list]:
    from ..medvqa.datasets import load_dataset

    by_image: dict[str, list] = {}
    for r in load_dataset("vqa-rad", "val"):
        by_image.setdefault(Path(r.image).name, []).append(r)
    return dict(sorted(by_image.items()))


def examples() -> dict[str, list]:
    """VQA-RAD val: image file name -> its records ({} when the data is not here)."""
    from ..settings import data_root

    try:
        return _examples_cached(str(data_root()))
    except (DataError, EmbedlabError, OSError) as e:
        log.info("no VQA-RAD val examples for the demo: %s", e)
        return {}


def _example(name: str):
    records = examples().get(name) if EXAMPLE_RE.fullmatch(name or "") else None
    if not records:
        raise NotFound("unknown example image: choose one of the VQA-RAD val images the page lists")
    from ..medvqa.datasets import image_path

    return records, image_path(records[0])


# -- text search --------------------------------------------------------------------------------------------------

def corpora() -> list[str]:
    """The registered retrieval datasets whose default split is present locally."""
    from ..data import catalog

    out = []
    for spec in catalog.list_datasets("retrieval"):
        try:
            if catalog.is_available(spec.name):
                out.append(spec.name)
        except EmbedlabError:
            continue
    return out


def _corpus(name: str) -> dict[str, Any]:
    """The demo's part of a corpus: judged-relevant documents first, then the corpus in order, CORPUS_DOCS at most;
    and example queries whose relevant documents are in it."""
    def load():
        from ..data import catalog

        data = catalog.load_retrieval(name)
        relevant = list(dict.fromkeys(d for q in data.qrels.values() for d, g in q.items() if g > 0
                                      and d in data.corpus))
        ids = list(dict.fromkeys(relevant[:CORPUS_DOCS] + list(data.corpus)))[:CORPUS_DOCS]
        kept = set(ids)
        queries = [text for qid, text in data.queries.items()
                   if any(g > 0 and d in kept for d, g in data.qrels.get(qid, {}).items())][:25]
        return {"ids": ids, "docs": {d: data.corpus[d] for d in ids}, "queries": queries,
                "total": len(data.corpus), "split": data.split}

    return _CORPORA.get((name, CORPUS_DOCS), load)


def _load_text(model: DemoModel):
    from ..text import Embedder

    return _TEXT.get(model.path, lambda: (Embedder.load(model.path), {}, threading.Lock()))


def search(config: WebConfig, model: DemoModel, corpus_name: str, query: str) -> dict[str, Any]:
    """The TEXT_HITS documents nearest to ``query`` (cosine), embedding the corpus part once per model."""
    import numpy as np

    from ..evaluate.cache import EmbeddingCache

    corpus = _corpus(corpus_name)
    embedder, embedded, lock = _load_text(model)
    with lock:  # one embedding of a corpus at a time per model (the first query of a corpus takes a while)
        key = (corpus_name, len(corpus["ids"]))
        if key not in embedded:
            doc_prompt = next((p for p in ("document", "passage") if p in embedder.prompts), None)
            texts = [corpus["docs"][d].full_text() for d in corpus["ids"]]
            cache = EmbeddingCache(config.web_dir / "demo" / "embeddings")
            emb = cache.get_or_compute(
                embedder.model_hash(), f"{corpus_name}/demo-corpus", embedder.max_length, corpus["ids"],
                lambda: embedder.encode(texts, prompt_name=doc_prompt, batch_size=32),
                prompt=embedder.resolve_prompt(doc_prompt) if doc_prompt else "", texts=texts)
            norms = np.linalg.norm(emb, axis=1, keepdims=True)
            embedded[key] = emb / np.maximum(norms, 1e-12)
        matrix = embedded[key]
        q = embedder.encode([query], prompt_name="query" if "query" in embedder.prompts else None)[0]
    q = q / max(float(np.linalg.norm(q)), 1e-12)
    scores = matrix @ q
    k = min(TEXT_HITS, len(scores))
    best = np.argpartition(-scores, k - 1)[:k]
    best = best[np.argsort(-scores[best], kind="stable")]
    hits = []
    for rank, i in enumerate(best, 1):
        doc = corpus["docs"][corpus["ids"][int(i)]]
        hits.append({"rank": rank, "id": doc.id, "score": float(scores[int(i)]), "title": doc.title,
                     "text": doc.text[:400] + ("…" if len(doc.text) > 400 else "")})
    return {"query": query, "corpus": corpus_name, "documents": len(corpus["ids"]), "corpus_total": corpus["total"],
            "model": model.label, "hits": hits, "try": [x for x in corpus["queries"] if x != query][:5]}


# -- the page --------------------------------------------------------------------------------------------------------

def _page_context(config, store, accounts, user) -> dict[str, Any]:
    models = discover_models(config, store, accounts, user)
    ex = examples()
    return {"vqa_models": [m for m in models.values() if m.kind == "medvqa"],
            "text_models": [m for m in models.values() if m.kind == "text"],
            "examples": [{"image": k, "n": len(v)} for k, v in ex.items()], "corpora": corpora(),
            "max_mb": MAX_IMAGE_BYTES // (1024 * 1024), "corpus_docs": CORPUS_DOCS, "max_question": MAX_QUESTION,
            "max_query": MAX_QUERY, "answer": None, "search": None, "error": None}


@router.get("/demo", include_in_schema=False)
def demo_page(request: Request, user: CurrentUser, config: ConfigDep, store: StoreDep,
              accounts: AccountsDep) -> Response:
    return render(request, "demo/demo.html", _page_context(config, store, accounts, user))


def _ask(config, store, accounts, user, model: str, question: str, answer_type: str, image: UploadFile | None,
         example: str | None) -> dict[str, Any]:
    question = " ".join(question.split())
    if not question:
        raise WebError("type a question")
    chosen = _model(discover_models(config, store, accounts, user), model, "medvqa")
    has_upload = image is not None and bool(image.filename or image.size)
    if has_upload and example:
        raise WebError("upload an image or choose an example, not both")
    if has_upload:
        data, kind = _read_upload(image)
        with _Upload(config, data, kind) as path:
            _check_pixels(path, kind)
            try:
                preview = _preview(path)
                result = answer_question(chosen, path, question, answer_type)
            except DataError:  # the message names the temp file: say what it means instead
                raise WebError(f"cannot read the image: it is damaged or not a valid {kind.upper()} file") from None
        source, gold = f"your upload ({kind.upper()}, {preview['width']}×{preview['height']})", None
    elif example:
        records, path = _example(example)
        preview = _preview(path)
        result = answer_question(chosen, path, question, answer_type)
        source = f"VQA-RAD val image {example}"
        gold = next(({"answer": r.answer, "answer_type": r.answer_type} for r in records
                     if " ".join(r.question.lower().split()) == question.lower()), None)
    else:
        raise WebError("upload an image or choose one of the VQA-RAD val examples")
    return {**result, "question": question, "model": chosen.public(user), "image": {"source": source, **preview},
            "dataset_answer": gold}


@router.post("/demo/vqa", include_in_schema=False)
def ask_page(request: Request, user: CurrentUser, config: ConfigDep, store: StoreDep, accounts: AccountsDep,
             model: Annotated[str, Form(max_length=64)], question: Annotated[str, Form(max_length=MAX_QUESTION)],
             answer_type: Annotated[AnswerType, Form()] = "auto", image: Annotated[UploadFile | None, File()] = None,
             example: Annotated[str | None, Form(max_length=128)] = None) -> Response:
    answer = _ask(config, store, accounts, user, model, question, answer_type, image, example or None)
    if is_htmx(request):
        return render(request, "demo/_answer.html", {"answer": answer})
    return render(request, "demo/demo.html", {**_page_context(config, store, accounts, user), "answer": answer})


@router.post("/api/demo/vqa", tags=["demo"], summary="Ask a Med-VQA model about an image")
def ask_api(user: CurrentUser, config: ConfigDep, store: StoreDep, accounts: AccountsDep,
            model: Annotated[str, Form(max_length=64)], question: Annotated[str, Form(max_length=MAX_QUESTION)],
            answer_type: Annotated[AnswerType, Form()] = "auto", image: Annotated[UploadFile | None, File()] = None,
            example: Annotated[str | None, Form(max_length=128)] = None) -> Response:
    """Multipart form: ``model`` (an id from GET /api/demo/models), ``question``, ``answer_type`` (auto | closed |
    open) and either ``image`` (PNG, JPEG or DICOM, checked by content, at most 20 MiB) or ``example`` (a VQA-RAD val
    image name from GET /api/demo/examples). Answers with the answer, the top 5 answers with probabilities and a
    preview of the image as the model read it. 400 for a bad image or question, 404 for an unknown model or
    example, 413 for an image over the limit; send the X-CSRF-Token header."""
    return JSONResponse(_ask(config, store, accounts, user, model, question, answer_type, image, example or None))


@router.get("/demo/vqa/example", include_in_schema=False)
def example_partial(request: Request, user: CurrentUser,
                    example: Annotated[str, Query(max_length=128)] = "") -> Response:
    """The chosen example's preview and its dataset questions (offered as suggestions for the question field)."""
    if not example:
        return render(request, "demo/_example.html", {"example": None})
    records, path = _example(example)
    return render(request, "demo/_example.html", {"example": {"image": example, "preview": _preview(path),
                                                              "questions": records}})


@router.get("/api/demo/models", tags=["demo"], summary="The models this user may try in the demo")
def models_api(user: CurrentUser, config: ConfigDep, store: StoreDep, accounts: AccountsDep) -> Response:
    models = discover_models(config, store, accounts, user)
    return JSONResponse({"models": [m.public(user) for m in models.values()], "corpora": corpora()})


@router.get("/api/demo/examples", tags=["demo"], summary="VQA-RAD val images and their questions")
def examples_api(user: CurrentUser) -> Response:
    return JSONResponse({"examples": [{"image": k, "questions": [{"question": r.question, "answer_type": r.answer_type,
                                                                  "answer": r.answer} for r in v]}
                                      for k, v in examples().items()]})


def _search(config, store, accounts, user, model: str, corpus: str, q: str) -> dict[str, Any]:
    q = " ".join(q.split())
    if not q:
        raise WebError("type a query")
    chosen = _model(discover_models(config, store, accounts, user), model, "text")
    if corpus not in corpora():
        raise NotFound("unknown corpus: choose one of the corpora the demo page lists")
    return {**search(config, chosen, corpus, q), "model": chosen.public(user)}


@router.get("/demo/text", include_in_schema=False)
def search_page(request: Request, user: CurrentUser, config: ConfigDep, store: StoreDep, accounts: AccountsDep,
                model: Annotated[str, Query(max_length=64)], corpus: Annotated[str, Query(max_length=64)],
                q: Annotated[str, Query(max_length=MAX_QUERY)]) -> Response:
    result = _search(config, store, accounts, user, model, corpus, q)
    if is_htmx(request):
        return render(request, "demo/_hits.html", {"search": result})
    return render(request, "demo/demo.html", {**_page_context(config, store, accounts, user), "search": result})


@router.get("/api/demo/text", tags=["demo"], summary="The documents of a corpus nearest to a query")
def search_api(user: CurrentUser, config: ConfigDep, store: StoreDep, accounts: AccountsDep,
               model: Annotated[str, Query(max_length=64)], corpus: Annotated[str, Query(max_length=64)],
               q: Annotated[str, Query(max_length=MAX_QUERY)]) -> Response:
    """``model``: a text model id from GET /api/demo/models; ``corpus``: a registered retrieval dataset present
    here (SciFact, ...). The 10 nearest documents by cosine similarity. The first query of a model on a corpus embeds
    its documents (at most 1000 by default), which takes a while; later ones are fast."""
    return JSONResponse(_search(config, store, accounts, user, model, corpus, q))
