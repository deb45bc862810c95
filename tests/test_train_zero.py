"""DeepSpeed ZeRO through accelerate: 2 CPU processes (gloo), launched the way a user launches them.

The reference is the plain multi-process trainer (``torchrun --nproc_per_node 2 -m embedlab train``: embedlab's own
gradient all-reduce). Against it, on the tiny model and data of tiny_training.py, 6 optimizer steps of 2 accumulated
micro-batches each:
  * ZeRO-1 (``accelerate launch --use_deepspeed --zero_stage 1 -m embedlab train``) ends with the same weights;
  * ZeRO-2 stopped after step 3 (a checkpoint with every rank's optimizer shard) and resumed by a second
    ``accelerate launch`` ends with the same weights too — which checks the engine's reduce / clip / step, the learning
    rate schedule driving the wrapped optimizer, and the sharded save and load;
  * ZeRO-3 and GradCache under ZeRO stop with a message instead of training.
Equality is to 1e-5: the engine averages partitioned gradients in another order than one flat all-reduce.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from embedlab.config import load_recipe
from embedlab.errors import ConfigError
from embedlab.train import checkpoint as ckpt
from embedlab.train import zero

from conftest import make_tiny_bert
from tiny_training import make_train_root, recipe_file

BIN = Path(sys.executable).parent
WORKER = Path(__file__).with_name("zero_worker.py")


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACCELERATE_")}
    pythonpath = os.pathsep.join(filter(None, [str(Path(__file__).parent), os.environ.get("PYTHONPATH")]))
    env.update(OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", PYTHONPATH=pythonpath)
    return env


def _accelerate(stage: int, *args: str) -> list[str]:
    return [str(BIN / "accelerate"), "launch", "--use_deepspeed", "--zero_stage", str(stage), "--num_processes", "2",
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
            "--main_process_port", str(_port()), *args]


def _run(cmd: list[str], ok: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)
    if ok and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return proc


def _final(out: Path) -> dict:
    return load_file(str(out / "final" / "model.safetensors"))


def _assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=1e-4, msg=k)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = make_train_root(tmp_path_factory.mktemp("zero"), make_tiny_bert())
    # two micro-batches per optimizer step: the engine must step at its accumulation boundary, not every backward
    recipe = recipe_file(tmp)
    Path(recipe).write_text(Path(recipe).read_text().replace("train: {", "train: {grad_accum: 2, "))
    outs = {name: tmp / name for name in ("plain", "zero1", "zero2")}
    _run([str(BIN / "torchrun"), "--nproc_per_node", "2", "--master_port", str(_port()), "-m", "embedlab", "train",
          recipe, f"output_dir={outs['plain']}", "--no-progress"])
    _run(_accelerate(1, "-m", "embedlab", "train", recipe, f"output_dir={outs['zero1']}", "--no-progress"))
    _run(_accelerate(2, str(WORKER), recipe, str(outs["zero2"]), "3"))  # stops after step 3
    stopped = [p.name for p in ckpt.list_checkpoints(outs["zero2"])]
    shards = sorted(p.name for p in (outs["zero2"] / "checkpoints" / "step-000003" / zero.ZERO_DIR).rglob("*.pt"))
    _run(_accelerate(2, "-m", "embedlab", "train", recipe, f"output_dir={outs['zero2']}", "--no-progress"))
    return tmp, outs, stopped, shards


def test_zero1_matches_plain_multiprocess_training(runs):
    tmp, outs, _, _ = runs
    plain = _final(outs["plain"])
    initial = load_file(str(tmp / "tiny-model" / "model.safetensors"))
    assert any(not torch.allclose(initial[k], plain[k]) for k in plain), "training changed nothing"
    _assert_same(plain, _final(outs["zero1"]))


def test_zero2_interrupted_and_resumed_matches_plain(runs):
    _, outs, stopped, shards = runs
    assert stopped == ["step-000003"]
    # one optimizer shard per rank (DeepSpeed's naming), next to the usual model and trainer state
    assert sum("optim_states" in s for s in shards) == 2, shards
    state = ckpt.load_state(outs["zero2"] / "checkpoints" / "step-000006")
    assert state["optimizer"] is None and state["step"] == 6
    _assert_same(_final(outs["plain"]), _final(outs["zero2"]))


def test_zero3_is_refused_with_a_message(train_root):
    recipe = recipe_file(train_root)
    cmd = _accelerate(3, "-m", "embedlab", "train", recipe, f"output_dir={train_root / 'z3'}", "--no-progress")
    cmd[cmd.index("--num_processes") + 1] = "1"
    proc = _run(cmd, ok=False)
    assert proc.returncode != 0
    assert "stage 3 is not supported" in " ".join((proc.stdout + proc.stderr).split())  # the CLI wraps lines
    assert not (train_root / "z3" / "final").exists()


def test_gradcache_and_fp16_are_refused_under_zero(train_root):
    for override, field in (("train.gradcache_chunk=2", "train.gradcache_chunk"),
                            ("train.mixed_precision=fp16", "train.mixed_precision")):
        r = load_recipe(recipe_file(train_root), [override])
        with pytest.raises(ConfigError, match=field):
            zero._check_recipe(r)
