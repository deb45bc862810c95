"""`embedlab fuse` from the command line: flags in the issue's form, a mergekit config, and clear errors."""
from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from embedlab.cli import app
from embedlab.errors import ConfigError, UnknownChoiceError
from embedlab.text import Embedder

from tiny_training import save_shifted


_save = save_shifted  # tests/tiny_training.py


def test_fuse_flags_and_config(tmp_path, tiny_bert):
    base = _save(tiny_bert, tmp_path / "base", 0.0)
    a, b = _save(tiny_bert, tmp_path / "a", 0.01), _save(tiny_bert, tmp_path / "b", -0.02)
    runner = CliRunner()
    res = runner.invoke(app, ["fuse", "--base", base, "--method", "ties", "--models", a, b, "--weights", "0.7",
                              "0.3", "--param", "density=0.5", "--out", str(tmp_path / "ties")])
    assert res.exit_code == 0, res.output
    record = json.loads((tmp_path / "ties" / "fusion.json").read_text())
    assert record["method"] == "ties" and record["params"]["density"] == 0.5 and record["weights"] == [0.7, 0.3]
    cfg = tmp_path / "merge.yaml"
    cfg.write_text(f"merge_method: delta_guided\nbase_model: {base}\nmodels:\n  - model: {a}\n  - model: {b}\n"
                   "parameters: {variant: softmax, temperature: 0.5}\n")
    res = runner.invoke(app, ["fuse", "--config", str(cfg), "--out", str(tmp_path / "dg")])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "dg" / "fusion.json").read_text())["params"]["variant"] == "softmax"


def test_fuse_errors_name_the_problem(tmp_path, tiny_bert):
    a = _save(tiny_bert, tmp_path / "a", 0.01)
    runner = CliRunner()
    res = runner.invoke(app, ["fuse", "--method", "ties", "--models", a, a, "--param", "densty=0.5", "--out",
                              str(tmp_path / "x")])
    # (main() prints an EmbedlabError in one line and exits 2; the app itself raises it)
    assert isinstance(res.exception, ConfigError) and "no parameter 'densty'" in str(res.exception)
    res = runner.invoke(app, ["fuse", "--method", "soup", "--models", a, "--out", str(tmp_path / "x")])
    assert isinstance(res.exception, UnknownChoiceError) and "soup" in str(res.exception)
    assert not (tmp_path / "x").exists()


def test_data_driven_weights(tmp_path, tiny_bert):
    """LM-Cocktail style: the checkpoint with the lower loss on the dev pairs gets the larger weight; the weights
    are a softmax of -loss/t (checked against the per-model losses), and the CLI records them."""
    import math

    from embedlab.errors import DataError
    from embedlab.fusion.data_weights import cocktail_weights, model_loss, pairs_from_file

    base = _save(tiny_bert, tmp_path / "base", 0.0)
    a, b = _save(tiny_bert, tmp_path / "a", 0.01), _save(tiny_bert, tmp_path / "b", 0.3)
    dev = tmp_path / "dev.jsonl"
    dev.write_text("\n".join(json.dumps({"query": f"what is item {i}", "pos": [f"item {i} is a thing {i}"]})
                             for i in range(8)) + "\n")
    pairs = pairs_from_file(dev)
    weights, losses = cocktail_weights([a, b], pairs, temperature=0.5)
    assert sum(weights) == pytest.approx(1.0)
    expect = [math.exp(-x / 0.5) for x in losses]
    assert weights == pytest.approx([e / sum(expect) for e in expect])
    assert (weights[0] > weights[1]) == (losses[0] < losses[1])
    assert losses[0] == pytest.approx(model_loss(Embedder.load(a), pairs))
    res = CliRunner().invoke(app, ["fuse", "--base", base, "--method", "linear", "--models", a, b, "--weights", "auto",
                                   "--dev-pairs", str(dev), "--weights-temperature", "0.5", "--out",
                                   str(tmp_path / "auto")])
    assert res.exit_code == 0, res.output
    record = json.loads((tmp_path / "auto" / "fusion.json").read_text())
    assert record["weights"] == pytest.approx(weights) and record["extra"]["data_weights"]["losses"] == losses
    (tmp_path / "bad.jsonl").write_text('{"foo": 1}\n')
    with pytest.raises(DataError, match="bad.jsonl:1"):
        pairs_from_file(tmp_path / "bad.jsonl")


