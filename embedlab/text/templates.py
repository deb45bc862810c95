"""Prompt templates for decoder-only embedders, as data: the sentence slot and the representation slots are marked
in the text, and their token positions are found by tokenising — never by hard-coded offsets.

    This sentence : "[X]" means in one word<rep1>, it can be summarized as<rep2>

``[X]`` is where the sentence goes (exactly once); ``<name>`` marks a representation slot: the hidden state of the
token that ends right before the marker is that slot's representation. A causal LM's token sees only what precedes
it, so in CSE-SFP's template ``rep1`` ("word") has not seen the suffix and ``rep2`` (the final "as") has seen
everything: two views from one forward pass. The markers are removed before tokenising.

How a text is built (``TemplateEncoder``):
1. the sentence is cut to ``max_sentence_tokens`` tokens *before* templating (at a token boundary of the sentence
   alone, so the template is never truncated);
2. prefix + sentence + suffix is tokenised with the tokenizer's special tokens; appended special tokens (EOS,
   BERT's [SEP]) are removed (the last slot must be the last real token); BOS follows ``bos``: ``auto`` keeps what
   the tokenizer adds, ``always`` prepends the tokenizer's BOS token when it adds none (a tokenizer without one is an
   error), ``never`` drops it;
3. each slot's position: the text up to the marker is tokenised the same way; its ids must be a prefix of the full
   ids and the slot is the last of them. If the boundary merges with the next characters (the slot token would see
   text after the marker) the encoder stops with a message naming the template, slot and sentence.

Positions are counted from the first real token (BOS included); the Embedder adds the left-padding offset. This
module does not pool, pad or run models.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Sequence

from ..errors import ConfigError
from ..registry import Registry

SENTENCE = "[X]"
_SLOT = re.compile(r"<(rep\d*)>")
BOS_MODES = ("auto", "always", "never")


@dataclass(frozen=True)
class Template:
    name: str
    text: str
    description: str = ""
    bos: str = "auto"
    max_sentence_tokens: int = 32
    slots: tuple[str, ...] = field(init=False)
    prefix: str = field(init=False)
    suffix: str = field(init=False)  # with the slot markers

    def __post_init__(self) -> None:
        if self.text.count(SENTENCE) != 1:
            raise ConfigError(f"template {self.name!r}: needs the sentence slot {SENTENCE} exactly once: {self.text!r}")
        prefix, suffix = self.text.split(SENTENCE)
        if _SLOT.search(prefix):
            raise ConfigError(f"template {self.name!r}: a representation slot before the sentence sees no sentence")
        slots = tuple(_SLOT.findall(suffix))
        if not slots:
            raise ConfigError(f"template {self.name!r}: no representation slot (mark one like <rep2> after the token "
                              f"whose hidden state is the embedding): {self.text!r}")
        if len(set(slots)) != len(slots):
            raise ConfigError(f"template {self.name!r}: slot names repeat: {slots}")
        if self.bos not in BOS_MODES:
            raise ConfigError(f"template {self.name!r}: bos must be one of {BOS_MODES}, got {self.bos!r}")
        if self.max_sentence_tokens < 1:
            raise ConfigError(f"template {self.name!r}: max_sentence_tokens must be >= 1")
        object.__setattr__(self, "slots", slots)
        object.__setattr__(self, "prefix", prefix)
        object.__setattr__(self, "suffix", suffix)

    def render(self, sentence: str) -> tuple[str, dict[str, int]]:
        """The text without markers and each slot's character position (where its marker was)."""
        out, pos, rest = self.prefix + sentence, {}, self.suffix
        while True:
            m = _SLOT.search(rest)
            if m is None:
                return out + rest, pos
            out += rest[: m.start()]
            pos[m.group(1)] = len(out)
            rest = rest[m.end():]

    def to_dict(self) -> dict:
        return {"name": self.name, "text": self.text, "bos": self.bos, "max_sentence_tokens": self.max_sentence_tokens}

    @classmethod
    def from_dict(cls, d: dict) -> "Template":
        return cls(name=d["name"], text=d["text"], bos=d.get("bos", "auto"),
                   max_sentence_tokens=int(d.get("max_sentence_tokens", 32)), description=d.get("description", ""))


TEMPLATES: Registry[Template] = Registry("prompt template")


def register_template(t: Template) -> Template:
    TEMPLATES.add(t.name, t)
    return t


# Single-slot prompt baselines (the representation is the last token), from the PromptEOL line of work.
register_template(Template("prompteol", 'This sentence : "[X]" means in one word:"<rep>',
                           "PromptEOL (Jiang et al., 2023): explicit one-word limitation"))
register_template(Template("promptsth", 'This sentence : "[X]" means something<rep>',
                           "PromptSTH (Zhang et al., 2024)"))
