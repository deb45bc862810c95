"""Canonical in-memory records, one per task family. Loaders produce these; evaluators and trainers consume them.

They hold text and labels only: no tokenisation, no tensors, no file handles.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class STSPair:
    """Two sentences and a gold similarity score (scale as in the source: 0-5 for STS-B, 1-5 for SICK)."""

    sentence1: str
    sentence2: str
    score: float


@dataclass
class STSSet:
    name: str
    split: str
    pairs: list[STSPair]

    @property
    def sentences1(self) -> list[str]:
        return [p.sentence1 for p in self.pairs]

    @property
    def sentences2(self) -> list[str]:
        return [p.sentence2 for p in self.pairs]

    @property
    def scores(self) -> list[float]:
        return [p.score for p in self.pairs]

    def __len__(self) -> int:
        return len(self.pairs)


@dataclass(frozen=True)
class Document:
    id: str
    text: str
    title: str = ""

    def full_text(self) -> str:
        """Title and body joined as MTEB/BEIR do for bi-encoders: ``title + " " + text``, stripped."""
        return f"{self.title} {self.text}".strip() if self.title else self.text.strip()


@dataclass
class RetrievalSet:
    """A BEIR-style retrieval benchmark: corpus, queries and graded relevance judgements (qrels)."""

    name: str
    split: str
    corpus: dict[str, Document]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]  # query id -> {doc id: grade}; grade <= 0 means judged not relevant

    def judged_queries(self) -> dict[str, str]:
        """Queries with at least one judgement in this split (what is evaluated)."""
        return {qid: text for qid, text in self.queries.items() if qid in self.qrels}


@dataclass(frozen=True)
class IRExample:
    """A retrieval training example in the FlagEmbedding JSONL layout."""

    query: str
    pos: tuple[str, ...]
    neg: tuple[str, ...] = ()
    prompt: str | None = None


@dataclass
class SentenceSet:
    """Unlabelled sentences (unsupervised training, geometry metrics)."""

    name: str
    sentences: list[str] = field(default_factory=list)
