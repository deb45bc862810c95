"""Med-VQA scores: closed / open / overall accuracy under one recorded protocol, plus the open-answer text metrics.

    from embedlab.medvqa.metrics import score
    result = score(records, predictions, train_answers=[r.answer for r in train])
    result["scores"]["overall"]          # fraction 0-1 (tables show x100: display scale "vqa")
    result["items"]                      # {"qids": [...], "main": [0/1 ...]}: per-question correctness, for the
                                         # paired bootstrap of embedlab.bench.stats

Scoring rules (those of MEVF, CR, MMQ, VQAMix, BESTMVQA):

- a prediction is right when ``normalize_answer(prediction) == normalize_answer(gold)`` (MEVF's normalisation,
  ``embedlab.medvqa.normalize``); predictions are normalised here, so a model may return raw strings;
- with ``train_answers`` (the train split's answers), a question whose gold answer is not in the normalised train
  vocabulary stays in the denominator and is counted wrong (a train-vocabulary classifier cannot produce it); how many
  there are is reported (``counts["unseen"]``, ``scores["unseen_fraction"]``). Without it, no such rule is applied and
  nothing is reported on it (for a generative model scored by exact match alone);
- the two conventions that change numbers are options, recorded in ``result["options"]``:
  ``closed_by="field"`` (the dataset's ``answer_type``: MEVF, CR, BESTMVQA; the default) or ``"yesno"`` (a question is
  closed when its normalised gold answer is yes or no: LLaVA-Med-style evaluations);
  ``questions="all"`` (CR, BESTMVQA; the default) or ``"freeform"`` (only ``phrase_type == "freeform"``: MEVF, MMQ,
  CMSA, VQAMix score only those on VQA-RAD).

Open questions also get token recall, token F1 (SQuAD's definition: bag-of-token overlap of the normalised answers)
and BLEU-1 (NLTK's ``sentence_bleu`` with unigram weights, on the same normalised tokens), averaged over the open
questions. These are soft measures of the text: they ignore the unseen-answer rule. NLTK rather than sacrebleu
because it scores pre-tokenised single sentences (so all three metrics see the same normalised tokens, where sacrebleu
would re-tokenise detokenised text with its MT tokenizer and is built for corpus-level scores), and it is the
implementation the LLaVA-Med and PathVQA evaluations report BLEU-1 with.

``result["scores"]`` holds only fractions (NaN where undefined, e.g. open accuracy without open questions), so it can
go to ``embedlab.results.make_rows(task_type="vqa", scores=result["scores"], ...)`` as is: the display scale of the
task type "vqa" (x100) is registered here. Counts live in ``result["counts"]``.

It does not run models, load datasets or write results.
"""
from __future__ import annotations

import math
import warnings
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .tasks import TASK_TYPE  # noqa: F401 - importing tasks registers the "vqa" task type (x100)
from .normalize import YES_NO, normalize_answer
from .records import VQARecord


CLOSED_BY = ("field", "yesno")
QUESTIONS = ("all", "freeform")


def tokens(answer: Any) -> list[str]:
    """The normalised answer split on whitespace (the tokens of recall, F1 and BLEU-1)."""
    return normalize_answer(answer).split()


def token_recall(prediction: Sequence[str], gold: Sequence[str]) -> float:
    """Share of the gold tokens found in the prediction (bag of tokens: each counted as often as it occurs in both).
    1 when both are empty, 0 when only one is."""
    if not gold or not prediction:
        return float(not gold and not prediction)
    return sum((Counter(prediction) & Counter(gold)).values()) / len(gold)


