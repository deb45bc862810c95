"""The fusion driver: validate, merge tensor by tensor, write a sentence-transformers folder atomically.

    fuse(["runs/a/final", "runs/b/final"], method="delta_guided", base="sentence-transformers/all-MiniLM-L6-v2",
         out="runs/fused")                      # what `embedlab fuse` runs

Streaming (the default): for each weight tensor, the base's and every checkpoint's copy are read, combined by the
method (in fp32), cast back to the checkpoints' dtype and kept; nothing else is held. Peak memory is therefore about
one model (the output) plus one tensor per input, whatever the number of checkpoints. ``streaming=False`` loads every
state dict first (the naive merge, kept for the benchmark and the equality test).

Non-float tensors (position ids, other integer buffers) are copied from the first checkpoint, never averaged. The
output folder is the first checkpoint's folder (tokenizer, pooling, configs) with the merged weights and a
``fusion.json`` recording method, parameters, weights, inputs and seed; it is written to a temporary folder and renamed
into place. Random methods (DARE) draw from a generator seeded with (seed, tensor name).
"""
from __future__ import annotations

import logging
import shutil
import time
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from .. import __version__
from ..atomic import check_output_dir, replace_dir, staging_dir, write_json
from ..errors import ConfigError, ModelError
from .base import MERGE_METHODS
from .checkpoints import Checkpoint, check_compatible, has_tokenizer, open_checkpoint

log = logging.getLogger("embedlab.fusion")

_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "trainer_state.pt",
                 "fusion.json")


@dataclass
class FusionResult:
    out: Path
    method: str
    params: dict[str, Any]
    weights: list[float]
    models: list[str]
    base: str | None
    seed: int
    merged_tensors: int = 0
    copied_tensors: int = 0
    seconds: float = 0.0
    streaming: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


def _tensor_seed(seed: int, key: str) -> int:
    return (zlib.crc32(key.encode()) ^ (seed * 0x9E3779B1)) & 0x7FFF_FFFF


def _weights(weights: Sequence[float] | None, n: int, method: str) -> torch.Tensor:
    if weights is None:
        return torch.full((n,), 1.0 / n, dtype=torch.float64)
    try:
        if isinstance(weights, (str, bytes, dict)):
            raise TypeError
        weights = list(weights)
    except TypeError:
        raise ConfigError(f"weights must be a list of numbers (one per model), got {weights!r}") from None
    if len(weights) != n:
        raise ConfigError(f"{len(weights)} weights for {n} models: give one weight per model")
    values = []
    for x in weights:
        try:
            if isinstance(x, (bool, bytes)):
                raise TypeError
            values.append(float(x))
        except (TypeError, ValueError, OverflowError):
            raise ConfigError(f"weights must be numbers, got {x!r} in {weights}") from None
    w = torch.tensor(values, dtype=torch.float64)
    # the merge runs in float32: a weight (or their sum) beyond float32's range would turn the output into inf/NaN
    if not (torch.isfinite(w).all() and torch.isfinite(w.float()).all() and torch.isfinite(w.float().abs().sum())):
        raise ConfigError(f"weights must be finite numbers within float32's range (|w| < 3.4e38), "
                          f"got {list(weights)}")
    if method in ("linear", "delta_guided") and (w < 0).any():
        raise ConfigError(f"{method}: weights must be >= 0, got {list(weights)}")
    if w.sum() == 0:
        raise ConfigError("the weights sum to 0")
    return w


