"""Reliability of what embedlab writes: it never replaces a folder it did not write, an input, or the working
directory; training never resumes another recipe's checkpoint and never deletes a previous run; a run folder cannot
make it run code; bad recipe numbers stop before any work; saves are group-readable and leave no debris.

Each test here failed on the code before the reliability issue (issue 12) was fixed.
"""
from __future__ import annotations

import json
import os
import pickle
import stat
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from embedlab.cli import app
from embedlab.config import load_recipe
from embedlab.errors import ConfigError, ModelError
from embedlab.text import Embedder
from embedlab.train.trainer import Trainer

from tiny_training import make_train_root, recipe_file, save_shifted

OWNER_MARKER, STAGING_MARKER = ".embedlab-output", ".embedlab-staging"  # embedlab.atomic's marker names


_save = save_shifted  # tests/tiny_training.py


def _fuse(args):
    return CliRunner().invoke(app, ["fuse", "--method", "linear", *args])


# ---------------------------------------------------------------------------------------------- output folders
def test_fuse_never_replaces_a_users_folder(tmp_path, tiny_bert):
    a, b = _save(tiny_bert, tmp_path / "a", 0.01), _save(tiny_bert, tmp_path / "b", -0.01)
    mine = tmp_path / "my-folder"
    mine.mkdir()
    (mine / "notes.txt").write_text("hi")
    res = _fuse(["--models", a, b, "--out", str(mine)])
    assert isinstance(res.exception, ConfigError) and "did not write" in str(res.exception)
    assert (mine / "notes.txt").read_text() == "hi"
    # an explicit --overwrite replaces it; a folder embedlab wrote is replaced without it
    assert _fuse(["--models", a, b, "--out", str(mine), "--overwrite"]).exit_code == 0
    assert (mine / "fusion.json").is_file() and not (mine / "notes.txt").exists()
    assert _fuse(["--models", a, b, "--out", str(mine)]).exit_code == 0


def test_fuse_never_replaces_an_input_or_the_working_directory(tmp_path, tiny_bert, monkeypatch):
    a, b = _save(tiny_bert, tmp_path / "a", 0.01), _save(tiny_bert, tmp_path / "b", -0.01)
    before = sorted(os.listdir(a))
    for out in (a, str(tmp_path)):  # an input; the folder that holds the inputs
        res = _fuse(["--models", a, b, "--out", out, "--overwrite"])
        assert isinstance(res.exception, ConfigError), res.output
    assert sorted(os.listdir(a)) == before
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    for out in (".", "..", str(work)):  # the working directory and its parent
        res = _fuse(["--models", a, b, "--out", out, "--overwrite"])
        assert isinstance(res.exception, ConfigError) and "working directory" in str(res.exception)
    assert (tmp_path / "a").is_dir() and work.is_dir()


def test_fuse_refuses_a_model_without_tokenizer_and_output_has_one(tmp_path, tiny_bert):
    a, b = _save(tiny_bert, tmp_path / "a", 0.01), _save(tiny_bert, tmp_path / "b", -0.01)
    assert _fuse(["--models", a, b, "--out", str(tmp_path / "ok")]).exit_code == 0
    assert (tmp_path / "ok" / "tokenizer.json").is_file() or (tmp_path / "ok" / "vocab.txt").is_file()
    for name in ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        (tmp_path / "a" / name).unlink(missing_ok=True)
    res = _fuse(["--models", a, b, "--out", str(tmp_path / "bad")])
    assert isinstance(res.exception, ModelError) and "no tokenizer" in str(res.exception)
    assert not (tmp_path / "bad").exists()


def test_save_replaces_only_what_embedlab_wrote(tmp_path, tiny_bert):
    backbone, tok = tiny_bert
    model = Embedder(backbone, tok, max_length=32, name="tiny")
    mine = tmp_path / "notes"
    mine.mkdir()
    (mine / "notes.txt").write_text("hi")
    with pytest.raises(ConfigError, match="did not write"):
        model.save(mine)
    assert (mine / "notes.txt").read_text() == "hi"
    (tmp_path / "empty").mkdir()
    model.save(tmp_path / "empty")  # an empty folder is fine
    model.save(tmp_path / "empty")  # and so is one embedlab wrote
    assert (tmp_path / "empty" / OWNER_MARKER).is_file()
    model.save(mine, overwrite=True)
    assert not (mine / "notes.txt").exists()
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        model.save(tmp_path / "a-file")
    loaded = Embedder.load(str(tmp_path / "empty"))
    with pytest.raises(ConfigError, match="input"):  # the folder it was loaded from is an input
        loaded.save(tmp_path / "empty", overwrite=True)


