"""``embedlab convert`` (training files from the local data) and ``embedlab mine`` (hard negatives): preparing
training data."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ._common import _on_interrupt, _progress_bars, _say, _table, console

app = typer.Typer()


@app.command()
def convert(
    out: Path = typer.Option(Path("runs/train-data"), "--out", help="folder for the training JSONL files"),
    names: Optional[str] = typer.Option(None, "--names", help="comma-separated converters (default: all)"),
) -> None:
    """Build CoDiEmb training files (IR: FlagEmbedding JSONL, STS: sentence1/sentence2/score) from the local data."""
    from ..prep.convert import convert_all

    from ..outputs import claim_folder

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
    from ..prep.mining import mine_file

    work = cache_dir if cache_dir is not None else out.parent / f".{out.name}.mining"  # mine_file's work folder
    _on_interrupt(f"interrupted: what was mined so far is kept in {work}, so a rerun of the same command resumes; "
                  f"{out} was not written")
    stats = mine_file(input, out, model, rank_range=rank_range, n_negatives=n_negatives, margin=margin, seed=seed,
                      max_length=max_length, corpus_path=corpus, keep_existing=keep_existing, num_threads=threads,
                      cache_dir=cache_dir, show_progress=_progress_bars(progress), overwrite=overwrite)
    _say(f"wrote {out}: {stats}")
