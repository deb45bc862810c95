"""Fusion under hostile input: weights and parameters out of type or range, non-finite tensors, damaged checkpoint
files, malformed fusion configs and dev-pair files all fail as one-line embedlab errors naming what is at fault."""
from __future__ import annotations


import pytest
import torch
from safetensors.torch import load_file, save_file

from embedlab.errors import ConfigError, DataError, ModelError
from embedlab.fusion import MERGE_METHODS, fuse
from embedlab.fusion.base import per_model

from tiny_training import save_noisy_checkpoints


@pytest.fixture
def ckpts(tmp_path, tiny_bert):
    """A base and 2 'fine-tuned' checkpoints (base + seeded noise), sentence-transformers layout."""
    return save_noisy_checkpoints(tmp_path, tiny_bert, 2)


# ------------------------------------------------------------------------------------------ 1. weights, seed, NaN
@pytest.mark.parametrize("weights", [[1e308, 1.0], [3e38, 3e38], [-1e39, 1.0]])
def test_weights_beyond_float32_are_config_errors(ckpts, tmp_path, weights):
    _, paths = ckpts
    method = "task_arithmetic" if weights[0] < 0 else "linear"
    base = ckpts[0] if method == "task_arithmetic" else None
    with pytest.raises(ConfigError, match="float32"):
        fuse(paths, method, base=base, weights=weights, out=tmp_path / "out", show_progress=False)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("kw", [{"weights": ["a", 1.0]}, {"weights": [None, 1.0]}, {"weights": 5},
                                {"seed": "x"}, {"seed": 1.5}, {"seed": None}, {"seed": -5}, {"seed": True}])
def test_bad_weight_and_seed_types_are_config_errors(ckpts, tmp_path, kw):
    _, paths = ckpts
    with pytest.raises(ConfigError):
        fuse(paths, "linear", out=tmp_path / "out", show_progress=False, **kw)
    assert not (tmp_path / "out").exists()


def test_non_finite_input_tensor_is_a_model_error_naming_tensor_and_input(ckpts, tmp_path):
    _, paths = ckpts
    f = paths[1] / "model.safetensors"
    state = load_file(str(f))
    key = next(k for k, v in state.items() if v.is_floating_point())
    state[key][0] = float("nan")
    save_file(state, str(f), metadata={"format": "pt"})
    with pytest.raises(ModelError) as e:
        fuse(paths, "linear", out=tmp_path / "out", show_progress=False)
    assert key in str(e.value) and str(paths[1]) in str(e.value)
    assert not (tmp_path / "out").exists()


def test_overflowing_merge_is_a_model_error(ckpts, tmp_path):
    base, paths = ckpts  # finite inputs, but λ = 1e300 overflows float32: refused, not written as inf/NaN
    with pytest.raises(ModelError, match="NaN or inf"):
        fuse(paths, "task_arithmetic", base=base, params={"lambda": 1e300}, out=tmp_path / "out",
             show_progress=False)
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------ 3. method parameters
@pytest.mark.parametrize("method,params,match", [
    ("ties", {"density": "abc"}, "density"), ("ties", {"density": "nan"}, "density"),
    ("ties", {"density": 5}, r"density.*\[0, 1\]"), ("dare_linear", {"density": [0.5, 7]}, "density"),
    ("dare_ties", {"density": -0.1}, "density"), ("slerp", {"t": 5}, r"'t'.*\[0, 1\]"),
    ("slerp", {"t": "abc"}, "'t'"), ("task_arithmetic", {"lambda": "inf"}, "lambda"),
    ("delta_guided", {"lambda": "abc"}, "lambda"), ("delta_guided", {"temperature": float("nan")}, "temperature"),
    ("linear", {"normalize": "maybe"}, "normalize"), ("ties", {"density": True}, "density")])
def test_parameters_are_type_and_range_checked(method, params, match):
    spec = MERGE_METHODS.get(method)
    with pytest.raises(ConfigError, match=match) as e:
        spec.resolve_params(params, 2)
    assert method in str(e.value)


def test_numeric_string_parameters_become_numbers_and_per_model_is_checked():
    params = MERGE_METHODS.get("delta_guided").resolve_params({"lambda": "2"}, 2)
    assert params["lambda"] == 2.0  # `--param lambda=2` through YAML is 2; a quoted "2" must not reach tensor maths
    assert MERGE_METHODS.get("ties").resolve_params({"density": [0.5, 1]}, 2)["density"] == [0.5, 1]
    with pytest.raises(ConfigError, match="density"):
        per_model("abc", 2, "ties: density")


def test_bad_parameter_fails_before_reading_files(tmp_path):
    with pytest.raises(ConfigError, match="density"):
        fuse([tmp_path / "missing-a", tmp_path / "missing-b"], "ties", base=tmp_path / "missing-base",
             params={"density": "abc"}, out=tmp_path / "out", show_progress=False)


