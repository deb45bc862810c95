"""Embed a file of texts into a .npy or .parquet file, in chunks that survive an interruption (``embedlab encode``).

    encode_file(model, "corpus.jsonl", "corpus.npy", field="text")      # -> {"texts": n, "dim": d, "resumed": k}

Input: a ``.txt`` file (one text per line; every line is a text, an empty line an empty text) or a ``.jsonl`` file
(one JSON object per line; ``field`` holds the text, ``id_field`` an optional id). Output: ``.npy`` (float32
[n, dim], input order) or ``.parquet`` (columns ``id`` (the id field, else the line number) and ``embedding``, a
list of float32).

Resuming: the texts are embedded in chunks of ``chunk_size``; each finished chunk is written to
``<out>.partial/chunk-NNNNNN.npy`` next to a manifest that names everything that determines the vectors (the input
file's content hash, the model's hash including its backend and precision, max length, prompt, normalisation, chunk
size). Run the same command again after an interruption and the finished chunks are kept; a changed input, model or
setting starts over (the old chunks are removed: embedlab wrote them). The output file is written at the end,
atomically, and the partial folder removed. An existing output file is replaced only with ``overwrite``.

It does not shard across machines or stream inputs larger than memory (the texts are read at once; the vectors
are written chunk by chunk).
"""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..atomic import atomic_path, check_output_file, write_json
from ..errors import ConfigError, DataError
from ..outputs import LOCK_FILE, lock_folder

log = logging.getLogger("embedlab.encode")

FORMATS = (".npy", ".parquet")
MANIFEST = "manifest.json"


def read_texts(path: Path, field: str = "text", id_field: str | None = None) -> tuple[list[str], list[str]]:
    """(texts, ids) from a .txt or .jsonl file; a bad line is a DataError naming the file and line."""
    path = Path(path)
    if not path.is_file():
        raise DataError("input file not found", path)
    try:
        lines = path.read_text(encoding="utf-8").split("\n")
    except UnicodeDecodeError as e:
        raise DataError(f"not UTF-8 text (byte {e.start})", path) from None
    if lines and lines[-1] == "":
        lines.pop()  # the final newline ends the last line; it does not start an empty one
    if path.suffix == ".txt":
        return lines, [str(i) for i in range(1, len(lines) + 1)]
    if path.suffix != ".jsonl":
        raise ConfigError(f"input {path}: expected a .txt (one text per line) or .jsonl file")
    texts, ids = [], []
    for number, line in enumerate(lines, 1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"line {number}: not JSON ({e.msg})", path) from None
        if not isinstance(row, dict) or not isinstance(row.get(field), str):
            raise DataError(f"line {number}: expected an object with a text field {field!r}", path)
        texts.append(row[field])
        if id_field is not None:
            if id_field not in row or isinstance(row[id_field], (dict, list)):
                raise DataError(f"line {number}: no id field {id_field!r} (a string or number)", path)
            ids.append(str(row[id_field]))
        else:
            ids.append(str(number))
    return texts, ids


def check_output(out: Path, source: Path, overwrite: bool = False) -> None:
    """The output is a .npy or .parquet file embedlab may write (never the input; an existing file only with
    ``overwrite``)."""
    if Path(out).suffix not in FORMATS:
        raise ConfigError(f"output {out}: expected a .npy or .parquet file")
    check_output_file(out, overwrite=overwrite, inputs=[source])


def _file_hash(path: Path) -> str:
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def encode_file(model, source: str | Path, out: str | Path, *, field: str = "text", id_field: str | None = None,
                chunk_size: int = 4096, overwrite: bool = False, prompt_name: str | None = None,
                progress: Callable[[int, int], None] | None = None, **encode_kwargs: Any) -> dict[str, Any]:
    """Embed ``source`` into ``out`` (see the module docstring); ``encode_kwargs`` go to ``model.encode``
    (batch_size, max_length, token_budget, num_threads, autocast_dtype). Returns a summary."""
    source, out = Path(source), Path(out)
    if chunk_size < 1:
        raise ConfigError(f"chunk_size must be at least 1, got {chunk_size}")
    check_output(out, source, overwrite)
    texts, ids = read_texts(source, field, id_field)
    if not texts:
        raise DataError("no texts", source)
    max_length = encode_kwargs.get("max_length") or model.max_length
    autocast = encode_kwargs.get("autocast_dtype")
    manifest = {"written_by": "embedlab", "input": str(source.resolve()), "input_hash": _file_hash(source),
                "field": field, "texts": len(texts), "model": model.name, "model_hash": model.model_hash(),
                "backend": model.backend, "precision": model.precision, "autocast": str(autocast),
                "max_length": max_length, "prompt_name": prompt_name, "chunk_size": chunk_size}
    partial = out.with_name(out.name + ".partial")
    lock = _claim(partial)  # a second `embedlab encode` to the same output stops here with a message
    try:
        return _encode_chunks(model, texts, ids, out, partial, manifest, chunk_size, prompt_name, progress,
                              encode_kwargs)
    finally:
        lock.close()


