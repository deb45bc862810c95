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