# ------------------------------------------------------------------------------------------ 2. damaged inputs
@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_damaged_weight_file_is_a_model_error_naming_it(ckpts, tmp_path, damage, fmt):
    _, paths = ckpts
    folder = paths[1]
    f = folder / "model.safetensors"
    if fmt == "bin":
        torch.save(load_file(str(f)), folder / "pytorch_model.bin")
        f.unlink()
        f = folder / "pytorch_model.bin"
    data = f.read_bytes()
    f.write_bytes({"truncate": data[: len(data) // 2], "garbage": b"\x89not a weight file" * 50,
                   "empty": b""}[damage])
    with pytest.raises(ModelError) as e:
        fuse(paths, "linear", out=tmp_path / "out", show_progress=False)
    assert str(f) in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------ 4. fusion configs
def _config(tmp_path, text):
    from embedlab.fusion.config import load_fusion_config

    f = tmp_path / "merge.yaml"
    f.write_text(text)
    return lambda: load_fusion_config(f)


@pytest.mark.parametrize("models,params,match", [
    ("  - model: a\n    parameters: {weight: abc}\n  - model: b\n", "", r"models\[0\]\.parameters\.weight"),
    ("  - model: a\n  - model: b\n    parameters: {weight: .nan}\n", "", r"models\[1\]\.parameters\.weight"),
    ("  - model: a\n  - model: b\n", "parameters: {weight: [1, 2]}\n", r"parameters\.weight")])
def test_config_bad_weight_is_a_config_error(tmp_path, models, params, match):
    load = _config(tmp_path, f"merge_method: linear\nmodels:\n{models}{params}")
    with pytest.raises(ConfigError, match=match):
        load()


@pytest.mark.parametrize("seed", ["-5", "1.5", "true", "abc"])
def test_config_seed_must_be_a_non_negative_integer(tmp_path, seed):
    load = _config(tmp_path, f"merge_method: linear\nmodels:\n  - model: a\n  - model: b\nseed: {seed}\n")
    with pytest.raises(ConfigError, match="seed"):
        load()


def test_config_yaml_error_is_short_with_file_and_line(tmp_path):
    load = _config(tmp_path, "merge_method: linear\nmodels:\n  - model: a\n  - model: [b\nseed: 0\n")
    with pytest.raises(ConfigError) as e:
        load()
    msg = str(e.value)
    assert msg.count("\n") <= 1 and "merge.yaml:" in msg and msg.split("merge.yaml:")[1][0].isdigit()


# ------------------------------------------------------------------------------------------ 5. dev pairs
GOOD = '{"query": "q1", "pos": ["p1"]}\n{"query": "q2", "pos": ["p2"]}\n'


@pytest.mark.parametrize("content,line,match", [
    (GOOD + '["not", "an", "object"]\n', 3, "JSON object"),
    (GOOD + '{"sentence1": "a", "sentence2": "b", "score": "abc"}\n', 3, "not a number"),
    ('{"query": "q1", "pos": "text"}\n' + GOOD, 1, "pos must be a list"),
    ('{"query": "q1", "pos": [3]}\n' + GOOD, 1, "pos"),
    ('{"query": 5, "pos": ["p"]}\n' + GOOD, 1, "query"),
    ('{"sentence1": "a", "sentence2": null, "score": 5}\n' + GOOD, 1, "sentence2"),
    ('{"sentence1": "a", "sentence2": "b", "score": NaN}\n' + GOOD, 1, "finite"),
    ('{"text": "x"}\n' + GOOD, 1, "expected"),
    ('{"query": "q1", "pos": []}\n' + GOOD, 1, "empty"),
    (b'{"query": "q\xff", "pos": ["p"]}\n' + GOOD.encode(), 1, "UTF-8")])
def test_dev_pairs_bad_rows_are_data_errors_with_file_and_line(tmp_path, content, line, match):
    from embedlab.fusion.data_weights import pairs_from_file

    f = tmp_path / "dev.jsonl"
    f.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(DataError, match=match) as e:
        pairs_from_file(f)
    assert e.value.path == str(f) and e.value.line == line


@pytest.mark.parametrize("target", ["missing", "folder", "/dev/zero"])
def test_dev_pairs_missing_folder_or_device_is_a_data_error(tmp_path, target):
    from embedlab.fusion.data_weights import pairs_from_file

    path = {"missing": tmp_path / "nope.jsonl", "folder": tmp_path, "/dev/zero": "/dev/zero"}[target]
    with pytest.raises(DataError) as e:  # /dev/zero used to be read forever
        pairs_from_file(path)
    assert e.value.path == str(path)


def test_dev_pairs_good_file_still_reads(tmp_path):
    from embedlab.fusion.data_weights import pairs_from_file

    f = tmp_path / "dev.jsonl"
    f.write_text(GOOD + '{"sentence1": "a", "sentence2": "b", "score": "4.5"}\n'
                 '{"sentence1": "c", "sentence2": "d", "score": 1}\n\n')
    assert pairs_from_file(f) == [("q1", "p1"), ("q2", "p2"), ("a", "b")]
