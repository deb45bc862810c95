"""The two vocabularies a trained Med-VQA model carries: question words and answers, both built from train only.

- ``QuestionVocab``: MEVF's question tokenisation (lower-case; ``,`` ``?`` removed; ``'s`` split off; other punctuation
  removed), a dictionary of the words of the training questions (index 0 = padding, 1 = unknown), and fixed-length
  id sequences (``max_length`` tokens, 12 as MEVF; longer questions are cut, shorter ones padded at the end).
- ``AnswerVocab``: the normalised answers of the training records (normalize.py), sorted; ``targets`` gives the
  one-hot soft-score rows a BCE classifier trains on. An answer outside the vocabulary has an all-zero target (it is
  never predicted, and a question with such an answer is always scored wrong: metrics.py).

Both serialise to plain JSON (``to_dict`` / ``from_dict``) so a saved model is self-contained. It does not embed
words (models/parts.py does).
"""
from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence

import torch

from .normalize import normalize_answer
from .records import VQARecord

PAD, UNK = 0, 1
_SPLIT = re.compile(r"[^a-z0-9' ]+")


def question_tokens(question: str) -> list[str]:
    """MEVF's tokenisation of a question (dictionary.py): lower-case, ``,`` and ``?`` dropped, ``'s`` a token."""
    text = str(question).lower().replace(",", "").replace("?", "").replace("'s", " 's")
    return _SPLIT.sub(" ", text).split()


class QuestionVocab:
    def __init__(self, words: Sequence[str], max_length: int = 12):
        if max_length < 1:
            raise ValueError(f"max_length must be at least 1, got {max_length}")
        self.words = list(words)
        self.max_length = max_length
        self.index = {w: i + 2 for i, w in enumerate(self.words)}

    @classmethod
    def build(cls, records: Iterable[VQARecord], max_length: int = 12, min_count: int = 1) -> QuestionVocab:
        counts = Counter(t for r in records for t in question_tokens(r.question))
        return cls(sorted(w for w, c in counts.items() if c >= min_count), max_length)

    def __len__(self) -> int:
        return len(self.words) + 2

    def encode(self, questions: Sequence[str]) -> torch.Tensor:
        """(N, max_length) long ids: padded with 0, unknown words 1."""
        out = torch.zeros(len(questions), self.max_length, dtype=torch.long)
        for i, q in enumerate(questions):
            ids = [self.index.get(t, UNK) for t in question_tokens(q)][: self.max_length]
            if ids:
                out[i, : len(ids)] = torch.tensor(ids)
        return out

    def to_dict(self) -> dict:
        return {"words": self.words, "max_length": self.max_length}

    @classmethod
    def from_dict(cls, data: dict) -> QuestionVocab:
        return cls(data["words"], data["max_length"])


class AnswerVocab:
    def __init__(self, answers: Sequence[str]):
        self.answers = list(answers)
        self.index = {a: i for i, a in enumerate(self.answers)}
        if len(self.index) != len(self.answers):
            raise ValueError("answer vocabulary has duplicates")

    @classmethod
    def build(cls, records: Iterable[VQARecord]) -> AnswerVocab:
        answers = sorted({normalize_answer(r.answer) for r in records})
        if not answers:
            raise ValueError("cannot build an answer vocabulary from no records")
        return cls(answers)

    def __len__(self) -> int:
        return len(self.answers)

    def __contains__(self, answer: str) -> bool:
        return normalize_answer(answer) in self.index

    def label(self, answer: str) -> int:
        """Index of the normalised answer, -1 when it is outside the vocabulary."""
        return self.index.get(normalize_answer(answer), -1)

    def targets(self, answers: Sequence[str]) -> torch.Tensor:
        """(N, len(vocab)) float soft scores: 1 at the answer's index, all zero for an unseen answer."""
        out = torch.zeros(len(answers), len(self.answers))
        for i, a in enumerate(answers):
            j = self.label(a)
            if j >= 0:
                out[i, j] = 1.0
        return out

    def to_dict(self) -> dict:
        return {"answers": self.answers}

    @classmethod
    def from_dict(cls, data: dict) -> AnswerVocab:
        return cls(data["answers"])