def test_saved_models_are_group_readable(tmp_path, tiny_bert):
    backbone, tok = tiny_bert
    old = os.umask(0o022)
    try:
        Embedder(backbone, tok, max_length=32).save(tmp_path / "m")
    finally:
        os.umask(old)
    mode = stat.S_IMODE(os.stat(tmp_path / "m").st_mode)
    assert mode == 0o755, oct(mode)
    for f in (tmp_path / "m").rglob("*"):
        assert os.stat(f).st_mode & stat.S_IRGRP, f


def test_a_save_killed_mid_way_is_cleaned_up_next_time(tmp_path, tiny_bert):
    backbone, tok = tiny_bert
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    stale = tmp_path / ".m.saving-abc123"
    stale.mkdir()
    (stale / STAGING_MARKER).write_text(dead)
    (stale / "model.safetensors").write_bytes(b"half")
    live = tmp_path / ".m.saving-live"
    live.mkdir()
    (live / STAGING_MARKER).write_text(str(os.getpid()))  # a save still running in this process
    users = tmp_path / ".m.notes"  # a hidden folder of the user's, no marker
    users.mkdir()
    Embedder(backbone, tok, max_length=32).save(tmp_path / "m")
    assert not stale.exists() and live.exists() and users.exists()


# ---------------------------------------------------------------------------------------------- training runs
@pytest.fixture
def root(tmp_path, tiny_bert):
    return make_train_root(tmp_path, tiny_bert)


def test_resume_refuses_another_recipes_checkpoint(root):
    path = recipe_file(root)
    Trainer(load_recipe(path), show_progress=False).train(stop_after=3)
    with pytest.raises(ConfigError) as e:
        Trainer(load_recipe(path, ["train.lr=0.01"]), show_progress=False).setup()
    assert "train.lr: 0.001 -> 0.01" in str(e.value)
    with pytest.raises(ConfigError, match="model.name"):
        Trainer(load_recipe(path, [f"model.name={root / 'a-different-model'}"]), show_progress=False).setup()
    # settings that cannot change the weights may change between launches
    final = Trainer(load_recipe(path, ["train.log_every=2", "train.keep=5"]), show_progress=False).train()
    assert (final / "model.safetensors").is_file()
    saved = json.loads((root / "out" / "recipe.json").read_text())
    assert saved["train"]["lr"] == 0.001


def test_no_resume_keeps_the_previous_run_and_prunes_only_the_new_one(root):
    path = recipe_file(root)
    Trainer(load_recipe(path), show_progress=False).train()  # checkpoints step-3, step-6, final
    old_final = (root / "out" / "final" / "model.safetensors").read_bytes()
    Trainer(load_recipe(path, ["train.max_steps=4", "train.save_every=1", "train.keep=2", "seed=5"]),
            resume=False, show_progress=False).train()
    out = root / "out"
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-000003", "step-000004"]
    assert (out / "final" / "model.safetensors").read_bytes() != old_final
    previous = list((out / "previous").iterdir())
    assert len(previous) == 1
    assert (previous[0] / "final" / "model.safetensors").read_bytes() == old_final
    assert sorted(p.name for p in (previous[0] / "checkpoints").iterdir()) == ["step-000003", "step-000006"]


def test_training_refuses_a_folder_it_did_not_write(root):
    (root / "out").mkdir()
    (root / "out" / "thesis.tex").write_text("...")
    with pytest.raises(ConfigError, match="did not write"):
        Trainer(load_recipe(recipe_file(root)), show_progress=False).setup()
    assert (root / "out" / "thesis.tex").read_text() == "..."


class _Payload:
    def __init__(self, flag):
        self.flag = flag

    def __reduce__(self):
        return (open, (self.flag, "w"))


def test_a_run_folder_cannot_make_resume_run_code(root):
    path = recipe_file(root)
    Trainer(load_recipe(path), show_progress=False).train(stop_after=3)
    flag = root / "pwned"
    state = root / "out" / "checkpoints" / "step-000003" / "trainer_state.pt"
    with open(state, "wb") as f:
        pickle.dump({"step": 3, "evil": _Payload(str(flag))}, f)
    with pytest.raises(ConfigError, match="could run code"):
        Trainer(load_recipe(path), show_progress=False).setup()
    assert not flag.exists()


