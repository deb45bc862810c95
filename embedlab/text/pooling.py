"""Pooling: token states [batch, seq, dim] + attention mask -> one vector per text.

Modes (registered in POOLING, `embedlab list` shows them):
- ``cls``            first real token (BERT-style [CLS]); with left padding, the first non-pad token.
- ``mean``           mean over real tokens; prompt tokens excluded when ``include_prompt`` is False (CoDiEmb).
- ``weighted_mean``  position-weighted mean (SGPT): weight = 1-based position among the real tokens.
- ``last_token``     last real token (decoder embedders; works with left or right padding).
- ``prompt_token``   the token at a fixed template position counted among the real tokens: ``token_position`` >= 0
                     from the start, < 0 from the end (e.g. -1 = the token right before the end of a PromptEOL
                     template). Decoder templates with named slots build on this (CSE-SFP issue).

Every mode takes a mask that already excludes what must not be pooled; this module does not tokenise and does not
know about prompts beyond the ``prompt_length`` it is given. The math follows sentence-transformers' Pooling module
so that embeddings are equal to it to float precision.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from ..errors import ConfigError
from ..registry import Registry

POOLING: Registry = Registry("pooling mode")

# sentence-transformers' legacy (<=5.x) config keys <-> our names; the legacy layout is what every version loads.
_ST_LEGACY_KEYS = {
    "cls": "pooling_mode_cls_token",
    "mean": "pooling_mode_mean_tokens",
    "weighted_mean": "pooling_mode_weightedmean_tokens",
    "last_token": "pooling_mode_lasttoken",
}
_ST_V6_NAMES = {"cls": "cls", "mean": "mean", "weighted_mean": "weightedmean", "last_token": "lasttoken"}


@dataclass
class PoolingConfig:
    mode: str = "mean"
    include_prompt: bool = True
    token_position: int = -1  # only for mode == "prompt_token"

    def __post_init__(self) -> None:
        POOLING.get(self.mode)  # unknown mode -> error listing the valid ones

    def to_dict(self) -> dict:
        return asdict(self)

    # ---- sentence-transformers 1_Pooling/config.json --------------------------------------------------------
    def to_st_config(self, dim: int) -> dict:
        """The legacy key layout, which sentence-transformers 2.x-6.x all read. prompt_token has no ST equivalent:
        it is written as last_token (the closest) and the exact mode is kept in embedlab.json."""
        mode = self.mode if self.mode in _ST_LEGACY_KEYS else "last_token"
        cfg = {"word_embedding_dimension": dim}
        for name, key in _ST_LEGACY_KEYS.items():
            cfg[key] = name == mode
        cfg["pooling_mode_max_tokens"] = False
        cfg["pooling_mode_mean_sqrt_len_tokens"] = False
        cfg["include_prompt"] = self.include_prompt
        return cfg

    @classmethod
    def from_st_config(cls, cfg: dict, where: str = "1_Pooling/config.json") -> "PoolingConfig":
        include_prompt = bool(cfg.get("include_prompt", True))
        if "pooling_mode" in cfg:  # sentence-transformers >= 6
            raw = cfg["pooling_mode"]
            modes = [raw] if isinstance(raw, str) else list(raw)
            inverse = {v: k for k, v in _ST_V6_NAMES.items()}
        else:
            modes = [k for k, v in cfg.items() if k.startswith("pooling_mode_") and v is True]
            inverse = {v: k for k, v in _ST_LEGACY_KEYS.items()}
        if len(modes) != 1 or modes[0] not in inverse:
            raise ConfigError(
                f"{where}: pooling {modes} is not supported; embedlab reads exactly one of "
                f"{', '.join(sorted(inverse))}"
            )
        return cls(mode=inverse[modes[0]], include_prompt=include_prompt)


def exclude_prompt(mask: torch.Tensor, prompt_length: int) -> torch.Tensor:
    """Zero the first ``prompt_length`` real tokens of every row (works for left and right padding)."""
    if not prompt_length:
        return mask
    real_index = mask.cumsum(dim=1) - 1  # 0-based index among real tokens, -1 before the first one
    return mask * (real_index >= prompt_length).to(mask.dtype)


def _mean(states: torch.Tensor, mask: torch.Tensor, cfg: PoolingConfig) -> torch.Tensor:
    m = mask.unsqueeze(-1).to(states.dtype)
    total = (states * m).sum(dim=1, dtype=torch.float32 if states.dtype != torch.float64 else states.dtype)
    count = m.sum(dim=1, dtype=total.dtype).clamp(min=1e-9)
    return (total / count).to(states.dtype)


def _cls(states: torch.Tensor, mask: torch.Tensor, cfg: PoolingConfig) -> torch.Tensor:
    first = mask.to(torch.int32).argmax(dim=1)
    return states[torch.arange(states.size(0), device=states.device), first]


def _weighted_mean(states: torch.Tensor, mask: torch.Tensor, cfg: PoolingConfig) -> torch.Tensor:
    # Weights count positions among the real tokens of each row, so left padding does not shift them.
    positions = mask.cumsum(dim=1).to(torch.float32)
    w = (positions * mask).unsqueeze(-1)
    total = (states.float() * w).sum(dim=1)
    return (total / w.sum(dim=1).clamp(min=1e-9)).to(states.dtype)


def _last_token(states: torch.Tensor, mask: torch.Tensor, cfg: PoolingConfig) -> torch.Tensor:
    seq_len = mask.size(1)
    last = seq_len - 1 - mask.flip(1).to(torch.int32).argmax(dim=1)
    return states[torch.arange(states.size(0), device=states.device), last]


def _prompt_token(states: torch.Tensor, mask: torch.Tensor, cfg: PoolingConfig) -> torch.Tensor:
    n_real = mask.sum(dim=1)
    first = mask.to(torch.int32).argmax(dim=1)
    pos = cfg.token_position
    index = first + (pos if pos >= 0 else n_real + pos)
    if bool(((index < first) | (index >= first + n_real)).any()):
        raise ConfigError(f"pooling token_position={pos} falls outside a text of the batch (shortest has "
                          f"{int(n_real.min())} tokens)")
    return states[torch.arange(states.size(0), device=states.device), index]


POOLING.add("mean", _mean)
POOLING.add("cls", _cls)
POOLING.add("weighted_mean", _weighted_mean)
POOLING.add("last_token", _last_token)
POOLING.add("prompt_token", _prompt_token)


def pool(states: torch.Tensor, attention_mask: torch.Tensor, cfg: PoolingConfig,
         prompt_length: int = 0) -> torch.Tensor:
    """Pool ``states`` [B, T, D] under ``attention_mask`` [B, T] (1 = real token)."""
    mask = attention_mask
    if not cfg.include_prompt and prompt_length:
        mask = exclude_prompt(mask, prompt_length)
    return POOLING.get(cfg.mode)(states, mask, cfg)
