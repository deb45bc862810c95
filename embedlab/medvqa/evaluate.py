"""Answering and scoring with a trained library model, with the image checks that show whether it uses the image.

    preds = predict(trained, records)       # [{"answer": ..., "top": [(answer, prob), ...]}, ...]
    result = evaluate_model(trained, records, train_answers=...)   # real, blank and shuffled images

``Predictor(trained, records)`` prepares the images and question inputs once; its ``predict(condition)`` (and the
function ``predict``) answers every record (argmax over the training answers; ``top`` = the 5 most probable answers
under a softmax of the logits). ``evaluate_model`` scores (metrics.score) three conditions: the real images,
``blank`` (every image replaced by one constant grey) and ``shuffled`` (every question asked about another real
image of the set, a derangement with a fixed seed). Its ``scores`` are the real condition's, plus
``blank_overall``, ``shuffled_overall``, ``blank_closed``, ``blank_open`` and ``image_reliance`` = overall(real) -
overall(blank), all fractions. A model that does not look at the image has image reliance ~0 and shuffled ~ real.

It does not train (train.py) and does not write results (jobs.py).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from .imagebank import ImageBank
from .metrics import image_reliance, score
from .models import TrainedModel
from .records import VQARecord
from .models.network import image_sizes
from .train import QuestionInputs, cdae_codes, predict_logits, prepare

CONDITIONS = ("real", "blank", "shuffled")


def _condition(bank: ImageBank, condition: str, seed: int) -> ImageBank:
    if condition == "blank":
        return bank.blank()
    if condition == "shuffled":
        return bank.shuffled(seed)
    if condition != "real":
        raise ValueError(f"image condition must be one of {', '.join(CONDITIONS)}, not {condition!r}")
    return bank


def _codes(trained: TrainedModel, bank: ImageBank) -> torch.Tensor | None:
    net = trained.net
    if net.cdae is None or not trained.info.get("cdae_frozen"):
        return None
    return cdae_codes(net.cdae, bank.pixels[trained.settings["cdae_size"]])


class Predictor:
    """A trained model with its question inputs and the records' images prepared once: every image condition then
    costs one forward pass (the frozen text encoder, when the model has one, runs once)."""

    def __init__(self, trained: TrainedModel, records: Sequence[VQARecord]):
        self.trained, self.records = trained, list(records)
        self.bank = ImageBank.build(self.records, image_sizes(trained.settings))
        self.data = prepare(self.records, self.bank, QuestionInputs(trained.settings, trained.questions),
                            trained.answers)

    def predict(self, condition: str = "real", *, seed: int = 0, top_k: int = 5, bf16: bool = False) -> list[dict]:
        bank = _condition(self.bank, condition, seed)
        logits = predict_logits(self.trained.net, bank, _codes(self.trained, bank), self.data, bf16=bf16)
        probs = torch.softmax(logits, dim=-1)
        top_p, top_i = probs.topk(min(top_k, probs.shape[1]), dim=-1)
        answers = self.trained.answers.answers
        return [{"answer": answers[int(i[0])], "top": [(answers[int(j)], float(p)) for p, j in zip(ps, i)]}
                for ps, i in zip(top_p, top_i)]


def predict(trained: TrainedModel, records: Sequence[VQARecord], *, condition: str = "real", seed: int = 0,
            top_k: int = 5, bf16: bool = False) -> list[dict]:
    records = list(records)
    if not records:
        return []
    return Predictor(trained, records).predict(condition, seed=seed, top_k=top_k, bf16=bf16)


def evaluate_model(trained: TrainedModel, records: Sequence[VQARecord], *, train_answers: Sequence[str] | None = None,
                   closed_by: str = "field", questions: str = "all", conditions: Sequence[str] = CONDITIONS,
                   seed: int = 0, bf16: bool = False) -> dict:
    """{"scores", "counts", "options", "items", "by_question_type", "by_organ", "conditions": {name: scores}}."""
    if "real" not in conditions:
        raise ValueError("the real-image condition is always scored")
    train_answers = list(train_answers) if train_answers is not None else trained.answers.answers
    per = {}
    predictor = Predictor(trained, records)
    for cond in conditions:
        preds = [p["answer"] for p in predictor.predict(cond, seed=seed, bf16=bf16)]
        per[cond] = score(records, preds, closed_by=closed_by, questions=questions, train_answers=train_answers)
    result = dict(per["real"])
    scores = dict(result["scores"])
    for cond in conditions:
        if cond == "real":
            continue
        for key in ("overall", "closed", "open"):
            scores[f"{cond}_{key}"] = per[cond]["scores"][key]
    if "blank" in per:
        scores["image_reliance"] = image_reliance(per["real"]["scores"]["overall"], per["blank"]["scores"]["overall"])
    result["scores"] = scores
    result["conditions"] = {c: per[c]["scores"] for c in conditions}
    return result