def test_a_killed_checkpoint_write_is_cleaned_up(root):
    path = recipe_file(root)
    Trainer(load_recipe(path), show_progress=False).train(stop_after=3)
    partial = root / "out" / "checkpoints" / ".step-000009.partial"
    partial.mkdir()
    (partial / "model.safetensors").write_bytes(b"half")
    Trainer(load_recipe(path), show_progress=False).train()
    assert not partial.exists()


@pytest.mark.parametrize("override, field", [
    ("train.grad_clip=-1", "train.grad_clip"), ("train.lr=.inf", "train.lr"), ("seed=-1", "seed"),
    ("sampler.batch_size={ir: 0, sts: 4}", "sampler.batch_size"), ("train.num_threads=0", "train.num_threads"),
    ("objective.sts_weights={pro: -1}", "objective.sts_weights"), ("sampler.sts_threshold=3", "sampler.sts_threshold"),
    ("objective.sts_weights={prro: 1}", "objective.sts_weights"),
])
def test_recipe_numbers_out_of_range_are_refused(root, override, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        load_recipe(recipe_file(root), [override])


def test_mining_never_overwrites_an_input_or_an_existing_file(tmp_path, tiny_bert):
    from embedlab.data.training import write_ir_examples
    from embedlab.prep.mining import mine_file

    from tiny_training import sentence
    import random

    rng = random.Random(0)
    from embedlab.data.records import IRExample

    src = tmp_path / "in.jsonl"
    write_ir_examples(src, [IRExample(query=sentence(rng), pos=[sentence(rng)], neg=[]) for _ in range(6)])
    before = src.read_bytes()
    backbone, tok = tiny_bert
    model = Embedder(backbone, tok, max_length=32)
    for out, kw in ((src, {"overwrite": True}), (tmp_path / "mine.jsonl", {})):
        if out != src:
            out.write_text("my own file\n")
        with pytest.raises(ConfigError, match="input|already exists"):
            mine_file(src, out, model, rank_range=(0, 3), n_negatives=1, show_progress=False, **kw)
    assert src.read_bytes() == before and (tmp_path / "mine.jsonl").read_text() == "my own file\n"


def test_fuse_config_that_is_a_folder_or_binary_and_malformed_modules_json(tmp_path, tiny_bert):
    a, b = _save(tiny_bert, tmp_path / "a", 0.01), _save(tiny_bert, tmp_path / "b", -0.01)
    (tmp_path / "binary.yaml").write_bytes(b"\x80\x81\xff\x00")
    for cfg, message in ((tmp_path, "is a folder"), (tmp_path / "binary.yaml", "not UTF-8")):
        res = CliRunner().invoke(app, ["fuse", "--config", str(cfg), "--out", str(tmp_path / "x")])
        assert isinstance(res.exception, ConfigError) and message in str(res.exception), res.output
    for bad in ('{"path": ""}', '[{"idx": 0}]', '["x"]'):
        (tmp_path / "a" / "modules.json").write_text(bad)
        res = _fuse(["--models", a, b, "--out", str(tmp_path / "x")])
        assert isinstance(res.exception, ModelError) and "modules.json" in str(res.exception), res.output
    assert not (tmp_path / "x").exists()


def test_two_trainings_cannot_share_an_output_folder(root):
    path = recipe_file(root)
    first = Trainer(load_recipe(path), show_progress=False)
    first.setup()  # holds the folder
    with pytest.raises(ConfigError, match="in use by another embedlab training"):
        Trainer(load_recipe(path), show_progress=False).setup()
    first.train()  # releases it when done
    Trainer(load_recipe(path), show_progress=False).setup()


def test_max_length_beyond_the_models_positions_is_refused(tmp_path, tiny_bert):
    """tiny_bert has 128 position embeddings: a longer max_length failed deep inside the model (or, for short texts,
    went unnoticed until a long one came)."""
    backbone, tok = tiny_bert
    model = Embedder(backbone, tok, max_length=32)
    assert model.max_positions == 128
    with pytest.raises(ConfigError, match="128 positions"):
        model.encode(["a short text"], max_length=200)
    model.save(tmp_path / "m")
    with pytest.raises(ConfigError, match="128 positions"):
        Embedder.load(str(tmp_path / "m"), max_length=129)
    assert Embedder.load(str(tmp_path / "m"), max_length=128).encode(["word " * 300]).shape == (1, 32)


# ----------------------------------------------------------------------------- found by the second sweep (train)
def test_a_diverging_training_stops_at_the_first_non_finite_loss(root):
    with pytest.raises(ConfigError, match="training diverged: the loss at step"):
        Trainer(load_recipe(recipe_file(root), ["train.lr=1.0e+30", "train.grad_clip=null"]),
                show_progress=False).train()
    assert not (root / "out" / "final").exists()


def test_damaged_checkpoint_weights_stop_resume_with_one_line(root):
    path = recipe_file(root)
    Trainer(load_recipe(path), show_progress=False).train(stop_after=3)
    weights = root / "out" / "checkpoints" / "step-000003" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ConfigError, match="cannot read the checkpoint's weights"):
        Trainer(load_recipe(path), show_progress=False).setup()


