"""QA generation from hand-made concepts: every question type, negated findings answer "no", generated negatives are
findings the report does not mention, variants, determinism, the closed/open balance, one pair per image (flagged
when the image is missing), review decisions (rejected unused, edited used as edited); and the paraphrase hook's
cleaning, counts and plumbing on a tiny random LLaMA (answers never change)."""
from __future__ import annotations

from collections import Counter

import pytest

from embedlab.errors import ConfigError
from embedlab.medvqa.dataset_tool.paraphrase import Paraphraser, clean_paraphrase, paraphrase_pairs
from embedlab.medvqa.dataset_tool.project import Project
from embedlab.medvqa.dataset_tool.qagen import TEMPLATES, QAConfig, balance, generate, generate_into, \
    generate_with_stats
from embedlab.medvqa.dataset_tool.review import decide
from embedlab.medvqa.dataset_tool.types import QUESTION_TYPES, Case, CaseImage, Concept, QAPair

CHEST = ("Axial CT of the chest. Small left pleural effusion in the lower lobe. Two nodules measuring 3 mm. "
         "No pneumothorax.")
BRAIN = "MRI of the brain. Acute infarct. No hemorrhage."
CHEST2 = "Frontal x-ray of the chest shows cardiomegaly. No consolidation."


def _concepts(case_id: str, report: str, specs) -> list[Concept]:
    out = []
    for n, (category, value, text, *rest) in enumerate(specs, 1):
        start = report.index(text)
        negated = bool(rest and rest[0])
        attributes = rest[1] if len(rest) > 1 else {}
        out.append(Concept(f"{case_id}-c{n}", case_id, category, value, text, start, start + len(text), negated,
                           0.9, attributes))
    return out


def _cases():
    cases = [
        Case("chest", CHEST, [CaseImage("chest-1", "chest-1.png", "a.png", "png", 16, 16),
                              CaseImage("chest-2", "chest-2.png", "b.png", "png", 16, 16)], patient="p1"),
        Case("brain", BRAIN, [CaseImage("brain-1", "brain-1.png", "c.png", "png", 16, 16)], patient="p2"),
        Case("chest2", CHEST2, [CaseImage("chest2-1", "", "d.png", "missing")], patient="p3"),
    ]
    concepts = _concepts("chest", CHEST, [
        ("plane", "axial", "Axial"), ("modality", "ct", "CT"), ("organ", "chest", "chest"),
        ("size", "small", "Small"), ("laterality", "left", "left"), ("finding", "pleural effusion", "pleural effusion"),
        ("location", "lower lobe", "lower lobe"), ("count", "two", "Two", False, {"count": 2}),
        ("finding", "nodule", "nodules"), ("size", "3 mm", "3 mm", False, {"size_mm": 3.0}),
        ("finding", "pneumothorax", "pneumothorax", True),
    ]) + _concepts("brain", BRAIN, [
        ("modality", "mri", "MRI"), ("organ", "brain", "brain"), ("finding", "infarct", "infarct"),
        ("finding", "hemorrhage", "hemorrhage", True),
    ]) + _concepts("chest2", CHEST2, [
        ("plane", "frontal", "Frontal"), ("modality", "x-ray", "x-ray"), ("organ", "chest", "chest"),
        ("finding", "cardiomegaly", "cardiomegaly"), ("finding", "consolidation", "consolidation", True),
    ])
    return cases, concepts


def _by(pairs, **kw):
    return [p for p in pairs if all(getattr(p, k) == v for k, v in kw.items())]


