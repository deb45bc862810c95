"""Answer and label normalisation for Med-VQA, as the MEVF family (MEVF, CR, MMQ, VQAMix) scores VQA-RAD.

``normalize_answer`` is the scored form of an answer; two answers are the same answer when their normalised forms are
equal, and a model's answer vocabulary is the set of normalised train answers. The steps, in order:

1. ``str()`` (VQA-RAD has ten integer answers, e.g. ``4``);
2. VQA-style punctuation (the official VQA evaluation's ``processPunctuation``): each of ``; / [ ] " { } ( ) = + \\ _
   - > < @ ` , ? !`` is deleted when the raw answer has it next to a space (or has a comma between digits, ``1,000``),
   otherwise replaced by a space; then every period not followed by a digit is deleted, so decimals (``2.5``) keep
   theirs;
3. lower-case and split on white space;
4. number words to digits (``none``/``zero`` -> ``0``, ``one`` -> ``1`` ... ``ten`` -> ``10``);
5. the articles ``a``, ``an``, ``the`` are dropped;
6. the VQA contractions map (``dont`` -> ``don't``, ...), word by word; words joined by single spaces;
7. ``x ray`` -> ``xray`` (``X-ray`` becomes ``x ray`` in step 2).

On VQA-RAD's trainset.json this maps the 514 raw distinct answers onto exactly the 458 answers of MEVF's
``answer_all_list.json`` (tested); ``answer_vocabulary`` reproduces that list in its order.

Also here: ``canonical_question_type`` (VQA-RAD's combined and misspelt types) and ``canonical_answer_type``
(``"CLOSED "`` with a trailing space). This module reads no files and knows no dataset layout (datasets.py does); it
does not decide what counts as closed for scoring (that is an evaluation option: by field or by yes/no answer).
"""
from __future__ import annotations

import re
from typing import Any, Iterable

# The official VQA evaluation's punctuation list (the period is handled separately).
PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!")
_COMMA_BETWEEN_DIGITS = re.compile(r"(\d)(,)(\d)")
_PERIOD_NOT_IN_NUMBER = re.compile(r"\.(?!\d)")  # a period followed by a digit (a decimal) is kept

NUMBER_WORDS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
                "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
ARTICLES = frozenset({"a", "an", "the"})

# The VQA evaluation's contractions map (apostrophe-less spellings -> the usual ones). Keys with capitals never match
# after lower-casing; they are kept so the table is the evaluation's.
CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't", "dont": "don't",
    "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't", "havent": "haven't",
    "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's", "howd": "how'd", "howll": "how'll",
    "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm", "Ive": "I've", "isnt": "isn't",
    "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've", "itll": "it'll", "let's": "let's", "maam": "ma'am",
    "mightnt": "mightn't", "mightnt've": "mightn't've", "mightn'tve": "mightn't've", "mightve": "might've",
    "mustnt": "mustn't", "mustve": "must've", "neednt": "needn't", "notve": "not've", "oclock": "o'clock",
    "oughtnt": "oughtn't", "ow's'at": "'ow's'at", "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at", "shant": "shan't",
    "shed've": "she'd've", "she'dve": "she'd've", "she's": "she's", "shouldve": "should've", "shouldnt": "shouldn't",
    "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've", "somebody'd": "somebodyd",
    "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've", "somebodyll": "somebody'll",
    "somebodys": "somebody's", "someoned": "someone'd", "someoned've": "someone'd've",
    "someone'dve": "someone'd've", "someonell": "someone'll", "someones": "someone's", "somethingd": "something'd",
    "somethingd've": "something'd've", "something'dve": "something'd've", "somethingll": "something'll",
    "thats": "that's", "thered": "there'd", "thered've": "there'd've", "there'dve": "there'd've",
    "therere": "there're", "theres": "there's", "theyd": "they'd", "theyd've": "they'd've", "they'dve": "they'd've",
    "theyll": "they'll", "theyre": "they're", "theyve": "they've", "twas": "'twas", "wasnt": "wasn't",
    "wed've": "we'd've", "we'dve": "we'd've", "weve": "we've", "werent": "weren't", "whatll": "what'll",
    "whatre": "what're", "whats": "what's", "whatve": "what've", "whens": "when's", "whered": "where'd",
    "wheres": "where's", "whereve": "where've", "whod": "who'd", "whod've": "who'd've", "who'dve": "who'd've",
    "wholl": "who'll", "whos": "who's", "whove": "who've", "whyll": "why'll", "whyre": "why're", "whys": "why's",
    "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't", "wouldnt've": "wouldn't've",
    "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll", "y'allll": "y'all'll",
    "yall'd've": "y'all'd've", "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've", "youd": "you'd",
    "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll", "youre": "you're", "youve": "you've",
}


