"""Med-VQA metrics against hand-computed cases: closed/open by field vs by yes/no answer, the freeform-only filter,
unseen answers counted wrong and reported, open-answer token recall / F1 / BLEU-1, per-type and per-organ accuracy,
per-item correctness and the display scale."""
from __future__ import annotations

import math

import pytest

from embedlab.medvqa.metrics import bleu1, image_reliance, score, token_f1, token_recall, tokens
from embedlab.medvqa.records import VQARecord
from embedlab.results import display_scale, make_rows


def rec(qid, answer, answer_type, question_type, organ, phrase_type):
    return VQARecord(qid=qid, image=f"img{qid}.jpg", question=f"question {qid}?", answer=answer,
                     answer_type=answer_type, question_type=question_type, organ=organ, phrase_type=phrase_type)


# qid, gold (raw), answer_type field, type, organ, phrase type, prediction (raw); right? noted per row
ROWS = [
    ("1", "Yes", "CLOSED", "PRES", "HEAD", "freeform", "yes"),  # right
    ("2", "No", "CLOSED", "PRES", "CHEST", "para", "yes"),  # wrong
    ("3", "yes", "OPEN", "PRES", "HEAD", "freeform", "yes"),  # right (open by field, closed by yes/no)
    ("4", "left", "CLOSED", "POS", "CHEST", "freeform", "Left."),  # right (closed by field, open by yes/no)
    ("5", "right lung", "OPEN", "POS", "CHEST", "freeform", "lung"),  # wrong
    ("6", "the left lung", "OPEN", "ABN", "CHEST", "para", "right lung"),  # wrong
    ("7", "X-ray", "OPEN", "MODALITY", "HEAD", "freeform", "xray"),  # matches, but "xray" is not a train answer
    ("8", "2", "OPEN", "COUNT", "ABD", "freeform", "two"),  # right ("two" -> "2")
    ("9", "right", "CLOSED", "POS", "ABD", "para", "left"),  # wrong
]
RECORDS = [rec(*row[:6]) for row in ROWS]
PREDICTIONS = [row[6] for row in ROWS]
TRAIN_ANSWERS = ["Yes", "no", "left", "right", "right lung", "Left lung", "lung", 2]


def test_by_field_with_train_vocabulary():
    result = score(RECORDS, PREDICTIONS, train_answers=TRAIN_ANSWERS)
    s, counts = result["scores"], result["counts"]
    assert counts == {"n": 9, "closed": 4, "open": 5, "correct": 4, "unseen": 1, "unseen_closed": 0,
                      "unseen_open": 1, "excluded": 0}
    assert s["closed"] == pytest.approx(2 / 4)  # qids 1, 4 of 1, 2, 4, 9
    assert s["open"] == pytest.approx(2 / 5)  # qids 3, 8 of 3, 5, 6, 7, 8 (7 unseen: wrong)
    assert s["overall"] == s["main_score"] == pytest.approx(4 / 9)
    assert s["unseen_fraction"] == pytest.approx(1 / 9)
    assert result["options"] == {"closed_by": "field", "questions": "all", "train_vocabulary": True}
    assert result["items"] == {"qids": [r.qid for r in RECORDS], "main": [1, 0, 1, 1, 0, 0, 0, 1, 0]}
    # open token metrics over qids 3, 5, 6, 7, 8 (soft measures: qid 7's exact text counts in full)
    assert s["open_token_recall"] == pytest.approx((1 + 0.5 + 0.5 + 1 + 1) / 5)
    assert s["open_token_f1"] == pytest.approx((1 + 2 / 3 + 0.5 + 1 + 1) / 5)
    assert s["open_bleu1"] == pytest.approx((1 + math.exp(-1) + 0.5 + 1 + 1) / 5)


def test_per_question_type_and_organ():
    result = score(RECORDS, PREDICTIONS, train_answers=TRAIN_ANSWERS)
    by_type = {k: (v["accuracy"], v["n"]) for k, v in result["by_question_type"].items()}
    assert by_type == {"ABN": (0.0, 1), "COUNT": (1.0, 1), "MODALITY": (0.0, 1), "POS": (pytest.approx(1 / 3), 3),
                       "PRES": (pytest.approx(2 / 3), 3)}
    by_organ = {k: (v["accuracy"], v["n"]) for k, v in result["by_organ"].items()}
    assert by_organ == {"ABD": (0.5, 2), "CHEST": (0.25, 4), "HEAD": (pytest.approx(2 / 3), 3)}
    assert result["scores"]["type/POS"] == pytest.approx(1 / 3)
    assert result["scores"]["organ/CHEST"] == 0.25


def test_yes_no_convention_changes_the_denominators():
    result = score(RECORDS, PREDICTIONS, closed_by="yesno", train_answers=TRAIN_ANSWERS)
    assert result["counts"]["closed"] == 3 and result["counts"]["open"] == 6  # by field: 4 and 5
    assert result["scores"]["closed"] == pytest.approx(2 / 3)  # qids 1, 3 of 1, 2, 3
    assert result["scores"]["open"] == pytest.approx(2 / 6)  # qids 4, 8 of 4, 5, 6, 7, 8, 9
    assert result["scores"]["overall"] == pytest.approx(4 / 9)  # the convention only splits differently
    assert result["options"]["closed_by"] == "yesno"
    # open token metrics now over 4, 5, 6, 7, 8, 9 ("left" vs gold "right": nothing shared)
    assert result["scores"]["open_token_recall"] == pytest.approx((1 + 0.5 + 0.5 + 1 + 1 + 0) / 6)


