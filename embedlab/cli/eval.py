"""``embedlab eval`` (evaluate a model, store and print its scores) and ``embedlab results`` (read the stored ones);
``_settings`` and ``_run_eval`` are also what ``embedlab demo`` evaluates with."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
from rich.text import Text

from ..errors import ConfigError
from ._common import _check_out_dir, _on_interrupt, _progress_bars, _say, _table, console

app = typer.Typer()


def _settings(batch_size, max_length, token_budget, threads, bf16, progress, skip_bad_rows, limit=None,
              backend=None, precision=None, calibration: Path | None = None):
    import torch

    from ..evaluate.runner import EvalSettings

    if bf16 and precision not in (None, "bf16"):
        raise ConfigError(f"--bf16 and --precision {precision} disagree; give one of them")
    if bf16 and backend not in (None, "torch"):
        raise ConfigError(f"--bf16 is bf16 autocast on the torch backend; for {backend} use --precision bf16")
    if precision == "bf16" and backend in (None, "torch"):  # the torch path's bf16 is autocast: one way to say it
        bf16, precision = True, None
    return EvalSettings(batch_size=batch_size, max_length=max_length, token_budget=token_budget, num_threads=threads,
                        autocast_dtype=torch.bfloat16 if bf16 else None, show_progress=progress,
                        skip_bad_rows=skip_bad_rows, limit=limit, backend=backend, precision=precision,
                        calibration_texts=read_calibration(calibration) if calibration else None)


def read_calibration(path: Path) -> tuple[str, ...]:
    """Calibration texts for openvino int8: one text per line (blank lines skipped), UTF-8."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise ConfigError(f"--calibration {path}: no such file") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"--calibration {path}: not UTF-8 text (byte {e.start})") from None
    texts = tuple(t for t in (line.strip() for line in lines) if t)
    if not texts:
        raise ConfigError(f"--calibration {path}: no texts (one text per line)")
    return texts


BACKEND_OPTION = typer.Option(None, "--backend", help="torch | onnx | openvino (exported once, cached; default torch)")
PRECISION_OPTION = typer.Option(None, "--precision", help="fp32 | bf16 (torch, openvino) | int8 (onnx, openvino); "
                                "default fp32")
CALIBRATION_OPTION = typer.Option(None, "--calibration", help="openvino int8: a text file of calibration texts, one "
                                  "per line (a few hundred like the ones embedded)")


def _run_eval(model_name: str, tasks: str, out: Path | None, db: str | None, no_cache: bool, settings,
              label: str | None = None):
    import uuid

    from .. import results as results_path
    from ..bench.store import ResultsStore
    from ..evaluate.cache import EmbeddingCache
    from ..evaluate.runner import evaluate, result_rows
    from ..evaluate.tasks import parse_tasks
    from ..text import Embedder
    from ..pretrained import resolve

    # Everything a user can get wrong is checked before the model loads and long before the first result would be
    # written: task names, the model name (resolved: reads no weights, creates nothing, so a typo leaves no new
    # database behind), the results store (opened and connected to) and the JSON folder.
    parse_tasks(tasks)
    resolved = resolve(model_name)
    if resolved.source == "hub":  # a hub id is only known to exist once found (cache or download): before the store
        from ..text.embedder import _materialise

        _materialise(resolved)
    if label is None and resolved.source == "path" and not model_name.strip("./"):
        label = str(Path(model_name).resolve())  # "." or "..": no name for the results (nor a JSON folder)
    store = ResultsStore(db)
    if out is not None:
        _check_out_dir(out)
    cache = EmbeddingCache(enabled=not no_cache)  # an unusable cache folder fails here, before the model loads
    _on_interrupt(f"interrupted: the tasks that finished are stored in {store.display_url}"
                  + (f" (JSON under {out})" if out is not None else "") + "; the others were not evaluated")
    model = Embedder.load(model_name)
    rows = []
    run_id = uuid.uuid4().hex  # every task of this evaluation is one run in the store

    def store_and_show(r):
        # Stored as each task finishes (an interrupted evaluation keeps what it finished), through the one
        # results path: result rows from embedlab.results, written to the store by the caller.
        results_path.write(result_rows(model, label or model_name, r, settings, run_id=run_id), store)
        rows.append([r.task.name, r.task.split, f"{r.display():.2f}", f"{r.evaluation_time:.1f}s"])
        console.print(Text.assemble((r.task.name, "green"), f" {r.display():.2f} ({r.evaluation_time:.1f}s)"))

    results = evaluate(model, tasks, settings=settings, out_dir=out, cache=cache, model_label=label or model_name,
                       on_result=store_and_show)
    subsample = f" (subsampled: at most {settings.limit} per task)" if settings.limit else ""
    console.print(_table(f"{label or model_name}{subsample}", ["task", "split", "main score", "time"], rows))
    if out is not None:
        _say(f"MTEB-format JSON under {out}; results store: {store.display_url}")
    return model, results


