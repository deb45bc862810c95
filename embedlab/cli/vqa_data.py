"""``embedlab vqa-data``: the Med-VQA dataset tool from the command line (clinical cases -> a trainable dataset).

    embedlab vqa-data ingest $EMBEDLAB_DATA/medvqa/case-samples --project runs/vqa-data/cases
    embedlab vqa-data extract --project runs/vqa-data/cases [--lexicon my-terms.yaml]
    embedlab vqa-data review --project runs/vqa-data/cases --kind concept --reviewer dr.lee
    embedlab vqa-data generate --project runs/vqa-data/cases [--types PRES,ABN] [--variants 2]
    embedlab vqa-data review --project runs/vqa-data/cases --kind qa --reviewer dr.lee
    embedlab vqa-data export --project runs/vqa-data/cases --out runs/vqa-data/cases-export [--register cases]
    embedlab vqa-data status --project runs/vqa-data/cases
    embedlab vqa-data iu-xray-eval --half dev

Each command is one call of embedlab.medvqa.dataset_tool (the web pages call the same functions); this module only
parses options and prints summaries.
"""
from __future__ import annotations

import contextlib

import json
from pathlib import Path
from typing import Optional

import typer

from ..errors import ConfigError
from ._common import _on_interrupt, _say, _table, console

app = typer.Typer()
vqa_data = typer.Typer(help="Med-VQA dataset tool: cases (images + reports) -> concepts -> reviewed QA -> export",
                       no_args_is_help=True)
app.add_typer(vqa_data, name="vqa-data")

PROJECT = typer.Option(..., "--project", help="the project folder (created by ingest)")


def _project(path: Path, create: bool = False):
    from ..medvqa.dataset_tool.project import Project

    return Project.create(path) if create else Project.open(path)


@contextlib.contextmanager
def _bar(desc: str, unit: str):
    """A tqdm bar (rate and ETA) on a terminal, nothing otherwise; yields the steps' progress(done, total)."""
    from tqdm.auto import tqdm

    bar = None

    def progress(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, desc=desc, unit=unit, disable=None, dynamic_ncols=True)
        bar.update(done - bar.n)

    try:
        yield progress
    finally:
        if bar is not None:
            bar.close()


def _summary(title: str, summary: dict) -> None:
    rows = [[k, json.dumps(v) if isinstance(v, (dict, list)) else str(v)] for k, v in summary.items()]
    console.print(_table(title, ["", "value"], rows))


@vqa_data.command("ingest")
def ingest(
    source: Path = typer.Argument(..., help="a folder or .zip of cases"),
    project: Path = typer.Option(..., "--project", help="project folder (created when new or empty)"),
    layout: str = typer.Option("auto", "--layout", help="auto | upload | iu-xray | folder"),
    metadata: Optional[Path] = typer.Option(None, "--metadata", help="CSV or JSON with a case_id column/key"),
    allow_missing_images: bool = typer.Option(False, "--allow-missing-images",
                                              help="accept cases whose image files are absent (flagged)"),
    skip_empty_reports: bool = typer.Option(False, "--skip-empty-reports", help="skip (and count) empty reports"),
    max_file_mb: float = typer.Option(50.0, "--max-file-mb", min=0.001),
    max_total_mb: float = typer.Option(2048.0, "--max-total-mb", min=0.001),
    max_files: int = typer.Option(100_000, "--max-files", min=1),
) -> None:
    """Validate and import cases (images + report text); nothing is imported when any case has a problem."""
    from ..medvqa.dataset_tool.ingest import Limits, ingest_into

    p = _project(project, create=True)
    _on_interrupt(f"interrupted: nothing of this upload was imported into {project}")
    limits = Limits(max_file_bytes=int(max_file_mb * 2**20), max_total_bytes=int(max_total_mb * 2**20),
                    max_files=max_files)
    report = ingest_into(p, source, layout=layout, metadata=metadata, allow_missing_images=allow_missing_images,
                         skip_empty_reports=skip_empty_reports, limits=limits)
    data = report.to_json()
    _summary(f"ingested into {project}", {k: v for k, v in data.items() if k not in ("case_ids", "warnings")})
    for line in data.get("warnings", [])[:20]:
        _say(f"warning: {line}")


@vqa_data.command("extract")
def extract(
    project: Path = PROJECT,
    lexicon: Optional[list[Path]] = typer.Option(None, "--lexicon", help="user lexicon YAML merged over the shipped "
                                                 "one (repeatable)"),
    spacy_model: Optional[str] = typer.Option(None, "--spacy-model", help="an installed spaCy pipeline to use "
                                              "instead of the blank English one"),
) -> None:
    """Extract concepts (modality, plane, organ, findings with negation, laterality, location, size, count)."""
    from ..medvqa.dataset_tool.concepts import extract_into

    p = _project(project)
    _on_interrupt(f"interrupted: {project}/concepts.jsonl is unchanged")
    with _bar("extract", "case") as progress:
        summary = extract_into(p, list(lexicon) if lexicon else None, spacy_model=spacy_model, progress=progress)
    _summary("concepts", summary)