def _encode_chunks(model, texts, ids, out, partial, manifest, chunk_size, prompt_name, progress, encode_kwargs):
    done = _resume(partial, manifest)
    n_chunks = (len(texts) + chunk_size - 1) // chunk_size
    encoded = sum(min(chunk_size, len(texts) - i * chunk_size) for i in done)
    if progress is not None:
        progress(encoded, len(texts))
    for i in range(n_chunks):
        if i in done:
            continue
        part = texts[i * chunk_size:(i + 1) * chunk_size]
        vectors = model.encode(part, prompt_name=prompt_name, **encode_kwargs)
        with atomic_path(partial / f"chunk-{i:06d}.npy") as tmp:
            with open(tmp, "wb") as f:
                np.save(f, vectors.astype(np.float32, copy=False))
        encoded += len(part)
        if progress is not None:
            progress(encoded, len(texts))
    vectors = np.concatenate([np.load(partial / f"chunk-{i:06d}.npy") for i in range(n_chunks)])
    if vectors.shape[0] != len(texts):  # a chunk file edited by hand: never a silently short output
        raise DataError(f"the chunks hold {vectors.shape[0]} vectors for {len(texts)} texts; delete the folder "
                        f"and run again", partial)
    _write(out, vectors, ids)
    shutil.rmtree(partial)
    log.info("%d texts -> %s (%d resumed)", len(texts), out, len(done))
    return {"texts": len(texts), "dim": int(vectors.shape[1]), "resumed_chunks": len(done), "chunks": n_chunks,
            "out": str(out), "backend": model.backend, "precision": model.precision}


def _claim(partial: Path):
    """The partial folder, created or embedlab's, locked for this process (returns the open lock file)."""
    if partial.exists() and not (partial / MANIFEST).is_file():
        if not partial.is_dir() or any(p.name != LOCK_FILE for p in partial.iterdir()):
            raise ConfigError(f"{partial} exists and was not written by embedlab encode; move it away")
    partial.mkdir(parents=True, exist_ok=True)
    return lock_folder(partial, "output", "embedlab encode")


def _resume(partial: Path, manifest: dict) -> set[int]:
    """The finished chunks of an earlier run with the same manifest; the chunks of an earlier run with another
    manifest are removed (embedlab wrote them); a folder embedlab did not write is refused. Runs under the lock."""
    try:
        old = json.loads((partial / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        old = {}
    except (OSError, ValueError):
        old = None
    if not isinstance(old, dict) or (old and old.get("written_by") != "embedlab"):
        raise ConfigError(f"{partial} exists and was not written by embedlab encode; move it away")
    chunks = {}
    for f in partial.glob("chunk-*.npy"):
        try:
            chunks[int(f.stem.split("-")[1])] = f
        except (IndexError, ValueError):
            continue
    if old == manifest:
        return set(chunks)
    if old:
        log.info("%s: another input, model or setting than this run; starting over", partial)
    for f in chunks.values():
        f.unlink()
    write_json(partial / MANIFEST, manifest)
    return set()


def _write(out: Path, vectors: np.ndarray, ids: list[str]) -> None:
    with atomic_path(out) as tmp:
        if out.suffix == ".npy":
            with open(tmp, "wb") as f:
                np.save(f, vectors)
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            dim = vectors.shape[1]
            column = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), pa.float32()), dim)
            pq.write_table(pa.table({"id": pa.array(ids, pa.string()), "embedding": column}), tmp)
