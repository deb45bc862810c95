"""An optional generation hook: a local causal language model rephrases template questions; the answers stay.

    p = Paraphraser("smollm2", max_new_tokens=32, seed=0)        # a package model, a local folder or a GGUF file
    result = paraphrase_pairs(pairs, p, share=0.3, seed=0)        # result.pairs: the input + result.added
    result.dropped                                                # {"no-question-mark": 4, "same-as-original": 1}
    paraphrase_into(project, p, share=0.3)                        # the same on a project's qa.jsonl

What it does:

- ``Paraphraser`` loads a causal LM and its tokenizer (``AutoModelForCausalLM`` / ``AutoTokenizer``) from a local
  package model, folder or GGUF file (``embedlab.pretrained.resolve``); a hub id is looked up in the local hub cache
  only (``local_files_only=True``) unless ``allow_hub=True``. It prompts with an instruction and three example
  rewrites (few-shot: a small instruct model otherwise answers the question instead), laid out by the tokenizer's
  chat template when it has one (else as plain text), and samples (or decodes greedily with ``sample=False``) up to
  ``max_new_tokens``. Each question is generated under its own seed derived from ``seed`` and the question text, so
  the output does not depend on the order or on other calls (deterministic given the seed), and the global torch RNG
  is left as it was;
- ``clean_paraphrase`` keeps the first line of the output, strips quotes, list markers and "Question:" prefixes and
  cuts after the first "?"; it refuses (and names why) an output that is empty, has no question mark, is garbage
  (few letters, overlong words, under 3 words), is too long, equals the original (up to case and punctuation), turns
  a yes/no question into an open one or back, names the answer of an open question the original did not name
  (it would give the answer away), or drops a term of the question's concepts (a finding, an organ);
- ``paraphrase_pairs`` draws ``share`` of the (case, question) units of template pairs with a seeded draw, calls the
  model once per distinct question text, and adds one new pair per kept paraphrase and image: same case, image,
  answer, types, concepts, spans, template and flags; ``generated_by="paraphrase:<model name>"``; id
  ``<original id>-p<hash>``. The export writes them with phrase_type "para".

What it does not do: it never changes an answer or an original pair, does not judge medical meaning (the new pairs
are pending review like any other) and does not train the model. A tiny random model gives garbage, which the
cleaning refuses and counts: the plumbing is the same as with a real one.
"""
from __future__ import annotations

import hashlib
import random
import re
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Protocol

from ...errors import ConfigError, ModelError
from .types import Concept, QAPair

INSTRUCTION = "Rewrite the question about a medical image with different words. Keep its meaning. Do not answer it."
# few-shot turns: without them a small instruct model (SmolLM2-135M) answers the question instead of rephrasing it
EXAMPLES = (("Is there a fracture?", "Can a fracture be seen?"),
            ("What organ is shown?", "Which organ does this image show?"),
            ("Where is the mass located?", "In what location is the mass?"))
AUXILIARIES = {"is", "are", "does", "do", "did", "can", "could", "was", "were", "has", "have", "had", "will",
               "would", "should", "may", "might", "shall", "must"}
PREFIX = re.compile(r"^\s*(?:[-*\u2022]|\d+[.)]|(?:rephrased|paraphrased|new)?\s*question\s*:|(?:rephrased|"
                    r"paraphrase)\s*:)\s*", re.IGNORECASE)


class QuestionRewriter(Protocol):
    """What ``paraphrase_pairs`` needs: a name and one call per question (``Paraphraser`` is one)."""

    name: str

    def rephrase(self, question: str) -> str: ...


def _stable_int(*parts: Any) -> int:
    return int(hashlib.sha256(":".join(map(str, parts)).encode("utf-8")).hexdigest()[:15], 16)