def test_every_question_type_from_hand_made_concepts():
    cases, concepts = _cases()
    pairs = generate(cases, [(c, "pending") for c in concepts], QAConfig(variants=1, negatives=1))
    assert {p.question_type for p in pairs} == set(QUESTION_TYPES)
    chest = _by(pairs, case_id="chest", image_id="chest-1")
    facts = {(p.question_type, p.answer_type, p.answer) for p in chest}
    assert {("MODALITY", "OPEN", "ct"), ("MODALITY", "CLOSED", "yes"), ("MODALITY", "CLOSED", "no"),
            ("PLANE", "OPEN", "axial"), ("PLANE", "CLOSED", "yes"), ("PLANE", "CLOSED", "no"),
            ("ORGAN", "OPEN", "chest"), ("ORGAN", "CLOSED", "yes"), ("PRES", "CLOSED", "yes"),
            ("PRES", "CLOSED", "no"), ("ABN", "OPEN", "pleural effusion and nodule"),
            ("POS", "OPEN", "left lower lobe"), ("POS", "CLOSED", "yes"), ("POS", "CLOSED", "no"),
            ("SIZE", "OPEN", "small"), ("SIZE", "OPEN", "3 mm"), ("COUNT", "OPEN", "2"),
            ("COUNT", "CLOSED", "yes")} <= facts
    abnormal, = _by(chest, question_type="ABN", answer_type="CLOSED")  # "Is this image normal?" flips the answer
    assert abnormal.answer == ("no" if abnormal.template == "abn-closed-normal" else "yes")
    ids = {c.concept_id: c for c in concepts}
    for p in pairs:
        assert p.template in {t.name for ts in TEMPLATES.values() for t in ts}
        assert p.generated_by == "template" and p.question.endswith("?")
        assert p.spans == [[ids[c].start, ids[c].end] for c in p.concept_ids]
        assert (p.answer in ("yes", "no")) == (p.answer_type == "CLOSED")
    where = _by(chest, question_type="POS", answer_type="OPEN")[0]
    assert set(where.concept_ids) == {"chest-c6", "chest-c5", "chest-c7"}  # finding, laterality, location
    count = _by(chest, question_type="COUNT", answer_type="OPEN")[0]
    assert "nodules" in count.question and set(count.concept_ids) == {"chest-c9", "chest-c8"}
    assert {p.organ for p in _by(pairs, case_id="chest")} == {"CHEST"}
    assert {p.organ for p in _by(pairs, case_id="brain")} == {"HEAD"}
    side = {p.question: p.answer for p in _by(chest, question_type="POS", answer_type="CLOSED")
            if "side" in p.template}
    assert sorted(side.values()) == ["no", "yes"] and any("left" in q and a == "yes" for q, a in side.items())


def test_negated_findings_only_ever_answer_no():
    cases, concepts = _cases()
    pairs = generate(cases, concepts, QAConfig(variants=4, negatives=0))
    negated = {c.value for c in concepts if c.negated}
    about = [p for p in pairs if any(v in p.question for v in negated)]
    assert about and {p.answer for p in about} == {"no"}
    assert all(p.question_type == "PRES" and not p.negative for p in about)
    assert not any(v in p.answer for p in pairs for v in negated)  # never an ABN answer either
    # a case with only negated findings reads as normal
    normal = Case("n", "No pneumothorax.", [CaseImage("n-1", "n-1.png", "n.png", "png")])
    pairs = generate([normal], _concepts("n", normal.report, [("finding", "pneumothorax", "pneumothorax", True)]),
                     QAConfig(variants=1, question_types=("ABN",)))
    assert [(p.answer_type, p.answer) for p in pairs] in ([("CLOSED", "no")], [("CLOSED", "yes")])
    assert (pairs[0].answer == "yes") == (pairs[0].template == "abn-closed-normal")


def test_generated_negatives_are_findings_the_report_does_not_mention():
    cases, concepts = _cases()
    pairs, stats = generate_with_stats(cases, concepts, QAConfig(variants=1, negatives=3))
    negatives = [p for p in pairs if p.negative]
    assert negatives and stats["negatives"] == len(negatives)
    reports = {c.case_id: c.report.lower() for c in cases}
    pool = {c.value: c.case_id for c in concepts if c.category == "finding"}
    for p in negatives:
        assert p.answer == "no" and p.question_type == "PRES" and p.concept_ids == []
        finding = next(v for v in pool if v in p.question)
        assert finding not in reports[p.case_id] and pool[finding] != p.case_id
    per_image = Counter((p.case_id, p.image_id) for p in negatives)
    assert max(per_image.values()) <= 3
    # same region only: the chest cases are asked about each other's findings, never the brain's
    chest_negatives = {p.question for p in negatives if p.case_id.startswith("chest")}
    assert not any(w in q for q in chest_negatives for w in ("infarct", "hemorrhage"))
    asked = [p.question for p in _by(negatives, case_id="chest")]
    assert asked and all("cardiomegaly" in q or "consolidation" in q for q in asked)
    assert not _by(negatives, case_id="brain")  # no other HEAD case: nothing plausible to ask