register_template(Template("promptsum", 'This sentence : "[X]" can be summarized as<rep>',
                           "PromptSUM (Zhang et al., 2024)"))
register_template(Template("pretended_cot",
                           'After thinking step by step , this sentence : "[X]" means in one word:"<rep>',
                           "Pretended chain of thought (Zhang et al., 2024)"))
register_template(Template(
    "knowledge", "The essence of a sentence is often captured by its main subjects and actions, while descriptive "
    'terms provide additional but less central details. With this in mind , this sentence : "[X]" means in one '
    'word:"<rep>', "Knowledge enhancement (Zhang et al., 2024)"))
# CSE-SFP two-slot templates: rep1 closes the first clause (cannot see the second), rep2 is the final token.
register_template(Template("csesfp_llama",
                           'This sentence : "[X]" means in one word<rep1>, it can be summarized as<rep2>',
                           "CSE-SFP, LLaMA-2/3 (and the default for other families)", bos="always"))
register_template(Template("csesfp_mistral",
                           'This sentence : "[X]" means something<rep1>, it can be summarized as<rep2>',
                           "CSE-SFP, Mistral", bos="always"))
register_template(Template("csesfp_opt",
                           'This sentence : "[X]" means something<rep1>, it can also be summarized as<rep2>',
                           "CSE-SFP, OPT", bos="always"))


def get_template(spec: str | dict | Template) -> Template:
    """A registered name, a dict (``{name, text, bos?, max_sentence_tokens?}``) or a Template."""
    if isinstance(spec, Template):
        return spec
    if isinstance(spec, dict):
        return Template.from_dict(spec)
    return TEMPLATES.get(spec)


class TemplateEncoder:
    """Token ids and slot positions of templated sentences for one tokenizer (see the module docstring)."""

    def __init__(self, tokenizer, template: Template):
        self.tok, self.template = tokenizer, template
        self.bos_id = tokenizer.bos_token_id
        # special tokens a tokenizer appends (EOS, BERT's [SEP]); templates never end in one
        self.trailing = set(getattr(tokenizer, "all_special_ids", []) or []) - {self.bos_id}
        if template.bos == "always" and self.bos_id is None:
            raise ConfigError(f"template {template.name!r} needs a BOS token (bos: always) but this tokenizer has "
                              f"none; use a template with bos: auto, or a tokenizer with a BOS token")

    def _ids(self, texts: Sequence[str]) -> list[list[int]]:
        out = []
        for ids in self.tok(list(texts), add_special_tokens=True, return_attention_mask=False,
                            return_token_type_ids=False)["input_ids"]:
            while ids and ids[-1] in self.trailing:
                ids = ids[:-1]  # no EOS / [SEP]: the last slot must be the last token
            mode = self.template.bos
            if mode == "always" and (not ids or ids[0] != self.bos_id):
                ids = [self.bos_id] + ids
            elif mode == "never" and self.bos_id is not None and ids and ids[0] == self.bos_id:
                ids = ids[1:]
            out.append(ids)
        return out

    def truncate(self, sentences: Sequence[str]) -> list[str]:
        """Cut each sentence to ``max_sentence_tokens`` tokens (tokenised alone), at a token boundary."""
        limit = self.template.max_sentence_tokens
        enc = self.tok(list(sentences), add_special_tokens=False, return_attention_mask=False,
                       return_token_type_ids=False, return_offsets_mapping=getattr(self.tok, "is_fast", False))
        out = []
        for i, s in enumerate(sentences):
            ids = enc["input_ids"][i]
            if len(ids) <= limit:
                out.append(s)
            elif "offset_mapping" in enc:
                out.append(s[: enc["offset_mapping"][i][limit - 1][1]])
            else:  # slow tokenizers: decode the kept tokens
                out.append(self.tok.decode(ids[:limit]))
        return out

    def encode(self, sentences: Sequence[str]) -> tuple[list[list[int]], list[list[int]]]:
        """-> (token ids per sentence, slot positions per sentence in ``template.slots`` order)."""
        sentences = self.truncate(sentences)
        rendered = [self.template.render(s) for s in sentences]
        full = self._ids([text for text, _ in rendered])
        positions: list[list[int]] = [[] for _ in sentences]
        for slot in self.template.slots:
            prefixes = self._ids([text[: pos[slot]] for text, pos in rendered])
            for i, (ids, pre) in enumerate(zip(full, prefixes)):
                if not pre or ids[: len(pre)] != pre:
                    raise ConfigError(
                        f"template {self.template.name!r}: slot <{slot}> cannot be located for the sentence "
                        f"{sentences[i]!r}: the text before the slot does not tokenise as a prefix of the whole "
                        f"(the slot token merges with the characters after the marker); put a space or punctuation "
                        f"boundary after the slot in the template")
                positions[i].append(len(pre) - 1)
        return full, positions
