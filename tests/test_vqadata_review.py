"""The dataset tool's project folder and review: decisions persist, the latest one counts, edits apply, a review
stops and continues where it stopped, a torn log line is survived, and bad decisions and folders get clear errors."""
from __future__ import annotations

import pytest

from embedlab.errors import ConfigError, DataError
from embedlab.medvqa.dataset_tool.project import Project
from embedlab.medvqa.dataset_tool.review import (decide, effective_concepts, effective_qa, review_stats,
                                                 review_terminal)
from embedlab.medvqa.dataset_tool.types import Case, CaseImage, Concept, QAPair

REPORT = "Small left pleural effusion. No pneumothorax."


@pytest.fixture
def project(tmp_path):
    p = Project.create(tmp_path / "p", name="test")
    p.write_cases([Case("c1", REPORT, [CaseImage("c1-1", "c1-1.png", "a.png", "png", 8, 8)])])
    p.write_concepts([
        Concept("c1-c1", "c1", "finding", "pleural effusion", "pleural effusion", 11, 27, attributes={"size": "small"}),
        Concept("c1-c2", "c1", "laterality", "left", "left", 6, 10),
        Concept("c1-c3", "c1", "finding", "pneumothorax", "pneumothorax", 32, 44, negated=True),
    ])
    p.write_qa_pairs([
        QAPair("c1-q1", "c1", "c1-1", "Is there a pleural effusion?", "yes", "CLOSED", "PRES", ["c1-c1"], [[11, 27]]),
        QAPair("c1-q2", "c1", "c1-1", "Where is the effusion?", "left", "OPEN", "POS", ["c1-c1", "c1-c2"]),
    ])
    return p


def test_records_round_trip_through_the_project(project):
    again = Project.open(project.root)
    assert again.info["name"] == "test"
    assert again.cases()[0].images[0].image_id == "c1-1"
    assert REPORT[again.concepts()[0].start: again.concepts()[0].end] == "pleural effusion"
    assert [q.qa_id for q in again.qa_pairs()] == ["c1-q1", "c1-q2"]
    assert Project.create(project.root).info["created"] == project.info["created"]  # an existing project opens


def test_the_latest_decision_counts_and_edits_apply(project):
    decide(project, "concept", "c1-c1", "rejected", reviewer="ann")
    decide(project, "concept", "c1-c1", "accepted", reviewer="bob", note="changed my mind")
    decide(project, "concept", "c1-c3", "edited", reviewer="ann", edit={"negated": False})
    decide(project, "qa", "c1-q2", "edited", reviewer="ann", edit={"answer": "left base"})
    concepts = {c.concept_id: (c, s) for c, s in effective_concepts(project)}
    assert concepts["c1-c1"][1] == "accepted" and concepts["c1-c2"][1] == "pending"
    assert concepts["c1-c3"] == (Concept("c1-c3", "c1", "finding", "pneumothorax", "pneumothorax", 32, 44,
                                         negated=False), "edited")
    qa = {q.qa_id: (q.answer, s) for q, s in effective_qa(project)}
    assert qa == {"c1-q1": ("yes", "pending"), "c1-q2": ("left base", "edited")}
    assert project.concepts()[2].negated is True  # the record itself is what the pipeline produced
    stats = review_stats(project)
    assert stats["concept"] == {"pending": 1, "accepted": 1, "edited": 1, "rejected": 0}
    assert stats["reviewers"] == ["ann", "bob"] and stats["decisions"] == 4
    log = project.decisions()
    assert log[1].reviewer == "bob" and log[1].note == "changed my mind" and log[1].time.endswith("+00:00")


@pytest.mark.parametrize("kind, item, status, edit, match", [
    ("concept", "nope", "accepted", None, "no concept with id 'nope'"),
    ("concept", "c1-c1", "maybe", None, "one of accepted, edited, rejected"),
    ("concept", "c1-c1", "edited", None, "needs the changed fields"),
    ("concept", "c1-c1", "accepted", {"value": "x"}, "needs the changed fields"),
    ("concept", "c1-c1", "edited", {"start": 3}, "cannot edit start"),
    ("qa", "c1-q1", "edited", {"answer_type": "closed"}, "CLOSED or OPEN"),
    ("qa", "c1-q1", "edited", {"question_type": "COLOUR"}, "question_type must be one of"),
    ("qa", "c1-q1", "edited", {"answer": "  "}, "must not be empty"),
    ("image", "c1-1", "accepted", None, "'concept' or 'qa'"),
])
def test_bad_decisions_are_refused_and_not_logged(project, kind, item, status, edit, match):
    with pytest.raises(ConfigError, match=match):
        decide(project, kind, item, status, reviewer="ann", edit=edit)
    assert project.decisions() == []
    with pytest.raises(ConfigError, match="reviewer"):
        decide(project, "qa", "c1-q1", "accepted", reviewer=" ")


def test_a_torn_last_line_is_ignored_on_reading_and_cut_before_the_next_decision(project):
    decide(project, "qa", "c1-q1", "accepted", reviewer="ann")
    log = project.root / "decisions.jsonl"
    with open(log, "a", encoding="utf-8") as f:
        f.write('{"kind": "qa", "item_id": "c1-q2", "sta')  # a write killed mid-way
    assert [d.item_id for d in project.decisions()] == ["c1-q1"]
    decide(project, "qa", "c1-q2", "rejected", reviewer="ann")
    assert [(d.item_id, d.status) for d in project.decisions()] == [("c1-q1", "accepted"), ("c1-q2", "rejected")]
    assert log.read_text().count("\n") == 2


def test_a_corrupt_stage_file_names_the_file_and_line(project):
    (project.root / "qa.jsonl").write_text('{"qa_id": "x"}\nnot json\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"qa.jsonl.*line 1|line 1.*qa.jsonl"):
        project.qa_pairs()


def test_the_terminal_review_stops_and_continues_where_it_stopped(project):
    answers = iter(["a", "x", "e", "value", "effusion", "q"])
    out: list[str] = []
    done = review_terminal(project, "concept", "ann", ask=lambda _: next(answers), say=out.append)
    assert dict(done) == {"accepted": 1, "edited": 1}
    assert any("answer a, e, r, s or q" in line for line in out)  # an unknown key is asked again
    assert any("[pleural effusion]" in line for line in out)  # the report context is shown with the span marked
    # second sitting: only the third concept is left; end of input stops cleanly
    answers2 = iter(["r"])

    def ask2(_):
        try:
            return next(answers2)
        except StopIteration:
            raise EOFError from None

    out2: list[str] = []
    done2 = review_terminal(project, "concept", "bob", ask=ask2, say=out2.append)
    assert out2[0].startswith("1 concepts to review (2 decided before)") and dict(done2) == {"rejected": 1}
    statuses = {c.concept_id: s for c, s in effective_concepts(project)}
    assert statuses == {"c1-c1": "accepted", "c1-c2": "edited", "c1-c3": "rejected"}
    assert {c.concept_id: c.value for c, _ in effective_concepts(project)}["c1-c2"] == "effusion"


def test_a_project_refuses_a_user_folder_and_a_second_writer(tmp_path, project):
    user = tmp_path / "mine"
    user.mkdir()
    (user / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="did not write"):
        Project.create(user)
    assert (user / "notes.txt").read_text() == "keep me"
    with pytest.raises(ConfigError, match="not a dataset-tool project"):
        Project.open(user)
    with project.writing():
        with pytest.raises(ConfigError, match="in use"):
            with Project.open(project.root).writing():
                pass
