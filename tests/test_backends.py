"""Inference backends (embedlab/text/backends.py) on a tiny random BERT: every backend and precision gives
embeddings within its tolerance of PyTorch fp32; the export is cached by everything that determines it (a changed
model is exported again, never served stale); refusals name what exists. No timing here (benchmarks/encode.py)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("openvino")

from embedlab.errors import ConfigError  # noqa: E402
from embedlab.text import Embedder  # noqa: E402

TEXTS = ["A man is playing a guitar.", "the quick brown fox jumps over the lazy dog " * 3, "hello",
         "Vitamin D supplementation and bone density in older adults", "two", "a b c d e f g"] * 3
# max |difference| to torch fp32 for exported fp32 paths; min cosine for the reduced-precision ones
FP32_ATOL = 1e-5
MIN_COS = {"bf16": 0.999, "int8": 0.98}


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EMBEDLAB_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _model(tiny_bert) -> Embedder:
    backbone, tok = tiny_bert
    return Embedder(backbone, tok, max_length=32, name="tiny-bert")


@pytest.mark.parametrize("backend,precision", [("torch", "bf16"), ("onnx", "fp32"), ("onnx", "int8"),
                                               ("openvino", "fp32"), ("openvino", "bf16"), ("openvino", "int8")])
def test_each_path_is_within_its_tolerance_of_torch_fp32(tiny_bert, cache, backend, precision):
    model = _model(tiny_bert)
    ref = model.encode(TEXTS, batch_size=4)
    model.set_backend(backend, precision, calibration_texts=TEXTS)
    out = model.encode(TEXTS, batch_size=4, token_budget=40)  # several batches, several padded lengths
    assert out.shape == ref.shape and out.dtype == np.float32
    if precision == "fp32":
        assert np.abs(out - ref).max() < FP32_ATOL
    else:
        assert (out * ref).sum(1).min() > MIN_COS[precision]
        assert np.abs(out - ref).max() > 0  # really another precision, not the fp32 path again
    assert model.model_hash() != model.model_hash(torch_only=True)  # caches keep the paths apart
    if backend != "torch":
        export = json.loads((model.runner.path.parent / "export.json").read_text())
        assert (export["backend"], export["precision"]) == (backend, precision)
        assert model.runner.path.parent.parent == cache / "exports"  # built in memory: no source folder


def test_the_export_is_cached_and_remade_when_the_model_changes(tiny_bert, cache):
    model = _model(tiny_bert).set_backend("onnx", "fp32")
    first = model.runner.path
    stamp = first.stat().st_mtime_ns
    again = _model(tiny_bert).set_backend("onnx", "fp32")
    assert again.runner.path == first and first.stat().st_mtime_ns == stamp  # reused, not exported again
    with torch.no_grad():
        model.backbone.embeddings.word_embeddings.weight[5] += 1.0  # the weights change in place
    with pytest.raises(ConfigError, match="changed after it was exported"):
        model.encode(TEXTS)
    model.set_backend("onnx", "fp32")
    assert model.runner.path != first and first.exists()  # a new key, a new folder
    ref = model.set_backend("torch").encode(TEXTS)
    assert np.abs(model.set_backend("onnx", "fp32").encode(TEXTS) - ref).max() < FP32_ATOL
    # openvino int8 is keyed by its calibration texts too
    a = _model(tiny_bert).set_backend("openvino", "int8", calibration_texts=TEXTS).runner.path
    b = _model(tiny_bert).set_backend("openvino", "int8", calibration_texts=TEXTS[:5]).runner.path
    assert a != b


def test_openvino_keeps_attention_as_one_fused_op(tiny_bert, cache):
    """The OpenVINO model is converted from PyTorch (not read from the ONNX graph, where attention is decomposed
    into MatMul/Softmax and the CPU plugin runs it slower): each layer's attention is one SDPA op, in every
    precision, and the inputs keep the names the runner feeds."""
    import openvino as ov

    tiny = _model(tiny_bert)
    layers = tiny.backbone.config.num_hidden_layers
    for precision in ("fp32", "int8"):
        model = _model(tiny_bert).set_backend("openvino", precision, calibration_texts=TEXTS)
        graph = ov.Core().read_model(str(model.runner.path))
        ops = [op.get_type_name() for op in graph.get_ops()]
        assert ops.count("ScaledDotProductAttention") == layers, precision
        assert {p.get_any_name() for p in graph.inputs} == set(model.runner.names)
        assert [p.get_partial_shape().is_dynamic for p in graph.inputs] == [True] * len(graph.inputs)


def test_onnx_is_exported_with_eager_attention_and_the_model_keeps_its_own(tiny_bert, cache):
    """The ONNX graph is traced with eager attention (one float mask for all layers; SDPA's boolean mask becomes a
    Where in every layer, slow in ONNX Runtime); the PyTorch model goes back to the attention it had."""
    import onnx

    model = _model(tiny_bert)
    before = model.backbone.config._attn_implementation
    model.set_backend("onnx", "fp32")
    assert model.backbone.config._attn_implementation == before
    ops = [n.op_type for n in onnx.load(str(model.runner.path)).graph.node]
    assert ops.count("Where") <= 1 and ops.count("Softmax") == model.backbone.config.num_hidden_layers


def test_a_saved_model_keeps_its_exports_next_to_it(tiny_bert, cache, tmp_path):
    folder = _model(tiny_bert).save(tmp_path / "my-model")
    loaded = Embedder.load(str(folder), backend="onnx", precision="int8")
    assert loaded.runner.path.parent.parent == folder / ".embedlab-exports"
    assert (loaded.backend, loaded.precision) == ("onnx", "int8")
    assert Embedder.load(str(folder)).encode(["x"]).shape == (1, 32)  # the folder still loads as before


def test_refusals_name_what_exists(tiny_bert, tiny_llama, cache):
    model = _model(tiny_bert)
    with pytest.raises(ConfigError, match="backend must be one of torch, onnx, openvino"):
        model.set_backend("tensorrt")
    with pytest.raises(ConfigError, match=r"int8 runs through an exported model"):
        model.set_backend("torch", "int8")
    with pytest.raises(ConfigError, match="has precisions fp32, int8"):
        model.set_backend("onnx", "bf16")
    with pytest.raises(ConfigError, match="static quantization: give calibration texts"):
        model.set_backend("openvino", "int8")
    with pytest.raises(ConfigError, match="backend must be one of"):
        Embedder.load("sentence-transformers/all-MiniLM-L6-v2", backend="cuda")
    backbone, tok = tiny_llama
    decoder = Embedder(backbone, tok, is_decoder=True, max_length=32, name="tiny-llama")
    with pytest.raises(ConfigError, match="is a decoder"):
        decoder.set_backend("onnx")
    decoder.set_template("prompteol")
    with pytest.raises(ConfigError, match="prompt template"):
        decoder.set_backend("openvino")
    assert decoder.backend == "torch"  # a refused switch changes nothing
    model.set_backend("onnx")
    with pytest.raises(ConfigError, match="autocast applies to the torch backend"):
        model.encode(TEXTS, autocast_dtype=torch.bfloat16)


def test_evaluation_records_the_path_and_fp32_scores_match(tiny_bert, cache, data_root):
    """`evaluate` switches the model to the settings' backend, records backend and precision with every result,
    and an exported fp32 path scores what PyTorch scores."""
    from embedlab.evaluate.runner import EvalSettings, evaluate

    model = _model(tiny_bert)
    torch_result = evaluate(model, "stsb", settings=EvalSettings(limit=60))[0]
    assert (torch_result.details["backend"], torch_result.details["precision"]) == ("torch", "fp32")
    bf16 = evaluate(model, "stsb", settings=EvalSettings(limit=60, autocast_dtype=torch.bfloat16))[0]
    assert bf16.details["precision"] == "bf16"
    onnx = evaluate(model, "stsb", settings=EvalSettings(limit=60, backend="onnx"))[0]
    assert (onnx.details["backend"], onnx.details["precision"]) == ("onnx", "fp32") and model.backend == "onnx"
    assert onnx.scores["main_score"] == pytest.approx(torch_result.scores["main_score"], abs=1e-5)
    with pytest.raises(ConfigError, match="autocast .* applies to the torch backend"):
        EvalSettings(backend="openvino", autocast_dtype=torch.bfloat16)
    with pytest.raises(ConfigError, match="has precisions"):
        EvalSettings(backend="onnx", precision="bf16")


def test_eval_command_options(tmp_path):
    from embedlab.cli.eval import _settings

    s = _settings(32, None, None, None, False, False, False, backend="torch", precision="bf16")
    assert s.autocast_dtype == torch.bfloat16 and s.precision is None  # torch bf16 is autocast
    calib = tmp_path / "calib.txt"
    calib.write_text("first text\n\nsecond text\n", encoding="utf-8")
    s = _settings(32, None, None, None, False, False, False, backend="openvino", precision="int8", calibration=calib)
    assert s.calibration_texts == ("first text", "second text")
    with pytest.raises(ConfigError, match="disagree"):
        _settings(32, None, None, None, True, False, False, precision="int8")
    with pytest.raises(ConfigError, match="--precision bf16"):
        _settings(32, None, None, None, True, False, False, backend="openvino")
    calib.write_bytes(b"\xff\xfe bad")
    with pytest.raises(ConfigError, match="not UTF-8"):
        _settings(32, None, None, None, False, False, False, backend="openvino", precision="int8", calibration=calib)


def test_an_experiment_evaluates_every_row_on_its_inference_path(tmp_path, data_root, cache):
    """An experiment's eval_backend / eval_precision reach every job's evaluation and its records; the default
    (torch fp32) leaves job configs as before, so earlier experiments' done jobs keep their identity."""
    from embedlab.bench.executors import InlineExecutor
    from embedlab.bench.jobs import JobQueue
    from embedlab.experiment import ExperimentSpec, experiment_jobs, same_protocol

    base = dict(name="x", results=str(tmp_path / "x.json"), table=str(tmp_path / "x.md"), tasks=["stsb"],
                instructions=False,
                runs=[{"name": "untrained", "model": "sentence-transformers/all-MiniLM-L6-v2", "seeds": [0]}])
    default = experiment_jobs(ExperimentSpec(**base), tmp_path)[0][1]
    assert "backend" not in default.config["eval"] and "precision" not in default.config["eval"]
    spec = ExperimentSpec(**base, eval_backend="onnx", eval_precision="int8")
    _, job, folder = experiment_jobs(spec, tmp_path)[0]
    assert (job.config["eval"]["backend"], job.config["eval"]["precision"]) == ("onnx", "int8")
    assert job.config != default.config  # another protocol, another job
    assert same_protocol(ExperimentSpec(**base), {"eval_max_length": 256, "instructions": False,
                                                  "instruction_tokens_pooled": True})  # older records: torch fp32
    assert not same_protocol(spec, {"eval_max_length": 256, "instructions": False,
                                    "instruction_tokens_pooled": True})
    job.config["eval"]["limit"] = 40  # a quick job: 40 STS-B pairs
    url = f"sqlite:///{tmp_path / 's.sqlite'}"
    queue = JobQueue(url)
    ids = queue.submit([job], [folder])
    assert InlineExecutor(url).run(ids) == {ids[0]: "done"}
    row = [r for r in queue.store.query(task="stsb") if r["metric"] == "main_score"][0]
    assert (row["extra"]["eval_backend"], row["extra"]["eval_precision"]) == ("onnx", "int8")
    assert (row["extra"]["backend"], row["extra"]["precision"]) == ("onnx", "int8")
    bad = experiment_jobs(ExperimentSpec(**base, eval_backend="onnx", eval_precision="bf16"), tmp_path)[0][1]
    with pytest.raises(ConfigError, match="has precisions"):
        queue.submit([bad], [tmp_path / "bad"])


def test_openvino_streams_keep_the_order_and_the_numbers(tiny_bert, cache, monkeypatch):
    """Several batches in flight at once (openvino streams, a window of infer requests) give the same vectors, in
    input order, as one batch after the other; streams on another backend are refused. No AsyncInferQueue: its Python
    callback lives in OpenVINO's threads, and dropping the compiled model while one of them waits for the GIL hung a
    test run at teardown."""
    import openvino as ov

    def no_callback_queue(*a, **k):
        raise AssertionError("AsyncInferQueue used")

    monkeypatch.setattr(ov, "AsyncInferQueue", no_callback_queue)
    model = _model(tiny_bert)
    ref = model.encode(TEXTS, batch_size=2)
    model.set_backend("openvino", "fp32", streams=3)
    assert model.runner.streams == 3
    out = model.encode(TEXTS, batch_size=2, token_budget=24)  # many small batches, windows of 6
    assert np.abs(out - ref).max() < FP32_ATOL
    with pytest.raises(ConfigError, match="streams .* apply to the openvino backend"):
        _model(tiny_bert).set_backend("onnx", "fp32", streams=2)
    with pytest.raises(ConfigError, match="streams must be an integer"):
        _model(tiny_bert).set_backend("openvino", "fp32", streams=0)
