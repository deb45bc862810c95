"""Splits that embedlab defines itself (not published with the dataset): today the SciFact dev slice.

    from embedlab.data.splits import load_scifact_dev, scifact_dev_query_ids
    dev = load_scifact_dev()            # RetrievalSet "scifact-dev": 100 held-out train queries, the full corpus
    ids = scifact_dev_query_ids()       # the same choice as query ids

BEIR's SciFact has train and test splits only. For checkpoint selection ``SCIFACT_DEV_SIZE`` judged train queries are
held out: a seeded permutation (``SCIFACT_DEV_SEED``) of the train query ids sorted numerically first, so the choice
does not depend on file order. Train queries whose text is also a test query are never chosen (selecting on them would
select on the test set). ``load_scifact_dev`` returns the slice with its train qrels over the full corpus; the
catalog serves it as split ``dev`` of ``scifact``, and the ``scifact-train`` converter (``embedlab.prep.convert``)
leaves these queries out of the training file, by text.

``normalise`` is the form in which texts are compared across splits (here, and by the converters' leakage guard).

It does not write files, download data or know about converters or the catalog: it reads the BEIR files under the data
root and nothing else, so both the catalog and the converters can import it.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from .. import settings
from ..errors import DataError
from .readers import BadRows
from .records import RetrievalSet
from .retrieval import load_beir, load_qrels, load_queries

SCIFACT = "retrieval/scifact"  # the dataset's folder under the data root
SCIFACT_DEV_SIZE = 100
SCIFACT_DEV_SEED = 0


def normalise(text: str) -> str:
    """Case-folded letters and digits only: the form in which texts are compared for leakage."""
    return re.sub(r"\W+", "", text.casefold())


def resolve_data_root(data_root: str | Path | None = None) -> Path:
    """``data_root``, else the configured data root (``EMBEDLAB_DATA``); DataError when it is not a folder."""
    root = Path(data_root) if data_root is not None else settings.data_root()
    if root is None or not root.is_dir():
        raise DataError("data root not found (set EMBEDLAB_DATA or pass data_root)", root or "EMBEDLAB_DATA")
    return root


def scifact_dev_query_ids(data_root: str | Path | None = None, size: int = SCIFACT_DEV_SIZE,
                          seed: int = SCIFACT_DEV_SEED, skip_bad_rows: bool = False) -> list[str]:
    """The train queries held out as a dev slice: a seeded permutation of the judged train query ids (sorted
    numerically first, so the choice does not depend on file order), first ``size``. Train queries whose text is
    also a test query are never chosen: selecting checkpoints on them would select on the test set."""
    folder = resolve_data_root(data_root) / SCIFACT
    queries = load_queries(folder / "queries.jsonl", skip_bad_rows)
    test = {normalise(queries[q]) for q in load_qrels(folder / "qrels" / "test.tsv", skip_bad_rows=skip_bad_rows)
            if q in queries}
    qrels = load_qrels(folder / "qrels" / "train.tsv", skip_bad_rows=skip_bad_rows)
    ids = sorted((q for q in qrels if normalise(queries.get(q, "")) not in test), key=lambda q: (len(q), q))
    order = np.random.default_rng(seed).permutation(len(ids))
    return sorted((ids[i] for i in order[:size]), key=lambda q: (len(q), q))


def load_scifact_dev(data_root: str | Path | None = None, size: int = SCIFACT_DEV_SIZE,
                     skip_bad_rows: bool | BadRows = False) -> RetrievalSet:
    """The SciFact dev slice (held-out train queries, their train qrels, the full corpus) for model selection.
    ``skip_bad_rows`` applies to the files read (skipped rows are counted once, by the train load)."""
    bad = BadRows.coerce(skip_bad_rows)
    train = load_beir(resolve_data_root(data_root) / SCIFACT, "train", name="scifact-dev", skip_bad_rows=bad)
    # The id choice reads the same files again: with the same policy, but its skips are already counted above.
    dev = [q for q in scifact_dev_query_ids(data_root, size, skip_bad_rows=bad.skip) if q in train.qrels]
    return RetrievalSet("scifact-dev", "dev", train.corpus, {q: train.queries[q] for q in dev},
                        {q: train.qrels[q] for q in dev})
