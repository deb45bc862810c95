"""QA generation from hand-made concepts: every question type, negated findings answer "no", generated negatives are
findings the report does not mention, variants, determinism, the closed/open balance, one pair per image (flagged
when the image is missing), review decisions (rejected unused, edited used as edited); the fixes of the IU X-ray QA
review (negatives from an allow-list and never next to a related finding, no side on a lateral image, non-findings
and devices, modifiers only within the finding's phrase, no answer from speculative mentions, PLANE / ORGAN /
MODALITY from the image's metadata and the study description, content-based ids); and the paraphrase hook's
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


# ----------------------------------------------------------------------- the fixes of the IU X-ray QA review
# docs/medvqa-datasets.md, "Generated QA on IU X-ray: what a reviewer would reject": each test below fails on the
# generator as it was measured there


def _mk(case_id: str, report: str, specs) -> list[Concept]:
    """Concepts as concepts.py gives them: (category, value, text, options); options: neg, conf, attrs, after (find
    ``text`` after this substring), of (the finding a modifier names, as the extractor's attributes["of"])."""
    out = []
    for n, (category, value, text, *rest) in enumerate(specs, 1):
        o = rest[0] if rest else {}
        start = report.index(text, report.index(o["after"]) + len(o["after"]) if "after" in o else 0)
        attrs = dict(o.get("attrs", {}))
        if "of" in o:
            attrs["of"] = o["of"]
        out.append(Concept(f"{case_id}-c{n}", case_id, category, value, text, start, start + len(text),
                           o.get("neg", False), o.get("conf", 0.9), attrs))
    return out


def _frontal_lateral(case_id: str, report: str, **metadata) -> Case:
    return Case(case_id, report, [CaseImage(f"{case_id}-1", "", f"{case_id}a.png", "missing",
                                            metadata={"projection": "Frontal"}),
                                  CaseImage(f"{case_id}-2", "", f"{case_id}b.png", "missing",
                                            metadata={"projection": "Lateral"})], metadata=metadata)


def _negatives(pairs, case_id):
    return sorted(p.question for p in pairs if p.negative and p.case_id == case_id and p.image_id.endswith("-1"))


def test_generated_negatives_come_from_the_allow_list_and_skip_related_findings():
    reports = {
        "a": "Coronary stent. Degenerative change of the spine. Left lower lobe opacity.",
        "b": "Pleural effusion. Consolidation.",
        "c": "Normal chest.",
        "d": "Possible opacity at the right base.",
    }
    cases = [_frontal_lateral(k, r) for k, r in reports.items()]
    concepts = (_mk("a", reports["a"], [("finding", "stent", "stent"), ("finding", "degenerative change",
                                                                          "Degenerative change"),
                                        ("finding", "opacity", "opacity")])
                + _mk("b", reports["b"], [("finding", "pleural effusion", "Pleural effusion"),
                                          ("finding", "consolidation", "Consolidation")])
                + _mk("c", reports["c"], [("finding", "normal", "Normal")])
                + _mk("d", reports["d"], [("finding", "opacity", "opacity", {"conf": 0.5})]))
    config = QAConfig(variants=1, negatives=5, question_types=("PRES",))
    pairs = generate(cases, concepts, config)
    values = ("pleural effusion", "consolidation", "stent", "degenerative change", "opacity")
    ask = {k: {v for q in _negatives(pairs, k) for v in values if v in q.lower()} for k in reports}
    # only allow-listed findings (pleural effusion, consolidation), never a stent or degenerative change
    assert ask["c"] == {"pleural effusion", "consolidation"} and len(_negatives(pairs, "c")) == 2
    assert ask["b"] == set()  # the other cases' allow-listed findings are its own
    # an opacity (even a speculative one) may be the consolidation or the effusion: no "no" about either
    assert ask["a"] == set() and ask["d"] == set()
    # the allow-list is data
    own = generate(cases, concepts, QAConfig(variants=1, negatives=5, question_types=("PRES",),
                                             negative_findings=("Stent",)))
    assert [q for q in _negatives(own, "c") if "stent" in q] == _negatives(own, "c") != []
    assert not [p for p in generate(cases, concepts, QAConfig(negatives=5, negative_findings=())) if p.negative]
    assert QAConfig.from_json(QAConfig(negative_findings=["Pneumothorax"]).to_json()).negative_findings == \
        ("pneumothorax",)
    with pytest.raises(ConfigError, match="negative_findings"):
        QAConfig(negative_findings="pneumothorax")


def test_no_left_or_right_question_on_a_lateral_image():
    report = "Small left pleural effusion in the lower lobe."
    case = _frontal_lateral("s", report)
    concepts = _mk("s", report, [("size", "small", "Small", {"of": "pleural effusion"}),
                                 ("laterality", "left", "left", {"of": "pleural effusion"}),
                                 ("finding", "pleural effusion", "pleural effusion"),
                                 ("location", "lower lobe", "lower lobe", {"of": "pleural effusion"})])
    pairs = generate([case], concepts, QAConfig(variants=3, negatives=0, question_types=("POS",)))
    frontal = {(p.question, p.answer) for p in pairs if p.image_id == "s-1"}
    lateral = {(p.question, p.answer) for p in pairs if p.image_id == "s-2"}
    assert any("left" in q for q, _ in frontal) and ("Where is the pleural effusion?", "left lower lobe") in frontal
    assert lateral and not any(_names_a_side(q + " " + a) for q, a in lateral)
    assert all("lower lobe" in q for q, _ in lateral)  # the location questions stay: no side in them
    # DICOM's ViewPosition says the same
    dicom = Case("v", report, [CaseImage("v-1", "v-1.png", "x", "png", metadata={"ViewPosition": "LL"})])
    pairs = generate([dicom], _mk("v", report, [("laterality", "left", "left"),
                                                ("finding", "pleural effusion", "pleural effusion")]),
                     QAConfig(negatives=0, question_types=("POS",)))
    assert not pairs


def _names_a_side(text: str) -> bool:
    return any(w in text.lower().split() for w in ("left", "right", "bilateral", "both", "left?", "right?",
                                                    "bilateral?"))


def test_non_findings_are_never_asked_and_devices_are_not_abnormalities():
    report = ("No acute cardiopulmonary disease. Contrast in the colon. Increased lung markings. Elevated right "
              "hemidiaphragm. Lucency. Limited study. Pacemaker. Calcified granuloma.")
    concepts = _mk("n", report, [
        ("finding", "disease", "disease", {"neg": True, "conf": 0.5}), ("finding", "contrast", "Contrast"),
        ("finding", "lung markings", "lung markings"),
        ("finding", "elevation", "Elevated", {"attrs": {"site": "hemidiaphragm"}}),
        ("laterality", "right", "right", {"of": "elevation"}), ("finding", "lucency", "Lucency"),
        ("finding", "limited study", "Limited study"), ("finding", "pacemaker", "Pacemaker"),
        ("finding", "calcified granuloma", "Calcified granuloma")])
    case = Case("n", report, [CaseImage("n-1", "n-1.png", "x", "png")])
    pairs = generate([case], concepts, QAConfig(variants=4, negatives=0))
    text = " ".join(p.question + " " + p.answer for p in pairs).lower()
    for vague in ("disease", "contrast", "lung markings", "lucency", "limited study"):
        assert vague not in text
    assert "Is there elevation of the hemidiaphragm?" in {p.question for p in pairs}
    assert ("Is the elevation of the hemidiaphragm on the right?", "yes") in {(p.question, p.answer) for p in pairs}
    assert {p.answer for p in pairs if p.question_type == "ABN" and p.answer_type == "OPEN"} == \
        {"elevation of the hemidiaphragm and calcified granuloma"}  # no pacemaker
    assert ("Is a pacemaker present?", "yes") in {(p.question, p.answer) for p in pairs}
    # a case whose only positive mentions are a device or a non-finding: "is it abnormal?" is not asked
    for only in ("Pacemaker. No pneumothorax.", "Limited study. No pneumothorax."):
        value = only.split(".")[0].lower()
        cs = _mk("o", only, [("finding", value, only.split(".")[0]),
                             ("finding", "pneumothorax", "pneumothorax", {"neg": True})])
        pairs = generate([Case("o", only, [CaseImage("o-1", "o-1.png", "x", "png")])], cs,
                         QAConfig(negatives=0, question_types=("ABN",)))
        assert pairs == []
    # the lists are data
    pairs = generate([case], concepts, QAConfig(variants=4, negatives=0, non_findings=(), need_site=()))
    assert "Is there lung markings?" in {p.question for p in pairs}


def test_a_modifier_counts_only_within_its_findings_phrase():
    reports = {
        "picc": "PICC line catheter tip in the right atrium.",
        "decub": "Small 3.3 mm right-sided pneumothorax only visible on the left lateral decubitus film.",
        "geode": "Advanced degenerative changes, with a large geode of the humeral head.",
        "clips": "Mediastinal clips, left base pleural-parenchymal irregularity compatible with scarring.",
    }
    concepts = (
        _mk("picc", reports["picc"], [("finding", "catheter", "catheter"),
                                      ("laterality", "right", "right", {"of": "catheter"})])
        + _mk("decub", reports["decub"], [("size", "small", "Small", {"of": "pneumothorax"}),
                                          ("size", "3.3 mm", "3.3 mm", {"of": "pneumothorax",
                                                                        "attrs": {"size_mm": 3.3}}),
                                          ("laterality", "right", "right-sided", {"of": "pneumothorax"}),
                                          ("finding", "pneumothorax", "pneumothorax"),
                                          ("laterality", "left", "left", {"of": "pneumothorax"})])
        + _mk("geode", reports["geode"], [("finding", "degenerative change", "degenerative changes"),
                                          ("size", "large", "large", {"of": "degenerative change"})])
        + _mk("clips", reports["clips"], [("finding", "surgical clips", "clips"),
                                          ("laterality", "left", "left", {"of": "surgical clips"}),
                                          ("location", "base", "base", {"of": "surgical clips"}),
                                          ("finding", "scarring", "scarring")]))
    cases = [Case(k, r, [CaseImage(f"{k}-1", f"{k}.png", "x", "png")]) for k, r in reports.items()]
    pairs = generate(cases, concepts, QAConfig(variants=1, negatives=0))
    pos = {(p.case_id, p.question, p.answer) for p in pairs if p.question_type in ("POS", "SIZE")}
    assert not [p for p in pos if p[0] in ("picc", "geode", "clips")]  # the atrium, the geode, the scarring's site
    assert {a for c, q, a in pos if c == "decub" and q.startswith(("Where", "What is the location"))} == {"right"}
    assert ("decub", "Is the pneumothorax bilateral?", "yes") not in pos
    assert {a for c, q, a in pos if c == "decub" and "How" in q} == {"3.3 mm"}
    # a side linked from outside the phrase: "yes" for the side in it, no "no" for the other one, no open question
    report = "Opacities in the left base and right apex."
    cs = _mk("two", report, [("finding", "opacity", "Opacities"), ("laterality", "left", "left", {"of": "opacity"}),
                             ("location", "base", "base", {"of": "opacity"}),
                             ("laterality", "right", "right", {"of": "opacity"}),
                             ("location", "apex", "apex", {"of": "opacity"})])
    pairs = generate([Case("two", report, [CaseImage("two-1", "t.png", "x", "png")])], cs,
                     QAConfig(variants=1, negatives=0, question_types=("POS",)))
    assert {(p.question, p.answer) for p in pairs} == {("Is the opacity on the left?", "yes"),
                                                       ("Is the opacity in the base?", "yes")} or \
        {p.answer for p in pairs} == {"yes"}
    assert not [p for p in pairs if p.answer_type == "OPEN"]


def test_speculative_mentions_give_no_yes_and_no_no():
    assert QAConfig().min_confidence == 0.55
    report = ("Possibly mild atelectasis. No findings to suggest pneumonia. No focal consolidation. Possible "
              "consolidation at the left base.")
    concepts = _mk("h", report, [("finding", "atelectasis", "atelectasis", {"conf": 0.5}),
                                 ("finding", "pneumonia", "pneumonia", {"neg": True, "conf": 0.5}),
                                 ("finding", "consolidation", "consolidation", {"neg": True}),
                                 ("finding", "consolidation", "consolidation", {"conf": 0.5,
                                                                               "after": "Possible"})])
    case = Case("h", report, [CaseImage("h-1", "h.png", "x", "png")])
    pairs, stats = generate_with_stats([case], concepts, QAConfig(variants=1, negatives=0))
    answers = {p.question: p.answer for p in pairs}
    assert not [q for q in answers if "atelectasis" in q or "consolidation" in q]  # no yes, and no "no" either
    assert [a for q, a in answers.items() if "pneumonia" in q] == ["no"]  # a negated hedge is still a "no"
    assert not [p for p in pairs if p.question_type == "ABN"]  # "possibly atelectasis": not a normal study
    assert stats["concepts_left_out"] == {"low-confidence-unused": 2}
    everything = generate([case], concepts, QAConfig(variants=1, negatives=0, min_confidence=0.0))
    assert {p.answer for p in everything if "atelectasis" in p.question} == {"yes"}


def test_plane_comes_from_the_images_metadata():
    report = "Calcified granuloma (visualized on lateral projection). Transverse colon is distended."
    case = _frontal_lateral("p", report)
    concepts = _mk("p", report, [("plane", "lateral", "lateral"), ("plane", "axial", "Transverse")])
    pairs = generate([case], concepts, QAConfig(variants=1, question_types=("PLANE",)))
    opened = {p.image_id: p.answer for p in pairs if p.answer_type == "OPEN"}
    assert opened == {"p-1": "frontal", "p-2": "lateral"}
    for p in pairs:
        if p.answer_type == "CLOSED":
            says_lateral = "lateral" in p.question.lower()
            assert (p.answer == "yes") == (says_lateral == (p.image_id == "p-2")), p
    # a frontal image of a report naming PA: PA; without metadata the report still decides
    report = "PA and lateral views of the chest."
    cs = _mk("q", report, [("plane", "pa", "PA"), ("plane", "lateral", "lateral")])
    pairs = generate([_frontal_lateral("q", report)], cs, QAConfig(question_types=("PLANE",)))
    assert {p.image_id: p.answer for p in pairs if p.answer_type == "OPEN"} == {"q-1": "pa", "q-2": "lateral"}


def test_organ_and_modality_come_from_the_study_description():
    report = "Comparison CT of the abdomen. Contrast in the colon and kidneys. The heart is normal."
    concepts = _mk("m", report, [("modality", "ct", "CT"), ("organ", "abdomen", "abdomen"),
                                 ("organ", "colon", "colon"), ("organ", "kidneys", "kidneys"),
                                 ("organ", "heart", "heart")])
    case = _frontal_lateral("m", report, study="Xray Chest PA and Lateral")
    pairs = generate([case], concepts, QAConfig(variants=1, question_types=("ORGAN", "MODALITY")))
    opened = {(p.question_type, p.answer) for p in pairs if p.answer_type == "OPEN"}
    assert opened == {("ORGAN", "chest"), ("MODALITY", "x-ray")}
    assert {p.organ for p in pairs} == {"CHEST"}
    closed = [p for p in pairs if p.answer_type == "CLOSED" and p.question_type == "MODALITY"]
    assert {p.answer for p in closed if "x-ray" in p.question} == {"yes"}
    assert {p.answer for p in closed if "x-ray" not in p.question} == {"no"}
    # a comparison named in the study description does not count; DICOM's Modality does
    case = _frontal_lateral("m", report, study="PA and lateral chest, comparison CT from 2010")
    assert {p.answer for p in generate([case], concepts, QAConfig(question_types=("MODALITY",)))
            if p.answer_type == "OPEN"} == {"x-ray"}
    dicom = Case("m", report, [CaseImage("m-1", "m.png", "x", "png", metadata={"Modality": "CR",
                                                                              "BodyPartExamined": "CHEST"})])
    pairs = generate([dicom], concepts, QAConfig(question_types=("ORGAN", "MODALITY")))
    assert {p.answer for p in pairs if p.answer_type == "OPEN"} == {"chest", "x-ray"}
    # without metadata, the mentions decide as before
    bare = Case("m", report, [CaseImage("m-1", "m.png", "x", "png")])
    assert {p.answer for p in generate([bare], concepts, QAConfig(question_types=("ORGAN", "MODALITY")))
            if p.answer_type == "OPEN"} == {"abdomen", "ct"}


def test_qa_ids_are_the_pairs_content():
    # a pair the fixes do not touch keeps its id (and its review decision): the id is a hash of what the pair says
    import hashlib

    cases, concepts = _cases()
    pairs = generate(cases, concepts, QAConfig(variants=2))
    for p in pairs:
        key = "\x1f".join((p.image_id, p.template, p.question, p.answer, ",".join(p.concept_ids)))
        assert p.qa_id == f"{p.case_id}-q{hashlib.sha1(key.encode('utf-8')).hexdigest()[:10]}"
    again = generate(cases, concepts, QAConfig(variants=2, min_confidence=0.0))
    assert [p.qa_id for p in again] == [p.qa_id for p in pairs]


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
