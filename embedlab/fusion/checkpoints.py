"""Fusion inputs: find a checkpoint's weight files, read tensors lazily one at a time, and check that checkpoints can
be merged at all.

A checkpoint is a folder in the sentence-transformers / Hugging Face layout (or a package model name or hub id that
pretrained.resolve turns into one). Its weights are ``model.safetensors``, a sharded ``model.safetensors.index.json``,
or (older models) ``pytorch_model.bin``, at the root or in the Transformer module's folder named by ``modules.json``.
Safetensors are read tensor by tensor through ``safe_open`` opened per read, so no mapping of a whole file stays
resident; ``.bin`` files are memory-mapped by ``torch.load(mmap=True)``.

``check_compatible`` stops a merge before any tensor is combined when the inputs differ in architecture (model type
and sizes in config.json, tensor names and shapes), tokenizer (vocabulary) or embedding configuration (module list,
pooling, normalisation, prompts): the message names the two checkpoints and what differs. It does not merge (merge.py).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError, ModelError

ARCH_KEYS = ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
             "intermediate_size", "vocab_size")
FLOAT_DTYPES = {"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2"}


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except json.JSONDecodeError as e:
        raise ModelError(f"{path}: not valid JSON ({e})") from None


def _modules(root: Path) -> list[dict]:
    """modules.json checked like Embedder.load checks it ([] for a plain transformers folder)."""
    from ..text.embedder import read_modules

    return read_modules(root / "modules.json") if (root / "modules.json").is_file() else []


@dataclass
class Checkpoint:
    """One fusion input. ``weights_dir`` is where the weight files are (relative to ``path``: ``weights_rel``)."""

    label: str
    path: Path
    weights_rel: str
    key_files: dict[str, Path] = field(repr=False)
    dtypes: dict[str, str] = field(repr=False)
    shapes: dict[str, tuple[int, ...]] = field(repr=False)
    _bin: dict | None = field(default=None, repr=False)

    def read(self, key: str) -> torch.Tensor:
        if self._bin is not None:
            return self._bin[key]
        from safetensors import safe_open

        try:
            with safe_open(str(self.key_files[key]), framework="pt") as f:
                return f.get_tensor(key)
        except Exception as e:  # the file changed or was damaged since it was opened
            raise _damaged(self.label, self.key_files[key], e) from None

    def is_float(self, key: str) -> bool:
        return self.dtypes[key] in FLOAT_DTYPES

    @property
    def config(self) -> dict:
        return _read_json(self.path / self.weights_rel / "config.json") or {}

    def vocab(self) -> dict[str, int] | None:
        tok = self.path / self.weights_rel / "tokenizer.json"
        if tok.is_file():
            from tokenizers import Tokenizer

            return Tokenizer.from_file(str(tok)).get_vocab()
        txt = self.path / self.weights_rel / "vocab.txt"
        if txt.is_file():
            return {line.rstrip("\n"): i for i, line in enumerate(txt.read_text(encoding="utf-8").splitlines())}
        return None

    def embedding_config(self) -> dict[str, Any]:
        """What, besides the weights, decides the embeddings: modules, pooling, normalisation, prompts."""
        modules = _modules(self.path)
        st = _read_json(self.path / "config_sentence_transformers.json") or {}
        pooling = None
        for m in modules:
            if str(m.get("type", "")).endswith("Pooling"):
                pooling = _read_json(self.path / m["path"] / "config.json")
        ours = _read_json(self.path / "embedlab.json") or {}
        return {"modules": [str(m.get("type", "")).rsplit(".", 1)[-1] for m in modules], "pooling": pooling,
                "prompts": st.get("prompts") or {}, "default_prompt_name": st.get("default_prompt_name"),
                "embedlab pooling": ours.get("pooling")}


TOKENIZER_FILES = (("tokenizer.json",), ("vocab.txt",), ("tokenizer.model",), ("vocab.json", "merges.txt"))


def has_tokenizer(folder: Path) -> bool:
    """True when ``folder`` holds the files of some Hugging Face tokenizer (fast, WordPiece, SentencePiece or BPE)."""
    return any(all((folder / f).is_file() for f in group) for group in TOKENIZER_FILES)


def open_checkpoint(name: str | Path) -> Checkpoint:
    from ..pretrained import resolve

    where = resolve(str(name))
    if where.source == "hub":
        raise ModelError(f"{name}: not a local folder or package model; download it first (fusion reads local files)")
    if where.gguf_file:
        raise ModelError(f"{name}: a GGUF (quantised) file cannot be fused; convert it to safetensors first")
    root = Path(where.location)
    rel = ""
    for m in _modules(root):
        if str(m.get("type", "")).endswith("Transformer"):
            rel = m.get("path", "")
            break
    wdir = root / rel
    key_files: dict[str, Path] = {}
    dtypes: dict[str, str] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    index = wdir / "model.safetensors.index.json"
    if index.is_file():
        files = {k: wdir / f for k, f in (_read_json(index) or {}).get("weight_map", {}).items()}
    elif (wdir / "model.safetensors").is_file():
        files = None
    elif (wdir / "pytorch_model.bin").is_file():
        try:
            state = torch.load(wdir / "pytorch_model.bin", map_location="cpu", mmap=True, weights_only=True)
        except Exception as e:  # truncated or garbage: pickle/zip/RuntimeError, whatever torch raises
            raise _damaged(name, wdir / "pytorch_model.bin", e) from None
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise ModelError(f"{name}: {wdir / 'pytorch_model.bin'} is not a state dict of tensors")
        return Checkpoint(str(name), root, rel, {k: wdir / "pytorch_model.bin" for k in state},
                          {k: _torch_dtype_code(v.dtype) for k, v in state.items()},
                          {k: tuple(v.shape) for k, v in state.items()}, _bin=state)
    else:
        raise ModelError(f"{name}: no model.safetensors, model.safetensors.index.json or pytorch_model.bin in {wdir}")
    from safetensors import safe_open

    for path in sorted(set(files.values())) if files else [wdir / "model.safetensors"]:
        if not path.is_file():
            raise ModelError(f"{name}: weight file {path} (listed in {index.name}) not found")
        try:
            with safe_open(str(path), framework="pt") as f:
                for key in f.keys():
                    sl = f.get_slice(key)
                    key_files[key] = path
                    dtypes[key] = sl.get_dtype()
                    shapes[key] = tuple(sl.get_shape())
        except Exception as e:  # SafetensorError (header too large, truncated, ...), OSError
            raise _damaged(name, path, e) from None
    return Checkpoint(str(name), root, rel, key_files, dtypes, shapes)


def _damaged(name: str | Path, path: Path, e: Exception) -> ModelError:
    detail = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
    return ModelError(f"{name}: cannot read the weight file {path}: damaged, truncated or not a weight file "
                      f"({type(e).__name__}: {detail})")


def _torch_dtype_code(dtype: torch.dtype) -> str:
    return {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16"}.get(dtype, "I64")


def float_keys(ckpt: Checkpoint) -> list[str]:
    return [k for k in ckpt.key_files if ckpt.is_float(k)]


def check_compatible(models: list[Checkpoint], base: Checkpoint | None) -> None:
    """Raise ConfigError naming the first difference that makes the inputs unmergeable."""
    first = models[0]
    for other in models[1:] + ([base] if base is not None else []):
        for key in ARCH_KEYS:
            a, b = first.config.get(key), other.config.get(key)
            if a != b:
                raise ConfigError(f"cannot fuse: {first.label} and {other.label} have different architectures "
                                  f"(config.json {key}: {a} vs {b})")
    keys = set(float_keys(first))
    for other in models[1:]:
        theirs = set(float_keys(other))
        if theirs != keys:
            missing, extra = sorted(keys - theirs)[:3], sorted(theirs - keys)[:3]
            raise ConfigError(f"cannot fuse: {other.label} has other weight tensors than {first.label} "
                              f"(missing {missing}, extra {extra})")
    for other in models[1:] + ([base] if base is not None else []):
        for key in keys:
            if key not in other.shapes:
                raise ConfigError(f"cannot fuse: the base {other.label} has no tensor {key!r}; is it the model the "
                                  f"checkpoints were trained from?")
            if other.shapes[key] != first.shapes[key]:
                raise ConfigError(f"cannot fuse: tensor {key!r} is {first.shapes[key]} in {first.label} but "
                                  f"{other.shapes[key]} in {other.label}")
    for ckpt in models:  # the output takes the first model's tokenizer; a model without one cannot be used
        if not has_tokenizer(ckpt.path / ckpt.weights_rel):
            raise ModelError(f"cannot fuse: {ckpt.label} has no tokenizer files (tokenizer.json, vocab.txt, "
                             f"tokenizer.model or vocab.json + merges.txt) in {ckpt.path / ckpt.weights_rel}")
    vocab = first.vocab()
    for other in models[1:] + ([base] if base is not None else []):
        theirs = other.vocab()
        if vocab is not None and theirs is not None and theirs != vocab:
            differ = sum(1 for t, i in vocab.items() if theirs.get(t) != i)
            raise ConfigError(f"cannot fuse: {first.label} and {other.label} have different tokenizers "
                              f"({len(vocab)} vs {len(theirs)} tokens, {differ} ids differ)")
    ref = first.embedding_config()
    for other in models[1:]:
        theirs = other.embedding_config()
        differ = [k for k in ref if ref[k] != theirs[k]]
        if differ:
            detail = "; ".join(f"{k}: {ref[k]} vs {theirs[k]}" for k in differ)
            raise ConfigError(f"cannot fuse: {first.label} and {other.label} embed differently ({detail})")