@vqa_data.command("generate")
def generate(
    project: Path = PROJECT,
    types: Optional[str] = typer.Option(None, "--types", help="comma-separated question types (default: all of "
                                        "MODALITY,PLANE,ORGAN,PRES,ABN,POS,SIZE,COUNT)"),
    variants: int = typer.Option(1, "--variants", min=1, help="phrasings per question"),
    negatives: int = typer.Option(2, "--negatives", min=0, help="generated 'no' presence questions per case"),
    closed_share: Optional[float] = typer.Option(None, "--closed-share", min=0.0, max=1.0,
                                                 help="target share of closed questions"),
    seed: int = typer.Option(0, "--seed"),
    pending: bool = typer.Option(True, "--pending/--no-pending", help="use concepts nobody has reviewed yet"),
    min_confidence: float = typer.Option(0.55, "--min-confidence", min=0.0, max=1.0,
                                        help="leave out concepts the extractor is less sure of (0.55: probable)"),
) -> None:
    """Generate QA pairs from the (reviewed) concepts; decisions on unchanged pairs are kept."""
    from ..medvqa.dataset_tool.qagen import QAConfig, generate_into

    p = _project(project)
    options = dict(variants=variants, negatives=negatives, closed_share=closed_share, seed=seed,
                   use_pending=pending, min_confidence=min_confidence)
    if types:
        options["question_types"] = tuple(t for t in types.split(",") if t.strip())
    _on_interrupt(f"interrupted: {project}/qa.jsonl is unchanged")
    with _bar("generate", "case") as progress:
        summary = generate_into(p, QAConfig(**options), progress=progress)
    _summary("QA pairs", summary)


@vqa_data.command("paraphrase")
def paraphrase(
    project: Path = PROJECT,
    model: str = typer.Option(..., "--model", help="a local causal LM (folder, package model or cached hub id)"),
    share: float = typer.Option(0.2, "--share", min=0.0, max=1.0, help="share of template pairs to rephrase"),
    seed: int = typer.Option(0, "--seed"),
    max_new_tokens: int = typer.Option(32, "--max-new-tokens", min=4),
    allow_hub: bool = typer.Option(False, "--allow-hub", help="download the model when it is not local"),
) -> None:
    """Add paraphrased questions (same answers, pending review) written by a local language model."""
    from ..medvqa.dataset_tool.paraphrase import Paraphraser, paraphrase_into

    p = _project(project)
    rewriter = Paraphraser(model, max_new_tokens=max_new_tokens, seed=seed, allow_hub=allow_hub)
    _on_interrupt(f"interrupted: {project}/qa.jsonl is unchanged")
    _summary("paraphrases", paraphrase_into(p, rewriter, share, seed=seed))


@vqa_data.command("review")
def review(
    project: Path = PROJECT,
    kind: str = typer.Option(..., "--kind", help="concept | qa"),
    reviewer: str = typer.Option(..., "--reviewer", help="your name (recorded with each decision)"),
    redo: bool = typer.Option(False, "--redo", help="also show items already decided"),
) -> None:
    """Accept, edit or reject each concept or QA pair in the terminal; stop any time, the next run continues."""
    from ..medvqa.dataset_tool.review import review_terminal

    if kind not in ("concept", "qa"):
        raise ConfigError(f"--kind must be concept or qa, got {kind!r}")
    p = _project(project)
    _on_interrupt(f"interrupted: every decision made so far is saved in {project}/decisions.jsonl")
    done = review_terminal(p, kind, reviewer, redo=redo)
    _say(f"logged: {dict(done)}")


@vqa_data.command("status")
def status(project: Path = PROJECT) -> None:
    """Counts per stage and review status."""
    from ..medvqa.dataset_tool.review import review_stats

    p = _project(project)
    rows = [["cases", len(p.cases())], ["concepts", len(p.concepts())], ["QA pairs", len(p.qa_pairs())]]
    stats = review_stats(p)
    for kind in ("concept", "qa"):
        rows.append([f"{kind} review", ", ".join(f"{k} {v}" for k, v in stats[kind].items())])
    rows.append(["reviewers", ", ".join(stats["reviewers"]) or "-"])
    for stage, info in p.info.get("stages", {}).items():
        rows.append([f"stage {stage}", info.get("time", "")])
    console.print(_table(f"project {p.info.get('name', project)}", ["", ""], rows))


