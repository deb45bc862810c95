"""Token states of a frozen text encoder for questions: the question side of the co-attention model.

``TextStates("all-MiniLM-L6-v2", max_length=24).encode(questions)`` returns ``{"states": (N, T, 384), "mask": (N, T)}``
computed once (no gradient) in batches; the model trains only a projection on top (parts.FrozenStates). The encoder
resolves through ``embedlab.pretrained`` (the package copy offline, a folder, or a hub id online). ``"tiny-random"``
builds a 2-layer, 32-wide BERT with random weights on MiniLM's tokenizer, for tests. It does not fine-tune the encoder.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from ...errors import ModelError
from ...pretrained import resolve

TINY = "tiny-random"


class TextStates:
    def __init__(self, name: str = "all-MiniLM-L6-v2", max_length: int = 24, batch_size: int = 64):
        from transformers import AutoModel, AutoTokenizer, BertConfig, BertModel

        self.name, self.max_length, self.batch_size = name, max_length, batch_size
        tokenizer_source = resolve("all-MiniLM-L6-v2" if name == TINY else name)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(tokenizer_source.location)
            if name == TINY:
                torch.manual_seed(0)
                cfg = BertConfig(vocab_size=self.tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                                 num_attention_heads=2, intermediate_size=64, max_position_embeddings=128)
                self.model = BertModel(cfg, add_pooling_layer=False)
            else:
                self.model = AutoModel.from_pretrained(tokenizer_source.location)
        except OSError as e:
            raise ModelError(f"cannot load text encoder {name!r} for question states: {str(e).splitlines()[0]}") \
                from None
        self.model.eval()
        self.dim = int(self.model.config.hidden_size)

    @torch.no_grad()
    def encode(self, questions: Sequence[str]) -> dict[str, torch.Tensor]:
        states = torch.zeros(len(questions), self.max_length, self.dim)
        mask = torch.zeros(len(questions), self.max_length, dtype=torch.bool)
        for start in range(0, len(questions), self.batch_size):
            chunk = [str(q) for q in questions[start: start + self.batch_size]]
            enc = self.tokenizer(chunk, padding="max_length", truncation=True, max_length=self.max_length,
                                 return_tensors="pt")
            out = self.model(**enc).last_hidden_state
            states[start: start + len(chunk)] = out
            mask[start: start + len(chunk)] = enc["attention_mask"].bool()
        return {"states": states, "mask": mask}