def process_punctuation(text: str) -> str:
    """Step 2: the VQA evaluation's punctuation rule (decided on the raw text, applied mark by mark)."""
    out = text
    digits_comma = _COMMA_BETWEEN_DIGITS.search(text) is not None
    for mark in PUNCTUATION:
        if (mark + " " in text or " " + mark in text) or digits_comma:
            out = out.replace(mark, "")
        else:
            out = out.replace(mark, " ")
    return _PERIOD_NOT_IN_NUMBER.sub("", out)


def process_digits_articles(text: str) -> str:
    """Steps 3-6: lower-case, number words to digits, drop articles, contractions; single spaces."""
    words = [NUMBER_WORDS.get(w, w) for w in text.lower().split()]
    words = [CONTRACTIONS.get(w, w) for w in words if w not in ARTICLES]
    return " ".join(words)


def normalize_answer(answer: Any) -> str:
    """The scored form of an answer (all steps of the module docstring). ``None`` is an error, not ``"None"``."""
    if answer is None:
        raise ValueError("an answer is required (got None)")
    text = process_digits_articles(process_punctuation(str(answer)))
    return text.replace("x ray", "xray")


def answer_vocabulary(answers: Iterable[Any]) -> list[str]:
    """The distinct normalised answers in order of first appearance. Build it from train answers only; on VQA-RAD's
    trainset.json it is MEVF's ``answer_all_list.json``, order included (458 answers)."""
    return list(dict.fromkeys(normalize_answer(a) for a in answers))


# --------------------------------------------------------------------------------------------------- labels

QUESTION_TYPE_TYPOS = {"ATRIB": "ATTRIB", "PRSE": "PRES"}
# The 11 canonical VQA-RAD question types (other datasets bring their own; they pass through upper-cased).
VQA_RAD_QUESTION_TYPES = ("PRES", "POS", "ABN", "SIZE", "OTHER", "MODALITY", "ATTRIB", "PLANE", "COLOR", "ORGAN",
                          "COUNT")


def canonical_question_type(value: Any) -> str:
    """First comma-separated token, stripped and upper-cased, typos mapped: ``"PRES, POS"`` -> ``PRES``,
    ``"ATRIB"`` -> ``ATTRIB``, ``"PRSE"`` -> ``PRES``, ``"Other"`` -> ``OTHER``; empty or None -> ``""``."""
    if value is None:
        return ""
    first = str(value).split(",")[0].strip().upper()
    return QUESTION_TYPE_TYPOS.get(first, first)


def canonical_answer_type(value: Any) -> str:
    """Stripped and upper-cased (``"CLOSED "`` -> ``CLOSED``, ``"open"`` -> ``OPEN``); None -> ``""``."""
    return "" if value is None else str(value).strip().upper()


YES_NO = frozenset({"yes", "no"})


def is_yes_no(answer: Any) -> bool:
    """True when the normalised answer is ``yes`` or ``no`` (the "yes/no answer = closed" convention)."""
    return normalize_answer(answer) in YES_NO
