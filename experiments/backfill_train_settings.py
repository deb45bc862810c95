"""Give the records of an experiment that were stored before records carried ``train_settings`` (2026-12-04) that
field, resolved from the record's own recipe path and overrides by the function the runner uses today.

    .venv/bin/python experiments/backfill_train_settings.py experiments/codiemb_full.yaml [--db <store>] [--dry-run]

What it does: for every (run, seed) whose newest rows carry ``recipe`` and ``overrides`` but no ``train_settings``,
it loads the recipe with those overrides, and where the run's folder (``<workdir>/<run>-s<seed>/recipe.json``) is on
this machine it first checks that the resolved recipe equals the one the run saved (any difference stops the script
before anything is written). It then stores the same rows again (same values, job, commit and config) with
``train_settings`` and ``train_settings_source`` (how they were obtained) added. The store is append-only: the
original rows stay, the export takes the newest row of each (run, seed, task, metric). Re-export with
``embedlab experiment <spec> --table-only``.

What it does not do: change any value, or touch rows that already carry ``train_settings``.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path

from embedlab.bench.store import ResultsStore
from embedlab.config import load_recipe, recipe_to_dict
from embedlab.errors import ConfigError
from embedlab.experiment import load_experiment
from embedlab.text_jobs import train_settings
from embedlab.train.run_folder import recipe_differences


def main() -> int:
    try:
        return _main()
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiment", type=Path)
    parser.add_argument("--db", default="runs/docs-results.sqlite")
    parser.add_argument("--dry-run", action="store_true", help="say what would be stored; store nothing")
    args = parser.parse_args()
    spec = load_experiment(args.experiment)
    with ResultsStore(args.db, create=False) as store:
        backfill(spec, store, dry_run=args.dry_run)
    return 0


def backfill(spec, store: ResultsStore, dry_run: bool = False) -> int:
    """Store the rows again with ``train_settings`` (see the module docstring); returns the number of runs."""
    workdir = Path(spec.workdir.format(name=spec.name))
    latest: dict[tuple, dict] = {}
    for row in store.query(experiment=spec.name):  # oldest first: the newest row of each key wins, as in the export
        latest[(row["model"], row["seed"], row["task"], row["metric"])] = row
    runs: dict[tuple[str, int], list[dict]] = {}
    for (name, seed, _, _), row in latest.items():
        extra = row.get("extra") or {}
        if "recipe" in extra and "overrides" in extra and "train_settings" not in extra:
            runs.setdefault((name, seed), []).append(row)
    today = dt.date.today().isoformat()
    for (name, seed), rows in sorted(runs.items()):
        recipes = {(r["extra"]["recipe"], json.dumps(r["extra"]["overrides"])) for r in rows}
        if len(recipes) != 1:
            raise ConfigError(f"{name} seed {seed}: its rows name {len(recipes)} different recipes/overrides; not "
                              f"backfilled")
        extra0 = rows[0]["extra"]
        overrides = [o for o in extra0["overrides"] if not o.startswith("output_dir=")]
        folder = workdir / f"{name}-s{seed}"
        recipe = load_recipe(extra0["recipe"], [*overrides, f"output_dir={folder}"])
        source = f"resolved on {today} from the record's recipe and overrides"
        saved_path = folder / "recipe.json"
        if saved_path.is_file():
            saved = json.loads(saved_path.read_text(encoding="utf-8"))
            diffs = recipe_differences(saved, recipe_to_dict(recipe))
            if diffs:
                raise ConfigError(f"{name} seed {seed}: the resolved recipe differs from {saved_path}: "
                                  f"{'; '.join(diffs)}; not backfilled")
            source += ", equal to the run folder's recipe.json"
        settings = train_settings(recipe)
        print(f"{name} seed {seed}: {len(rows)} rows; {source}\n  {settings}")
        if dry_run:
            continue
        new_rows = []
        for r in rows:
            row = {k: v for k, v in r.items() if k not in ("id", "run_id", "created_at")}
            extra = dict(r["extra"], train_settings=settings, train_settings_source=source)
            if "record_keys" in extra:
                extra["record_keys"] = sorted({*extra["record_keys"], "train_settings", "train_settings_source"})
            row["extra"] = extra
            new_rows.append(row)
        store.add_run(new_rows)
    if not runs:
        print(f"{spec.name}: every record that names a recipe carries train_settings; nothing to do")
    return len(runs)


if __name__ == "__main__":
    raise SystemExit(main())
