"""Med-VQA baselines: majority, question-only and image-identity memorisation on tiny synthetic records whose right
answers are known, and their order on VQA-RAD's train split (a seeded 80/20 split by qid): image identity above
question only above majority."""
from __future__ import annotations

import json
import random

import pytest

from embedlab.errors import UnknownChoiceError
from embedlab.medvqa.baselines import BASELINES, ImageIdentity, Majority, QuestionOnly, VQABaseline, fit_predict
from embedlab.medvqa.metrics import score
from embedlab.medvqa.normalize import canonical_answer_type, canonical_question_type
from embedlab.medvqa.records import CLOSED, OPEN, VQARecord


def rec(qid, image, question, answer, answer_type=OPEN):
    return VQARecord(qid=str(qid), image=image, question=question, answer=answer, answer_type=answer_type)


def test_registry():
    assert BASELINES.names() == ["image-identity", "majority", "question-only"]
    assert all(issubclass(cls, VQABaseline) for _, cls in BASELINES.items())
    assert BASELINES.get("majority") is Majority
    with pytest.raises(UnknownChoiceError):
        BASELINES.get("oracle")
    with pytest.raises(RuntimeError, match="fit"):
        QuestionOnly().predict([rec(1, "a.jpg", "what?", "x")])


def test_majority_per_answer_type():
    train = [rec(i, "a.jpg", "is it?", a, CLOSED) for i, a in enumerate(["Yes", "no", "no", "yes", "no"])]
    train += [rec(10 + i, "a.jpg", "what?", a) for i, a in enumerate(["brain", "the lung", "Lung"])]
    model = Majority().fit(train)
    test = [rec(20, "b.jpg", "is there?", "yes", CLOSED), rec(21, "b.jpg", "where?", "brain")]
    assert model.predict(test) == ["no", "lung"]  # "the lung" and "Lung" are one normalised answer
    tie = [rec(i, "a.jpg", "q", a, CLOSED) for i, a in enumerate(["yes", "no", "yes", "no"])]
    assert Majority().fit(tie).predict(test[:1]) == ["no"]  # ties: alphabetically first
    assert Majority().fit(tie).predict([rec(30, "b.jpg", "q", "x", "OTHER")]) == ["no"]  # unknown type: overall


TEMPLATES = {"what organ is shown": "brain", "is there a fracture": "no", "what imaging modality was used": "ct",
             "which side is the lesion on": "left"}


def test_question_only_learns_question_to_answer():
    train = [rec(f"{i}-{j}", f"img{i}.jpg", f"{q.capitalize()}?", a) for i in range(6)
             for j, (q, a) in enumerate(TEMPLATES.items())]
    model = QuestionOnly(seed=0).fit(train)
    test = [rec("t1", "new.jpg", "Which organ is shown here?", "brain"),
            rec("t2", "new.jpg", "Is a fracture present?", "no"),
            rec("t3", "new.jpg", "What modality was used for imaging?", "ct"),
            rec("t4", "new.jpg", "On which side is the lesion?", "left")]
    assert model.predict(test) == ["brain", "no", "ct", "left"]
    assert QuestionOnly(seed=0).fit(train).predict(test) == model.predict(test)  # deterministic
    assert model.predict([]) == []
    assert QuestionOnly().fit(train[:1]).predict(test[:2]) == ["brain", "brain"]  # one class: constant


def test_image_identity_recovers_answers_of_the_same_image():
    # the same questions on two images with different answers: only the image tells them apart
    train = [rec(1, "a.jpg", "What organ is shown?", "brain"), rec(2, "a.jpg", "Is there bleeding?", "yes"),
             rec(3, "b.jpg", "What organ is shown?", "lung"), rec(4, "b.jpg", "Is there bleeding?", "no"),
             rec(5, "c.jpg", "What organ is shown?", "lung"), rec(6, "c.jpg", "Is there bleeding?", "no")]
    model = ImageIdentity(seed=0).fit(train)
    test = [rec(11, "a.jpg", "Which organ is shown in this image?", "brain"),
            rec(12, "a.jpg", "Is there any bleeding?", "yes"),
            rec(13, "b.jpg", "is there bleeding in the lung", "no"),
            rec(14, "b.jpg", "organ?", "lung")]
    assert model.predict(test) == ["brain", "yes", "no", "lung"]
    assert score(test, model.predict(test))["scores"]["overall"] == 1.0
    question_only = QuestionOnly(seed=0).fit(train)
    assert question_only.predict(test[:2]) != ["brain", "yes"]  # the question alone cannot tell image a from b
    # an image without train questions, or no shared term on a known image: the question-only answer
    fallback = [rec(15, "unseen.jpg", "Is there bleeding?", "no"), rec(16, "a.jpg", "Describe it", "brain")]
    assert model.predict(fallback) == question_only.predict(fallback)
    assert fit_predict("image-identity", train, test, seed=0) == model.predict(test)
    assert model.config()["fallback"]["baseline"] == "question-only"


def _vqa_rad_train(data_root):
    path = data_root / "medvqa" / "vqa-rad" / "trainset.json"
    if not path.is_file():
        pytest.skip(f"{path} not in the data mirror")
    rows = json.loads(path.read_text(encoding="utf-8"))
    return [VQARecord(qid=str(r["qid"]), image=r["image_name"], question=r["question"], answer=str(r["answer"]),
                      answer_type=canonical_answer_type(r["answer_type"]),
                      question_type=canonical_question_type(r["question_type"]), organ=r["image_organ"],
                      phrase_type=r["phrase_type"], dataset="vqa-rad") for r in rows]


def test_order_on_vqa_rad(data_root):
    records = _vqa_rad_train(data_root)
    qids = sorted(r.qid for r in records)
    random.Random(0).shuffle(qids)
    held = set(qids[: len(qids) // 5])
    train = [r for r in records if r.qid not in held]
    val = [r for r in records if r.qid in held]
    train_answers = [r.answer for r in train]
    question_only = QuestionOnly(seed=0).fit(train)
    overall = {}
    for name, model in [("majority", Majority().fit(train)), ("question-only", question_only),
                        ("image-identity", ImageIdentity(seed=0, fallback=question_only).fit(train))]:
        result = score(val, model.predict(val), train_answers=train_answers)
        overall[name] = result["scores"]["overall"]
        if name == "majority":
            assert 0.45 < result["scores"]["closed"] < 0.55  # "no" on closed questions
    assert overall["image-identity"] > overall["question-only"] > overall["majority"], overall