def test_variants_are_distinct_templates_and_the_output_is_deterministic():
    cases, concepts = _cases()
    one = generate(cases, concepts, QAConfig(variants=1, seed=0))
    three = generate(cases, concepts, QAConfig(variants=3, seed=0))
    pres = [p for p in three if p.image_id == "chest-1" and p.question_type == "PRES" and "nodule" in p.question
            and not p.negative]
    assert len(pres) == 3 and len({p.template for p in pres}) == 3 and len({p.question for p in pres}) == 3
    assert len(three) > 2 * len(one)
    again = generate(cases, concepts, QAConfig(variants=3, seed=0))
    assert [p.to_json() for p in again] == [p.to_json() for p in three]
    other = generate(cases, concepts, QAConfig(variants=1, seed=1))
    assert [p.question for p in other] != [p.question for p in one]
    assert len({p.qa_id for p in three}) == len(three)


def test_one_pair_per_image_and_missing_images_are_flagged():
    cases, concepts = _cases()
    pairs = generate(cases, concepts, QAConfig(variants=1, negatives=0))
    first = [(p.question, p.answer) for p in _by(pairs, image_id="chest-1")]
    second = [(p.question, p.answer) for p in _by(pairs, image_id="chest-2")]
    assert first == second and first
    assert all(p.flags == ["no-image"] for p in _by(pairs, case_id="chest2"))
    assert not any("no-image" in p.flags for p in pairs if p.case_id != "chest2")
    # a case with two planes: the image's ViewPosition decides; without one the plane is skipped as ambiguous
    report = "PA and lateral views of the chest."
    case = Case("v", report, [CaseImage("v-1", "v-1.png", "x", "png", metadata={"ViewPosition": "LL"}),
                              CaseImage("v-2", "v-2.png", "x", "png")])
    cs = _concepts("v", report, [("plane", "pa", "PA"), ("plane", "lateral", "lateral")])
    pairs, stats = generate_with_stats([case], cs, QAConfig(question_types=("PLANE",)))
    assert {(p.image_id, p.answer) for p in pairs if p.answer_type == "OPEN"} == {("v-1", "lateral")}
    assert stats["skipped"] == {"ambiguous-plane": 1}


def test_closed_share_is_approached_and_reported():
    cases, concepts = _cases()
    full, stats = generate_with_stats(cases, concepts, QAConfig(variants=2))
    assert stats["closed_share"] > 0.6
    for target in (0.5, 0.7, 0.3):
        pairs, stats = generate_with_stats(cases, concepts, QAConfig(variants=2, closed_share=target))
        closed = sum(p.answer_type == "CLOSED" for p in pairs)
        assert stats["closed_share"] == round(closed / len(pairs), 4)
        assert abs(closed / len(pairs) - target) < 1.5 / len(pairs) + 1e-9
        assert stats["dropped_for_balance"] == len(full) - len(pairs)
        assert [p.qa_id for p in pairs] == [p.qa_id for p in full if p.qa_id in {q.qa_id for q in pairs}]
    assert balance(full, None) is full
    assert {p.answer_type for p in balance(full, 1.0)} == {"CLOSED"}


def test_bad_configs_are_refused():
    with pytest.raises(ConfigError, match="question types"):
        QAConfig(question_types=("PRES", "COLOR"))
    with pytest.raises(ConfigError, match="closed_share"):
        QAConfig(closed_share=1.5)
    with pytest.raises(ConfigError, match="variants"):
        QAConfig(variants=0)
    with pytest.raises(ConfigError, match="unknown QA generation option"):
        QAConfig.from_json({"variant": 2})
    assert QAConfig.from_json(QAConfig(question_types=["pres"]).to_json()).question_types == ("PRES",)


