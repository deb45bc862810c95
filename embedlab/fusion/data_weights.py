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

import json
from pathlib import Path
from typing import Sequence

import torch

from ..errors import ConfigError, DataError


def pairs_from_file(path: str | Path, limit: int = 64) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"not JSON ({e.msg})", path, number) from None
            if "query" in row and row.get("pos"):
                pairs.append((row["query"], row["pos"][0]))
            elif {"sentence1", "sentence2", "score"} <= set(row):
                if float(row["score"]) >= 4.0:
                    pairs.append((row["sentence1"], row["sentence2"]))
            else:
                raise DataError("expected {query, pos: [...]} or {sentence1, sentence2, score}", path, number)
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