def test_a_model_inside_the_run_folder_is_not_moved_away_by_no_resume(root):
    path = recipe_file(root)
    Trainer(load_recipe(path), show_progress=False).train()
    inside = root / "out" / "final"
    with pytest.raises(ConfigError, match="inside"):
        Trainer(load_recipe(path, [f"model.name={inside}"]), resume=False, show_progress=False).setup()
    assert (inside / "model.safetensors").is_file()


def test_logs_hold_each_step_once_after_a_resume(root):
    path = recipe_file(root)
    Trainer(load_recipe(path), show_progress=False).train(stop_after=3)
    log = root / "out" / "train_log.jsonl"
    with open(log, "a") as f:  # the interrupted run logged steps 4-5 after its last checkpoint, and a cut line
        f.write(json.dumps({"step": 4, "loss": 1.0}) + "\n" + json.dumps({"step": 5, "loss": 1.0}) + "\n{\"st")
    Trainer(load_recipe(path), show_progress=False).train()
    steps = [json.loads(x)["step"] for x in log.read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_absurd_negative_counts_are_refused(root):
    with pytest.raises(ConfigError, match="data.n_negatives"):
        load_recipe(recipe_file(root), ["data.n_negatives=1000000"])


def test_experiment_paths_records_and_tasks_are_checked_before_training(tmp_path, monkeypatch):
    import yaml

    from embedlab.experiment import run_experiment

    monkeypatch.chdir(tmp_path)
    base = {"name": "x", "results": str(tmp_path / "r.json"), "table": str(tmp_path / "t.md"), "tasks": ["stsb-dev"],
            "runs": [{"name": "a", "recipe": str(tmp_path / "never-read.yaml")}]}
    cases = [({"workdir": "runs/{nope}"}, "only {name}"), ({"tasks": ["nope"]}, "nope"),
             ({"table": str(tmp_path)}, "is a folder")]
    for change, message in cases:
        (tmp_path / "e.yaml").write_text(yaml.safe_dump({**base, **change}))
        with pytest.raises(ConfigError, match=message):
            run_experiment(tmp_path / "e.yaml", show_progress=False)
    (tmp_path / "r.json").write_text('{"records": [{"na')
    (tmp_path / "e.yaml").write_text(yaml.safe_dump(base))
    with pytest.raises(ConfigError, match="cut short"):
        run_experiment(tmp_path / "e.yaml", show_progress=False)
    assert not (tmp_path / "embedlab-results.sqlite").exists()  # a bad spec leaves no new store behind


def test_atomic_writes_never_replace_a_device_or_pipe(tmp_path):
    from embedlab.atomic import check_output_file, write_text

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match="device or pipe"):
        write_text(fifo, "x")
    with pytest.raises(ConfigError, match="device or pipe"):
        check_output_file(fifo, overwrite=True)
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)


def test_a_malformed_training_manifest_is_one_line(tmp_path):
    from embedlab.prep.convert import check_current

    (tmp_path / "manifest.json").write_text("[1, 2")
    with pytest.raises(ConfigError, match="unreadable training-data manifest"):
        check_current(tmp_path)
    (tmp_path / "manifest.json").write_text("[1, 2]")
    with pytest.raises(ConfigError, match="expected a JSON object"):
        check_current(tmp_path)


def test_another_rank_sees_a_folder_being_marked_as_embedlabs(tmp_path):
    """torchrun: rank 1 checks output_dir while rank 0 writes the owner marker (a temporary file, then a rename) and
    its lock file; that folder is embedlab's, not a foreign one (a race seen once in `make test`)."""
    from embedlab.atomic import OWNER_MARKER
    from embedlab.outputs import LOCK_FILE
    from embedlab.train.run_folder import check_writable_run_folder

    out = tmp_path / "run"
    out.mkdir()
    (out / f".{OWNER_MARKER}.9qkwcx29.tmp").write_text("")
    (out / LOCK_FILE).write_text("pid 1\n")
    check_writable_run_folder(out)  # accepted
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="did not write"):
        check_writable_run_folder(out)