def test_review_decisions_steer_generation(tmp_path):
    cases, concepts = _cases()
    project = Project.create(tmp_path / "p")
    project.write_cases(cases)
    project.write_concepts(concepts)
    with pytest.raises(ConfigError, match="no concepts"):
        generate_into(_empty(tmp_path, cases))
    summary = generate_into(project, QAConfig(variants=1, negatives=0))
    first = {p.qa_id for p in project.qa_pairs()}
    assert summary["pairs"] == len(first) and project.info["stages"]["generate"]["pairs"] == len(first)
    decide(project, "concept", "chest-c9", "rejected", reviewer="ann")  # the nodules
    decide(project, "concept", "chest-c6", "edited", reviewer="ann", edit={"value": "effusion"})
    decide(project, "concept", "brain-c3", "accepted", reviewer="ann")
    some = sorted(first)[0]
    decide(project, "qa", some, "accepted", reviewer="ann")
    summary = generate_into(project, QAConfig(variants=1, negatives=0))
    pairs = project.qa_pairs()
    assert not any("chest-c9" in p.concept_ids or "nodule" in p.question for p in pairs)
    assert any("effusion" in p.question and "pleural" not in p.question for p in pairs)
    assert summary["concepts_left_out"] == {"rejected": 1}
    assert summary["qa_decisions_kept"] + summary["qa_decisions_orphaned"] == 1
    # only reviewed concepts: the accepted infarct and the edited effusion, nothing else
    generate_into(project, QAConfig(variants=1, negatives=0, use_pending=False))
    used = {cid for p in project.qa_pairs() for cid in p.concept_ids}
    assert used == {"chest-c6", "brain-c3"}


def _empty(tmp_path, cases):
    p = Project.create(tmp_path / "empty")
    p.write_cases(cases)
    return p


# --------------------------------------------------------------------------------------------------- paraphrase


def _pair(question="Is there a pleural effusion?", answer="yes", **kw) -> QAPair:
    kw.setdefault("answer_type", "CLOSED" if answer in ("yes", "no") else "OPEN")
    kw.setdefault("question_type", "PRES")
    return QAPair("c-q1", "c", "c-1", question, answer, concept_ids=["c-c1"],
                  spans=[[0, 5]], template="pres-1", **kw)


@pytest.mark.parametrize("raw, expected", [
    ("  Is a pleural effusion present?\nmore text", ("Is a pleural effusion present?", "ok")),
    ('1. Question: "does the image show a pleural effusion?"', ("Does the image show a pleural effusion?", "ok")),
    ("Is there pleural effusion? Yes, on the left.", ("Is there pleural effusion?", "ok")),
    ("looking at the image, is a pleural effusion seen?", ("Looking at the image, is a pleural effusion seen?", "ok")),
    ("", (None, "empty")),
    ("   \n  ", (None, "empty")),
    ("Is a pleural effusion present", (None, "no-question-mark")),
    ("is there a pleural effusion ?", (None, "same-as-original")),
    ("## %% 12 ?? ..", (None, "garbage")),
    ("Effusion?", (None, "garbage")),
    ("What is in the pleural space?", (None, "form-changed")),
    ("Is there anything abnormal?", (None, "lost-term")),
])
def test_paraphrase_cleaning(raw, expected):
    assert clean_paraphrase(raw, _pair(), terms=["pleural effusion"]) == expected


def test_paraphrase_keeps_plural_terms():
    pair = _pair("How many nodules are there?", "2", question_type="COUNT")
    assert clean_paraphrase("How many does this image show?", pair, ["nodule"]) == (None, "lost-term")
    assert clean_paraphrase("How many nodules does this image show?", pair, ["nodule"])[1] == "ok"


def test_paraphrase_refuses_an_open_question_that_gives_its_answer_away():
    pair = _pair("Where is the effusion?", "left lower lobe", question_type="POS")
    assert clean_paraphrase("Is the effusion in the left lower lobe?", pair)[1] == "form-changed"
    assert clean_paraphrase("Which part of the left lower lobe has the effusion?", pair)[1] == "answer-leak"
    assert clean_paraphrase("In which part of the lung is the effusion?", pair)[1] == "ok"


class _Fake:
    name = "fake"

    def __init__(self, outputs):
        self.outputs, self.calls = outputs, []

    def rephrase(self, question):
        self.calls.append(question)
        return self.outputs.get(question, "")


