"""The baselines every Med-VQA leaderboard shows, to tell what a model gets from the question and from the image.

    from embedlab.medvqa.baselines import BASELINES
    model = BASELINES.get("image-identity")(seed=0).fit(train_records)
    answers = model.predict(val_records)        # normalised answer strings, one per record

- ``majority``: the most frequent normalised train answer of the record's answer type (closed questions get the closed
  majority, on VQA-RAD "no"; open ones the open majority). Ties go to the alphabetically first answer.
- ``question-only``: TF-IDF of word 1-2-grams of the question + multinomial logistic regression (softmax) over the
  normalised train answers. What a model gets without looking at the image.
- ``image-identity``: memorisation without pixels. Among the train questions asked about the same image (by its
  reference, ``VQARecord.image``), the one most similar to the question by TF-IDF cosine gives its answer; when the
  image has no train question, or no train question on it shares a term with the question, the question-only model
  answers. What any model reaches by recognising which image it sees (on VQA-RAD every test image is also in train).

Each is a ``VQABaseline`` (``fit(train_records) -> self``, ``predict(records) -> list[str]``) registered by name in
``BASELINES``; all are deterministic for a given seed. Answers are normalised with ``normalize_answer`` before
counting and fitting, so predictions are in the scored form. Uses scikit-learn; it does not score (metrics.py does).
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from ..registry import Registry
from .normalize import normalize_answer
from .records import VQARecord


class VQABaseline:
    """A model that answers questions without being trained on images: ``fit`` on train records, ``predict`` answers."""

    name = ""

    def fit(self, train_records: Iterable[VQARecord]) -> VQABaseline:
        raise NotImplementedError

    def predict(self, records: Iterable[VQARecord]) -> list[str]:
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        """The settings that decide its predictions (recorded with its results)."""
        return {"baseline": self.name}


BASELINES: Registry[type[VQABaseline]] = Registry("vqa baseline")


def _train_list(train_records: Iterable[VQARecord]) -> list[VQARecord]:
    records = list(train_records)
    if not records:
        raise ValueError("cannot fit a baseline on no train records")
    return records


def _most_common(answers: Iterable[str]) -> str:
    counts = Counter(answers)
    return min(counts, key=lambda a: (-counts[a], a))


@BASELINES.register("majority")
class Majority(VQABaseline):
    """The most frequent normalised train answer per answer type (the overall majority for an unseen type)."""

    name = "majority"

    def __init__(self, seed: int = 0):
        self.seed = seed  # unused: the baseline is deterministic; accepted so every baseline is built the same way
        self.by_type: dict[str, str] = {}
        self.overall: str | None = None

    def fit(self, train_records: Iterable[VQARecord]) -> Majority:
        records = _train_list(train_records)
        answers = [normalize_answer(r.answer) for r in records]
        self.overall = _most_common(answers)
        by_type: dict[str, list[str]] = {}
        for r, a in zip(records, answers):
            by_type.setdefault(r.answer_type, []).append(a)
        self.by_type = {t: _most_common(a) for t, a in by_type.items()}
        return self

    def predict(self, records: Iterable[VQARecord]) -> list[str]:
        if self.overall is None:
            raise RuntimeError("majority baseline: call fit() first")
        return [self.by_type.get(r.answer_type, self.overall) for r in records]


def _vectorizer():
    from sklearn.feature_extraction.text import TfidfVectorizer

    return TfidfVectorizer(ngram_range=(1, 2), lowercase=True, sublinear_tf=True, token_pattern=r"(?u)\b\w+\b")


@BASELINES.register("question-only")
class QuestionOnly(VQABaseline):
    """TF-IDF (word 1-2-grams) of the question + softmax regression over the normalised train answers."""

    name = "question-only"

    def __init__(self, seed: int = 0, C: float = 10.0, max_iter: int = 200):
        self.seed, self.C, self.max_iter = seed, C, max_iter
        self.vectorizer = None
        self.classifier = None
        self.constant: str | None = None  # the one answer, when train has a single answer class

    def config(self) -> dict[str, Any]:
        return {"baseline": self.name, "seed": self.seed, "C": self.C, "max_iter": self.max_iter,
                "features": "tfidf word 1-2-grams (sublinear tf)",
                "classifier": "multinomial logistic regression (newton-cg)"}

    def fit(self, train_records: Iterable[VQARecord]) -> QuestionOnly:
        from sklearn.linear_model import LogisticRegression

        records = _train_list(train_records)
        answers = [normalize_answer(r.answer) for r in records]
        self.vectorizer = _vectorizer()
        features = self.vectorizer.fit_transform([r.question for r in records])
        if len(set(answers)) == 1:  # scikit-learn needs two classes
            self.constant, self.classifier = answers[0], None
            return self
        self.constant = None
        # the same convex optimum as lbfgs; newton-cg reaches it in ~8 iterations where lbfgs needs ~80 (4x faster on
        # VQA-RAD's 458 answer classes)
        self.classifier = LogisticRegression(C=self.C, solver="newton-cg", max_iter=self.max_iter,
                                             random_state=self.seed)
        self.classifier.fit(features, answers)
        return self

    def predict(self, records: Iterable[VQARecord]) -> list[str]:
        if self.vectorizer is None:
            raise RuntimeError("question-only baseline: call fit() first")
        records = list(records)
        if not records:
            return []
        if self.constant is not None:
            return [self.constant] * len(records)
        return [str(a) for a in self.classifier.predict(self.vectorizer.transform([r.question for r in records]))]


@BASELINES.register("image-identity")
class ImageIdentity(VQABaseline):
    """Answer of the most similar (TF-IDF cosine) train question on the same image; question-only otherwise."""

    name = "image-identity"

    def __init__(self, seed: int = 0, fallback: VQABaseline | None = None):
        self.seed = seed
        self.fallback = fallback if fallback is not None else QuestionOnly(seed=seed)
        self.vectorizer = None
        self.by_image: dict[str, tuple[Any, list[str]]] = {}  # image -> (TF-IDF rows of its train questions, answers)

    def config(self) -> dict[str, Any]:
        return {"baseline": self.name, "seed": self.seed, "similarity": "tfidf word 1-2-grams cosine",
                "fallback": self.fallback.config()}

    def fit(self, train_records: Iterable[VQARecord]) -> ImageIdentity:
        records = _train_list(train_records)
        self.fallback.fit(records)
        self.vectorizer = _vectorizer()
        features = self.vectorizer.fit_transform([r.question for r in records])  # rows are L2-normalised
        rows: dict[str, list[int]] = {}
        for i, r in enumerate(records):
            rows.setdefault(r.image, []).append(i)
        self.by_image = {image: (features[idx], [normalize_answer(records[i].answer) for i in idx])
                         for image, idx in rows.items()}
        return self

    def predict(self, records: Iterable[VQARecord]) -> list[str]:
        if self.vectorizer is None:
            raise RuntimeError("image-identity baseline: call fit() first")
        records = list(records)
        if not records:
            return []
        queries = self.vectorizer.transform([r.question for r in records])
        answers: list[str | None] = []
        for i, r in enumerate(records):
            seen = self.by_image.get(r.image)
            if seen is None:
                answers.append(None)
                continue
            sims = np.asarray((seen[0] @ queries[i].T).todense()).ravel()
            best = int(np.argmax(sims))  # first of the most similar (train order)
            answers.append(seen[1][best] if sims[best] > 0 else None)
        missing = [i for i, a in enumerate(answers) if a is None]
        if missing:
            for i, a in zip(missing, self.fallback.predict([records[i] for i in missing])):
                answers[i] = a
        return [str(a) for a in answers]


def fit_predict(name: str, train_records: Sequence[VQARecord], records: Sequence[VQARecord], *,
                seed: int = 0) -> list[str]:
    """Fit the registered baseline ``name`` on ``train_records`` and answer ``records``."""
    return BASELINES.get(name)(seed=seed).fit(train_records).predict(records)