def merge_tensors(method: str, models: list[Checkpoint], base: Checkpoint | None, weights: torch.Tensor,
                  params: dict[str, Any], seed: int, streaming: bool = True,
                  progress: Callable[[int, int], None] | None = None) -> tuple[dict[str, torch.Tensor], int, int]:
    """-> (merged state dict, merged count, copied count)."""
    spec = MERGE_METHODS.get(method)
    first = models[0]
    keys = list(first.key_files)
    if streaming:
        read_model = [m.read for m in models]
        read_base = base.read if base is not None else None
    else:  # the naive merge: every state dict in memory first
        states = [{k: m.read(k) for k in keys} for m in models]
        base_state = {k: base.read(k) for k in keys if k in base.key_files} if base is not None else None
        read_model = [s.__getitem__ for s in states]
        read_base = base_state.__getitem__ if base_state is not None else None
    out: dict[str, torch.Tensor] = {}
    merged = copied = 0
    for i, key in enumerate(keys):
        if not first.is_float(key):
            out[key] = read_model[0](key).clone()
            copied += 1
        else:
            theta0 = read_base(key).float() if (spec.needs_base and read_base is not None) else None
            result = spec.fn(theta0, _Models(read_model, key), weights.float(), params, _tensor_seed(seed, key))
            out[key] = result.to(_DTYPES.get(first.dtypes[key], torch.float32)).contiguous()
            if not torch.isfinite(out[key]).all():
                _non_finite(key, models, base, read_model, read_base, first.dtypes[key])
            merged += 1
            del theta0, result
        if progress is not None:
            progress(i + 1, len(keys))
    return out, merged, copied


def _non_finite(key: str, models: list[Checkpoint], base: Checkpoint | None, read_model: list, read_base,
                dtype: str) -> None:
    """The merged tensor ``key`` holds NaN or inf: a ModelError naming it and the inputs (those already non-finite
    there first), never a silently broken model."""
    bad = [m.label for m, read in zip(models, read_model) if not torch.isfinite(read(key).float()).all()]
    if base is not None and read_base is not None and key in base.key_files \
            and not torch.isfinite(read_base(key).float()).all():
        bad.append(f"{base.label} (base)")
    inputs = ", ".join([m.label for m in models] + ([f"{base.label} (base)"] if base is not None else []))
    why = (f"NaN or inf already in {', '.join(bad)}" if bad else
           f"the inputs are finite: the weights or parameters overflow ({dtype})")
    raise ModelError(f"fusion produced NaN or inf in tensor {key!r} ({why}); inputs: {inputs}")


_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


class _Models(Sequence):
    """The K copies of one tensor, read (and cast to fp32) only when indexed: methods that visit the models one at a
    time hold one copy at a time."""

    def __init__(self, readers: list, key: str):
        self.readers, self.key = readers, key

    def __len__(self) -> int:
        return len(self.readers)

    def __getitem__(self, k: int) -> torch.Tensor:  # type: ignore[override]
        return self.readers[k](self.key).float()


def update_sizes(state: dict[str, torch.Tensor], models: Sequence[Checkpoint], base: Checkpoint) -> dict[str, Any]:
    """How far the merge moved from the base, next to how far each input had moved: the L2 norm of θ − θ0 over the
    float tensors the base holds, for the merged model and for each input, and their ratio to the inputs' mean.
    Methods differ mostly in this size (task arithmetic's λ, TIES' trimming, DARE's rescale, delta-guided's λ), so
    comparing them fairly means comparing them at matched update sizes (docs/fusion.md)."""
    keys = [k for k, v in state.items() if v.is_floating_point() and k in base.key_files]
    merged_sq, inputs_sq = 0.0, [0.0] * len(models)
    for key in keys:
        theta0 = base.read(key).double()
        merged_sq += float((state[key].double() - theta0).square().sum())
        for i, m in enumerate(models):
            inputs_sq[i] += float((m.read(key).double() - theta0).square().sum())
    merged, inputs = merged_sq ** 0.5, [x ** 0.5 for x in inputs_sq]
    mean_input = sum(inputs) / len(inputs) if inputs else 0.0
    return {"update_norm": merged, "input_update_norms": inputs,
            "relative_update": merged / mean_input if mean_input > 0 else None, "tensors": len(keys)}