class Paraphraser:
    """A local causal LM that rephrases one question at a time (see the module docstring)."""

    def __init__(self, model_path_or_name: str | Path, *, max_new_tokens: int = 32, seed: int = 0,
                 sample: bool = True, temperature: float = 0.7, top_p: float = 0.9, allow_hub: bool = False,
                 device: str = "cpu", instruction: str = INSTRUCTION,
                 examples: tuple[tuple[str, str], ...] = EXAMPLES):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from ...pretrained import resolve

        if max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
        where = resolve(model_path_or_name)
        kwargs: dict[str, Any] = {"local_files_only": where.source == "hub" and not allow_hub}
        if where.gguf_file:
            kwargs["gguf_file"] = where.gguf_file
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(where.location, **kwargs)
            self.model = AutoModelForCausalLM.from_pretrained(where.location, dtype=torch.float32, **kwargs)
        except (OSError, ValueError, KeyError) as exc:
            hint = "" if allow_hub or where.source != "hub" else " (looked in the local hub cache only; " \
                                                                   "pass allow_hub=True to download)"
            raise ModelError(f"cannot load a causal LM from {model_path_or_name!r}{hint}: "
                             f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}") from None
        self.model.to(device).eval()
        self.device = device
        self.name = where.name if where.source != "path" else Path(where.location).name or str(model_path_or_name)
        if where.gguf_file and where.source == "path":
            self.name = Path(where.gguf_file).stem
        self.max_new_tokens, self.seed, self.sample = max_new_tokens, seed, sample
        self.temperature, self.top_p, self.instruction = temperature, top_p, instruction
        self.examples = tuple((str(q), str(r)) for q, r in examples)
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token

    def prompt(self, question: str) -> str:
        """The instruction, the example turns, then the question (the chat template's layout when there is one)."""
        if getattr(self.tokenizer, "chat_template", None):
            turns = [m for q, r in self.examples for m in ({"role": "user", "content": q},
                                                           {"role": "assistant", "content": r})]
            turns.append({"role": "user", "content": question})
            try:
                return self.tokenizer.apply_chat_template([{"role": "system", "content": self.instruction}, *turns],
                                                          add_generation_prompt=True, tokenize=False)
            except Exception:  # a template without a system role (jinja raises its own errors): say it first
                turns[0] = {"role": "user", "content": f"{self.instruction}\n{turns[0]['content']}"}
                return self.tokenizer.apply_chat_template(turns, add_generation_prompt=True, tokenize=False)
        shots = "".join(f"Question: {q}\nRephrased: {r}\n\n" for q, r in self.examples)
        return f"{self.instruction}\n\n{shots}Question: {question}\nRephrased:"

    def rephrase(self, question: str) -> str:
        """The model's raw continuation of the prompt for ``question`` (special tokens removed, not cleaned)."""
        import torch

        text = self.prompt(question)
        # a chat template already holds the BOS token where the model wants it
        enc = self.tokenizer(text, return_tensors="pt",
                             add_special_tokens=not getattr(self.tokenizer, "chat_template", None)).to(self.device)
        options: dict[str, Any] = {"max_new_tokens": self.max_new_tokens, "pad_token_id": self.tokenizer.pad_token_id}
        if self.sample:
            options.update(do_sample=True, temperature=self.temperature, top_p=self.top_p)
        else:
            options.update(do_sample=False, temperature=None, top_p=None)
        devices = [torch.device(self.device)] if str(self.device).startswith("cuda") else []
        with torch.random.fork_rng(devices=devices), torch.no_grad():
            torch.manual_seed(_stable_int(self.seed, question))
            out = self.model.generate(**enc, **options)
        return self.tokenizer.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)

    def config(self) -> dict[str, Any]:
        return {"model": self.name, "max_new_tokens": self.max_new_tokens, "seed": self.seed, "sample": self.sample,
                "temperature": self.temperature, "top_p": self.top_p, "instruction": self.instruction,
                "examples": [list(e) for e in self.examples]}


# --------------------------------------------------------------------------------------------------- cleaning


