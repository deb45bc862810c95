"""Data-driven model weights for fusion, LM-Cocktail style: w = softmax(−L / t) over the checkpoints, where L_k is
checkpoint k's contrastive loss on a few dev examples.

    weights = cocktail_weights(["runs/a/final", "runs/b/final"], pairs, temperature=0.1)
    fuse(models, "linear", weights=weights, ...)        # or any other method

L_k is the in-batch InfoNCE (τ = 0.05, cosine) of the (query, positive) pairs — each query against every positive of
the sample — computed without gradients. Lower loss, larger weight; t → 0 picks the best checkpoint, t → ∞ the
uniform soup. The examples must come from a dev split (never test). ``pairs_from_file`` reads them from FlagEmbedding
JSONL (query + first positive) or STS JSONL (pairs with a scaled score ≥ 0.8, i.e. 4/5). It does not merge.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from ..data.readers import BadRow, BadRows, parse_score, read_jsonl, require_field, require_text
from ..errors import ConfigError, DataError


def pairs_from_file(path: str | Path, limit: int = 64) -> list[tuple[str, str]]:
    """Up to ``limit`` (query, positive) pairs from FlagEmbedding or STS JSONL, read lazily with the project's readers
    (``data.readers``): a missing file, a folder, a device or pipe (``/dev/zero``), bytes that are not UTF-8, a line
    that is not a JSON object or a row with a wrong field is a DataError naming the file and line."""
    bad = BadRows()  # skip=False: the first bad row raises DataError(file, line)
    pairs: list[tuple[str, str]] = []
    for number, row in read_jsonl(path, bad):
        with bad.guard(path, number):
            if "query" in row:
                query = require_text(row["query"], "query")
                pos = require_field(row, "pos")
                if not isinstance(pos, list):
                    raise BadRow(f"pos must be a list of positive texts, got {type(pos).__name__}")
                if not pos:
                    raise BadRow("pos is empty (expected at least one positive text)")
                pairs.append((query, require_text(pos[0], "pos[0]")))
            elif {"sentence1", "sentence2", "score"} <= set(row):
                a, b = require_text(row["sentence1"], "sentence1"), require_text(row["sentence2"], "sentence2")
                if parse_score(row["score"]) >= 4.0:
                    pairs.append((a, b))
            else:
                raise BadRow(f"expected {{query, pos: [...]}} or {{sentence1, sentence2, score}}, got fields "
                             f"{', '.join(sorted(row)) or 'none'}")
        if len(pairs) >= limit:
            break
    if len(pairs) < 2:
        raise DataError(f"need at least 2 example pairs for data-driven weights, found {len(pairs)}", path)
    return pairs


def model_loss(model, pairs: Sequence[tuple[str, str]], tau: float = 0.05) -> float:
    q = model.encode([a for a, _ in pairs], convert_to="torch", normalize=True)
    d = model.encode([b for _, b in pairs], convert_to="torch", normalize=True)
    logits = q @ d.T / tau
    return float(torch.nn.functional.cross_entropy(logits, torch.arange(len(pairs))))


def cocktail_weights(models: Sequence[str | Path], pairs: Sequence[tuple[str, str]],
                     temperature: float = 0.1) -> tuple[list[float], list[float]]:
    """-> (weights summing to 1, each model's loss)."""
    from ..text import Embedder

    if not temperature > 0:
        raise ConfigError(f"data-driven weights: temperature must be > 0, got {temperature}")
    losses = [model_loss(Embedder.load(str(m)), pairs) for m in models]
    w = torch.softmax(-torch.tensor(losses, dtype=torch.float64) / temperature, dim=0)
    return w.tolist(), losses