def write_merged(first: Checkpoint, state: dict[str, torch.Tensor], out: Path, record: dict[str, Any],
                 overwrite: bool = False, inputs: Sequence[str | Path] = ()) -> Path:
    """The first checkpoint's folder with ``state`` as its weights, written atomically to ``out`` (replacing only
    what embedlab wrote there, never an input: embedlab.atomic's ownership rule)."""
    from safetensors.torch import save_file

    out = Path(out)
    staging = staging_dir(out, "fusing")
    try:
        shutil.copytree(first.path, staging, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns(*_WEIGHT_FILES, "model-*-of-*.safetensors", "checkpoints",
                                                      "optimizer*", "zero", ".*"))
        if not has_tokenizer(staging / first.weights_rel):
            raise ModelError(f"{first.label}: the fused model would have no tokenizer files (tokenizer.json, "
                             f"vocab.txt, tokenizer.model or vocab.json + merges.txt) in "
                             f"{first.path / first.weights_rel}")
        save_file(state, str(staging / first.weights_rel / "model.safetensors"), metadata={"format": "pt"})
        write_json(staging / "fusion.json", record)
        replace_dir(staging, out, overwrite=overwrite, inputs=inputs)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def fuse(models: Sequence[str | Path], method: str = "delta_guided", out: str | Path = "runs/fused",
         base: str | Path | None = None, weights: Sequence[float] | None = None,
         params: dict[str, Any] | None = None, seed: int = 0, streaming: bool = True,
         show_progress: bool = True, extra: dict[str, Any] | None = None, overwrite: bool = False) -> FusionResult:
    """Merge ``models`` with a registered method and write the result to ``out`` (see the module docstring).

    ``out`` may not be an input or hold one; an existing folder there is replaced only when embedlab wrote it or
    with ``overwrite=True`` (checked before any tensor is read)."""
    spec = MERGE_METHODS.get(method)
    if spec.needs_score:
        raise ConfigError(f"merge method {method!r} chooses models by dev score: give dev tasks (embedlab fuse "
                          f"--dev-tasks stsb-dev,scifact-dev) or call embedlab.fusion.greedy.greedy_soup")
    if not models:
        raise ConfigError("no models to fuse")
    spec.check_count(len(models))
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed must be an integer >= 0, got {seed!r}")
    params = spec.resolve_params(params, len(models))  # unknown parameters fail before any file is read
    w = _weights(weights, len(models), method)
    if spec.needs_base and base is None:
        raise ConfigError(f"merge method {method!r} needs the base model the checkpoints were trained from "
                          f"(--base / base_model)")
    inputs = [str(m) for m in models] + ([str(base)] if base is not None else [])
    check_output_dir(out, overwrite=overwrite, inputs=inputs)
    t0 = time.perf_counter()
    ckpts = [open_checkpoint(m) for m in models]
    base_ckpt = open_checkpoint(base) if base is not None else None
    check_compatible(ckpts, base_ckpt if spec.needs_base else None)
    bar = None
    if show_progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(ckpts[0].key_files), desc=f"fuse ({method})", unit="tensor")
    state, merged, copied = merge_tensors(method, ckpts, base_ckpt, w, params, seed, streaming,
                                          progress=(lambda i, n: bar.update(1)) if bar else None)
    if bar:
        bar.close()
    extra = dict(extra or {})
    if base_ckpt is not None:  # the update size of the merge and of its inputs (for comparisons at equal size)
        extra["update"] = update_sizes(state, ckpts, base_ckpt)
    result = FusionResult(Path(out), method, params, [float(x) for x in w], [str(m) for m in models],
                          str(base) if base is not None else None, seed, merged, copied, 0.0, streaming, extra)
    result.seconds = time.perf_counter() - t0
    record = {"embedlab": __version__, **{k: (str(v) if isinstance(v, Path) else v)
                                          for k, v in asdict(result).items()}}
    write_merged(ckpts[0], state, Path(out), record, overwrite=overwrite, inputs=inputs)
    log.info("fused %d models with %s into %s (%d tensors merged, %d copied)", len(models), method, out, merged,
             copied)
    return result
