"""Concept extraction of the Med-VQA dataset tool (dataset_tool/concepts.py, the lexicon, iuxray.py's measurement)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from embedlab.errors import ConfigError
from embedlab.medvqa.dataset_tool import iuxray
from embedlab.medvqa.dataset_tool.concepts import ConceptExtractor, extract_into, load_lexicon
from embedlab.medvqa.dataset_tool.project import Project
from embedlab.medvqa.dataset_tool.types import CATEGORIES, Case, Concept


@pytest.fixture(scope="module")
def extractor() -> ConceptExtractor:
    return ConceptExtractor(load_lexicon())


def findings(concepts: list[Concept]) -> dict[str, Concept]:
    return {c.value: c for c in concepts if c.category == "finding"}


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# -- spans, ids, categories ------------------------------------------------------------------------------------------
REPORT = ("PA and lateral views of the chest. Small left pleural effusion measuring 2.5 x 3 cm. Two calcified "
          "granulomas in the right lower lobe. Heart size is mildly enlarged. Degenerative changes of the thoracic "
          "spine.\n\nNo pneumothorax. Elevated right hemidiaphragm")


def test_every_span_is_exact_and_ids_are_deterministic(extractor):
    concepts = extractor.extract(REPORT, "case7")
    assert concepts
    for c in concepts:
        assert REPORT[c.start:c.end] == c.text, c
        assert c.category in CATEGORIES and c.case_id == "case7" and c.rule
        assert 0.0 < c.confidence <= 1.0
    assert [c.concept_id for c in concepts] == [f"case7-c{n}" for n in range(1, len(concepts) + 1)]
    assert [c.start for c in concepts] == sorted(c.start for c in concepts)
    assert extractor.extract(REPORT, "case7") == concepts  # a rerun gives the same concepts and ids
    cats = {c.category for c in concepts}
    assert {"plane", "organ", "finding", "laterality", "location", "size", "count"} <= cats
    f = findings(concepts)
    assert f["pleural effusion"].heading == "Pleural Effusion"
    assert f["cardiomegaly"].heading == "Cardiomegaly" and f["cardiomegaly"].rule.endswith("(pattern)")
    assert f["degenerative change"].heading == "Thoracic Vertebrae"  # heading_at: the site named next to it
    assert f["elevation"].heading == "Diaphragm"
    assert f["pneumothorax"].negated and not f["pleural effusion"].negated


def test_modality_plane_and_organ_group(extractor):
    concepts = extractor.extract("CT of the abdomen: liver lesion. Axial images. Normal chest x-XXXX.", "c")
    values = {(c.category, c.value) for c in concepts}
    assert {("modality", "ct"), ("modality", "x-ray"), ("plane", "axial"), ("organ", "liver")} <= values
    liver = next(c for c in concepts if c.value == "liver")
    assert liver.attributes["organ_group"] == "ABD"


# -- negation --------------------------------------------------------------------------------------------------------
def test_negation_scope_over_a_list(extractor):
    text = "The lungs are clear of focal airspace disease, pneumothorax, or pleural effusion."
    f = findings(extractor.extract(text, "c"))
    assert set(f) == {"airspace disease", "pneumothorax", "pleural effusion"}
    assert all(c.negated for c in f.values())
    f = findings(extractor.extract("Negative for pneumothorax, effusion or consolidation.", "c"))
    assert all(c.negated for c in f.values()) and len(f) == 3


def test_negation_stops_at_termination_and_sentence(extractor):
    f = findings(extractor.extract("There is no pneumothorax, but there is a small right pleural effusion.", "c"))
    assert f["pneumothorax"].negated and not f["pleural effusion"].negated
    f = findings(extractor.extract("No pleural effusion seen, left hilar calcifications.", "c"))
    assert f["pleural effusion"].negated and not f["calcification"].negated
    f = findings(extractor.extract("No pneumothorax.\n\nCardiomegaly", "c"))  # a line break ends the sentence
    assert f["pneumothorax"].negated and not f["cardiomegaly"].negated


def test_following_triggers(extractor):
    f = findings(extractor.extract("The previously seen pneumothorax has resolved. Atelectasis is not seen.", "c"))
    assert f["pneumothorax"].negated and f["atelectasis"].negated


def test_pseudo_negation(extractor):
    f = findings(extractor.extract("No change in the small left pleural effusion.", "c"))
    assert not f["pleural effusion"].negated
    f = findings(extractor.extract("Not only cardiomegaly but also pulmonary edema.", "c"))
    assert not f["cardiomegaly"].negated and not f["pulmonary edema"].negated
    f = findings(extractor.extract("Pneumonia cannot be excluded.", "c"))
    assert not f["pneumonia"].negated and f["pneumonia"].confidence <= 0.5


# -- hedges ----------------------------------------------------------------------------------------------------------
def test_hedges_lower_confidence(extractor):
    firm = findings(extractor.extract("Right lower lobe pneumonia.", "c"))["pneumonia"]
    possible = findings(extractor.extract("Possible right lower lobe pneumonia.", "c"))["pneumonia"]
    probable = findings(extractor.extract("Probable atelectasis.", "c"))["atelectasis"]
    speculative = findings(extractor.extract("Opacity which may represent atelectasis.", "c"))
    assert firm.confidence == 0.9 and "hedge" not in firm.attributes
    assert possible.confidence < iuxray.PRESENT_CONFIDENCE < probable.confidence < firm.confidence
    assert possible.attributes["hedge"] == "Possible" and not possible.negated
    assert speculative["opacity"].confidence == 0.9  # "which" ends the hedge's scope
    assert speculative["atelectasis"].confidence < iuxray.PRESENT_CONFIDENCE
    both = extractor.extract("Possible pneumonia. Probable atelectasis.", "c")
    assert iuxray.presence(both) == {"pneumonia", "pulmonary atelectasis"}
    assert iuxray.presence(both, iuxray.PRESENT_CONFIDENCE) == {"pulmonary atelectasis"}


# -- size, count, laterality, location -------------------------------------------------------------------------------
def test_size_count_laterality_attributes(extractor):
    concepts = extractor.extract(REPORT, "c")
    f = findings(concepts)
    effusion = f["pleural effusion"].attributes
    assert effusion["laterality"] == "left" and effusion["size"] == "small"
    assert effusion["size_mm"] == 30.0 and effusion["size_text"] == "2.5 x 3 cm"
    size = next(c for c in concepts if c.category == "size" and c.text == "2.5 x 3 cm")
    assert size.attributes["dimensions_mm"] == [25.0, 30.0] and size.value == "2.5 x 3 cm"
    granuloma = f["calcified granuloma"].attributes
    assert granuloma["count"] == 2 and granuloma["laterality"] == "right" and granuloma["location"] == "lower lobe"
    assert any(c.category == "laterality" and c.value == "right" for c in concepts)  # also emitted as concepts
    assert any(c.category == "location" and c.value == "lower lobe" for c in concepts)


def test_counts_sizes_and_inner_modifiers(extractor):
    f = findings(extractor.extract("Multiple calcified granulomas. A 3 mm nodule.", "c"))
    assert f["calcified granuloma"].attributes["count"] == "multiple"
    assert f["nodule"].attributes["size_mm"] == 3.0 and "count" not in f["nodule"].attributes
    assert findings(extractor.extract("4 nodules.", "c"))["nodule"].attributes["count"] == 4
    concepts = extractor.extract("Two views of the chest. 2. Cardiomegaly.", "c")
    assert not [c for c in concepts if c.category == "count"]  # "two views", a list number: counts of no finding
    concepts = extractor.extract("Calcified right lower lobe granuloma. Bibasilar atelectasis.", "c")
    f = findings(concepts)
    assert f["calcified granuloma"].attributes["laterality"] == "right"  # found inside the finding's span
    assert f["atelectasis"].attributes["laterality"] == "bilateral"
    assert f["atelectasis"].attributes["location"] == "base"
    loc = next(c for c in concepts if c.category == "location" and c.text == "Bibasilar")
    assert loc.start == f["atelectasis"].start and "inside a finding" in loc.rule


# -- the lexicon: extension, override, errors ------------------------------------------------------------------------
def test_user_lexicon_adds_and_overrides(tmp_path):
    base = load_lexicon()
    user = write(tmp_path / "ours.yaml", """