# ------------------------------------------------------------------------------------------ typed options
def test_every_method_parameter_has_a_typed_option():
    """KNOBS covers every parameter a registered method declares, and the word choices are the methods' own."""
    import typing

    from embedlab.cli import fuse as fuse_cli
    from embedlab.fusion import MERGE_METHODS, delta_guided

    declared = {key for _, m in MERGE_METHODS.items() for key in m.params}
    assert declared == {key for key, _ in fuse_cli.KNOBS.values()}
    assert typing.get_args(fuse_cli.Variant) == delta_guided.VARIANTS
    assert set(typing.get_args(fuse_cli.Granularity)) == set(delta_guided.GRANULARITIES)


@pytest.mark.parametrize("args, expect", [
    (["--models", "a", "b", "--out", "o"], ["--models", "a", "--models", "b", "--out", "o"]),
    (["--weights", "-0.5", "1.5", ".2", "--models", "a"], ["--weights", "-0.5", "--weights", "1.5", "--weights", ".2",
                                                            "--models", "a"]),
    (["--models", "a", "--models", "b"], ["--models", "a", "--models", "b"]),
    (["--out", "o", "x", "--models", "a", "--", "b"], ["--out", "o", "x", "--models", "a", "--", "b"]),
    (["--density", "0.5", "0.3", "--no-progress"], ["--density", "0.5", "--density", "0.3", "--no-progress"]),
])
def test_several_values_after_one_flag(args, expect):
    from embedlab.cli.fuse import spread_values

    assert spread_values(args) == expect


def _fuse_kwargs(monkeypatch, tmp_path, *args):
    """What `embedlab fuse ARGS` passes to fusion.merge.fuse (nothing is merged)."""
    import embedlab.fusion.merge

    seen = {}

    def fake(models, method, **kw):
        seen.update(kw, models=models, method=method)
        raise SystemExit(0)

    monkeypatch.setattr(embedlab.fusion.merge, "fuse", fake)
    res = CliRunner().invoke(app, ["fuse", "--models", "m1", "m2", "--out", str(tmp_path / "o"), *args])
    assert res.exit_code == 0 and seen, res.output  # (SystemExit(0) from fake)
    return seen


def test_typed_method_parameters_reach_the_merge(monkeypatch, tmp_path):
    kw = _fuse_kwargs(monkeypatch, tmp_path, "--method", "dare_ties", "--density", "0.5", "--lambda", "0.9",
                      "--no-normalize", "--rescale", "inverse_density", "--int8-mask", "--weights", "0.7", "0.3",
                      "--seed", "3")
    assert kw["models"] == ["m1", "m2"] and kw["weights"] == [0.7, 0.3] and kw["seed"] == 3
    assert kw["params"] == {"density": 0.5, "lambda": 0.9, "normalize": False, "rescale": "inverse_density",
                            "int8_mask": True}
    # the same as --param, and per model
    assert _fuse_kwargs(monkeypatch, tmp_path, "--method", "ties", "--density", "0.5", "0.3",
                        "--rescale", "true")["params"] == {"density": [0.5, 0.3], "rescale": True}
    assert _fuse_kwargs(monkeypatch, tmp_path, "--method", "ties", "--param", "density=[0.5, 0.3]",
                        "--param", "rescale=true")["params"] == {"density": [0.5, 0.3], "rescale": True}
    kw = _fuse_kwargs(monkeypatch, tmp_path, "--variant", "softmax", "--granularity", "element", "--temperature", "0.5")
    assert kw["method"] == "delta_guided" and kw["params"] == {"variant": "softmax", "granularity": "element",
                                                               "temperature": 0.5}


def test_typed_option_errors_name_the_option(monkeypatch, tmp_path):
    def run(*args):
        return CliRunner().invoke(app, ["fuse", "--models", "m1", "m2", "--out", str(tmp_path / "o"), *args])

    res = run("--method", "ties", "--t", "0.3")  # slerp's parameter
    assert isinstance(res.exception, ConfigError) and str(res.exception).startswith("--t: merge method 'ties' has no")
    res = run("--method", "ties", "--density", "0.5", "--param", "density=0.3")
    assert isinstance(res.exception, ConfigError) and "--density" in str(res.exception)
    for args, option in ((["--density", "1.5"], "--density"), (["--variant", "loud"], "--variant"),
                         (["--lambda", "nan"], "--lambda"), (["--weights", "0.5", "x"], "--weights"),
                         (["--rescale", "maybe"], "--rescale"), (["--t", "-1"], "--t"), (["--density"], "--density")):
        res = run(*args)
        assert res.exit_code == 2 and f"'{option}'" in res.output, (args, res.output)
    res = CliRunner().invoke(app, ["fuse", "--models", "--out", str(tmp_path / "o")])  # not a model named --out
    assert res.exit_code == 2 and "'--models'" in res.output, res.output
    assert not (tmp_path / "o").exists()
