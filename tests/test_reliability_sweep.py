"""A hostile-user sweep of the whole surface (CLI, Python API, hostile files, interrupts, concurrency): every test
here failed (traceback, wrong exit status, silent wrong result, data loss or a half-done run) on the code before the
sweep's fixes. Tiny models and tiny data only.

The CLI is driven in-process through ``embedlab.cli.main`` (its real error handling: exit 2 with one line), with the
environment variables it sets restored afterwards.
"""
from __future__ import annotations

import json
import math
import multiprocessing
import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from embedlab.errors import ConfigError, DataError, ModelError
from embedlab.text import Embedder

from tiny_training import make_train_root, recipe_file

OWNER_MARKER = ".embedlab-output"
_PROGRESS_VARS = ("TQDM_DISABLE", "HF_HUB_DISABLE_PROGRESS_BARS", "HF_DATASETS_DISABLE_PROGRESS_BARS")


def _main(args, monkeypatch, capsys, cwd=None) -> tuple[int, str]:
    """Run ``embedlab ARGS`` in-process through main(); (exit status, stdout + stderr)."""
    from embedlab import cli

    for var in _PROGRESS_VARS:  # --no-progress sets them: restore them after the test
        monkeypatch.setenv(var, os.environ.get(var, "0"))
    monkeypatch.setenv("COLUMNS", "250")
    if cwd is not None:
        monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "argv", ["embedlab", *map(str, args)])
    monkeypatch.setattr(cli._common, "_interrupt_note", "")
    capsys.readouterr()
    try:
        cli.main()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def _one_error_line(code: int, text: str) -> str:
    assert code == 2, text
    assert "Traceback" not in text, text
    lines = [ln for ln in text.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, text
    return lines[0]


def _sts_root(root: Path, n: int = 8) -> Path:
    (root / "sts" / "stsb").mkdir(parents=True, exist_ok=True)
    lines = "".join(f"main-captions\tMSRvid\t2012test\t{i:04d}\t{i % 6:.3f}\tsentence number {i} about a cat.\t"
                    f"another sentence, number {i}, about a dog.\n" for i in range(n))
    for split in ("test", "dev", "train"):
        (root / "sts" / "stsb" / f"sts-{split}.csv").write_text(lines)
    return root


def _scifact_root(root: Path, n: int = 8) -> Path:
    sf = root / "retrieval" / "scifact"
    (sf / "qrels").mkdir(parents=True, exist_ok=True)
    with open(sf / "corpus.jsonl", "w") as f:
        for i in range(2 * n):
            f.write(json.dumps({"_id": f"d{i}", "title": f"title {i}",
                                "text": f"document {i} on topic {i % 5}"}) + "\n")
    with open(sf / "queries.jsonl", "w") as f:
        for i in range(n):
            f.write(json.dumps({"_id": f"q{i}", "text": f"what about topic {i % 5} number {i}"}) + "\n")
    for split in ("test", "train"):
        (sf / "qrels" / f"{split}.tsv").write_text("query-id\tcorpus-id\tscore\n" +
                                                   "".join(f"q{i}\td{i}\t1\n" for i in range(n)))
    return root


@pytest.fixture(autouse=True)
def _in_tmp_path(tmp_path, monkeypatch):
    """Relative defaults (eval's --out results, the results store) land in tmp_path, never in the checkout."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def tiny_model(tmp_path, tiny_bert):
    backbone, tok = tiny_bert
    return Embedder(backbone, tok, max_length=32, name="tiny").save(tmp_path / "tiny-model")


@pytest.fixture
def eval_env(tmp_path, monkeypatch):
    """A data root with tiny STS-B and SciFact copies, and a private embedding cache."""
    root = _scifact_root(_sts_root(tmp_path / "data"))
    monkeypatch.setenv("EMBEDLAB_DATA", str(root))
    monkeypatch.setenv("EMBEDLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return root


# ------------------------------------------------------------------------------------------------ eval / results

def test_eval_of_the_working_directory_as_model(tmp_path, tiny_model, eval_env, monkeypatch, capsys):
    """`embedlab eval -m .` inside a model folder evaluated the task, then died on the JSON folder name '.'."""
    code, text = _main(["eval", "-m", ".", "-t", "stsb", "--db", tmp_path / "r.sqlite", "--out", tmp_path / "json",
                        "--no-progress"], monkeypatch, capsys, cwd=tiny_model)
    assert code == 0 and "Traceback" not in text, text
    (folder,) = (tmp_path / "json").iterdir()
    assert folder.name == str(Path(tiny_model).resolve()).replace("/", "__")


def test_evaluate_refuses_an_unusable_label_or_out_dir_before_any_work(tmp_path, tiny_bert, eval_env):
    from embedlab.evaluate.runner import evaluate

    model = Embedder(*tiny_bert, max_length=32)
    with pytest.raises(ConfigError, match="cannot name the results folder"):
        evaluate(model, "stsb", out_dir=tmp_path / "json", model_label="..")
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        evaluate(model, "stsb", out_dir=tmp_path / "afile")
    assert not (tmp_path / "json").exists()


def test_evaluate_takes_settings_as_a_dict_and_writes_no_store(tmp_path, tiny_bert, eval_env, monkeypatch):
    from embedlab.evaluate.runner import evaluate

    monkeypatch.chdir(tmp_path)
    model = Embedder(*tiny_bert, max_length=32)
    assert evaluate(model, "stsb", settings={"batch_size": 4})[0].task.name == "stsb"
    assert not list(tmp_path.rglob("*.sqlite"))  # one results path: evaluation returns, callers store
    with pytest.raises(TypeError, match="store"):
        evaluate(model, "stsb", store=str(tmp_path / "r.sqlite"))
    with pytest.raises(ConfigError, match="no tasks"):
        evaluate(model, None)


def test_huge_relevance_grade_is_a_data_error_not_a_pytrec_crash(tmp_path, tiny_bert, eval_env):
    """A grade past a C int crashed pytrec_eval with SystemError, after the corpus was embedded."""
    from embedlab.evaluate.runner import evaluate

    with open(eval_env / "retrieval" / "scifact" / "qrels" / "test.tsv", "a") as f:
        f.write("q1\td2\t99999999999999999999999\n")
    with pytest.raises(DataError, match=r"test\.tsv:10: score 99999999999999999999999 is out of range"):
        evaluate(Embedder(*tiny_bert, max_length=32), "scifact")


def test_a_hub_typo_leaves_no_new_results_store(tmp_path, eval_env, monkeypatch, capsys):
    db = tmp_path / "new.sqlite"
    code, text = _main(["eval", "-m", "org/no-such-model", "-t", "stsb", "--db", db, "--no-progress"], monkeypatch,
                       capsys)
    assert "cannot load model 'org/no-such-model'" in _one_error_line(code, text)
    assert not db.exists()


def test_an_empty_model_name_says_so(tmp_path, eval_env, monkeypatch, capsys):
    code, text = _main(["eval", "-m", "", "-t", "stsb", "--db", tmp_path / "r.sqlite"], monkeypatch, capsys)
    assert "no model given" in _one_error_line(code, text)
    with pytest.raises(ModelError, match="no model given"):
        Embedder.load(None)


def test_a_results_table_of_another_schema_is_refused_at_open(tmp_path, eval_env, tiny_model, monkeypatch, capsys):
    """Reading crashed with an SQLAlchemy traceback; eval crashed the same way after evaluating."""
    import sqlite3

    db = tmp_path / "other.sqlite"
    with sqlite3.connect(db) as c:
        c.execute("create table results (id integer primary key, foo text)")
    for args in (["results", "--db", db], ["eval", "-m", tiny_model, "-t", "stsb", "--db", db, "--out",
                                           tmp_path / "json", "--no-progress"]):
        code, text = _main(args, monkeypatch, capsys)
        assert "its results table lacks the column(s)" in _one_error_line(code, text)
    assert not (tmp_path / "json").exists()


def _open_store(args):
    path, start = args
    while time.time() < start:
        pass
    from embedlab.bench.store import ResultsStore

    try:
        store = ResultsStore(path)
        store.add_run([{"model": "m", "task": "t", "task_type": "sts", "dataset": "d", "split": "test",
                        "metric": "main_score", "value": 1.0}])
        return "ok"
    except Exception as e:  # noqa: BLE001 - reported to the parent
        return f"{type(e).__name__}: {e}"


def test_processes_creating_a_new_store_at_once_all_succeed(tmp_path):
    """Two evaluations started together into a new SQLite store: the loser of CREATE TABLE failed with
    'table results already exists'."""
    import embedlab.bench.store  # noqa: F401 - imported before forking

    for trial in range(2):
        path = str(tmp_path / f"race{trial}.sqlite")
        start = time.time() + 1.5
        with multiprocessing.get_context("fork").Pool(6) as pool:
            outcome = pool.map(_open_store, [(path, start)] * 6)
        assert outcome == ["ok"] * 6, outcome


# ------------------------------------------------------------------------------------------------ embedding cache

def test_damaged_cache_entries_are_recomputed(tmp_path, tiny_bert, eval_env):
    """An emptied .npy raised EOFError (the CLI printed 'Aborted!', exit 1); a sidecar that is a JSON list raised
    AttributeError."""
    from embedlab.evaluate.cache import EmbeddingCache
    from embedlab.evaluate.runner import evaluate

    model = Embedder(*tiny_bert, max_length=32)
    cache = EmbeddingCache(tmp_path / "c")
    first = evaluate(model, "scifact", cache=cache)[0].main_score
    (npy,) = (tmp_path / "c").glob("*.npy")
    (meta,) = (tmp_path / "c").glob("*.json")
    npy.write_bytes(b"")
    assert evaluate(model, "scifact", cache=cache)[0].main_score == first
    meta.write_text("[1]")
    assert evaluate(model, "scifact", cache=cache)[0].main_score == first
    assert np.load(npy).shape[0] == 16


def test_a_cache_folder_that_is_a_file_fails_before_any_work(tmp_path, tiny_model, eval_env, monkeypatch, capsys):
    (tmp_path / "afile").write_text("x")
    monkeypatch.setenv("EMBEDLAB_CACHE", str(tmp_path / "afile"))
    code, text = _main(["eval", "-m", tiny_model, "-t", "scifact", "--db", tmp_path / "r.sqlite", "--out",
                        tmp_path / "json", "--no-progress"], monkeypatch, capsys)
    assert "embedding cache" in _one_error_line(code, text) and "--no-cache" in text
    assert not (tmp_path / "json").exists()
    code, text = _main(["eval", "-m", tiny_model, "-t", "scifact", "--db", tmp_path / "r.sqlite", "--no-cache",
                        "--no-progress"], monkeypatch, capsys)
    assert code == 0, text


# ------------------------------------------------------------------------------------------------ model folders

def _edit(folder: Path, name: str, value) -> None:
    (folder / name).write_text(json.dumps(value) if not isinstance(value, str) else value)


@pytest.mark.parametrize("name, value, message", [
    ("embedlab.json", {"pooling": {"mode": "mean", "bogus": 1}}, "unknown key 'bogus'"),
    ("embedlab.json", {"pooling": "mean"}, "must be an object"),
    ("embedlab.json", {"pooling": {"mode": "nope"}}, "embedlab.json: unknown pooling mode"),
    ("sentence_bert_config.json", {"max_seq_length": "abc"}, "max_seq_length must be an integer >= 1"),
    ("sentence_bert_config.json", {"max_seq_length": -5}, "max_seq_length must be an integer >= 1"),
    ("config_sentence_transformers.json", {"prompts": ["a"]}, "prompts"),
    ("config_sentence_transformers.json", {"prompts": {"query": 5}}, "prompts"),
    ("config_sentence_transformers.json", {"prompts": {}, "default_prompt_name": "query"}, "default_prompt_name"),
    ("config_sentence_transformers.json", {"similarity_fn_name": "bogus"}, "similarity_fn_name 'bogus'"),
], ids=["pooling-key", "pooling-str", "pooling-mode", "maxlen-str", "maxlen-neg", "prompts-list", "prompt-int",
        "default-prompt", "similarity"])
def test_malformed_model_settings_are_load_errors_naming_the_file(tiny_model, name, value, message):
    """Each one was a TypeError / ValueError / AttributeError / OverflowError at load or at the first encode, or (the
    similarity) a ValueError in the STS scorer after the data had been embedded."""
    _edit(Path(tiny_model), name, value)
    with pytest.raises(ModelError, match=message) as info:
        Embedder.load(str(tiny_model)).encode(["a b c"])
    assert name in str(info.value)


def test_a_model_with_nan_weights_is_refused_at_load_and_at_save(tmp_path, tiny_bert, tiny_model):
    from safetensors.torch import load_file, save_file

    weights = load_file(str(Path(tiny_model) / "model.safetensors"))
    weights = {k: v.fill_(float("nan")) if v.is_floating_point() else v for k, v in weights.items()}
    save_file(weights, str(Path(tiny_model) / "model.safetensors"))
    with pytest.raises(ModelError, match="NaN or infinite"):
        Embedder.load(str(tiny_model))
    backbone, tok = tiny_bert
    with torch.no_grad():
        backbone.encoder.layer[0].output.dense.weight[0, 0] = float("inf")
    with pytest.raises(ModelError, match="NaN or infinite"):
        Embedder(backbone, tok).save(tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_diverging_training_does_not_save_a_nan_model(tmp_path, tiny_bert):
    """lr=1e30 without clipping: the trainer wrote NaN checkpoints and a NaN final model, exit 0."""
    from embedlab.config import load_recipe
    from embedlab.train import train_recipe

    make_train_root(tmp_path, tiny_bert)
    recipe = load_recipe(recipe_file(tmp_path), ["train.lr=1.0e+30", "train.grad_clip=null"])
    # the trainer now stops at the first non-finite loss; the save guard (tested on its own below) is the backstop
    with pytest.raises((ConfigError, ModelError), match="diverged|NaN or infinite"):
        train_recipe(recipe, show_progress=False)
    assert not (tmp_path / "out" / "final").exists()
    assert not list((tmp_path / "out").glob("checkpoints/step-*"))


# ------------------------------------------------------------------------------------------------ Python API

def test_encode_and_load_refuse_bad_arguments(tiny_bert, tiny_model):
    model = Embedder(*tiny_bert, max_length=32)
    for texts in (["a", 5], [None], [b"abc"]):
        with pytest.raises(TypeError, match="item"):
            model.encode(texts)
    for kwargs in ({"num_threads": 0}, {"num_threads": -1}, {"autocast_dtype": "bf16"}):
        with pytest.raises(ConfigError):
            model.encode(["a"], **kwargs)
    for kwargs in ({"max_length": 0}, {"max_length": -3}, {"device": "no-such-device"}):
        with pytest.raises(ConfigError):
            Embedder.load(str(tiny_model), **kwargs)


def test_recipe_output_dir_placeholders_and_override_yaml_are_checked():
    from embedlab.config import Recipe, load_recipe  # noqa: F401

    base = {"name": "t", "data": {"sources": [{"name": "a", "path": "a.jsonl", "task": "ir"}]}}
    for output_dir in ("runs/{nope}", "runs/{", "runs/{0}"):
        with pytest.raises(Exception, match="may use only the placeholder"):
            Recipe.model_validate({**base, "output_dir": output_dir})
    assert Recipe.model_validate({**base, "output_dir": "runs/{{x}}/{name}"}).resolved_output_dir() == Path(
        "runs/{x}/t")
    from embedlab.config import apply_overrides

    with pytest.raises(ConfigError, match="not valid YAML"):
        apply_overrides({}, ["train.lr=[1,"])


def test_train_cli_with_a_bad_output_dir_placeholder(tmp_path, tiny_bert, monkeypatch, capsys):
    make_train_root(tmp_path, tiny_bert)
    code, text = _main(["train", recipe_file(tmp_path), f"output_dir={tmp_path}/{{nope}}"], monkeypatch, capsys)
    assert "may use only the placeholder {name}" in _one_error_line(code, text)


# ------------------------------------------------------------------------------------------------ mining

def test_mining_cache_dir_that_is_a_file_fails_before_the_model_loads(tmp_path, tiny_bert):
    from embedlab.prep.mining import mine_file

    make_train_root(tmp_path, tiny_bert)
    ir = tmp_path / "train-data" / "ir.jsonl"
    with pytest.raises(ConfigError, match="is a file, not a folder"):
        mine_file(ir, tmp_path / "out.jsonl", str(tmp_path / "no-such-model"), cache_dir=ir / "sub",
                  show_progress=False)


def test_mining_recomputes_damaged_work_files(tmp_path, tiny_bert):
    """A cut-short corpus.npy raised ValueError, an emptied one EOFError ('Aborted!' at the CLI), a chunk file holding
    a JSON list AttributeError."""
    from embedlab.prep.mining import mine_file

    make_train_root(tmp_path, tiny_bert)
    ir, model = tmp_path / "train-data" / "ir.jsonl", str(tmp_path / "tiny-model")
    kw = dict(rank_range=(0, 5), n_negatives=2, cache_dir=tmp_path / "work", show_progress=False)
    mine_file(ir, tmp_path / "ref.jsonl", model, **kw)
    (npy,) = (tmp_path / "work").rglob("corpus.npy")
    (chunk,) = (tmp_path / "work").rglob("chunk-*.json")
    for i, damage in enumerate([lambda: npy.write_bytes(npy.read_bytes()[:100]), lambda: npy.write_bytes(b""),
                                lambda: chunk.write_text("[1]"), lambda: chunk.write_text('{"negatives": [[99999]]}')]):
        damage()
        mine_file(ir, tmp_path / f"again{i}.jsonl", model, **kw)
        assert (tmp_path / f"again{i}.jsonl").read_text() == (tmp_path / "ref.jsonl").read_text()
    from embedlab.data.records import IRExample
    from embedlab.prep.mining import mine_hard_negatives

    with pytest.raises(ConfigError, match="seed"):
        mine_hard_negatives([IRExample("q", ("p",))], ["a", "b"], Embedder.load(model), rank_range=(0, 1), seed=-1,
                            show_progress=False)


def test_an_eof_error_inside_a_command_is_not_reported_as_aborted(monkeypatch, capsys, tmp_path):
    """click turns any EOFError into 'Aborted!' with exit 1, hiding the bug behind it."""
    import embedlab.prep.mining

    def broken(*args, **kwargs):
        raise EOFError("No data left in file")

    monkeypatch.setattr(embedlab.prep.mining, "mine_file", broken)
    (tmp_path / "in.jsonl").write_text("{}\n")
    with pytest.raises(EOFError, match="No data left"):
        _main(["mine", tmp_path / "in.jsonl", "--out", tmp_path / "o.jsonl"], monkeypatch, capsys)


# ------------------------------------------------------------------------------------------------ fuse / convert / demo

def test_fuse_param_with_bad_yaml_is_one_line(tmp_path, tiny_model, monkeypatch, capsys):
    code, text = _main(["fuse", "--models", tiny_model, tiny_model, "--method", "linear", "--out", tmp_path / "f",
                        "--param", "normalize=["], monkeypatch, capsys)
    assert "--param 'normalize=['" in _one_error_line(code, text)


def test_convert_never_overwrites_a_users_folder(tmp_path, monkeypatch, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "manifest.json").write_text("my notes")
    (mine / "stsb-train.jsonl").write_text("my data")
    code, text = _main(["convert", "--out", mine, "--names", "stsb-train"], monkeypatch, capsys)
    assert "did not write" in _one_error_line(code, text)
    assert (mine / "manifest.json").read_text() == "my notes" and (mine / "stsb-train.jsonl").read_text() == "my data"
    (tmp_path / "afile").write_text("x")
    code, text = _main(["convert", "--out", tmp_path / "afile", "--names", "stsb-train"], monkeypatch, capsys)
    assert "is a file" in _one_error_line(code, text)


def test_convert_output_is_marked_and_an_earlier_one_is_accepted(tmp_path, monkeypatch, capsys, data_root):
    monkeypatch.setenv("EMBEDLAB_DATA", str(data_root))
    out = tmp_path / "train-data"
    assert _main(["convert", "--out", out, "--names", "stsb-train"], monkeypatch, capsys)[0] == 0
    assert (out / OWNER_MARKER).is_file()
    (out / OWNER_MARKER).unlink()  # as written by an older embedlab: its manifest identifies it
    assert _main(["convert", "--out", out, "--names", "stsb-train"], monkeypatch, capsys)[0] == 0


def test_demo_never_overwrites_a_users_report(tmp_path):
    from embedlab.demo import run_demo

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "report.md").write_text("my report")
    calls = []
    with pytest.raises(ConfigError, match="did not write"):
        run_demo(mine, lambda *a: calls.append(a), train=False, tasks="stsb", log=lambda m: None)
    assert calls == [] and (mine / "report.md").read_text() == "my report"
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        run_demo(tmp_path / "afile", lambda *a: calls.append(a), train=False, tasks="stsb", log=lambda m: None)
    assert calls == []


# ------------------------------------------------------------------------------------------------ special files

def _fifo_with_writer(path: Path, text: str):
    """A named pipe that a background thread fills once (so old code reading it does not block forever)."""
    import threading

    os.mkfifo(path)

    def write():
        try:
            fd = os.open(path, os.O_WRONLY)  # blocks until a reader opens the pipe
        except OSError:
            return
        with os.fdopen(fd, "w") as f:
            f.write(text)

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    return thread


def test_a_recipe_that_is_a_device_or_a_pipe_is_refused_unread(tmp_path):
    """/dev/zero was read until a MemoryError; a named pipe blocked forever (here one is written once, so the old
    code fails on the content instead of blocking; /dev/zero itself is not read here, it would fill the memory)."""
    from embedlab.config import load_recipe

    pipe = tmp_path / "recipe.yaml"
    thread = _fifo_with_writer(pipe, "name: t\n")
    with pytest.raises(ConfigError, match="not a regular file"):
        load_recipe(pipe)
    with open(pipe) as f:  # release the writer
        f.read()
    thread.join(5)


def test_mining_never_replaces_a_pipe_or_device_with_a_file(tmp_path, tiny_bert):
    """`embedlab mine ... --out /dev/null --overwrite` (as root) renamed a regular file over /dev/null."""
    import stat

    from embedlab.prep.mining import mine_file

    make_train_root(tmp_path, tiny_bert)
    pipe = tmp_path / "out.jsonl"
    os.mkfifo(pipe)
    with pytest.raises(ConfigError, match="not a regular file"):
        mine_file(tmp_path / "train-data" / "ir.jsonl", pipe, str(tmp_path / "tiny-model"), rank_range=(0, 5),
                  overwrite=True, show_progress=False)
    assert stat.S_ISFIFO(os.stat(pipe).st_mode)


# ------------------------------------------------------------------------------------------------ SIGTERM

def test_sigterm_during_training_is_handled_like_ctrl_c(tmp_path, tiny_bert):
    """SIGTERM (kill, a scheduler) killed the process outright: no line saying what was kept, status -15. Now: one
    line, status 143, and a rerun resumes from the checkpoint."""
    import signal
    import subprocess

    make_train_root(tmp_path, tiny_bert)
    path = Path(recipe_file(tmp_path))
    path.write_text(path.read_text().replace("max_steps: 6, save_every: 3", "max_steps: 100000, save_every: 2"))
    out_dir = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "embedlab", "train", str(path), "--no-progress"], cwd=tmp_path,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while not list(out_dir.glob("checkpoints/step-*")):
            assert proc.poll() is None and time.monotonic() < deadline, "no checkpoint before the deadline"
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, out + err
    assert "Traceback" not in out + err
    lines = [ln for ln in (out + err).splitlines() if ln.startswith("interrupted")]
    assert len(lines) == 1 and "resume" in lines[0], out + err
    # every visible checkpoint is complete (a staging ".step-*.partial" may remain; the next run removes it)
    assert all((c / "trainer_state.pt").is_file() for c in out_dir.glob("checkpoints/step-*"))


# ------------------------------------------------------------------------------------------------ numbers

def test_thread_counts_beyond_1024_are_refused(tiny_bert, monkeypatch, capsys):
    """--threads 100000 crashed torch's thread pool with a segmentation fault (status 139)."""
    from embedlab.evaluate.runner import EvalSettings

    with pytest.raises(ConfigError, match="at most 1024"):
        EvalSettings(num_threads=100000)
    with pytest.raises(ConfigError, match="at most 1024"):
        Embedder(*tiny_bert, max_length=32).encode(["a"], num_threads=100000)
    for command in (["eval", "-m", "x"], ["mine", "in.jsonl", "--out", "o.jsonl"]):
        code, text = _main([*command, "--threads", "100000"], monkeypatch, capsys)
        assert code == 2 and "--threads" in text and "Traceback" not in text, text


def test_geometry_without_positive_pairs_is_nan_without_numpy_warnings():
    import warnings

    from embedlab.evaluate.geometry import alignment, sentence_geometry

    empty = np.zeros((0, 4), dtype=np.float32)
    sentences = np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "Mean of empty slice" reached the user's terminal
        assert math.isnan(alignment(empty, empty))
        scores = sentence_geometry(empty, empty, sentences)
    assert math.isnan(scores["alignment"]) and math.isnan(scores["distance_ratio"])
    assert math.isfinite(scores["uniformity"])


# ------------------------------------------------------------------------------------------------ stdout / stderr

def test_errors_go_to_stderr_so_a_redirected_csv_stays_clean(tmp_path, monkeypatch, capsys):
    """`embedlab results --format csv > out.csv` put the error line into out.csv and showed nothing."""
    from embedlab import cli

    for var in _PROGRESS_VARS:
        monkeypatch.setenv(var, os.environ.get(var, "0"))
    monkeypatch.setattr(sys, "argv", ["embedlab", "results", "--db", str(tmp_path / "none.sqlite"), "--format", "csv"])
    with pytest.raises(SystemExit) as info:
        cli.main()
    captured = capsys.readouterr()
    assert info.value.code == 2 and captured.out == ""
    assert captured.err.startswith("error: no results store")


def test_a_full_disk_is_one_line_not_a_traceback(tmp_path, monkeypatch, capsys):
    """Any OSError of the machine (here: writing to /dev/full, as a full disk does) was a traceback with status 1."""
    import errno

    from embedlab.bench.store import ResultsStore

    db = tmp_path / "r.sqlite"
    ResultsStore(str(db)).add_run([{"model": "m", "task": "t", "task_type": "sts", "dataset": "d", "split": "test",
                                    "metric": "main_score", "value": 1.0}])

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ResultsStore, "to_csv", staticmethod(full))
    code, text = _main(["results", "--db", db, "--format", "csv"], monkeypatch, capsys)
    assert "No space left on device" in _one_error_line(code, text)


def test_main_gives_back_the_callers_sigterm_handler(tmp_path, monkeypatch, capsys):
    """main() in-process left its SIGTERM handler installed: a pool of forked workers in the caller then hung."""
    import signal

    before = signal.getsignal(signal.SIGTERM)
    _main(["results", "--db", tmp_path / "none.sqlite"], monkeypatch, capsys)
    assert signal.getsignal(signal.SIGTERM) is before


def test_unknown_dev_tasks_are_refused_with_the_recipe(tmp_path, tiny_bert):
    """train.select_on=[nope] trained until the first dev evaluation, then stopped (recipe.json and a log written)."""
    from embedlab.config import load_recipe

    make_train_root(tmp_path, tiny_bert)
    with pytest.raises(ConfigError, match="train.select_on.*unknown task"):
        load_recipe(recipe_file(tmp_path), ["train.select_on=[nope]", "train.eval_every=1"])
