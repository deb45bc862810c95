"""Inference backends for the Embedder's backbone: PyTorch (the default), ONNX Runtime and OpenVINO, in fp32, bf16
or int8.

    m = Embedder.load("sentence-transformers/all-MiniLM-L6-v2", backend="onnx", precision="int8")
    m.encode(texts)      # the same tokenisation, token-budget batching, pooling and normalisation; the backbone's
                         # forward pass runs in ONNX Runtime

| backend  | precisions       | how                                                                              |
|----------|------------------|----------------------------------------------------------------------------------|
| torch    | fp32, bf16       | the PyTorch module; bf16 = autocast (matmuls in bf16, outputs float32)           |
| onnx     | fp32, int8       | ``torch.onnx.export`` (dynamo exporter, eager attention, dynamic batch and       |
|          |                  | sequence) run by ONNX Runtime; int8 = ONNX Runtime dynamic quantization,         |
|          |                  | per-channel int8 weights (sentence-transformers' ``avx512_vnni`` settings, its   |
|          |                  | attention products left in fp32), activations quantized per batch                |
| openvino | fp32, bf16, int8 | ``openvino.convert_model`` of the PyTorch module (OpenVINO's PyTorch frontend,   |
|          |                  | as optimum-intel does: attention stays one fused ScaledDotProductAttention op,   |
|          |                  | which the ONNX route loses: 8 % (fp32) to 19 % (int8) slower, measured);         |
|          |                  | fp32/bf16 = the CPU plugin's inference precision; int8 = NNCF post-training      |
|          |                  | static quantization on calibration texts (its unquantized operations in bf16     |
|          |                  | where the CPU has it, as OpenVINO's default)                                     |

Only the backbone (the transformer: token ids -> last hidden states) is exported. Pooling, normalisation, prompts
and batching stay embedlab's own code, so every backend pools exactly as the PyTorch path does, and fp32 ONNX /
OpenVINO outputs match PyTorch's to float rounding (tests: tolerance per path).

**The exported model is cached** in ``<source model folder>/.embedlab-exports/<backend>-<precision>-<key>/`` when
the model came from a folder you can write to that is not inside an installed package, else in
``$EMBEDLAB_CACHE/exports/``. ``<key>`` hashes everything that determines the file: the model's content hash
(weights, tokenizer, pooling settings: ``Embedder.model_hash``), backend, precision, the exporter's format
version, the opset, the versions of torch / onnxruntime / openvino / nncf, and for static int8 the calibration texts.
A changed model therefore gets a new export; an old one is never reused. Each export folder is written to a staging
folder and renamed into place (a kill mid-export leaves no half model).

What it does not do: train (the exported graph has no gradients: ``Embedder.forward`` stays PyTorch); export
decoders (their position ids, prompt templates and GGUF weights): refused with a message, never a silent fallback to
PyTorch; GPUs (the exported models run on the CPU).
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import shutil
import site
import sys
import sysconfig
import threading
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..atomic import replace_dir, staging_dir
from ..errors import ConfigError
from ..settings import cache_dir

log = logging.getLogger("embedlab.backends")

BACKENDS = ("torch", "onnx", "openvino")
PRECISIONS = {"torch": ("fp32", "bf16"), "onnx": ("fp32", "int8"), "openvino": ("fp32", "bf16", "int8")}
# Bump when the export code changes what it writes: every cached export is then made again. 2: openvino converted
# from PyTorch (was: read from the ONNX graph); 3: onnx traced with eager attention.
EXPORT_FORMAT = 3
OPSET = 18
OUTPUT = "last_hidden_state"
INSTALL_HINT = "pip install 'embedlab[inference]' (onnx, onnxruntime, openvino, nncf)"
MAX_CALIBRATION = 1000


def check_backend(backend: str, precision: str, streams: int = 1) -> None:
    """Refuse an unknown backend, a precision the backend does not have, or streams where they do not apply,
    naming what exists."""
    if not isinstance(streams, int) or isinstance(streams, bool) or not 1 <= streams <= 64:
        raise ConfigError(f"streams must be an integer from 1 to 64, got {streams!r}")
    if streams > 1 and backend != "openvino":
        raise ConfigError(f"streams (batches in flight at once) apply to the openvino backend, not {backend}")
    if backend not in BACKENDS:
        raise ConfigError(f"backend must be one of {', '.join(BACKENDS)}; got {backend!r}")
    if precision not in PRECISIONS[backend]:
        hint = ""
        if backend == "torch" and precision == "int8":
            hint = " (int8 runs through an exported model: backend='onnx' or 'openvino')"
        raise ConfigError(f"backend {backend!r} has precisions {', '.join(PRECISIONS[backend])}; got "
                          f"{precision!r}{hint}")


def _versions(backend: str) -> dict[str, str]:
    out = {"torch": torch.__version__}
    with contextlib.suppress(ImportError):
        import onnx

        out["onnx"] = onnx.__version__
    if backend == "onnx":
        import onnxruntime

        out["onnxruntime"] = onnxruntime.__version__
    if backend == "openvino":
        import openvino

        out["openvino"] = openvino.__version__
        with contextlib.suppress(ImportError):
            import nncf

            out["nncf"] = nncf.__version__
    return out


def _require(module: str) -> Any:
    try:
        return __import__(module)
    except ImportError:
        raise ConfigError(f"the {module} package is not installed: {INSTALL_HINT}") from None


def check_exportable(model) -> None:
    """The model's backbone can be exported: an encoder without a prompt template or GGUF weights."""
    name = model.name or "this model"
    if model.template is not None:
        raise ConfigError(f"{name} uses a prompt template ({model.template.name}): templated decoders cannot be "
                          f"exported to ONNX/OpenVINO by embedlab; use backend='torch' (bf16 for speed)")
    if model.is_decoder:
        raise ConfigError(f"{name} is a decoder: embedlab exports encoders (BERT-like) only; use backend='torch' "
                          f"(bf16 for speed)")
    if str(getattr(model, "source_path", "") or "").endswith(".gguf"):
        raise ConfigError(f"{name} was read from GGUF weights: export is not supported; use backend='torch'")