def test_freeform_only():
    result = score(RECORDS, PREDICTIONS, questions="freeform", train_answers=TRAIN_ANSWERS)
    assert result["counts"]["n"] == 6 and result["counts"]["excluded"] == 3  # qids 2, 6, 9 are para
    assert result["scores"]["closed"] == 1.0  # qids 1, 4
    assert result["scores"]["open"] == pytest.approx(2 / 4)  # qids 3, 8 of 3, 5, 7, 8
    assert result["scores"]["overall"] == pytest.approx(4 / 6)
    assert result["items"]["qids"] == ["1", "3", "4", "5", "7", "8"]
    assert result["options"]["questions"] == "freeform"


def test_without_train_vocabulary_unseen_is_neither_applied_nor_reported():
    result = score(RECORDS, PREDICTIONS)
    assert result["scores"]["open"] == pytest.approx(3 / 5)  # qid 7 now right
    assert result["scores"]["overall"] == pytest.approx(5 / 9)
    assert result["counts"]["unseen"] is None and "unseen_fraction" not in result["scores"]
    assert result["options"]["train_vocabulary"] is False


def test_unseen_answers_counted_wrong_even_on_closed():
    records = [rec("1", "yes", "CLOSED", "PRES", "HEAD", "freeform"), rec("2", "no", "CLOSED", "PRES", "HEAD", "")]
    result = score(records, ["yes", "no"], train_answers=["yes"])
    assert result["scores"]["closed"] == 0.5
    assert result["counts"]["unseen"] == result["counts"]["unseen_closed"] == 1
    assert math.isnan(result["scores"]["open"])  # no open question: undefined, not 0
    assert result["by_question_type"] == {"PRES": {"accuracy": 0.5, "n": 2}}


def test_predictions_as_mapping_and_errors():
    by_qid = {r.qid: p for r, p in zip(RECORDS, PREDICTIONS)}
    assert score(RECORDS, by_qid) == score(RECORDS, PREDICTIONS)
    with pytest.raises(ValueError, match="no prediction"):
        score(RECORDS, {"1": "yes"})
    with pytest.raises(ValueError, match="predictions for"):
        score(RECORDS, PREDICTIONS[:3])
    with pytest.raises(ValueError, match="closed_by"):
        score(RECORDS, PREDICTIONS, closed_by="answer")
    with pytest.raises(ValueError, match="questions"):
        score(RECORDS, PREDICTIONS, questions="para")
    no_phrase = [rec("1", "yes", "CLOSED", "PRES", "HEAD", "")]
    with pytest.raises(ValueError, match="phrase types"):
        score(no_phrase, ["yes"], questions="freeform")


def test_token_metrics_by_hand():
    assert tokens("The Left Lung.") == ["left", "lung"]
    # prediction "lung", gold "right lung": precision 1, recall 1/2, F1 2/3; BLEU-1 = 1 x exp(1 - 2/1)
    assert token_recall(["lung"], ["right", "lung"]) == 0.5
    assert token_f1(["lung"], ["right", "lung"]) == pytest.approx(2 / 3)
    assert bleu1(["lung"], ["right", "lung"]) == pytest.approx(math.exp(-1))
    # repeated prediction tokens are clipped: "left lung lung" vs "lung": precision 1/3, recall 1, F1 1/2; BLEU-1 =
    # clipped precision 1/3 (longer than the reference: no brevity penalty)
    assert token_recall(["left", "lung", "lung"], ["lung"]) == 1.0
    assert token_f1(["left", "lung", "lung"], ["lung"]) == pytest.approx(0.5)
    assert bleu1(["left", "lung", "lung"], ["lung"]) == pytest.approx(1 / 3)
    # nothing shared, and the empty cases
    assert token_recall(["brain"], ["lung"]) == token_f1(["brain"], ["lung"]) == bleu1(["brain"], ["lung"]) == 0.0
    assert token_f1([], ["lung"]) == bleu1([], ["lung"]) == token_recall([], ["lung"]) == 0.0
    assert token_f1([], []) == 1.0


def test_image_reliance_and_display_scale():
    assert image_reliance(0.70, 0.52) == pytest.approx(0.18)
    assert image_reliance(0.5, 0.55) == pytest.approx(-0.05)
    assert display_scale("vqa") == 100.0
    result = score(RECORDS, PREDICTIONS, train_answers=TRAIN_ANSWERS)
    rows = make_rows(domain="medvqa", model="m", task="vqa-rad", task_type="vqa", dataset="vqa-rad",
                     split="validation", scores=result["scores"])
    values = {r["metric"]: r["value"] for r in rows}
    assert values["overall"] == pytest.approx(400 / 9)
    assert "n" not in values and all(v is None or 0 <= v <= 100 for v in values.values())