version: ours-1
finding:
  - {term: pneumomediastinum, heading: Pneumomediastinum, synonyms: [mediastinal emphysema]}
  - {term: pericardial effusion, synonyms: [effusion]}   # re-map a synonym of pleural effusion
  - {term: tuberculosis, remove: true}
negation:
  preceding: [absence of any]
hedges:
  - {term: rule in, confidence: 0.4}
""")
    lexicon = load_lexicon(user)
    assert lexicon.version == f"{base.version}+ours-1" and lexicon.sha != base.sha
    assert lexicon.files[-1] == str(user)
    assert "pneumomediastinum" in lexicon.headings() and "tuberculosis" not in lexicon.headings()
    assert "effusion" not in lexicon.entries["finding"]["pleural effusion"].synonyms
    ex = ConceptExtractor(lexicon)
    f = findings(ex.extract("Small pneumomediastinum. Small effusion. Pleural effusion.", "c"))
    assert f["pneumomediastinum"].heading == "Pneumomediastinum"
    assert f["pericardial effusion"].text == "effusion" and f["pleural effusion"].text == "Pleural effusion"
    assert findings(ex.extract("Absence of any pneumomediastinum.", "c"))["pneumomediastinum"].negated
    assert findings(ex.extract("Rule in pneumonia.", "c"))["pneumonia"].confidence == 0.4
    assert load_lexicon(user).sha == lexicon.sha  # the same content, the same sha


def test_user_lexicon_replace_and_standalone(tmp_path):
    user = write(tmp_path / "only.yaml", "version: v9\nfinding:\n  - {term: opacity, replace: true, heading: X}\n")
    merged = load_lexicon(user)
    assert merged.entries["finding"]["opacity"].synonyms == [] and merged.entries["finding"]["opacity"].heading == "X"
    alone = load_lexicon(user, default=False)
    assert alone.version == "v9" and list(alone.entries["finding"]) == ["opacity"]


@pytest.mark.parametrize("text, field", [
    ("finding:\n  - {term: x, synonyms: abc}\n", "finding[0].synonyms"),
    ("finding:\n  - {synonyms: [a]}\n", "finding[0]: missing the field 'term'"),
    ("finding:\n  - {term: x, colour: red}\n", "finding[0]: unknown key(s) colour"),
    ("organ:\n  - {term: x, heading: Y}\n", "organ[0]: only findings map to MeSH headings"),
    ("hedges:\n  - {term: maybe, confidence: 2}\n", "hedges[0].confidence"),
    ("hedges:\n  - {term: maybe, position: after}\n", "hedges[0].position"),
    ("negation:\n  preceding: none of\n", "negation.preceding"),
    ("findings:\n  - {term: x}\n", "top level: unknown key(s) findings"),
    ("finding:\n  - {term: a, synonyms: [b]}\n  - {term: c, synonyms: [b]}\n", "the phrase 'b' is also listed"),
    ("finding:\n  - {term: x, patterns: [heart]}\n", "finding[0].patterns[0]"),
    ("finding: [a: [\n", "not valid YAML"),
])
def test_bad_lexicon_names_file_and_field(tmp_path, text, field):
    bad = write(tmp_path / "bad.yaml", text)
    with pytest.raises(ConfigError) as info:
        load_lexicon(bad)
    assert str(bad) in str(info.value) and field in str(info.value)


def test_missing_lexicon_file(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        load_lexicon(tmp_path / "nope.yaml")


# -- IU X-ray: split, labels, metrics --------------------------------------------------------------------------------
def test_split_is_deterministic_disjoint_and_complete():
    uids = [str(u) for u in range(1, 102)]
    dev, acceptance = iuxray.split_uids(uids)
    assert (dev, acceptance) == iuxray.split_uids(list(reversed(uids)) + ["5"])  # order and duplicates don't matter
    assert not set(dev) & set(acceptance) and set(dev) | set(acceptance) == set(uids)
    assert (len(dev), len(acceptance)) == (50, 51)
    assert dev == sorted(dev, key=int)
    assert iuxray.split_uids(uids, seed=1) != (dev, acceptance)


def test_mesh_headings_and_presence():
    assert iuxray.mesh_headings("Pulmonary Disease, Chronic Obstructive;Opacity/lung/base/left;Opacity/lung") == \
        {"pulmonary disease, chronic obstructive", "opacity"}
    assert iuxray.mesh_headings("normal") == set() and iuxray.mesh_headings("No Indexing") == set()
    assert iuxray.mesh_headings("Subcutaneous  Emphysema/right") == {"subcutaneous emphysema"}
    c = dict(case_id="c", start=0, end=1, text="x")
    concepts = [Concept("c-c1", category="finding", value="a", heading="Cardiomegaly", **c),
                Concept("c-c2", category="finding", value="b", heading="Pneumothorax", negated=True, **c),
                Concept("c-c3", category="organ", value="lung", **c),
                Concept("c-c4", category="finding", value="d", heading="Cardiac Shadow",
                        attributes={"headings": ["Cardiac Shadow", "Cardiomegaly"]}, **c)]
    assert iuxray.presence(concepts) == {"cardiomegaly", "cardiac shadow"}


def test_metrics_on_a_hand_computed_case(extractor):
    reports = [
        {"uid": "1", "mesh": "Pleural Effusion/left/small", "text": "Small left pleural effusion. No pneumothorax."},
        {"uid": "2", "mesh": "normal", "text": "Cardiomegaly."},
        {"uid": "3", "mesh": "Pneumothorax;Foo Heading/left", "text": "No acute disease."},
        {"uid": "4", "mesh": "No Indexing", "text": ""},
    ]
    result = iuxray.evaluate(reports, extractor)
    # all headings: tp 1 (effusion), fp 1 (cardiomegaly), fn 2 (pneumothorax, foo heading)
    assert result["micro"] == {"p": 0.5, "r": 0.3333, "f1": 0.4, "tp": 1, "fp": 1, "fn": 2}
    # covered headings only: foo heading is not in the lexicon, so fn 1
    assert result["covered"]["micro"] == {"p": 0.5, "r": 0.5, "f1": 0.5, "tp": 1, "fp": 1, "fn": 1}
    assert result["covered"]["headings_in_labels"] == 3 and result["covered"]["covered_in_labels"] == 2
    assert result["per_heading"]["foo heading"] == {"support": 1, "p": 0.0, "r": 0.0, "f1": 0.0, "tp": 0, "fp": 0,
                                                   "fn": 1, "covered": False}
    assert result["per_heading"]["cardiomegaly"]["fp"] == 1 and result["per_heading"]["cardiomegaly"]["support"] == 0
    assert (result["n_reports"], result["n_reports_without_text"], result["n_reports_without_heading"]) == (4, 1, 2)


def test_run_writes_both_halves_and_logs_acceptance_runs(tmp_path):
    csv_file = tmp_path / "reports.csv"
    rows = ["uid,MeSH,Problems,image,indication,comparison,findings,impression"]
    for uid in range(1, 9):
        mesh, findings_text = ("Cardiomegaly", "Cardiomegaly.") if uid % 2 else ("normal", "Heart size normal.")
        rows.append(f'{uid},{mesh},x,x,x,x,"{findings_text}","No pneumothorax."')
    csv_file.write_text("\n".join(rows) + "\n", encoding="utf-8")
    out = tmp_path / "res.json"
    dev = iuxray.run("dev", out, reports_path=csv_file)
    acc = iuxray.run("acceptance", out, reports_path=csv_file)
    iuxray.run("acceptance", out, reports_path=csv_file)
    doc = json.loads(out.read_text())
    assert doc["dev"]["n_reports"] == 4 and doc["acceptance"]["n_reports"] == 4
    assert dev["split"] == {**acc["split"], "dev": 4, "acceptance": 4} and dev["split"]["seed"] == iuxray.SEED
    assert len(doc["acceptance_log"]) == 2 and doc["acceptance_log"][0]["lexicon_sha"] == dev["lexicon"]["sha"]
    assert dev["micro"]["f1"] == 1.0
    assert iuxray.report_text("Findings.", "Impression.") == "Findings.\n\nImpression."
    with pytest.raises(ConfigError, match="half must be one of"):
        iuxray.run("test", None, reports_path=csv_file)


# -- the project stage -----------------------------------------------------------------------------------------------
def test_extract_into_a_project(tmp_path):
    project = Project.create(tmp_path / "p")
    project.write_cases([Case("a", "Small right pleural effusion. No pneumothorax."), Case("b", ""),
                         Case("c", "Possible pneumonia in the left lower lobe.")])
    summary = extract_into(project)
    concepts = project.concepts()
    assert summary["cases"] == 3 and summary["concepts"] == len(concepts) and summary["cases_without_concepts"] == 1
    assert summary["negated"] == 1 and summary["by_category"]["finding"] == 3
    assert [c.concept_id for c in concepts if c.case_id == "a"][:2] == ["a-c1", "a-c2"]
    case_a = "Small right pleural effusion. No pneumothorax."
    assert all(case_a[c.start:c.end] == c.text for c in concepts if c.case_id == "a")
    stage = Project.open(project.root).info["stages"]["extract"]
    lexicon = load_lexicon()
    assert stage["lexicon_sha"] == lexicon.sha == summary["lexicon_sha"]
    assert stage["lexicon_version"] == lexicon.version and stage["concepts"] == len(concepts)
    seen = []
    extract_into(project, progress=lambda done, total: seen.append((done, total)))  # a rerun: the same concepts
    assert project.concepts() == concepts
    assert seen == [(1, 3), (2, 3), (3, 3)]  # after each case


def test_a_users_spacy_pipeline_replaces_the_blank_one(tmp_path):
    """A pipeline folder (here a saved blank English one with a sentencizer) is loaded instead of spacy.blank; the
    concepts are the same, and a pipeline that does not exist is a clear error."""
    import spacy

    from embedlab.errors import ConfigError
    from embedlab.medvqa.dataset_tool.concepts import ConceptExtractor

    nlp = spacy.blank("en")
    nlp.add_pipe("sentencizer")
    nlp.to_disk(tmp_path / "pipe")
    text = "Small left pleural effusion. No pneumothorax."
    own = ConceptExtractor(spacy_model=tmp_path / "pipe")
    assert own.spacy_model == str(tmp_path / "pipe")
    assert [(c.value, c.negated) for c in own.extract(text, "c")] == \
        [(c.value, c.negated) for c in ConceptExtractor().extract(text, "c")]
    with pytest.raises(ConfigError, match="not installed"):
        ConceptExtractor(spacy_model="en_no_such_pipeline")