def _norm(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def _is_yes_no_question(text: str) -> bool:
    # the clause after a lead-in counts: "Looking at the image, is there a nodule?" is a yes/no question
    clause = text.rsplit(",", 1)[-1] if len(_norm(text.rsplit(",", 1)[-1]).split()) >= 2 else text
    words = _norm(clause).split()
    return bool(words) and words[0] in AUXILIARIES


def clean_paraphrase(raw: str, pair: QAPair, terms: Iterable[str] = ()) -> tuple[str | None, str]:
    """(the cleaned question, "ok") or (None, why it was refused). ``terms``: words the question is about (its
    concepts' values) that a paraphrase must keep when the original has them."""
    lines = [line.strip() for line in (raw or "").splitlines() if line.strip()]
    if not lines:
        return None, "empty"
    text = lines[0]
    for _ in range(3):  # "1. Question: 'Is ...?'"
        text = PREFIX.sub("", text).strip().strip("\"'`\u201c\u201d\u2018\u2019").strip()
    if not text:
        return None, "empty"
    if "?" not in text:
        return None, "no-question-mark"
    text = text[: text.index("?") + 1].strip().strip("\"'`\u201c\u201d").strip()
    if not text.endswith("?"):
        text += "?"
    words = text[:-1].split()
    letters = sum(ch.isalpha() for ch in text)
    visible = sum(not ch.isspace() for ch in text)
    if len(words) < 3 or letters < 0.6 * visible or "\ufffd" in text or any(len(w) > 30 for w in words):
        return None, "garbage"
    if len(words) > max(25, 3 * len(pair.question.split())):
        return None, "too-long"
    text = text[0].upper() + text[1:]
    if _norm(text) == _norm(pair.question):
        return None, "same-as-original"
    yes_no = _norm(pair.answer) in ("yes", "no")
    if yes_no != _is_yes_no_question(text) and " or " not in f" {_norm(text)} ":
        return None, "form-changed"
    answer = _norm(pair.answer)
    if not yes_no and answer and re.search(rf"\b{re.escape(answer)}\b", _norm(text)) and \
            not re.search(rf"\b{re.escape(answer)}\b", _norm(pair.question)):
        return None, "answer-leak"
    for term in terms:
        t = _norm(term)
        pattern = rf"\b{re.escape(t)}(?:s|es)?\b"  # "nodules" in "How many nodules are there?" is the term too
        if t and re.search(pattern, _norm(pair.question)) and not re.search(pattern, _norm(text)):
            return None, "lost-term"
    return text, "ok"


# --------------------------------------------------------------------------------------------------- pairs


@dataclass
class ParaphraseResult:
    pairs: list[QAPair]  # the input pairs, then the added ones
    added: list[QAPair]
    attempted: int  # (case, question) units drawn
    kept: int  # units whose paraphrase passed the cleaning (attempted = kept + sum(dropped))
    calls: int  # model calls (one per distinct question text)
    dropped: dict[str, int] = field(default_factory=dict)  # refused units by reason
    model: str = ""

    def summary(self) -> dict[str, Any]:
        return {"model": self.model, "attempted": self.attempted, "kept": self.kept, "calls": self.calls,
                "added_pairs": len(self.added), "dropped": dict(sorted(self.dropped.items()))}


def paraphrase_pairs(pairs: list[QAPair], paraphraser: QuestionRewriter, share: float, *, seed: int = 0,
                     concepts: dict[str, Concept] | None = None) -> ParaphraseResult:
    """Paraphrase ``share`` (0..1] of the template pairs' (case, question) units; see the module docstring.
    ``concepts`` (id -> concept) lets the cleaning check that a paraphrase keeps the terms the question is about."""
    if not 0 < share <= 1:
        raise ConfigError(f"the paraphrase share must be in (0, 1], got {share}")
    name = getattr(paraphraser, "name", "") or "model"
    units: dict[tuple[str, str], list[QAPair]] = {}
    for p in pairs:
        if p.generated_by == "template":
            units.setdefault((p.case_id, p.question), []).append(p)
    keys = sorted(units)
    chosen = sorted(random.Random(f"{seed}:paraphrase").sample(keys, round(share * len(keys))))
    existing = {p.qa_id for p in pairs}
    raw_cache: dict[str, str] = {}
    dropped: Counter = Counter()
    added: list[QAPair] = []
    kept = 0
    for key in chosen:
        question = key[1]
        if question not in raw_cache:
            raw_cache[question] = paraphraser.rephrase(question)
        for n, p in enumerate(units[key]):
            terms = [concepts[c].value for c in p.concept_ids if concepts and c in concepts
                     and concepts[c].category in ("finding", "organ")]
            text, why = clean_paraphrase(raw_cache[question], p, terms)
            if text is None:
                dropped[why] += 1
                break  # one refusal per unit: the same text fails for every image of the case
            kept += n == 0  # counted once per unit, not per image
            qa_id = f"{p.qa_id}-p{hashlib.sha1(text.encode('utf-8')).hexdigest()[:6]}"
            if qa_id in existing:
                continue
            existing.add(qa_id)
            added.append(replace(p, qa_id=qa_id, question=text, generated_by=f"paraphrase:{name}",
                                 concept_ids=list(p.concept_ids), spans=[list(s) for s in p.spans],
                                 flags=list(p.flags)))
    return ParaphraseResult(list(pairs) + added, added, len(chosen), kept, len(raw_cache), dict(dropped), name)


def paraphrase_into(project, paraphraser: QuestionRewriter, share: float, *, seed: int = 0) -> dict[str, Any]:
    """Paraphrase the project's template pairs that are not rejected (edited ones as edited) and append the new
    pairs (pending review) to qa.jsonl; records the stage "paraphrase". Returns the summary."""
    from .review import effective_concepts, effective_qa

    with project.writing():
        stored = project.qa_pairs()
        if not stored:
            raise ConfigError(f"project {project.root} has no QA pairs; run the generation first")
        usable = [p for p, status in effective_qa(project) if status != "rejected"]
        concepts = {c.concept_id: c for c, _ in effective_concepts(project)}
        result = paraphrase_pairs(usable, paraphraser, share, seed=seed, concepts=concepts)
        known = {p.qa_id for p in stored}
        new = [p for p in result.added if p.qa_id not in known]
        project.write_qa_pairs(stored + new)
        summary = {**result.summary(), "added_pairs": len(new), "share": share, "seed": seed,
                   "config": paraphraser.config() if hasattr(paraphraser, "config") else {"model": result.model}}
        project.mark_stage("paraphrase", **summary)
    return summary
