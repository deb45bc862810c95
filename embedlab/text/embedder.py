"""The Embedder: a Hugging Face backbone + pooling + optional L2 normalisation + prompts.

- ``Embedder.load(name_or_path)`` resolves the name (package copy -> path -> hub, see pretrained.py) and reads the
  sentence-transformers layout (modules.json, 1_Pooling/config.json, sentence_bert_config.json,
  config_sentence_transformers.json) or a plain transformers folder or a GGUF file (decoders).
- ``encode(texts)`` is the fast inference path: tokenise everything once, sort by token length, cut batches by a
  token budget so padding is minimal, run under ``torch.inference_mode``; float32 numpy (or torch) out, in input order.
- ``forward(features)`` is the training path (gradients on); ``tokenize`` builds its inputs.
- ``save(path)`` writes the sentence-transformers layout, so ``SentenceTransformer(path)`` and MTEB load it unchanged;
  embedlab-only settings (e.g. ``prompt_token`` pooling) also go to ``embedlab.json``.

Encoders (BERT-like) are right-padded; decoders (LLaMA-like) are left-padded and get position ids that start at 0 on
the first real token. A decoder may carry a prompt *template* (templates.py: the sentence inside, representation
slots marked); then every text is templated, and the embedding is the hidden state at the ``slots`` (default: the
template's last slot; several slots are L2-normalised and averaged, e.g. CSE-SFP's Rep1+Rep2). Templates replace
pooling and prefix prompts. This module does not know datasets, losses or evaluation.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from .. import __version__
from ..atomic import check_output_dir, replace_dir, staging_dir
from ..errors import ConfigError, ModelError
from .pooling import PoolingConfig, pool
from ..pretrained import ResolvedModel, resolve, unknown_model_message
from .templates import Template, TemplateEncoder, get_template

ST_TRANSFORMER = "sentence_transformers.models.Transformer"
ST_POOLING = "sentence_transformers.models.Pooling"
ST_NORMALIZE = "sentence_transformers.models.Normalize"
_DEFAULT_MAX_LENGTH = 512
MAX_THREADS = 1024  # intra-op threads: more crashed torch's thread pool (segfault at 100000); recipes cap it too


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run a block with ``n`` intra-op threads, restoring the previous count afterwards."""
    if not n:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class Embedder(torch.nn.Module):
    def __init__(
        self,
        backbone: torch.nn.Module,
        tokenizer,
        pooling: PoolingConfig | None = None,
        normalize: bool = True,
        max_length: int | None = None,
        prompts: dict[str, str] | None = None,
        default_prompt_name: str | None = None,
        is_decoder: bool = False,
        name: str | None = None,
        similarity: str = "cosine",
        do_lower_case: bool = False,
        template: Template | str | dict | None = None,
        slots: Sequence[str] | None = None,
    ):
        super().__init__()
        self.backbone = backbone
        self.tokenizer = tokenizer
        self.pooling = pooling or PoolingConfig("last_token" if is_decoder else "mean")
        self.normalize = normalize
        if max_length is None:  # the default: 512 tokens, or fewer when the model has fewer positions
            limit = self.max_positions
            max_length = min(_DEFAULT_MAX_LENGTH, limit) if limit else _DEFAULT_MAX_LENGTH
        else:
            self._check_length(int(max_length))  # an explicit length beyond the positions is an error
        self.max_length = int(max_length)
        self.prompts = dict(prompts or {})
        self.default_prompt_name = default_prompt_name
        self.is_decoder = is_decoder
        self.name = name or getattr(backbone.config, "_name_or_path", "model")
        self.similarity = similarity
        self.do_lower_case = do_lower_case  # sentence-transformers' flag: lower-case texts before the tokenizer
        self._hash_cache: tuple[tuple, str] | None = None
        self.source_path: str | None = None  # where the weights were loaded from (None: built in memory)
        # Inference backend (backends.py): torch runs this module; onnx / openvino run an exported backbone.
        self.backend, self.precision = "torch", "fp32"
        self.runner = None
        self._runner_hash: str | None = None
        if is_decoder:
            tokenizer.padding_side = "left"
            if tokenizer.pad_token is None:  # most causal LMs have none; any id works since it is masked out
                tokenizer.pad_token = tokenizer.eos_token
        self._uses_token_types = "token_type_ids" in getattr(tokenizer, "model_input_names", [])
        self.template: Template | None = None
        self.slots: tuple[str, ...] = ()
        if template is not None:
            self.set_template(template, slots)

    def set_template(self, template: Template | str | dict | None, slots: Sequence[str] | None = None) -> None:
        """Use a prompt template (a registered name, a dict or a Template) with ``slots`` as the embedding (default:
        its last slot); None removes it. Checks the tokenizer can serve it (e.g. a BOS token when bos: always)."""
        if template is None:
            self.template, self.slots, self._template_encoder = None, (), None
            return
        t = get_template(template)
        chosen = tuple(slots) if slots else t.slots[-1:]
        unknown = [x for x in chosen if x not in t.slots]
        if unknown:
            raise ConfigError(f"template {t.name!r} has slots {list(t.slots)}; unknown: {unknown}")
        self._template_encoder = TemplateEncoder(self.tokenizer, t)
        self.template, self.slots = t, chosen

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(
        cls,
        name_or_path: str,
        *,
        pooling: str | PoolingConfig | None = None,
        normalize: bool | None = None,
        max_length: int | None = None,
        device: str | None = None,
        torch_dtype: torch.dtype | None = None,
        backend: str = "torch",
        precision: str = "fp32",
        calibration_texts: Sequence[str] | None = None,
        streams: int = 1,
    ) -> "Embedder":
        """Load by package name, path or hub id. Keyword arguments override what the folder's configs say.

        ``backend`` (torch | onnx | openvino) and ``precision`` (fp32 | bf16 | int8, per backend) choose how
        ``encode`` runs the backbone (``set_backend``; backends.py); ``calibration_texts`` calibrate openvino int8."""
        from .backends import check_backend

        check_backend(backend, precision, streams)  # before reading any weights
        _check_at_least_1("max_length", max_length, optional=True)  # 0 / negative: wrong, not "the default"
        if device is not None:
            try:
                torch.empty(0, device=device)  # an unknown or absent device fails here, before reading weights
            except (RuntimeError, AssertionError, ValueError) as e:
                raise ConfigError(f"device {device!r} cannot be used here ({str(e).splitlines()[0][:200]})") \
                    from None
        resolved = resolve(name_or_path)
        folder = _materialise(resolved)
        if resolved.gguf_file:
            model = _load_gguf(folder, resolved.gguf_file, name_or_path)
        elif (folder / "modules.json").is_file():
            model = _load_st_folder(folder, resolved)
        else:
            model = _load_plain(folder, resolved.kind == "decoder", resolved.name)
        if pooling is not None:
            model.pooling = pooling if isinstance(pooling, PoolingConfig) else PoolingConfig(pooling)
        if normalize is not None:
            model.normalize = normalize
        if max_length is not None:
            model._check_length(int(max_length))
            model.max_length = int(max_length)
        model.name = resolved.name
        model.source_path = (str(Path(resolved.location) / resolved.gguf_file) if resolved.gguf_file
                             else resolved.location)
        if torch_dtype is not None:
            model.backbone.to(torch_dtype)
        if device is not None:
            model.to(device)
        model.eval()
        if backend != "torch" and device not in (None, "cpu"):
            raise ConfigError(f"backend {backend!r} runs on the CPU; got device {device!r}")
        model.set_backend(backend, precision, calibration_texts, streams=streams)
        return model

    def set_backend(self, backend: str = "torch", precision: str = "fp32",
                    calibration_texts: Sequence[str] | None = None, streams: int = 1) -> "Embedder":
        """Run ``encode``'s backbone on ``backend`` at ``precision``: torch fp32 / bf16 (autocast), onnx fp32 /
        int8, openvino fp32 / bf16 / int8 (static: needs ``calibration_texts``). Exports once and caches the
        exported model (backends.py). ``streams`` (openvino): batches in flight at once. The training path
        (``forward``) always runs PyTorch."""
        from .backends import check_backend, make_runner

        check_backend(backend, precision, streams)
        runner = None
        if backend != "torch":
            runner = make_runner(self, backend, precision, calibration_texts, streams=streams)
        self.backend, self.precision, self.runner = backend, precision, runner
        self._runner_hash = self.model_hash(torch_only=True) if runner is not None else None
        return self

    # ------------------------------------------------------------------ properties
    @property
    def device(self) -> torch.device:
        return next(self.backbone.parameters()).device

    @property
    def dim(self) -> int:
        return int(self.backbone.config.hidden_size)

    def resolve_prompt(self, prompt_name: str | None = None, prompt: str | None = None) -> str:
        """The prompt text to prepend: an explicit ``prompt`` wins, then ``prompt_name``, then the default."""
        if self.template is not None:
            if prompt or prompt_name:
                raise ConfigError(f"this model uses the template {self.template.name!r}; prefix prompts do not apply")
            return ""
        if prompt is not None:
            return prompt
        name = prompt_name if prompt_name is not None else self.default_prompt_name
        if name is None:
            return ""
        if name not in self.prompts:
            raise ConfigError(f"unknown prompt name {name!r}; this model has: "
                              f"{', '.join(sorted(self.prompts)) or 'none'}")
        return self.prompts[name]

    def prompt_length(self, prompt: str) -> int:
        """Tokens the prompt occupies at the start of a text (special prefix tokens included, trailing special
        token excluded) — the convention sentence-transformers uses to drop prompts from mean pooling."""
        if not prompt:
            return 0
        ids = self.tokenizer(prompt, add_special_tokens=True)["input_ids"]
        if ids and ids[-1] in set(self.tokenizer.all_special_ids):
            return len(ids) - 1
        return len(ids)

    # ------------------------------------------------------------------ tokenising and batching
    def _template_ids(self, texts: Sequence[str]) -> tuple[list[list[int]], list[list[int]]]:
        """Templated token ids and, per text, the positions of every template slot (from the first real token)."""
        return self._template_encoder.encode(list(texts))

    @property
    def max_positions(self) -> int | None:
        """The longest input the backbone's position embeddings can take (None: not stated by its config)."""
        cfg = getattr(self.backbone, "config", None)
        n = getattr(cfg, "max_position_embeddings", None)
        if not isinstance(n, int):
            return None
        # RoBERTa-style models number positions from padding_idx + 1 (514 embeddings -> 512 usable positions).
        if getattr(cfg, "model_type", "") in ("roberta", "xlm-roberta", "camembert", "mpnet", "longformer"):
            n -= int(getattr(cfg, "pad_token_id", 1) or 1) + 1
        return n

    def _check_length(self, max_length: int) -> None:
        limit = self.max_positions
        if limit is not None and max_length > limit:
            name = getattr(self, "name", None) or "this model"
            raise ConfigError(f"max_length {max_length} is more than {name} can take "
                              f"({limit} positions); use a max_length between 1 and {limit}")

    def _token_ids(self, texts: Sequence[str], max_length: int) -> list[list[int]]:
        self._check_length(max_length)  # before tokenising: the model would fail deep inside otherwise
        if self.do_lower_case:
            texts = [t.lower() for t in texts]
        enc = self.tokenizer(list(texts), truncation=True, max_length=max_length, add_special_tokens=True,
                             return_attention_mask=False, return_token_type_ids=False)
        return enc["input_ids"]

    def _collate(self, ids: Sequence[Sequence[int]],
                 slot_positions: Sequence[Sequence[int]] | None = None) -> dict[str, torch.Tensor]:
        """Pad token-id lists into tensors (left for decoders, right for encoders); template slot positions become
        ``slot_positions`` [batch, all template slots] in padded coordinates."""
        width = max(len(x) for x in ids)
        pad_id = self.tokenizer.pad_token_id or 0
        input_ids = np.full((len(ids), width), pad_id, dtype=np.int64)
        mask = np.zeros((len(ids), width), dtype=np.int64)
        for row, seq in enumerate(ids):
            if self.is_decoder:
                input_ids[row, width - len(seq):] = seq
                mask[row, width - len(seq):] = 1
            else:
                input_ids[row, : len(seq)] = seq
                mask[row, : len(seq)] = 1
        features = {"input_ids": torch.from_numpy(input_ids), "attention_mask": torch.from_numpy(mask)}
        if slot_positions is not None:
            shift = [width - len(seq) if self.is_decoder else 0 for seq in ids]
            features["slot_positions"] = torch.tensor([[p + shift[i] for p in row]
                                                       for i, row in enumerate(slot_positions)], dtype=torch.long)
        if self._uses_token_types:
            features["token_type_ids"] = torch.zeros_like(features["input_ids"])
        return features

    def tokenize(self, texts: Sequence[str], prompt: str = "", max_length: int | None = None) -> dict:
        """Training-path tokenisation: prompt prepended (or the template applied), padded tensors,
        ``prompt_length`` for pooling (``slot_positions`` with a template)."""
        ids, positions, prompt_length = self._training_ids(texts, prompt, max_length)
        return {**self._collate(ids, positions), "prompt_length": prompt_length}

    def tokenize_groups(self, texts: Sequence[str], prompt: str = "", max_length: int | None = None, *,
                        overhead_tokens: int) -> list[tuple[np.ndarray, dict]]:
        """``tokenize`` in groups of similar length: [(indices into ``texts``, features)], each text in exactly one
        group. Padding is masked, so each text's embedding is the one ``tokenize`` gives (to float rounding), but a
        batch of a few 256-token documents and many short sentences no longer pads every sentence to 256 tokens
        (the naive baseline's mixed batches: ~3.7x fewer tokens, benchmarks/length_groups.py). ``overhead_tokens``: see
        ``plan_length_groups``."""
        ids, positions, prompt_length = self._training_ids(texts, prompt, max_length)
        groups = self.plan_length_groups([len(x) for x in ids], overhead_tokens)
        return [(g, {**self._collate([ids[i] for i in g], None if positions is None else [positions[i] for i in g]),
                     "prompt_length": prompt_length}) for g in groups]

    def _training_ids(self, texts: Sequence[str], prompt: str, max_length: int | None
                      ) -> tuple[list[list[int]], list[list[int]] | None, int]:
        """(token ids per text, template slot positions or None, prompt length) for the training path."""
        if self.template is not None:
            if prompt:
                raise ConfigError(f"this model uses the template {self.template.name!r}; prefix prompts do not apply")
            ids, positions = self._template_ids(texts)
            return ids, positions, 0
        return self._token_ids([prompt + t for t in texts], max_length or self.max_length), None, \
            self.prompt_length(prompt)

    @staticmethod
    def plan_length_groups(lengths: Sequence[int], overhead_tokens: int, max_groups: int = 4) -> list[np.ndarray]:
        """Indices split into at most ``max_groups`` groups of consecutive lengths (in length order) that minimise
        the padded tokens (texts x longest, summed over groups) plus ``overhead_tokens`` per extra group (the fixed
        cost of one more forward and backward call, as tokens); one group, in the given order, when splitting does
        not pay. Exact (dynamic programming over the sorted lengths)."""
        n = len(lengths)
        if n < 2 or max_groups < 2:
            return [np.arange(n)]
        order = np.argsort(np.asarray(lengths), kind="stable")
        sorted_len = np.asarray(lengths, dtype=np.int64)[order]
        # best[k][j]: cheapest cost of the first j sorted texts in k+1 groups; cut[k][j]: where the last group starts.
        starts = np.arange(n)
        best = [np.empty(n + 1) for _ in range(max_groups)]
        cut = [np.zeros(n + 1, dtype=np.int64) for _ in range(max_groups)]
        best[0][1:] = np.arange(1, n + 1) * sorted_len
        best[0][0] = 0.0
        for k in range(1, max_groups):
            best[k][: k + 1] = np.inf
            for j in range(k + 1, n + 1):
                costs = best[k - 1][k:j] + (j - starts[k:j]) * sorted_len[j - 1] + overhead_tokens
                i = int(np.argmin(costs))
                best[k][j], cut[k][j] = costs[i], k + i
        k = int(np.argmin([b[n] for b in best]))
        if k == 0:
            return [np.arange(n)]
        groups, j = [], n
        while k > 0:
            i = int(cut[k][j])
            groups.append(order[i:j])
            j, k = i, k - 1
        groups.append(order[:j])
        return groups[::-1]

    @staticmethod
    def plan_batches(lengths: Sequence[int], batch_size: int, token_budget: int | None) -> list[np.ndarray]:
        """Indices of each batch, longest texts first. A batch closes at ``batch_size`` texts or when its padded
        size (texts x longest length) would exceed ``token_budget``; a single over-budget text is its own batch."""
        # A batch of 0 texts never advances `start`: the loop below would append empty batches until out of memory.
        _check_at_least_1("batch_size", batch_size)
        _check_at_least_1("token_budget", token_budget, optional=True)
        order = np.argsort(-np.asarray(lengths), kind="stable")
        batches, start = [], 0
        while start < len(order):
            longest = lengths[order[start]]
            n = batch_size
            if token_budget:
                n = max(1, min(n, token_budget // max(longest, 1)))
            batches.append(order[start : start + n])
            start += n
        return batches

    # ------------------------------------------------------------------ forward
    def _backbone_states(self, features: dict, hidden_layer: int | None = None) -> torch.Tensor:
        kwargs = {k: v for k, v in features.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
        if self.is_decoder:
            kwargs["position_ids"] = (features["attention_mask"].cumsum(dim=1) - 1).clamp(min=0)
        if hidden_layer is None:
            return self.backbone(**kwargs).last_hidden_state
        out = self.backbone(**kwargs, output_hidden_states=True)
        return out.hidden_states[hidden_layer]

    def forward(self, features: dict, hidden_layer: int | None = None) -> torch.Tensor:
        """Embeddings for already-tokenised ``features`` with gradients (training path)."""
        features = {k: (v.to(self.device) if isinstance(v, torch.Tensor) else v) for k, v in features.items()}
        states = self._backbone_states(features, hidden_layer)
        return self._pool_normalize(states, features)

    def forward_layers(self, features: dict, layers: Sequence[int]) -> list[torch.Tensor]:
        """Pooled (and normalised) embeddings from several hidden layers of ONE forward pass, e.g. ``[-1, mid]``
        for CoDiEmb's mid-layer loss. Index as ``hidden_states`` does: 0 = embeddings, -1 = last layer."""
        features = {k: (v.to(self.device) if isinstance(v, torch.Tensor) else v) for k, v in features.items()}
        kwargs = {k: v for k, v in features.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
        if self.is_decoder:
            kwargs["position_ids"] = (features["attention_mask"].cumsum(dim=1) - 1).clamp(min=0)
        hidden = self.backbone(**kwargs, output_hidden_states=True).hidden_states
        return [self._pool_normalize(hidden[i], features) for i in layers]

    @property
    def num_layers(self) -> int:
        return int(self.backbone.config.num_hidden_layers)

    def _pool(self, states: torch.Tensor, features: dict, prompt_length: int = 0) -> torch.Tensor:
        """Pooled, not normalised: the template slots if there is a template, else the pooling mode."""
        if self.template is not None:
            reps = self.slot_states(states, features)
            if len(self.slots) == 1:
                return reps[self.slots[0]]
            # several slots (Rep1+Rep2): the mean of the unit vectors
            return torch.stack([torch.nn.functional.normalize(reps[x], dim=-1) for x in self.slots]).mean(0)
        return pool(states, features["attention_mask"], self.pooling, prompt_length)

    def _pool_normalize(self, states: torch.Tensor, features: dict) -> torch.Tensor:
        emb = self._pool(states, features, features.get("prompt_length", 0))
        return torch.nn.functional.normalize(emb, dim=-1) if self.normalize else emb

    def slot_states(self, states: torch.Tensor, features: dict) -> dict[str, torch.Tensor]:
        """The hidden state at every template slot: {slot name: [batch, dim]} (not normalised)."""
        if self.template is None or "slot_positions" not in features:
            raise ConfigError("slot representations need a model with a template and features from tokenize()")
        pos = features["slot_positions"].to(states.device)
        rows = torch.arange(states.shape[0], device=states.device)
        return {name: states[rows, pos[:, j]] for j, name in enumerate(self.template.slots)}

    def forward_slots(self, features: dict) -> dict[str, torch.Tensor]:
        """One forward pass -> every slot's representation (L2-normalised when the model normalises): CSE-SFP's
        Rep1 and Rep2 of the same texts."""
        features = {k: (v.to(self.device) if isinstance(v, torch.Tensor) else v) for k, v in features.items()}
        reps = self.slot_states(self._backbone_states(features), features)
        return {k: torch.nn.functional.normalize(v, dim=-1) if self.normalize else v for k, v in reps.items()}

    # ------------------------------------------------------------------ inference
    def encode(
        self,
        texts: Sequence[str],
        batch_size: int = 32,
        max_length: int | None = None,
        prompt_name: str | None = None,
        prompt: str | None = None,
        normalize: bool | None = None,
        convert_to: str = "numpy",
        show_progress: bool = False,
        token_budget: int | None = None,
        num_threads: int | None = None,
        autocast_dtype: torch.dtype | None = None,
    ) -> np.ndarray | torch.Tensor:
        """Embed ``texts`` (in input order) as float32 [n, dim].

        batch_size caps texts per batch; token_budget (default: batch_size x 128) caps padded tokens per batch, so
        short texts go in larger batches and long ones in smaller; num_threads sets torch's intra-op threads for the
        call; autocast_dtype=torch.bfloat16 runs matmuls in bf16 (faster on CPUs with AVX-512 BF16; measure quality).
        """
        if isinstance(texts, str):
            raise TypeError("encode() takes a list of texts; wrap a single text in a list")
        if convert_to not in ("numpy", "torch"):
            raise ConfigError(f"convert_to must be 'numpy' or 'torch', got {convert_to!r}")
        # Checked here, not only by callers' settings: 0 or a negative value would be read as "use the default" (or
        # loop forever, for batch_size) instead of failing.
        _check_at_least_1("batch_size", batch_size)
        _check_at_least_1("token_budget", token_budget, optional=True)
        _check_at_least_1("max_length", max_length, optional=True)
        _check_at_least_1("num_threads", num_threads, optional=True)
        if num_threads is not None and num_threads > MAX_THREADS:  # 100000 threads crashed torch (segfault)
            raise ConfigError(f"num_threads must be at most {MAX_THREADS}, got {num_threads}")
        if autocast_dtype is not None and not isinstance(autocast_dtype, torch.dtype):
            raise ConfigError(f"autocast_dtype must be a torch dtype such as torch.bfloat16, got {autocast_dtype!r}")
        texts = list(texts)
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise TypeError(f"encode() takes texts (str); item {i} is a {type(t).__name__}: {t!r:.60}")
        normalize = self.normalize if normalize is None else normalize
        max_length = max_length or self.max_length
        prefix = self.resolve_prompt(prompt_name, prompt)
        prompt_len = self.prompt_length(prefix)
        out = torch.empty((len(texts), self.dim), dtype=torch.float32)
        if not texts:
            return out.numpy() if convert_to == "numpy" else out
        if self.template is not None:
            ids, slot_positions = self._template_ids(texts)
        else:
            ids, slot_positions = self._token_ids([prefix + t for t in texts] if prefix else texts, max_length), None
        lengths = [len(x) for x in ids]
        budget = token_budget if token_budget is not None else batch_size * 128
        batches = self.plan_batches(lengths, batch_size, budget)
        progress = _progress(len(texts), show_progress, "encode")
        was_training = self.training
        self.eval()
        runner = self.runner
        if runner is not None:
            if autocast_dtype is not None:
                raise ConfigError(f"autocast applies to the torch backend; {self.name} runs on {self.backend} "
                                  f"{self.precision} (load it with backend='torch', precision='bf16' for bf16)")
            if self.model_hash(torch_only=True) != self._runner_hash:
                raise ConfigError(f"the weights or settings of {self.name} changed after it was exported to "
                                  f"{self.backend}; call set_backend({self.backend!r}, {self.precision!r}) again")
        elif self.precision == "bf16" and autocast_dtype is None:
            autocast_dtype = torch.bfloat16
        autocast = (torch.autocast(device_type=self.device.type, dtype=autocast_dtype) if autocast_dtype
                    else contextlib.nullcontext())
        try:
            # An exported backend takes a window of batches at once (openvino streams run them concurrently);
            # the window stays small so that only a few batches' hidden states are held at a time.
            window = 2 * runner.streams if runner is not None and runner.streams > 1 else 1
            with torch_threads(num_threads), torch.inference_mode(), autocast:
                for start in range(0, len(batches), window):
                    group = batches[start:start + window]
                    feats = []
                    for batch in group:
                        features = self._collate([ids[i] for i in batch],
                                                 [slot_positions[i] for i in batch] if slot_positions else None)
                        feats.append({k: v.to(self.device) for k, v in features.items()})
                    states_list = (runner.map(feats, num_threads) if runner is not None
                                   else [self._backbone_states(f) for f in feats])
                    for batch, features, states in zip(group, feats, states_list):
                        emb = self._pool(states, features, prompt_len).float()
                        if normalize:
                            emb = torch.nn.functional.normalize(emb, dim=-1)
                        out[torch.from_numpy(batch)] = emb.cpu()
                        progress.update(len(batch))
        finally:
            progress.close()
            self.train(was_training)
        return out.numpy() if convert_to == "numpy" else out

    def encode_tokens(self, texts: Sequence[str], batch_size: int = 32, max_length: int | None = None,
                      drop_special: bool = True) -> list[np.ndarray]:
        """Last-layer token representations per text ([n_tokens, dim] float32, padding removed; special tokens
        removed when ``drop_special``) — the input of the token-level geometry metrics."""
        max_length = max_length or self.max_length
        ids = self._token_ids(list(texts), max_length)
        special = set(self.tokenizer.all_special_ids)
        result: list[np.ndarray | None] = [None] * len(ids)
        self.eval()
        with torch.inference_mode():
            for batch in self.plan_batches([len(x) for x in ids], batch_size, batch_size * 128):
                features = {k: v.to(self.device) for k, v in self._collate([ids[i] for i in batch]).items()}
                states = self._backbone_states(features).float().cpu()
                mask = features["attention_mask"].cpu().bool()
                for row, i in enumerate(batch):
                    keep = mask[row].clone()
                    if drop_special:
                        keep &= ~torch.isin(features["input_ids"][row].cpu(), torch.tensor(sorted(special)))
                    result[i] = states[row][keep].numpy()
        return result  # type: ignore[return-value]

    # ------------------------------------------------------------------ identity
    def model_hash(self, torch_only: bool = False) -> str:
        """A content hash of the weights and every setting that changes embeddings (pooling, normalisation,
        prompts, template, lower-casing, the tokenizer, and an inference backend or precision other than torch
        fp32). Max length is not part of it: callers that key on the output (the embedding caches) add it. Cached
        until a parameter is modified in place (tensor versions). ``torch_only``: the hash of the PyTorch model
        without its backend (what an export is made from)."""
        digest = self._torch_hash()
        if torch_only or (self.backend, self.precision) == ("torch", "fp32"):
            return digest
        return hashlib.blake2b(f"{digest}/{self.backend}/{self.precision}".encode(), digest_size=16).hexdigest()

    def _torch_hash(self) -> str:
        # The tokenizer and do_lower_case decide the token ids: the same weights behind another vocabulary (or with
        # lower-casing switched) embed differently, so cached embeddings keyed on this hash must not be shared.
        settings = json.dumps([self.pooling.to_dict(), self.normalize, self.prompts, self.is_decoder,
                               self.template.to_dict() if self.template else None, list(self.slots),
                               self.do_lower_case, self._tokenizer_fingerprint()],
                              sort_keys=True)
        params = list(self.backbone.state_dict().values())
        # Settings are part of the key: changing pooling or template after a first hash must change the hash.
        key = tuple(int(getattr(p, "_version", 0)) for p in params) + (id(self.backbone), settings)
        if self._hash_cache and self._hash_cache[0] == key:
            return self._hash_cache[1]
        h = hashlib.blake2b(digest_size=16)
        for name, t in sorted(self.backbone.state_dict().items()):
            h.update(name.encode())
            h.update(t.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        h.update(settings.encode())
        digest = h.hexdigest()
        self._hash_cache = (key, digest)
        return digest

    def _tokenizer_fingerprint(self) -> str:
        """A hash of what maps text to token ids: the vocabulary and, for fast tokenizers, the normaliser,
        pre-tokeniser, post-processor and added tokens. Cached per tokenizer object and size (add_tokens grows it)."""
        tok = self.tokenizer
        key = (id(tok), len(tok))
        cached = getattr(self, "_tokenizer_fp", None)
        if cached and cached[0] == key:
            return cached[1]
        h = hashlib.blake2b(digest_size=16)
        h.update(json.dumps(sorted(tok.get_vocab().items())).encode())
        h.update(json.dumps(getattr(tok, "do_lower_case", None)).encode())
        backend = getattr(tok, "backend_tokenizer", None)
        if backend is not None:
            # Not the whole serialisation: its truncation/padding state changes with every call's max_length.
            cfg = json.loads(backend.to_str())
            h.update(json.dumps({k: cfg.get(k) for k in ("normalizer", "pre_tokenizer", "post_processor",
                                                         "added_tokens")}, sort_keys=True).encode())
        self._tokenizer_fp = (key, h.hexdigest())
        return self._tokenizer_fp[1]

    # ------------------------------------------------------------------ saving
    def save(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """Write the sentence-transformers layout to ``path`` atomically (a temp folder renamed into place).

        An existing ``path`` is replaced only when embedlab wrote it or it is empty (``overwrite=True`` replaces any
        folder); the folder the model was loaded from is never replaced (embedlab.atomic's ownership rule)."""
        path = Path(path)
        inputs = [self.source_path] if getattr(self, "source_path", None) else []
        check_output_dir(path, overwrite=overwrite, inputs=inputs, what="model folder")
        bad = nonfinite_tensors(self.backbone)
        if bad:  # e.g. a diverged training step: such a model would only ever embed NaN
            raise ModelError(f"not saving {path}: the model's weights hold NaN or infinite values (in "
                             f"{', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''}); a diverged training? (lower "
                             f"the learning rate, keep train.grad_clip)")
        staging = staging_dir(path, "saving")
        try:
            backbone = self.backbone
            if hasattr(backbone, "merge_and_unload"):  # a peft (LoRA) model: save the merged weights, keep training
                import copy

                backbone = copy.deepcopy(backbone).merge_and_unload()
            with _quiet_transformers():  # its one-shard "Writing model shards" bar is noise (and ignores --no-progress)
                backbone.save_pretrained(staging, safe_serialization=True)
            self.tokenizer.save_pretrained(staging)
            modules = [{"idx": 0, "name": "0", "path": "", "type": ST_TRANSFORMER},
                       {"idx": 1, "name": "1", "path": "1_Pooling", "type": ST_POOLING}]
            if self.normalize:
                modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": ST_NORMALIZE})
                (staging / "2_Normalize").mkdir()
            _dump(staging / "modules.json", modules)
            _dump(staging / "sentence_bert_config.json", {"max_seq_length": self.max_length,
                                                               "do_lower_case": self.do_lower_case})
            (staging / "1_Pooling").mkdir()
            _dump(staging / "1_Pooling" / "config.json", self.pooling.to_st_config(self.dim))
            _dump(staging / "config_sentence_transformers.json", {
                "__version__": {"embedlab": __version__, "pytorch": torch.__version__},
                "model_type": "SentenceTransformer",
                "prompts": self.prompts,
                "default_prompt_name": self.default_prompt_name,
                "similarity_fn_name": self.similarity,
            })
            extra = {"template": self.template.to_dict(), "slots": list(self.slots)} if self.template else {}
            _dump(staging / "embedlab.json", {"embedlab_version": __version__, "pooling": self.pooling.to_dict(),
                                              "is_decoder": self.is_decoder, "name": self.name, **extra})
            replace_dir(staging, path, overwrite=overwrite, inputs=inputs)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return path


# ---------------------------------------------------------------------- helpers
def _check_at_least_1(name: str, value, optional: bool = False) -> None:
    """ConfigError unless ``value`` is an integer >= 1 (or None when ``optional``)."""
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        allowed = "an integer >= 1" + (" or None" if optional else "")
        raise ConfigError(f"{name} must be {allowed}, got {value!r}")


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()


def _dump(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")


def _progress(total: int, enabled: bool, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, disable=not enabled, desc=desc, unit="text", dynamic_ncols=True)


def _materialise(resolved: ResolvedModel) -> Path:
    """A local folder for the model; hub ids are downloaded (or found in the HF cache) with snapshot_download."""
    if resolved.source != "hub":
        return Path(resolved.location)
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(resolved.location))
    except Exception as e:  # offline, unknown repo, auth: all mean "cannot get it"
        raise ModelError(unknown_model_message(resolved.name, e)) from None


def _load_tokenizer(folder: Path, **kwargs):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(folder), **kwargs)
    except Exception as e:
        raise ModelError(f"{folder}: cannot load the tokenizer ({type(e).__name__}: {e})") from None


def _load_backbone(folder: Path, **kwargs):
    from transformers import AutoModel

    try:
        model, info = AutoModel.from_pretrained(str(folder), output_loading_info=True, **kwargs)
    except Exception as e:
        raise ModelError(f"{folder}: cannot load the model weights ({type(e).__name__}: {e})") from None
    # transformers fills tensors absent from the checkpoint with random values and only logs it: a truncated or
    # mismatched weights file would then embed noise. BERT's pooler is not used for embeddings, so it may be absent.
    missing = sorted(k for k in info.get("missing_keys", ()) if not k.startswith("pooler."))
    if missing:
        shown = ", ".join(missing[:5]) + (f", ... ({len(missing)} in all)" if len(missing) > 5 else "")
        raise ModelError(f"{folder}: the weights file lacks {len(missing)} tensor(s) the model needs ({shown}); "
                         f"they would be random. Re-save or re-download the model")
    bad = nonfinite_tensors(model)
    if bad:  # NaN embeddings would score as "n/a" (or train on NaN): refuse the model itself
        raise ModelError(f"{folder}: the weights hold NaN or infinite values (in {', '.join(bad[:3])}"
                         f"{', ...' if len(bad) > 3 else ''}); the model is broken (a diverged training?)")
    return model


def nonfinite_tensors(module: torch.nn.Module) -> list[str]:
    """Names of the floating-point parameters and buffers of ``module`` that hold NaN or +-inf."""
    with torch.no_grad():
        return [name for name, t in [*module.named_parameters(), *module.named_buffers()]
                if t.is_floating_point() and t.numel() and not bool(torch.isfinite(t).all())]


# Files a Hugging Face tokenizer is built from (any one suffices, depending on the tokenizer type).
_TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "tokenizer.model", "spiece.model",
                    "sentencepiece.bpe.model", "merges.txt")


def _check_vocabulary(folder: Path, tokenizer, backbone, gguf: bool = False) -> None:
    """ModelError when the tokenizer cannot serve the model. Without tokenizer files transformers still builds a
    tokenizer of only its 5 special tokens: every word becomes [UNK] and every text embeds alike (scores near 0,
    exit 0). Embedding matrices are padded (to a multiple of 64, reserved slots) but never to twice the
    vocabulary, so a vocabulary under half the matrix means the wrong or missing tokenizer files; one larger than
    the matrix produces ids past its end."""
    embeddings = backbone.get_input_embeddings() if hasattr(backbone, "get_input_embeddings") else None
    rows = getattr(embeddings, "num_embeddings", None)
    if rows is None:
        return
    size = len(tokenizer)
    if size * 2 < rows:
        present = [f for f in _TOKENIZER_FILES if (folder / f).is_file()]
        why = (f"the folder has none of the tokenizer files ({', '.join(_TOKENIZER_FILES)})" if not present and not gguf
               else f"the tokenizer files ({', '.join(present) or 'in the GGUF file'}) do not belong to this model")
        raise ModelError(f"{folder}: the tokenizer has {size} tokens but the model's embedding matrix has {rows} rows: "
                         f"{why}. Copy the tokenizer files the model was trained with into the folder")
    base = int(getattr(tokenizer, "vocab_size", size) or size)
    if base > rows:
        raise ModelError(f"{folder}: the tokenizer's vocabulary ({base} tokens) is larger than the model's embedding "
                         f"matrix ({rows} rows): token ids past its end would fail. The tokenizer files do not "
                         f"belong to this model")


def _load_plain(folder: Path, is_decoder: bool, name: str) -> Embedder:
    """A plain transformers folder: mean pooling for encoders, last-token for decoders (as sentence-transformers
    does for folders without modules.json)."""
    tokenizer = _load_tokenizer(folder)
    backbone = _load_backbone(folder)
    _check_vocabulary(folder, tokenizer, backbone)
    max_len = min(int(getattr(tokenizer, "model_max_length", _DEFAULT_MAX_LENGTH) or _DEFAULT_MAX_LENGTH),
                  _DEFAULT_MAX_LENGTH)
    return Embedder(backbone, tokenizer, normalize=False, max_length=max_len, is_decoder=is_decoder, name=name)


def _load_gguf(folder: Path, gguf_file: str, name: str) -> Embedder:
    """A quantised GGUF causal LM, dequantised by transformers into a trainable fp32 model."""
    tokenizer = _load_tokenizer(folder, gguf_file=gguf_file)
    backbone = _load_backbone(folder, gguf_file=gguf_file)
    _check_vocabulary(folder / gguf_file, tokenizer, backbone, gguf=True)
    # The weights are now plain fp32 tensors; transformers still marks the model as GGUF-"quantized", which makes
    # save_pretrained refuse it. Drop the marker so a trained (or fused) decoder saves like any other model.
    backbone.hf_quantizer = None
    if hasattr(backbone.config, "quantization_config"):
        del backbone.config.quantization_config
    for attr in ("is_quantized", "quantization_method"):
        if attr in backbone.__dict__:
            del backbone.__dict__[attr]
    return Embedder(backbone, tokenizer, normalize=False, max_length=_DEFAULT_MAX_LENGTH, is_decoder=True, name=name)


def _read_json(path: Path, expect: type | None = dict) -> dict | list:
    """A JSON file's content; ModelError naming the file when it is unreadable, not JSON, or not an ``expect``."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ModelError(f"{path}: cannot read JSON ({e})") from None
    if expect is not None and not isinstance(value, expect):
        kind = "an object" if expect is dict else "a list"
        raise ModelError(f"{path}: expected {kind} in this file, got {type(value).__name__}")
    return value


def read_modules(path: Path) -> list[dict]:
    """modules.json: a non-empty list of objects, each with string "path" and "type" (sentence-transformers'
    layout). Anything else is a ModelError naming the file and the entry, not a KeyError from deep in loading."""
    modules = _read_json(path, expect=list)
    if not modules:
        raise ModelError(f"{path}: the module list is empty (expected Transformer, Pooling, Normalize entries)")
    for i, m in enumerate(modules):
        if not isinstance(m, dict):
            raise ModelError(f"{path}: entry {i} is a {type(m).__name__}, expected an object with path and type")
        bad = [k for k in ("path", "type") if not isinstance(m.get(k), str)]
        if bad:
            raise ModelError(f"{path}: entry {i} lacks a string {' and '.join(repr(k) for k in bad)} "
                             f"(each entry needs path and type, e.g. {{\"path\": \"1_Pooling\", "
                             f"\"type\": \"{ST_POOLING}\"}})")
    return modules


def _pooling_from_embedlab_json(value, where: Path) -> PoolingConfig:
    """embedlab.json's "pooling": {mode, include_prompt?, token_position?}; anything else is a ModelError naming the
    file (not a TypeError from the dataclass)."""
    fields = {"mode": str, "include_prompt": bool, "token_position": int}
    if not isinstance(value, dict) or "mode" not in value:
        raise ModelError(f"{where}: \"pooling\" must be an object with a \"mode\" (e.g. {{\"mode\": \"mean\"}}), got "
                         f"{value!r}")
    for key, v in value.items():
        if key not in fields:
            raise ModelError(f"{where}: \"pooling\" has an unknown key {key!r} (expected {', '.join(fields)})")
        if not isinstance(v, fields[key]) or (fields[key] is int and isinstance(v, bool)):
            raise ModelError(f"{where}: \"pooling\".{key} must be a {fields[key].__name__}, got {v!r}")
    try:
        return PoolingConfig(**value)
    except ConfigError as e:
        raise ModelError(f"{where}: {e}") from None


_SIMILARITIES = ("cosine", "dot", "euclidean", "manhattan")  # sentence-transformers' similarity_fn_name values


def _check_st_settings(bert_file: Path, max_len, st_file: Path, st_cfg: dict) -> None:
    """The sentence-transformers settings that decide embeddings and scores, checked when the model loads: a wrong
    type here would otherwise fail deep inside the tokenizer (or the scorer) after data had been read."""
    if isinstance(max_len, bool) or not isinstance(max_len, int) or max_len < 1:
        raise ModelError(f"{bert_file}: max_seq_length must be an integer >= 1, got {max_len!r}")
    prompts = st_cfg.get("prompts")
    if prompts is not None and (not isinstance(prompts, dict)
                                or not all(isinstance(k, str) and isinstance(v, str) for k, v in prompts.items())):
        raise ModelError(f"{st_file}: \"prompts\" must map prompt names to prompt texts (strings), got {prompts!r}")
    default = st_cfg.get("default_prompt_name")
    if default is not None and (not isinstance(default, str) or default not in (prompts or {})):
        raise ModelError(f"{st_file}: default_prompt_name {default!r} is not one of its prompts "
                         f"({', '.join(prompts or {}) or 'none'})")
    similarity = st_cfg.get("similarity_fn_name")
    if similarity is not None and similarity not in _SIMILARITIES:
        raise ModelError(f"{st_file}: similarity_fn_name {similarity!r} is not one of {', '.join(_SIMILARITIES)}")


def _load_st_folder(folder: Path, resolved: ResolvedModel) -> Embedder:
    """Read a sentence-transformers folder: Transformer (+ Pooling) (+ Normalize), in that order."""
    modules = read_modules(folder / "modules.json")
    kinds = [m.get("type", "").rsplit(".", 1)[-1] for m in modules]
    unsupported = [k for k in kinds if k not in ("Transformer", "Pooling", "Normalize")]
    if unsupported or not kinds or kinds[0] != "Transformer":
        raise ModelError(f"{folder / 'modules.json'}: embedlab supports Transformer -> Pooling -> Normalize "
                         f"pipelines; this model has {kinds}")
    transformer_dir = folder / modules[0].get("path", "")
    bert_cfg = {}
    for cfg_name in ("sentence_bert_config.json",):
        if (transformer_dir / cfg_name).is_file():
            bert_cfg = _read_json(transformer_dir / cfg_name)
    embedlab_cfg = _read_json(folder / "embedlab.json") if (folder / "embedlab.json").is_file() else {}
    is_decoder = bool(embedlab_cfg.get("is_decoder", resolved.kind == "decoder"))
    pooling = None
    for m in modules:
        if m.get("type", "").endswith("Pooling"):
            pooling = PoolingConfig.from_st_config(_read_json(folder / m["path"] / "config.json"),
                                                   where=str(folder / m["path"] / "config.json"))
    if "pooling" in embedlab_cfg:  # exact embedlab mode (prompt_token has no sentence-transformers equivalent)
        pooling = _pooling_from_embedlab_json(embedlab_cfg["pooling"], folder / "embedlab.json")
    st_cfg = {}
    if (folder / "config_sentence_transformers.json").is_file():
        st_cfg = _read_json(folder / "config_sentence_transformers.json")
    tokenizer = _load_tokenizer(transformer_dir)
    backbone = _load_backbone(transformer_dir)
    _check_vocabulary(transformer_dir, tokenizer, backbone)
    max_len = bert_cfg.get("max_seq_length") or min(int(tokenizer.model_max_length or 512), _DEFAULT_MAX_LENGTH)
    _check_st_settings(transformer_dir / "sentence_bert_config.json", max_len,
                       folder / "config_sentence_transformers.json", st_cfg)
    return Embedder(
        backbone, tokenizer, pooling=pooling, normalize="Normalize" in kinds, max_length=int(max_len),
        prompts={k: v for k, v in (st_cfg.get("prompts") or {}).items()},
        default_prompt_name=st_cfg.get("default_prompt_name"), is_decoder=is_decoder, name=resolved.name,
        similarity=st_cfg.get("similarity_fn_name") or "cosine", do_lower_case=bool(bert_cfg.get("do_lower_case")),
        template=embedlab_cfg.get("template"), slots=embedlab_cfg.get("slots"),
    )
