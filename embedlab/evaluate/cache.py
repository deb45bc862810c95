"""On-disk cache of corpus embeddings, keyed by everything that decides them: the model hash (weights, pooling,
normalisation, prompts, template, tokenizer, lower-casing: ``Embedder.model_hash``), max length, prompt, precision,
and a hash of the document ids *and texts* in order. The dataset name only labels the entry: a corpus whose files were
edited under the same name and ids is a different key, never served stale vectors.

A retrieval corpus is the expensive half of an evaluation (SciFact: 5183 documents at 256 tokens); queries are
cheap and never cached. Entries are a float32 .npy plus a JSON sidecar holding the document ids and the key, both
written atomically, so an interrupted run leaves no entry rather than a broken one. Disable with ``enabled=False``
(CLI: ``--no-cache``). This module does not decide *what* to embed: the caller passes a function that does.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..errors import ConfigError

from ..atomic import atomic_path, write_json
from ..settings import cache_dir

log = logging.getLogger("embedlab.cache")


class EmbeddingCache:
    def __init__(self, root: str | Path | None = None, enabled: bool = True):
        self.root = Path(root) if root is not None else cache_dir() / "embeddings"
        self.enabled = enabled
        if enabled:
            self._check_root()

    def _check_root(self) -> None:
        """ConfigError now (before any embedding) when the cache folder can never be written: it, or the nearest
        existing folder above it, is a file or not writable. Creates nothing."""
        probe = self.root
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        fix = "set EMBEDLAB_CACHE to a folder you can write, or turn the cache off (--no-cache)"
        if not probe.is_dir():
            raise ConfigError(f"embedding cache {self.root}: {probe} is a file, not a folder; {fix}")
        if not os.access(probe, os.W_OK | os.X_OK):
            raise ConfigError(f"embedding cache {self.root}: cannot write to {probe} (permission denied); {fix}")

    def _key(self, model_hash: str, dataset: str, max_length: int, prompt: str, precision: str, content: str) -> str:
        raw = json.dumps([model_hash, dataset, int(max_length), prompt, precision, content])
        return hashlib.sha1(raw.encode()).hexdigest()[:24]

    @staticmethod
    def content_hash(ids: Sequence[str], texts: Sequence[str]) -> str:
        """A hash of (id, text) in order: what the embeddings are of."""
        if len(ids) != len(texts):
            raise ValueError(f"{len(ids)} ids but {len(texts)} texts")
        h = hashlib.blake2b(digest_size=16)
        for doc_id, text in zip(ids, texts):
            h.update(json.dumps([doc_id, text]).encode())
            h.update(b"\n")
        return h.hexdigest()

    def get_or_compute(
        self,
        model_hash: str,
        dataset: str,
        max_length: int,
        ids: Sequence[str],
        compute: Callable[[], np.ndarray],
        prompt: str = "",
        precision: str = "fp32",
        *,
        texts: Sequence[str],
    ) -> np.ndarray:
        """The cached embeddings of ``texts`` (with ``ids``, in order) if present and valid, else ``compute()``
        (stored for next time). ``texts`` are exactly what ``compute`` embeds (before the prompt)."""
        if not self.enabled:
            return compute()
        # precision is part of the key: bf16-autocast embeddings must never be served to an fp32 evaluation. So are
        # the texts: ids alone would serve the old vectors of an edited document.
        content = self.content_hash(ids, texts)
        key = self._key(model_hash, dataset, max_length, prompt, precision, content)
        npy, meta = self.root / f"{key}.npy", self.root / f"{key}.json"
        if npy.is_file() and meta.is_file():
            try:
                info = json.loads(meta.read_text())
                emb = np.load(npy)
                if (isinstance(info, dict) and info.get("ids") == list(ids) and info.get("content") == content
                        and emb.ndim == 2 and emb.shape[0] == len(ids) and emb.dtype == np.float32
                        and bool(np.isfinite(emb).all())):
                    log.info("corpus embeddings for %s from cache %s", dataset, npy)
                    return emb
                log.warning("cache entry %s does not match the corpus; recomputing", npy)
            except (OSError, ValueError, EOFError) as e:  # EOFError: an emptied .npy
                log.warning("unreadable cache entry %s (%s); recomputing", npy, e)
        emb = np.ascontiguousarray(compute(), dtype=np.float32)
        try:
            with atomic_path(npy) as tmp:
                with open(tmp, "wb") as f:
                    np.save(f, emb)
            write_json(meta, {"model_hash": model_hash, "dataset": dataset, "max_length": int(max_length),
                              "prompt": prompt, "precision": precision, "content": content, "ids": list(ids)})
        except OSError as e:  # disk full, folder gone: the embeddings are right, only the cache entry is lost
            log.warning("could not write the cache entry %s (%s); continuing without it", npy, e.strerror or e)
        return emb