@vqa_data.command("export")
def export(
    project: Path = PROJECT,
    out: Path = typer.Option(..., "--out", help="export folder (new, or an earlier export)"),
    split_by: str = typer.Option("case", "--split-by",
                                 help="case | image | patient (case: all images of a case in one split)"),
    fractions: str = typer.Option("0.8,0.1,0.1", "--fractions", help="train,val,test shares"),
    seed: int = typer.Option(0, "--seed"),
    include: Optional[str] = typer.Option(None, "--include", help="accepted | reviewed-or-pending | all-unreviewed "
                                          "(default: accepted and edited pairs)"),
    formats: str = typer.Option("json,jsonl", "--formats", help="json (VQA-RAD/MEVF layout) and/or jsonl"),
    register: Optional[str] = typer.Option(None, "--register", help="register the export under this dataset name"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing export folder"),
) -> None:
    """Export the reviewed QA pairs with a dataset card (split by case by default: all images of a case in one
    split, so no image, and no report's repeated question, is in two splits)."""
    from ..medvqa.dataset_tool.export import export_project, register_export

    try:
        shares = tuple(float(x) for x in fractions.split(","))
    except ValueError:
        raise ConfigError(f"--fractions must be three numbers like 0.8,0.1,0.1, got {fractions!r}") from None
    if len(shares) != 3:
        raise ConfigError(f"--fractions must be three numbers (train,val,test), got {fractions!r}")
    p = _project(project)
    _on_interrupt(f"interrupted: {out} is unchanged")
    with _bar("export", "image") as progress:
        card = export_project(p, out, split_by=split_by, fractions=shares, seed=seed, include=include,
                              formats=tuple(f.strip() for f in formats.split(",") if f.strip()), overwrite=overwrite,
                              progress=progress)
    _say(f"exported to {out} (dataset card: {out}/dataset_card.md)")
    rows = [[s, v["json"].get("rows", 0), v["json"].get("images", 0), v["jsonl"].get("rows", 0), v["cases"]]
            for s, v in card["splits"].items()]
    console.print(_table("splits", ["split", "trainable rows", "images", "all rows (jsonl)", "cases"], rows))
    if register:
        register_export(register, out, replace=True)
        _say(f"registered as {register!r}: `embedlab vqa train ... dataset={register}` trains on it")


@vqa_data.command("register")
def register(name: str = typer.Argument(...), folder: Path = typer.Argument(...),
             replace: bool = typer.Option(False, "--replace")) -> None:
    """Register an export folder under a dataset name (for recipes and load_dataset)."""
    from ..medvqa.dataset_tool.export import register_export

    entry = register_export(name, folder, replace=replace)
    _say(f"registered {name!r} -> {entry['path']} (splits {', '.join(entry['splits'])})")


@vqa_data.command("unregister")
def unregister(name: str = typer.Argument(...)) -> None:
    """Forget a registered dataset name (its folder stays)."""
    from ..medvqa.dataset_tool.export import unregister_export

    if not unregister_export(name):
        raise ConfigError(f"no registered dataset named {name!r}")
    _say(f"unregistered {name!r}")


@vqa_data.command("datasets")
def datasets() -> None:
    """The registered dataset-tool exports."""
    from ..medvqa.dataset_tool.export import registered_exports, registry_path

    rows = [[n, e["path"], ", ".join(e.get("splits", [])), e.get("registered", "")]
            for n, e in registered_exports().items()]
    console.print(_table(f"registered exports ({registry_path()})", ["name", "folder", "splits", "registered"], rows))


@vqa_data.command("iu-xray-eval")
def iu_xray_eval(
    half: str = typer.Option("dev", "--half", help="dev | acceptance (run acceptance once, after tuning on dev)"),
    out: Optional[Path] = typer.Option(Path("docs/results/iuxray_concepts.json"), "--out",
                                       help="JSON report (the other half's entry is kept)"),
    lexicon: Optional[list[Path]] = typer.Option(None, "--lexicon", help="user lexicon YAML (repeatable)"),
) -> None:
    """Concept extraction against IU X-ray's MeSH headings: micro precision / recall / F1 on one half."""
    from ..medvqa.dataset_tool.concepts import load_lexicon
    from ..medvqa.dataset_tool.iuxray import run

    result = run(half, out, lexicon=load_lexicon(*lexicon) if lexicon else None)
    micro = result.get("micro") or result.get("all", {}).get("micro", {})
    _summary(f"IU X-ray {half} half ({result.get('n_reports', '?')} reports)",
             {k: micro[k] for k in ("p", "r", "f1", "tp", "fp", "fn") if k in micro})
    if out:
        _say(f"written to {out}")
