"""Regenerate (or ``--check``) the VQA-RAD split files shipped in ``embedlab/medvqa/split_lists/``.

    python -m embedlab.medvqa.regenerate_splits           # rewrite them from the data root's trainset.json
    python -m embedlab.medvqa.regenerate_splits --check   # compare only; exit status 1 when a file differs

A maintainer's command, needed only when splits.py's method changes: it reads VQA-RAD's ``trainset.json`` (through
datasets.py), runs splits.py's generators and writes each file atomically. It holds no splitting logic itself; kept
apart from splits.py so that the split logic does not import the dataset readers (which import it).
"""
from __future__ import annotations

import argparse
import json
import sys

from ..atomic import write_json
from ..errors import EmbedlabError
from .datasets import dataset_folder, read_mevf_json
from .splits import SPLIT_FILES, SPLITS_DIR, generate


def main(argv: list[str] | None = None) -> int:
    """Regenerate (or ``--check``) the shipped split files from the data root's VQA-RAD trainset.json."""
    parser = argparse.ArgumentParser(prog="python -m embedlab.medvqa.regenerate_splits", description=main.__doc__)
    parser.add_argument("--check", action="store_true", help="compare with the shipped files, write nothing")
    args = parser.parse_args(argv)
    try:
        records = read_mevf_json(dataset_folder("vqa-rad") / "trainset.json", check_images=False)
    except EmbedlabError as e:  # a missing or damaged trainset.json: one line naming it, not a traceback
        print(f"error: {e}", file=sys.stderr)
        return 2
    status = 0
    for kind, doc in generate(records).items():
        path = SPLITS_DIR / SPLIT_FILES[kind]
        if args.check:
            same = path.is_file() and json.loads(path.read_text(encoding="utf-8")) == doc
            print(f"{path.name}: {'matches' if same else 'DIFFERS'}")
            status |= 0 if same else 1
        else:
            write_json(path, doc)
            print(f"wrote {path}")
        print(json.dumps(doc["properties"], indent=1))
    return status


if __name__ == "__main__":
    sys.exit(main())