def input_names(model) -> list[str]:
    """The backbone's inputs, in order (token_type_ids only when the model has token types)."""
    names = ["input_ids", "attention_mask"]
    if model._uses_token_types:  # what the tokenizer gives, as the PyTorch path passes it
        names.append("token_type_ids")
    return names


def calibration_hash(texts: Sequence[str] | None) -> str | None:
    if texts is None:
        return None
    h = hashlib.blake2b(digest_size=16)
    for t in texts:
        h.update(t.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()


def export_key(model, backend: str, precision: str, calibration: Sequence[str] | None = None) -> dict[str, Any]:
    """Everything that determines an exported model (its hash names the cache folder)."""
    return {"format": EXPORT_FORMAT, "model": model.model_hash(torch_only=True), "backend": backend,
            "precision": precision, "opset": OPSET, "versions": _versions(backend),
            "inputs": input_names(model), "calibration": calibration_hash(calibration)}


def _inside_package(path: Path) -> bool:
    roots = {sysconfig.get_paths().get(k) for k in ("purelib", "platlib")} | set(site.getsitepackages())
    roots.add(getattr(site, "getusersitepackages", lambda: None)())
    roots.add(sys.prefix)
    resolved = path.resolve()
    for root in filter(None, roots):
        root_path = Path(root).resolve()
        if resolved == root_path or root_path in resolved.parents:
            return True
    return False


def export_folder(model, key: dict[str, Any]) -> Path:
    """Where the export with this key lives: next to the source model when that folder is the user's and writable,
    else under $EMBEDLAB_CACHE/exports/."""
    digest = hashlib.blake2b(json.dumps(key, sort_keys=True).encode(), digest_size=8).hexdigest()
    name = f"{key['backend']}-{key['precision']}-{digest}"
    source = Path(str(getattr(model, "source_path", "") or ""))
    if (source.is_dir() and (source / "config.json").is_file() and os.access(source, os.W_OK)
            and not _inside_package(source)):
        return source / ".embedlab-exports" / name
    label = "".join(c if c.isalnum() or c in "-._" else "_" for c in (model.name or "model"))[-60:]
    return cache_dir() / "exports" / f"{label}-{name}"


class _LastHidden(torch.nn.Module):
    """The backbone with positional inputs and one output (what the exporters need)."""

    def __init__(self, backbone: torch.nn.Module, names: list[str]):
        super().__init__()
        self.backbone, self.names = backbone, names

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        extra = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
        return self.backbone(input_ids=input_ids, attention_mask=attention_mask, **extra).last_hidden_state


def _example_features(model, names: list[str]) -> tuple[torch.Tensor, ...]:
    texts = ["an example sentence to trace the model with", "a second, longer example sentence: the batch is "
             "padded, so the exported graph has seen an attention mask with zeros in it"]
    feats = model._collate(model._token_ids(texts, min(64, model.max_length)))
    return tuple(feats[n] for n in names)


@contextlib.contextmanager
def _quiet() -> Any:
    """The exporter and quantizers print progress lines and warnings for every export: keep them out of the user's
    output (they go to the debug log)."""
    import warnings

    out, err = io.StringIO(), io.StringIO()
    loggers = [logging.getLogger(n) for n in ("onnx_ir", "onnxscript", "torch.onnx", "torch.export", "nncf",
                                               "torch._dynamo", "torch.fx")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
    text = (out.getvalue() + err.getvalue()).strip()
    if text:
        log.debug("exporter output:\n%s", text[-4000:])


def export_onnx(model, path: Path) -> None:
    """The backbone as an ONNX graph (fp32) with dynamic batch and sequence axes."""
    _require("onnx")
    names = input_names(model)
    args = _example_features(model, names)
    batch = torch.export.Dim("batch", min=1, max=4096)
    seq = torch.export.Dim("seq", min=1, max=max(int(model.max_positions or 512), args[0].shape[1]))
    wrapped = _LastHidden(model.backbone, names).eval()
    was_training = model.backbone.training
    model.backbone.eval()
    # Eager attention for the ONNX graph: the SDPA path exports its boolean mask as a Where over every layer's
    # [batch, 1, seq, seq] scores, which ONNX Runtime runs slowly (profiled: a fifth of the int8 run time at 256
    # tokens); the eager path adds one float mask. Same numbers (fp32 to ~4e-7), 1.2x faster in fp32 and int8.
    attention = getattr(model.backbone.config, "_attn_implementation", None)
    switch = attention not in (None, "eager") and hasattr(model.backbone, "set_attn_implementation")
    try:
        if switch:
            model.backbone.set_attn_implementation("eager")
        with _quiet(), torch.no_grad():
            torch.onnx.export(wrapped, args, str(path), input_names=names, output_names=[OUTPUT],
                              dynamic_shapes={n: {0: batch, 1: seq} for n in names}, dynamo=True, optimize=True,
                              opset_version=OPSET, external_data=False)
    except ConfigError:
        raise
    except Exception as e:  # the exporter's errors are long; the first line says what failed
        raise ConfigError(f"cannot export {model.name or 'the model'} to ONNX: {str(e).splitlines()[0][:300]}") \
            from None
    finally:
        if switch:
            model.backbone.set_attn_implementation(attention)
        model.backbone.train(was_training)


def export_openvino(model) -> Any:
    """The backbone as an OpenVINO model (fp32 weights) with dynamic batch and sequence axes, converted from the
    PyTorch module by OpenVINO's own frontend."""
    ov = _require("openvino")
    names = input_names(model)
    args = _example_features(model, names)
    wrapped = _LastHidden(model.backbone, names).eval()
    was_training = model.backbone.training
    model.backbone.eval()
    try:
        with _quiet(), torch.no_grad():
            ov_model = ov.convert_model(wrapped, example_input=args, input=[(-1, -1)] * len(names))
    except ConfigError:
        raise
    except Exception as e:
        raise ConfigError(f"cannot convert {model.name or 'the model'} to OpenVINO: {str(e).splitlines()[0][:300]}") \
            from None
    finally:
        model.backbone.train(was_training)
    for port, name in zip(ov_model.inputs, names):
        port.get_tensor().set_names({name})
    ov_model.outputs[0].get_tensor().set_names({OUTPUT})
    return ov_model


def quantize_onnx_int8(src: Path, dst: Path) -> None:
    """ONNX Runtime dynamic quantization: int8 weights per output channel, activations quantized per batch at
    run time (sentence-transformers' ``avx512_vnni`` dynamic config: per_channel, no reduced range)."""
    _require("onnxruntime")
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _quiet():
        quantize_dynamic(str(src), str(dst), per_channel=True, reduce_range=False, weight_type=QuantType.QInt8)


def quantize_openvino_int8(model, ov_model, calibration: Sequence[str], names: list[str]):
    """NNCF post-training static quantization of an OpenVINO model, calibrated on the token ids of ``calibration``
    (model type transformer: the attention softmax and layer norms stay in floating point)."""
    nncf = _require("nncf")
    ids = model._token_ids(list(calibration), model.max_length)
    batches = [model._collate([i]) for i in ids]
    dataset = nncf.Dataset(batches, lambda f: {n: f[n].numpy() for n in names})
    with _quiet():
        return nncf.quantize(ov_model, dataset, model_type=nncf.ModelType.TRANSFORMER, subset_size=len(batches))


def build_export(model, backend: str, precision: str, calibration: Sequence[str] | None = None) -> Path:
    """The exported model file for (model, backend, precision), made once and cached (see the module docstring)."""
    check_backend(backend, precision)
    if backend == "torch":
        raise ConfigError("the torch backend runs the PyTorch module: nothing to export")
    check_exportable(model)
    _require("onnxruntime" if backend == "onnx" else "openvino")
    if backend == "openvino" and precision == "int8":
        if not calibration:
            raise ConfigError("openvino int8 is static quantization: give calibration texts (a few hundred texts "
                              "like those you will embed; --calibration FILE on the command line), or use onnx "
                              "int8 (dynamic quantization, no calibration)")
        calibration = list(calibration)[:MAX_CALIBRATION]
    else:
        calibration = None
    key = export_key(model, backend, precision, calibration)
    folder = export_folder(model, key)
    filename = "model.onnx" if backend == "onnx" else "model.xml"
    if (folder / filename).is_file() and _read_key(folder) == key:
        return folder / filename
    t0 = time.perf_counter()
    log.info("exporting %s to %s %s (once; cached in %s)", model.name or "the model", backend, precision, folder)
    staging = staging_dir(folder, "export")
    try:
        if backend == "onnx":
            fp32 = staging / ("model.onnx" if precision == "fp32" else "fp32.onnx")
            export_onnx(model, fp32)
            if precision == "int8":
                quantize_onnx_int8(fp32, staging / "model.onnx")
                fp32.unlink()
        else:
            import openvino as ov

            ov_model = export_openvino(model)
            if precision == "int8":
                ov_model = quantize_openvino_int8(model, ov_model, calibration, input_names(model))
            ov.save_model(ov_model, str(staging / "model.xml"), compress_to_fp16=False)
        (staging / "export.json").write_text(json.dumps({**key, "seconds": round(time.perf_counter() - t0, 1),
                                                         "source": str(getattr(model, "source_path", "") or "")},
                                                        indent=2, sort_keys=True) + "\n", encoding="utf-8")
        replace_dir(staging, folder, overwrite=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return folder / filename


def _read_key(folder: Path) -> dict | None:
    try:
        data = json.loads((folder / "export.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    return {k: v for k, v in data.items() if k not in ("seconds", "source")}


class ExportedRunner:
    """Runs an exported backbone: features (torch int tensors) -> last hidden states (float32 torch tensor). One
    compiled session per thread count, made on first use."""

    def __init__(self, backend: str, precision: str, path: Path, names: list[str], streams: int = 1):
        check_backend(backend, precision, streams)
        self.backend, self.precision, self.path, self.names = backend, precision, Path(path), names
        self.streams = streams  # openvino: batches run concurrently (THROUGHPUT mode, a window of infer requests)
        self._sessions: dict[int, Any] = {}
        self._lock = threading.Lock()

    def _session(self, threads: int | None) -> Any:
        n = int(threads or torch.get_num_threads())
        with self._lock:
            if n not in self._sessions:
                self._sessions[n] = self._open(n)
            return self._sessions[n]

    def map(self, batches: Sequence[dict[str, torch.Tensor]], num_threads: int | None = None) -> list[torch.Tensor]:
        """Last hidden states of several batches, in order: one after the other, or with ``streams`` > 1 (openvino)
        that many in flight at once (a window of infer requests) sharing the threads."""
        if self.streams == 1 or len(batches) == 1:
            return [self(b, num_threads) for b in batches]
        compiled = self._session(num_threads)
        # A rolling window of plain infer requests, read in submission order, and no Python callback: an
        # AsyncInferQueue's callback holds a Python function inside OpenVINO's stream threads, and a compiled model
        # destroyed (with the GIL held) while one of those threads still needs the GIL to release it deadlocks (seen
        # as a test hanging at teardown under load).
        requests = [compiled.create_infer_request() for _ in range(min(self.streams, len(batches)))]
        results: list[torch.Tensor] = []
        in_flight: list[Any] = []
        for i, b in enumerate(batches):
            if len(in_flight) == len(requests):  # every request busy: collect the oldest, then reuse it
                results.append(self._collect(in_flight.pop(0)))
            request = requests[i % len(requests)]
            request.start_async({n: b[n].detach().cpu().numpy().astype(np.int64, copy=False) for n in self.names})
            in_flight.append(request)
        results += [self._collect(r) for r in in_flight]
        return results

    @staticmethod
    def _collect(request: Any) -> torch.Tensor:
        request.wait()
        return torch.from_numpy(np.array(request.get_output_tensor(0).data, dtype=np.float32, copy=True))

    def _open(self, threads: int) -> Any:
        if self.backend == "onnx":
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            return ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        import openvino as ov

        # The CPU plugin runs in bf16 by default on CPUs that have it: fp32 must be asked for. The int8 model's
        # operations that stay unquantized (softmax, layer norms, the attention products) run in bf16 where the CPU
        # has it, as OpenVINO (and sentence-transformers' OpenVINO int8 path) does by default; the quality cost is
        # what benchmarks/inference_quality.py measures.
        core = ov.Core()
        hint = "f32"
        if self.precision == "bf16" or (self.precision == "int8"
                                        and "BF16" in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")):
            hint = "bf16"
        config = {"INFERENCE_PRECISION_HINT": hint, "INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"}
        if self.streams > 1:
            config.update(PERFORMANCE_HINT="THROUGHPUT", NUM_STREAMS=self.streams)
        return core.compile_model(str(self.path), "CPU", config)

    def __call__(self, features: dict[str, torch.Tensor], num_threads: int | None = None) -> torch.Tensor:
        feed = {n: features[n].detach().cpu().numpy().astype(np.int64, copy=False) for n in self.names}
        session = self._session(num_threads)
        if self.backend == "onnx":
            out = session.run([OUTPUT], feed)[0]
        else:
            out = session(feed)[0]
        return torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32))


def make_runner(model, backend: str, precision: str, calibration: Sequence[str] | None = None,
                streams: int = 1) -> ExportedRunner:
    check_backend(backend, precision, streams)  # before exporting anything
    path = build_export(model, backend, precision, calibration)
    return ExportedRunner(backend, precision, path, input_names(model), streams=streams)
