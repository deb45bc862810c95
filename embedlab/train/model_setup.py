"""The trainable model a recipe asks for: load, then template, pooling, dropout, LoRA (peft) or 4-bit QLoRA.

    model = build_model(recipe.model, device)      # an Embedder whose backbone may be a peft model

- ``template`` / ``slots``: decoder prompt templates (text/templates.py) — a missing BOS token fails here, before
  training.
- ``dropout``: sets every ``nn.Dropout`` and every attention-dropout attribute of the backbone (decoders such as LLaMA
  ship with 0, so a two-pass dropout baseline needs it, unless LoRA dropout provides the noise).
- ``lora``: peft LoRA on ``target_modules`` (``all-linear`` or names); names that match nothing stop with the model's
  linear-layer names. Only the adapters train; ``Embedder.save`` writes the merged weights.
- ``load_in_4bit``: QLoRA (bitsandbytes NF4, bf16 compute) — CUDA only; elsewhere a clear error.
It does not train or save checkpoints (trainer.py).
"""
from __future__ import annotations

import torch

from ..config import ModelConfig
from ..errors import ConfigError
from ..text import Embedder, PoolingConfig


def set_dropout(module: torch.nn.Module, p: float) -> int:
    """Set every dropout probability of ``module`` to p; returns how many places were set."""
    n = 0
    for m in module.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = p
            n += 1
        if isinstance(getattr(m, "attention_dropout", None), float):
            m.attention_dropout = p
            n += 1
    cfg = getattr(module, "config", None)
    for key in ("attention_dropout", "hidden_dropout_prob", "attention_probs_dropout_prob", "dropout"):
        if cfg is not None and isinstance(getattr(cfg, key, None), float):
            setattr(cfg, key, p)
    return n


def linear_names(module: torch.nn.Module) -> list[str]:
    return sorted({name.rsplit(".", 1)[-1] for name, m in module.named_modules() if isinstance(m, torch.nn.Linear)})


def apply_lora(model: Embedder, cfg) -> None:
    from peft import LoraConfig, get_peft_model

    targets = cfg.target_modules
    if targets != "all-linear":
        names = linear_names(model.backbone)
        missing = [t for t in ([targets] if isinstance(targets, str) else targets) if t not in names]
        if missing:
            raise ConfigError(f"model.lora.target_modules {missing} match no linear layer of {model.name}; "
                              f"its linear layers are: {', '.join(names)}")
    lora = LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=targets, bias="none")
    try:
        model.backbone = get_peft_model(model.backbone, lora)
    except ValueError as e:  # peft's own check (e.g. all-linear on a model without linear layers)
        raise ConfigError(f"model.lora: {e}") from None


def build_model(cfg: ModelConfig, device: torch.device) -> Embedder:
    if cfg.load_in_4bit:
        if not torch.cuda.is_available():
            raise ConfigError("model.load_in_4bit (QLoRA) needs a CUDA GPU and bitsandbytes; on this machine train "
                              "with model.lora (LoRA in bf16/fp32) or full fine-tuning instead")
        import importlib.util

        if importlib.util.find_spec("bitsandbytes") is None:
            raise ConfigError("model.load_in_4bit needs bitsandbytes: pip install bitsandbytes")
        if cfg.lora is None:
            raise ConfigError("model.load_in_4bit trains adapters only: set model.lora as well (QLoRA)")
    model = Embedder.load(cfg.name, max_length=cfg.max_length, normalize=cfg.normalize)
    if cfg.template is not None:
        if not model.is_decoder:
            raise ConfigError(f"model.template applies to decoder-only models; {cfg.name} is an encoder")
        model.set_template(cfg.template, cfg.slots)
    else:
        pooling = cfg.pooling or model.pooling.mode
        model.pooling = PoolingConfig(pooling, include_prompt=cfg.include_prompt,
                                      token_position=model.pooling.token_position)
    if cfg.dropout is not None and set_dropout(model.backbone, cfg.dropout) == 0:
        raise ConfigError(f"model.dropout: {cfg.name} has no dropout to set; use model.lora.dropout")
    if cfg.load_in_4bit:
        model.backbone = _quantize_4bit(model)
    if cfg.lora is not None:
        apply_lora(model, cfg.lora)
    return model.to(device)


def _quantize_4bit(model: Embedder):  # pragma: no cover - needs CUDA
    """Reload the backbone in NF4 with bf16 compute and prepare it for k-bit training (QLoRA)."""
    from peft import prepare_model_for_kbit_training
    from transformers import AutoModel, BitsAndBytesConfig

    if model.source_path is None:
        raise ConfigError("model.load_in_4bit needs a model loaded from a folder")
    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16)
    backbone = AutoModel.from_pretrained(model.source_path, quantization_config=quant, device_map={"": 0})
    return prepare_model_for_kbit_training(backbone)
