"""`embedlab encode` / encode_file: a file of texts to .npy / .parquet equal to Embedder.encode, resumable after
an interruption (finished chunks kept, a changed setting starts over), and its refusals (bad lines, existing
outputs, a folder embedlab did not write)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from embedlab.errors import ConfigError, DataError
from embedlab.text import Embedder
from embedlab.text.encode_file import encode_file

TEXTS = [f"sentence number {i} about {'cats' if i % 2 else 'retrieval'}" for i in range(23)] + [""]


@pytest.fixture
def model(tiny_bert):
    backbone, tok = tiny_bert
    return Embedder(backbone, tok, max_length=32, name="tiny-bert")


def test_npy_and_parquet_equal_encode_and_resume(model, tmp_path):
    src = tmp_path / "texts.txt"
    src.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    ref = model.encode(TEXTS, batch_size=8)
    summary = encode_file(model, src, tmp_path / "out.npy", chunk_size=5, batch_size=8)
    assert summary["texts"] == 24 and summary["chunks"] == 5 and summary["resumed_chunks"] == 0
    assert np.abs(np.load(tmp_path / "out.npy") - ref).max() < 1e-6
    assert not (tmp_path / "out.npy.partial").exists()

    # interrupted after two chunks: the rerun embeds only the rest
    calls = []
    real = model.encode

    def failing(texts, **kw):
        calls.append(len(texts))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(texts, **kw)

    model.encode = failing
    with pytest.raises(KeyboardInterrupt):
        encode_file(model, src, tmp_path / "again.npy", chunk_size=5, batch_size=8)
    assert not (tmp_path / "again.npy").exists() and len(list((tmp_path / "again.npy.partial").glob("chunk-*"))) == 2
    calls.clear()
    model.encode = lambda texts, **kw: (calls.append(len(texts)), real(texts, **kw))[1]
    summary = encode_file(model, src, tmp_path / "again.npy", chunk_size=5, batch_size=8)
    assert summary["resumed_chunks"] == 2 and calls == [5, 5, 4]
    assert np.abs(np.load(tmp_path / "again.npy") - ref).max() < 1e-6
    # a different setting does not reuse chunks of another run
    model.encode = real
    (tmp_path / "again.npy").unlink()
    encode_file(model, src, tmp_path / "again.npy", chunk_size=5, batch_size=8, max_length=8)  # starts over
    assert np.abs(np.load(tmp_path / "again.npy") - model.encode(TEXTS, max_length=8)).max() < 1e-6

    rows = [{"_id": f"d{i}", "text": t} for i, t in enumerate(TEXTS)]
    jl = tmp_path / "docs.jsonl"
    jl.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    encode_file(model, jl, tmp_path / "docs.parquet", id_field="_id", chunk_size=10)
    import pyarrow.parquet as pq

    table = pq.read_table(tmp_path / "docs.parquet")
    assert table.column("id").to_pylist() == [r["_id"] for r in rows]
    assert np.abs(np.array(table.column("embedding").to_pylist(), dtype=np.float32) - ref).max() < 1e-6


def test_refusals(model, tmp_path):
    src = tmp_path / "t.jsonl"
    src.write_text('{"text": "a"}\n{"txt": "b"}\n', encoding="utf-8")
    with pytest.raises(DataError, match="line 2: expected an object with a text field 'text'"):
        encode_file(model, src, tmp_path / "o.npy")
    src.write_text('{"text": "a"}\nnot json\n', encoding="utf-8")
    with pytest.raises(DataError, match="line 2: not JSON"):
        encode_file(model, src, tmp_path / "o.npy")
    src.write_text('{"text": "a"}\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="expected a .npy or .parquet"):
        encode_file(model, src, tmp_path / "o.csv")
    (tmp_path / "mine.npy").write_bytes(b"user data")
    with pytest.raises(ConfigError, match="already exists"):
        encode_file(model, src, tmp_path / "mine.npy")
    assert (tmp_path / "mine.npy").read_bytes() == b"user data"
    with pytest.raises(ConfigError, match="expected a .npy or .parquet"):  # so never the input file either
        encode_file(model, src, src, overwrite=True)
    (tmp_path / "o.npy.partial").mkdir()
    (tmp_path / "o.npy.partial" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not written by embedlab"):
        encode_file(model, src, tmp_path / "o.npy")
    assert (tmp_path / "o.npy.partial" / "notes.txt").exists()

    # two runs to one output at once: the second stops with a message, the first is unharmed
    from embedlab.outputs import lock_folder

    busy = tmp_path / "busy.npy.partial"
    busy.mkdir()
    held = lock_folder(busy, "output", "embedlab encode")
    try:
        with pytest.raises(ConfigError, match="in use by another embedlab encode"):
            encode_file(model, src, tmp_path / "busy.npy")
    finally:
        held.close()
    encode_file(model, src, tmp_path / "busy.npy")  # free again: it runs
    assert np.load(tmp_path / "busy.npy").shape == (1, 32) and not busy.exists()


def test_the_command(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from embedlab.cli import app

    src = tmp_path / "t.txt"
    src.write_text("a first text\na second text\n", encoding="utf-8")
    r = CliRunner().invoke(app, ["encode", str(src), "--model", "sentence-transformers/all-MiniLM-L6-v2", "--out",
                                 str(tmp_path / "e.npy"), "--no-progress"])
    assert r.exit_code == 0, r.output
    said = " ".join(r.output.split())
    assert "2 texts x 384" in said and "(torch fp32)" in said
    assert np.load(tmp_path / "e.npy").shape == (2, 384)
    r = CliRunner().invoke(app, ["encode", str(src), "--model", "sentence-transformers/all-MiniLM-L6-v2", "--out",
                                 str(tmp_path / "e.npy"), "--no-progress"])
    assert isinstance(r.exception, ConfigError) and "already exists" in str(r.exception)