def token_f1(prediction: Sequence[str], gold: Sequence[str]) -> float:
    """SQuAD's token F1: harmonic mean of the bag-of-token precision and recall; 1 when both are empty, 0 when only
    one is or nothing is shared."""
    if not gold or not prediction:
        return float(not gold and not prediction)
    same = sum((Counter(prediction) & Counter(gold)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(prediction), same / len(gold)
    return 2 * precision * recall / (precision + recall)


def bleu1(prediction: Sequence[str], gold: Sequence[str]) -> float:
    """Sentence BLEU-1 of ``prediction`` against the one reference ``gold`` (NLTK: clipped unigram precision times
    the brevity penalty exp(1 - len(gold) / len(prediction)) when the prediction is shorter); 0 for an empty
    prediction or no shared token."""
    from nltk.translate.bleu_score import sentence_bleu

    if not prediction or not gold:
        return float(not gold and not prediction)
    with warnings.catch_warnings():  # NLTK warns when the precision is 0; the score (0) is what we want
        warnings.simplefilter("ignore")
        return float(sentence_bleu([list(gold)], list(prediction), weights=(1.0,)))


def image_reliance(acc_real: float, acc_blank: float) -> float:
    """How much a model needs the image: its accuracy with the real images minus its accuracy with blank (or
    shuffled) images, on the same questions and the same scale. Near 0: the model answers from the question alone."""
    return float(acc_real) - float(acc_blank)


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def _aligned(records: Sequence[VQARecord], predictions: Mapping[str, Any] | Sequence[Any]) -> list[Any]:
    if isinstance(predictions, Mapping):
        missing = [r.qid for r in records if r.qid not in predictions]
        if missing:
            raise ValueError(f"no prediction for {len(missing)} of {len(records)} questions (e.g. qid {missing[0]!r})")
        return [predictions[r.qid] for r in records]
    predictions = list(predictions)
    if len(predictions) != len(records):
        raise ValueError(f"{len(predictions)} predictions for {len(records)} questions: pass one per record, in "
                         "order, or a mapping qid -> answer")
    return predictions


def is_closed(record: VQARecord, closed_by: str = "field") -> bool:
    """Whether ``record`` counts as closed under the convention ``closed_by`` ("field" or "yesno")."""
    if closed_by == "field":
        return record.closed
    if closed_by == "yesno":
        return normalize_answer(record.answer) in YES_NO
    raise ValueError(f"closed_by must be one of {CLOSED_BY}, not {closed_by!r}")


def score(records: Iterable[VQARecord], predictions: Mapping[str, Any] | Sequence[Any], *, closed_by: str = "field",
          questions: str = "all", train_answers: Iterable[Any] | None = None) -> dict[str, Any]:
    """Score ``predictions`` (one answer per record, in order, or a mapping qid -> answer; raw or normalised) against
    the gold answers of ``records``.

    Returns a dict:

    - ``scores``: fractions 0-1 (NaN where undefined): ``closed``, ``open``, ``overall`` (= ``main_score``)
      accuracy; ``open_token_recall``, ``open_token_f1``, ``open_bleu1``; ``unseen_fraction`` (with
      ``train_answers``); ``type/<QUESTION_TYPE>`` and ``organ/<ORGAN>`` accuracies;
    - ``by_question_type`` / ``by_organ``: ``{name: {"accuracy": fraction, "n": count}}`` (records without the label
      are left out);
    - ``counts``: ``n``, ``closed``, ``open``, ``correct``, ``unseen`` (None without ``train_answers``) and
      ``unseen_closed`` / ``unseen_open``, ``excluded`` (questions dropped by ``questions="freeform"``);
    - ``options``: ``closed_by``, ``questions``, ``train_vocabulary`` (whether unseen answers were counted wrong);
    - ``items``: ``{"qids": [...], "main": [1 or 0, ...]}``, each scored question's correctness in order.
    """
    if closed_by not in CLOSED_BY:
        raise ValueError(f"closed_by must be one of {CLOSED_BY}, not {closed_by!r}")
    if questions not in QUESTIONS:
        raise ValueError(f"questions must be one of {QUESTIONS}, not {questions!r}")
    records = list(records)
    preds = _aligned(records, predictions)
    if questions == "freeform":
        if records and not any(r.phrase_type for r in records):
            raise ValueError('questions="freeform" needs phrase types, and these records have none')
        kept = [(r, p) for r, p in zip(records, preds) if r.phrase_type == "freeform"]
    else:
        kept = list(zip(records, preds))
    vocab = None if train_answers is None else {normalize_answer(a) for a in train_answers}

    qids, correct, closed_flags = [], [], []
    unseen = Counter()
    recall, f1, bleu = [], [], []
    per_type: dict[str, list[int]] = {}
    per_organ: dict[str, list[int]] = {}
    for record, pred in kept:
        gold = normalize_answer(record.answer)
        guess = normalize_answer(pred)
        closed = record.closed if closed_by == "field" else gold in YES_NO
        is_unseen = vocab is not None and gold not in vocab
        right = int(guess == gold and not is_unseen)
        if is_unseen:
            unseen["closed" if closed else "open"] += 1
        if not closed:
            pred_tokens, gold_tokens = guess.split(), gold.split()
            recall.append(token_recall(pred_tokens, gold_tokens))
            f1.append(token_f1(pred_tokens, gold_tokens))
            bleu.append(bleu1(pred_tokens, gold_tokens))
        qids.append(record.qid)
        correct.append(right)
        closed_flags.append(closed)
        if record.question_type:
            per_type.setdefault(record.question_type, []).append(right)
        if record.organ:
            per_organ.setdefault(record.organ, []).append(right)

    closed_hits = [c for c, is_c in zip(correct, closed_flags) if is_c]
    open_hits = [c for c, is_c in zip(correct, closed_flags) if not is_c]
    by_type = {k: {"accuracy": _mean(v), "n": len(v)} for k, v in sorted(per_type.items())}
    by_organ = {k: {"accuracy": _mean(v), "n": len(v)} for k, v in sorted(per_organ.items())}
    n_unseen = sum(unseen.values()) if vocab is not None else None
    scores = {
        "closed": _mean(closed_hits), "open": _mean(open_hits), "overall": _mean(correct),
        "main_score": _mean(correct),
        "open_token_recall": _mean(recall), "open_token_f1": _mean(f1), "open_bleu1": _mean(bleu),
    }
    if vocab is not None:
        scores["unseen_fraction"] = n_unseen / len(correct) if correct else math.nan
    scores.update({f"type/{k}": v["accuracy"] for k, v in by_type.items()})
    scores.update({f"organ/{k}": v["accuracy"] for k, v in by_organ.items()})
    return {
        "scores": scores,
        "by_question_type": by_type,
        "by_organ": by_organ,
        "counts": {"n": len(correct), "closed": len(closed_hits), "open": len(open_hits), "correct": sum(correct),
                   "unseen": n_unseen,
                   "unseen_closed": unseen["closed"] if vocab is not None else None,
                   "unseen_open": unseen["open"] if vocab is not None else None,
                   "excluded": len(records) - len(kept)},
        "options": {"closed_by": closed_by, "questions": questions, "train_vocabulary": vocab is not None},
        "items": {"qids": qids, "main": correct},
    }