@app.command("eval")
def eval_cmd(
    model: str = typer.Option(..., "--model", "-m", help="package model name, folder or hub id"),
    tasks: str = typer.Option(",".join(["stsb", "sts12", "sts13", "scifact"]), "--tasks", "-t",
                              help="comma-separated task names (`embedlab list`)"),
    batch_size: int = typer.Option(32, "--batch-size", min=1),
    max_length: Optional[int] = typer.Option(None, "--max-length", min=1, help="default: the model's own"),
    token_budget: Optional[int] = typer.Option(None, "--token-budget", min=1, help="padded tokens per batch"),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, max=1024),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="evaluate on at most N pairs/queries per task, "
                                        "a seeded sample, for a quick smoke test; results are marked as subsampled"),
    bf16: bool = typer.Option(False, "--bf16", help="bf16 autocast (faster on AVX-512 BF16 CPUs)"),
    backend: Optional[str] = BACKEND_OPTION,
    precision: Optional[str] = PRECISION_OPTION,
    calibration: Optional[Path] = CALIBRATION_OPTION,
    out: Optional[Path] = typer.Option(Path("results"), "--out", help="folder for MTEB-format JSON"),
    db: Optional[str] = typer.Option(None, "--db", help="results store URL or SQLite file"),
    no_cache: bool = typer.Option(False, "--no-cache", help="do not read or write the corpus-embedding cache"),
    skip_bad_rows: bool = typer.Option(False, "--skip-bad-rows", help="skip malformed rows (and report how many)"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Evaluate a model on STS / retrieval / geometry tasks; print a table, write JSON and store rows."""
    _run_eval(model, tasks, out, db, no_cache,
              _settings(batch_size, max_length, token_budget, threads, bf16, _progress_bars(progress), skip_bad_rows,
                        limit=limit, backend=backend, precision=precision, calibration=calibration))


@app.command()
def results(
    model: Optional[str] = typer.Option(None, "--model"),
    task: Optional[str] = typer.Option(None, "--task"),
    metric: Optional[str] = typer.Option("main_score", "--metric", help="'all' for every metric"),
    fmt: str = typer.Option("table", "--format", help="table, csv, or json (with --experiment and --out: every row "
                            "of the experiment, for a committed results file)"),
    db: Optional[str] = typer.Option(None, "--db"),
    latest: bool = typer.Option(True, "--latest/--all-runs", help="only the latest run per model and task"),
    experiment: Optional[str] = typer.Option(None, "--experiment", help="only this experiment's rows"),
    out: Optional[Path] = typer.Option(None, "--out", help="--format json: the file to write"),
    overwrite: bool = typer.Option(False, "--overwrite", help="--format json: replace a file that is not an earlier "
                                   "results export"),
) -> None:
    """List stored results as a table or CSV (read-only: a results store that does not exist is an error), or
    export an experiment's rows as JSON (`embedlab results-import` reads them back into another store)."""
    import math

    from ..bench.store import ResultsStore

    if fmt not in ("table", "csv", "json"):
        raise ConfigError(f"--format must be 'table', 'csv' or 'json', got {fmt!r}")
    store = ResultsStore(db, create=False)  # reading must not create a database (or its folder) as a side effect
    if fmt == "json":
        from ..bench.rowfiles import export_rows

        if not experiment or out is None:
            raise ConfigError("--format json needs --experiment and --out")
        _say(f"{export_rows(store, experiment, out, overwrite=overwrite)} rows of {experiment} -> {out}")
        return
    rows = store.query(model=model, task=task, experiment=experiment, metric=None if metric == "all" else metric,
                       latest_only=latest)
    if fmt == "csv":
        # Which database was read goes to stderr, so stdout stays pure CSV.
        print(f"results store: {store.display_url}", file=sys.stderr)
        store.to_csv(rows, sys.stdout)
        return

    def value(v):  # NULL: the metric was undefined (NaN) when it was stored
        return f"{v:.2f}" if v is not None and math.isfinite(v) else "n/a"

    cols = ["model", "task", "split", "metric", "value", "created_at", "git_commit"]
    console.print(_table(f"results ({store.display_url})", cols,
                         [[r.get(c) if c != "value" else value(r["value"]) for c in cols] for r in rows]))


@app.command("results-import")
def results_import(
    path: Path = typer.Argument(..., help="a results JSON written by `embedlab results --format json`"),
    db: Optional[str] = typer.Option(None, "--db", help="results store URL or SQLite file"),
) -> None:
    """Add the rows of a committed results JSON that the store lacks (nothing is changed or added twice)."""
    from ..bench.rowfiles import import_rows
    from ..bench.store import ResultsStore

    store = ResultsStore(db)
    _say(f"{import_rows(store, path)} rows imported into {store.display_url}")


@app.command("encode")
def encode_cmd(
    source: Path = typer.Argument(..., help="a .txt file (one text per line) or .jsonl file (--field)"),
    model: str = typer.Option(..., "--model", "-m", help="package model name, folder or hub id"),
    out: Path = typer.Option(..., "--out", help="the .npy (float32 [n, dim]) or .parquet (id, embedding) to write"),
    field: str = typer.Option("text", "--field", help=".jsonl: the field holding the text"),
    id_field: Optional[str] = typer.Option(None, "--id-field", help=".jsonl: the field holding an id (parquet)"),
    prompt_name: Optional[str] = typer.Option(None, "--prompt-name", help="one of the model's prompts (e.g. query)"),
    batch_size: int = typer.Option(32, "--batch-size", min=1),
    max_length: Optional[int] = typer.Option(None, "--max-length", min=1, help="default: the model's own"),
    token_budget: Optional[int] = typer.Option(None, "--token-budget", min=1, help="padded tokens per batch"),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, max=1024),
    bf16: bool = typer.Option(False, "--bf16", help="bf16 autocast on the torch backend"),
    backend: Optional[str] = BACKEND_OPTION,
    precision: Optional[str] = PRECISION_OPTION,
    calibration: Optional[Path] = CALIBRATION_OPTION,
    chunk_size: int = typer.Option(4096, "--chunk-size", min=1, help="texts per resumable chunk"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing output file"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Embed a file of texts to .npy or .parquet, resumable: an interrupted run keeps its finished chunks."""
    from tqdm.auto import tqdm

    from ..text import Embedder
    from ..text.encode_file import check_output, encode_file, read_texts

    settings = _settings(batch_size, max_length, token_budget, threads, bf16, False, False, backend=backend,
                         precision=precision, calibration=calibration)
    if (settings.backend, settings.precision) == ("openvino", "int8") and not settings.calibration_texts:
        raise ConfigError("--backend openvino --precision int8 is static quantization: give --calibration FILE "
                          "(a few hundred texts like those you will embed, one per line), or use --backend onnx")
    check_output(out, source, overwrite)  # before the model loads
    read_texts(source, field, id_field)  # a bad line fails before the model loads, too
    loaded = Embedder.load(model, backend=settings.backend or "torch", precision=settings.precision or "fp32",
                           calibration_texts=settings.calibration_texts)
    _on_interrupt(f"interrupted: the finished chunks are kept in {out}.partial; run the same command again to "
                  f"resume")
    bars: list = []

    def advance(done: int, total: int) -> None:
        if not bars:  # made at the first report: resumed texts count as done from the start
            bars.append(tqdm(total=total, initial=done, desc="encode", unit="text",
                             disable=not _progress_bars(progress), dynamic_ncols=True))
            return
        bars[0].update(done - bars[0].n)

    try:
        summary = encode_file(loaded, source, out, field=field, id_field=id_field, chunk_size=chunk_size,
                              overwrite=overwrite, prompt_name=prompt_name, progress=advance,
                              batch_size=batch_size, max_length=max_length, token_budget=token_budget,
                              num_threads=threads, autocast_dtype=settings.autocast_dtype)
    finally:
        for bar in bars:
            bar.close()
    resumed = f", {summary['resumed_chunks']} of {summary['chunks']} chunks resumed" if summary["resumed_chunks"] \
        else ""
    _say(f"{summary['texts']} texts x {summary['dim']} -> {out} ({loaded.backend} {summary['precision']}"
         f"{' + bf16 autocast' if settings.autocast_dtype is not None else ''}{resumed})")
