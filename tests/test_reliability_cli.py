"""The command line's contract with shells and scripts, driven through the real CLI (``python -m embedlab``):

Ctrl-C exits 130 with one line saying what was kept; usage errors print click's usage message and exit 2 (no
traceback); user text ([draft] in a path) is printed literally; ``results`` survives NULL values, names its
database and never creates one; a bad --db or --out fails before the model loads; out-of-range numbers are usage
errors; --limit reaches the evaluation settings; --no-progress draws no progress bar.

Every test runs the CLI in a subprocess in tmp_path (the default results store and --out are relative to the
working directory) on tiny data, so none encodes a real dataset.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import embedlab
from embedlab.bench.store import ResultsStore
from embedlab.errors import ConfigError

from terminal import sigint_as_at_a_terminal
from tiny_training import make_train_root, recipe_file

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
TQDM_MARKS = ("it/s", "s/it", "%|")  # what every tqdm bar writes


def _env(**extra) -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1",
            "COLUMNS": "250", **extra}


def _cli(*args, cwd, env=None, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "embedlab", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env or _env(), timeout=timeout)


def _sts_root(tmp_path: Path, n_pairs: int = 6) -> Path:
    """A data root whose STS-B splits hold ``n_pairs`` distinct pairs (only tasks on stsb work on it)."""
    root = tmp_path / "data"
    (root / "sts" / "stsb").mkdir(parents=True)
    lines = "".join(f"main-captions\tMSRvid\t2012test\t{i:04d}\t{i % 6:.3f}\tsentence number {i} about a cat.\t"
                    f"another sentence, number {i}, about a dog.\n" for i in range(n_pairs))
    for split in ("test", "dev", "train"):
        (root / "sts" / "stsb" / f"sts-{split}.csv").write_text(lines)
    return root


def _no_traceback(r) -> None:
    assert "Traceback" not in r.stdout + r.stderr, r.stdout + r.stderr


def _wait_for(predicate, timeout: float, proc: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            pytest.fail(f"the command ended (status {proc.returncode}) before {what}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.2)


def _interrupt(cmd: list, cwd: Path, env: dict, ready, what: str) -> tuple[int, str, str]:
    """Start ``embedlab cmd``, send SIGINT (Ctrl-C) once ``ready(stderr_so_far)`` holds; status, stdout, stderr."""
    out_file, err_file = cwd / "stdout.txt", cwd / "stderr.txt"
    with open(out_file, "w") as out, open(err_file, "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "embedlab", *map(str, cmd)], stdout=out, stderr=err, cwd=cwd,
                                env=env, preexec_fn=sigint_as_at_a_terminal)
        try:
            _wait_for(lambda: ready(err_file.read_text()), 240, proc, what)
            proc.send_signal(signal.SIGINT)
            status = proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
    return status, out_file.read_text(), err_file.read_text()


# 1. Ctrl-C -------------------------------------------------------------------------------------------------------

def test_ctrl_c_during_eval_exits_130_with_one_line(tmp_path):
    """Interrupted while encoding: status 130 (so `embedlab eval ... && next` stops) and one line naming the store
    that keeps the finished tasks; no traceback. (It used to exit 0 and print nothing.)"""
    root = _sts_root(tmp_path, n_pairs=3000)  # batch size 1: minutes of encoding, interrupted in the first second
    db = tmp_path / "r.sqlite"
    status, out, err = _interrupt(
        ["eval", "-m", MINILM, "-t", "stsb", "--batch-size", 1, "--db", db, "--out", tmp_path / "json", "--no-cache"],
        tmp_path, _env(EMBEDLAB_DATA=str(root), EMBEDLAB_CACHE=str(tmp_path / "cache")),
        lambda e: "encode" in e, "the encode progress bar")
    assert status == 130, out + err
    assert "Traceback" not in out + err
    lines = [ln for ln in (out + err).splitlines() if "interrupted" in ln]
    assert len(lines) == 1, out + err
    assert lines[0].startswith("interrupted") and str(db) in lines[0]


def test_ctrl_c_during_train_says_a_rerun_resumes(tmp_path, tiny_bert):
    """Interrupted after a checkpoint: status 130 and one line saying a rerun of the same command resumes from the
    checkpoints in output_dir."""
    make_train_root(tmp_path, tiny_bert)
    path = Path(recipe_file(tmp_path))
    path.write_text(path.read_text().replace("max_steps: 6, save_every: 3", "max_steps: 100000, save_every: 2"))
    out_dir = tmp_path / "out"

    def has_checkpoint(_err):
        return out_dir.is_dir() and any(p.name.startswith("step-") for p in out_dir.rglob("step-*"))

    status, out, err = _interrupt(["train", path], tmp_path, _env(), has_checkpoint, "a first checkpoint")
    assert status == 130, out + err
    assert "Traceback" not in out + err
    lines = [ln for ln in (out + err).splitlines() if "interrupted" in ln]
    assert len(lines) == 1 and str(out_dir) in lines[0] and "resume" in lines[0], out + err


# 2. usage errors and --version -----------------------------------------------------------------------------------

@pytest.mark.parametrize("args", [
    [],                                              # no arguments: the help, as a usage error
    ["nope"],                                        # unknown command
    ["eval"],                                        # missing required option
    ["eval", "-m", "x", "--modl", "y"],              # misspelt option
    ["eval", "-m", "x", "--batch-size", "abc"],      # not a number
    ["results", "--format"],                         # option without its value
], ids=["no-args", "unknown-command", "missing-option", "misspelt-option", "bad-number", "missing-value"])
def test_usage_errors_print_usage_and_exit_2(tmp_path, args):
    r = _cli(*args, cwd=tmp_path)
    assert r.returncode == 2, r.stdout + r.stderr
    _no_traceback(r)
    assert "Usage:" in r.stdout + r.stderr


def test_version(tmp_path):
    r = _cli("--version", cwd=tmp_path)
    assert r.returncode == 0 and r.stdout == f"embedlab {embedlab.__version__}\n", r.stdout + r.stderr


# 3. user text is printed literally --------------------------------------------------------------------------------

@pytest.mark.parametrize("part", ["[draft]", "[/x]", "[bold]"])
def test_error_with_markup_in_a_path_is_printed_literally(tmp_path, part):
    model = f"./runs/{part}/model"  # does not exist: a one-line ModelError naming it
    r = _cli("eval", "-m", model, "-t", "stsb", cwd=tmp_path)
    assert r.returncode == 2, r.stdout + r.stderr
    _no_traceback(r)
    assert model in r.stderr and len(r.stderr.strip().splitlines()) == 1


def _store_with(path: Path, rows: list[dict]) -> None:
    with ResultsStore(f"sqlite:///{path}") as s:
        s.add_run([{"task": "stsb", "task_type": "sts", "dataset": "stsb", "split": "test", "metric": "main_score",
                    **r} for r in rows])


def test_results_table_prints_model_names_literally(tmp_path):
    db = tmp_path / "r.sqlite"
    _store_with(db, [{"model": "runs/[draft]/m", "value": 80.0}, {"model": "runs/[/x]/m", "value": 70.0}])
    r = _cli("results", "--db", db, cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "runs/[draft]/m" in r.stdout and "runs/[/x]/m" in r.stdout


# 4. results: NULL values, which database, never create one --------------------------------------------------------

def test_results_shows_null_values_as_na_and_names_the_database(tmp_path):
    db = tmp_path / "r.sqlite"
    _store_with(db, [{"model": "a", "value": float("nan")}, {"model": "b", "value": 81.25}])
    r = _cli("results", "--db", db, cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "n/a" in r.stdout and "81.25" in r.stdout and str(db) in r.stdout
    r = _cli("results", "--db", db, "--format", "csv", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    header, *lines = r.stdout.strip().splitlines()
    assert header.startswith("id,model") and len(lines) == 2  # stdout is pure CSV ...
    assert str(db) in r.stderr  # ... and the database it came from is on stderr


def test_results_does_not_create_a_missing_database(tmp_path):
    missing = tmp_path / "sub" / "none.sqlite"
    for args, env in ((["--db", missing], _env()), ([], _env(EMBEDLAB_RESULTS_DB=str(missing)))):
        r = _cli("results", *args, cwd=tmp_path, env=env)
        assert r.returncode == 2, r.stdout + r.stderr
        _no_traceback(r)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and str(missing) in lines[0]
        assert "--db" in lines[0] and "EMBEDLAB_RESULTS_DB" in lines[0]
        assert not missing.exists() and not missing.parent.exists()
    # The default store (in the working directory) is not created either.
    r = _cli("results", cwd=tmp_path, env={k: v for k, v in _env().items() if k != "EMBEDLAB_RESULTS_DB"})
    assert r.returncode == 2 and not (tmp_path / "embedlab-results.sqlite").exists()


def test_store_read_only_mode_creates_nothing(tmp_path):
    missing = tmp_path / "sub" / "none.sqlite"
    with pytest.raises(ConfigError, match="no results store at"):
        ResultsStore(str(missing), create=False)
    assert not missing.parent.exists()
    _store_with(tmp_path / "r.sqlite", [{"model": "a", "value": 1.0}])
    with ResultsStore(str(tmp_path / "r.sqlite"), create=False) as s:
        assert [r["model"] for r in s.query()] == ["a"]
    with pytest.raises(ConfigError, match="no results table"):
        ResultsStore("sqlite://", create=False)


# 5. and 6. bad --db and --out fail before the model loads ---------------------------------------------------------

def _bad_db_values(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "a-file").write_text("x")
    (tmp_path / "a-dir").mkdir()
    return {"malformed": "not a url://x", "unknown-driver": "foo://x",
            "folder-under-a-file": str(tmp_path / "a-file" / "sub" / "r.sqlite"),
            "a-directory": str(tmp_path / "a-dir")}


@pytest.mark.parametrize("kind", ["malformed", "unknown-driver", "folder-under-a-file", "a-directory"])
def test_bad_db_fails_in_one_line_before_the_model_loads(tmp_path, kind):
    value = _bad_db_values(tmp_path)[kind]
    r = _cli("eval", "-m", MINILM, "-t", "stsb", "--db", value, cwd=tmp_path,
             env=_env(EMBEDLAB_DATA=str(_sts_root(tmp_path))))
    assert r.returncode == 2, r.stdout + r.stderr
    _no_traceback(r)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and value in lines[0], r.stderr
    assert "Loading weights" not in r.stderr  # transformers' bar: the model was not loaded
    assert not (tmp_path / "results").exists()


def test_eval_out_that_is_a_file_fails_before_the_model_loads(tmp_path):
    (tmp_path / "taken").write_text("not a folder")
    env = _env(EMBEDLAB_DATA=str(_sts_root(tmp_path)), EMBEDLAB_CACHE=str(tmp_path / "cache"))
    for out in (tmp_path / "taken", tmp_path / "taken" / "sub"):
        r = _cli("eval", "-m", MINILM, "-t", "stsb", "--db", tmp_path / "r.sqlite", "--out", out, cwd=tmp_path,
                 env=env)
        assert r.returncode == 2, r.stdout + r.stderr
        _no_traceback(r)
        assert str(out) in r.stderr and "is a file" in r.stderr and "Loading weights" not in r.stderr


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root may write anywhere")
def test_eval_out_in_unwritable_folder_fails_before_the_model_loads(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        r = _cli("eval", "-m", MINILM, "-t", "stsb", "--db", tmp_path / "r.sqlite", "--out", locked / "json",
                 cwd=tmp_path, env=_env(EMBEDLAB_DATA=str(_sts_root(tmp_path))))
    finally:
        locked.chmod(0o700)
    assert r.returncode == 2, r.stdout + r.stderr
    _no_traceback(r)
    assert str(locked) in r.stderr and "Loading weights" not in r.stderr


def test_eval_out_in_unwritable_folder_in_process(tmp_path, monkeypatch):
    """The same check where the tests run as root (os.access says yes to root): os.access is told the folder is
    read-only, and loading the model would fail the test."""
    from typer.testing import CliRunner

    from embedlab import cli
    from embedlab.text import Embedder

    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == locked else real_access(p, mode))
    monkeypatch.setattr(Embedder, "load", classmethod(lambda cls, *a, **k: pytest.fail("the model was loaded")))
    res = CliRunner().invoke(cli.app, ["eval", "-m", MINILM, "-t", "stsb", "--db", str(tmp_path / "r.sqlite"),
                                       "--out", str(locked / "json")])
    assert isinstance(res.exception, ConfigError) and str(locked) in str(res.exception)
    assert "cannot write" in str(res.exception)


# 7. out-of-range numbers are usage errors, before any work ---------------------------------------------------------

@pytest.mark.parametrize("args", [
    ["eval", "-m", "./no-model", "--batch-size", "0"],  # used to loop forever, growing until out of memory
    ["eval", "-m", "./no-model", "--max-length", "0"],
    ["eval", "-m", "./no-model", "--max-length", "-5"],
    ["eval", "-m", "./no-model", "--token-budget", "0"],
    ["eval", "-m", "./no-model", "--threads", "0"],
    ["eval", "-m", "./no-model", "--threads", "-2"],
    ["eval", "-m", "./no-model", "--limit", "0"],
    ["mine", "no.jsonl", "--out", "o.jsonl", "--n", "0"],
    ["mine", "no.jsonl", "--out", "o.jsonl", "--rank-range", "50,10"],
    ["mine", "no.jsonl", "--out", "o.jsonl", "--rank-range", "-1,10"],
    ["mine", "no.jsonl", "--out", "o.jsonl", "--margin", "0"],
    ["mine", "no.jsonl", "--out", "o.jsonl", "--max-length", "0"],
    ["mine", "no.jsonl", "--out", "o.jsonl", "--threads", "0"],
    ["mine", "no.jsonl", "--out", "o.jsonl", "--seed", "-1"],
    ["fuse", "--models", "a", "b", "--out", "o", "--seed", "-1"],
    ["fuse", "--models", "a", "b", "--out", "o", "--weights-temperature", "0"],
    ["experiment", "no.yaml", "--seeds", "1,-1"],
])
def test_out_of_range_numbers_are_usage_errors(tmp_path, args):
    r = _cli(*args, cwd=tmp_path, timeout=120)
    assert r.returncode == 2, r.stdout + r.stderr
    _no_traceback(r)
    option = next(a for a in reversed(args) if a.startswith("--"))
    assert option in r.stderr and ("Usage:" in r.stderr or "usage:" in r.stderr), r.stdout + r.stderr
    assert not (tmp_path / "o").exists() and not (tmp_path / "o.jsonl").exists()


# 8. --limit ---------------------------------------------------------------------------------------------------------

def test_eval_limit_reaches_the_settings(monkeypatch):
    from typer.testing import CliRunner

    from embedlab import cli

    seen = {}
    monkeypatch.setattr(cli.eval, "_run_eval", lambda model, tasks, out, db, no_cache, settings, label=None:
                        seen.setdefault("settings", settings))
    res = CliRunner().invoke(cli.app, ["eval", "-m", "m", "-t", "stsb", "--limit", "5"])
    assert res.exit_code == 0, res.output
    assert seen["settings"].limit == 5
    seen.clear()
    res = CliRunner().invoke(cli.app, ["eval", "-m", "m", "-t", "stsb"])
    assert res.exit_code == 0 and seen["settings"].limit is None


def test_eval_limit_evaluates_a_marked_subsample(tmp_path):
    """End to end: --limit 3 on a 6-pair task scores 3 pairs, and the table says the run was subsampled."""
    db = tmp_path / "r.sqlite"
    r = _cli("eval", "-m", MINILM, "-t", "stsb", "--limit", 3, "--db", db, "--out", tmp_path / "json",
             "--no-progress", cwd=tmp_path,
             env=_env(EMBEDLAB_DATA=str(_sts_root(tmp_path)), EMBEDLAB_CACHE=str(tmp_path / "cache")))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "subsampled" in r.stdout
    (row,) = ResultsStore(f"sqlite:///{db}").query(metric="main_score")
    assert row["extra"]["pairs"] == 3


# 9. --no-progress ---------------------------------------------------------------------------------------------------

def _assert_no_bars(r) -> None:
    assert r.returncode == 0, r.stdout + r.stderr
    assert not any(m in r.stderr for m in TQDM_MARKS), r.stderr


def test_eval_no_progress_draws_no_bar(tmp_path):
    r = _cli("eval", "-m", MINILM, "-t", "stsb", "--db", tmp_path / "r.sqlite", "--out", tmp_path / "json",
             "--no-progress", cwd=tmp_path,
             env=_env(EMBEDLAB_DATA=str(_sts_root(tmp_path)), EMBEDLAB_CACHE=str(tmp_path / "cache")))
    _assert_no_bars(r)  # the model load's "Loading weights" bar used to show


def test_fuse_and_mine_no_progress_draw_no_bar(tmp_path, tiny_bert):
    from embedlab.text import Embedder

    backbone, tok = tiny_bert
    models = []
    for name in ("a", "b"):
        Embedder(backbone, tok, max_length=32, name=name).save(tmp_path / name)
        models.append(tmp_path / name)
    r = _cli("fuse", "--method", "linear", "--models", *models, "--out", tmp_path / "fused", "--no-progress",
             cwd=tmp_path)
    _assert_no_bars(r)
    assert (tmp_path / "fused" / "fusion.json").is_file()

    queries = [f"question {i} about animals" for i in range(4)]
    (tmp_path / "ir.jsonl").write_text("".join(
        json.dumps({"query": q, "pos": [q + " answer"], "neg": [f"other text {i}-{j}" for j in range(3)]}) + "\n"
        for i, q in enumerate(queries)))
    r = _cli("mine", tmp_path / "ir.jsonl", "--out", tmp_path / "mined.jsonl", "--model", tmp_path / "fused",
             "--rank-range", "0,4", "--n", "1", "--no-progress", cwd=tmp_path)
    _assert_no_bars(r)
    assert len((tmp_path / "mined.jsonl").read_text().splitlines()) == 4