def test_paraphrase_pairs_adds_linked_pairs_and_counts_refusals():
    cases, concepts = _cases()
    pairs = generate(cases, concepts, QAConfig(variants=1, negatives=0, question_types=("PRES", "ABN")))
    questions = sorted({p.question for p in pairs})
    fake = _Fake({q: f"Could you tell: {q.lower()}" if i % 2 else "Sure! Here it is" for i, q in enumerate(questions)})
    result = paraphrase_pairs(pairs, fake, share=1.0, seed=0)
    assert len(fake.calls) == len(set(fake.calls)) == result.calls  # one model call per distinct question
    assert result.calls < result.attempted  # ... though several cases ask it ("Is this image abnormal?")
    assert result.kept + sum(result.dropped.values()) == result.attempted
    assert result.pairs[: len(pairs)] == pairs
    assert result.dropped.get("no-question-mark", 0) > 0
    assert result.added and all(p.generated_by == "paraphrase:fake" for p in result.added)
    originals = {p.qa_id: p for p in pairs}
    for new in result.added:
        old = originals[new.qa_id.rsplit("-p", 1)[0]]
        assert (new.answer, new.answer_type, new.question_type, new.template, new.concept_ids, new.spans,
                new.image_id) == (old.answer, old.answer_type, old.question_type, old.template, old.concept_ids,
                                  old.spans, old.image_id)
        assert new.question != old.question
    half = paraphrase_pairs(pairs, _Fake({}), share=0.5, seed=0)
    assert half.attempted < result.attempted and half.dropped == {"empty": half.attempted} and not half.added
    with pytest.raises(ConfigError, match="share"):
        paraphrase_pairs(pairs, fake, share=0)


WORDS = ["<pad>", "<unk>", "<s>", "</s>", "<|user|>", "<|assistant|>", "?", ".", ":", ",", "is", "there", "a",
         "an", "the", "pleural", "effusion", "nodule", "where", "what", "does", "this", "image", "show", "present",
         "rephrase", "question", "about", "medical", "without", "changing", "its", "meaning", "reply", "with",
         "rephrased", "only", "left", "right", "side", "on", "located", "of", "location", "evidence", "in", "lobe"]
CHAT = ("{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} {% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}")


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    """A 1-layer random LLaMA with a word-level tokenizer and a chat template, saved like a real model folder."""
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    core.normalizer = normalizers.Lowercase()
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", unk_token="<unk>", bos_token="<s>",
                                  eos_token="</s>")
    tok.chat_template = CHAT
    config = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                         num_key_value_heads=2, vocab_size=len(tok), max_position_embeddings=256,
                         initializer_range=0.5, bos_token_id=2, eos_token_id=3, pad_token_id=0)
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def test_paraphraser_plumbing_on_a_tiny_random_llama(tiny_llama):
    import torch

    p = Paraphraser(tiny_llama, max_new_tokens=8, seed=0)
    state = torch.random.get_rng_state()
    raw = p.rephrase("Is there a pleural effusion?")
    assert torch.equal(torch.random.get_rng_state(), state)  # the global RNG is left alone
    assert isinstance(raw, str) and raw == p.rephrase("Is there a pleural effusion?")
    assert raw == Paraphraser(tiny_llama, max_new_tokens=8, seed=0).rephrase("Is there a pleural effusion?")
    other = Paraphraser(tiny_llama, max_new_tokens=8, seed=1)
    assert [other.rephrase(q) for q in WORDS[10:15]] != [p.rephrase(q) for q in WORDS[10:15]]
    prompt = p.prompt("Is there a nodule?")
    assert prompt.startswith("<|system|> Rewrite") and prompt.endswith("<|user|> Is there a nodule? <|assistant|>")
    assert prompt.count("<|assistant|>") == 4  # three example turns, then the generation prompt
    cases, concepts = _cases()
    pairs = generate(cases, concepts, QAConfig(variants=1, negatives=0, question_types=("PRES", "POS")))
    result = paraphrase_pairs(pairs, p, share=0.5, seed=0)
    again = paraphrase_pairs(pairs, p, share=0.5, seed=0)
    assert result.summary() == again.summary() and result.added == again.added
    assert result.attempted > 0 and sum(result.dropped.values()) + result.kept == result.attempted
    assert result.pairs[: len(pairs)] == pairs  # the originals, answers included, are untouched
    assert all(a.answer == next(q for q in pairs if a.qa_id.startswith(q.qa_id)).answer for a in result.added)
    assert p.config()["model"] == tiny_llama.name and p.config()["seed"] == 0
    greedy = Paraphraser(tiny_llama, max_new_tokens=4, sample=False)
    assert greedy.rephrase("where is the nodule ?") == greedy.rephrase("where is the nodule ?")


def test_paraphraser_errors(tmp_path):
    from embedlab.errors import ModelError

    with pytest.raises(ModelError):
        Paraphraser(tmp_path / "nothing-here")
    with pytest.raises(ConfigError, match="max_new_tokens"):
        Paraphraser(tmp_path, max_new_tokens=0)
