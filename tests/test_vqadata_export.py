"""Export of a dataset-tool project: reviewed pairs only (unreviewed refused unless asked), no image (or patient) in
two splits and by default all images of a case in one split, the MEVF JSON loads through load_export / load_dataset
and trains a tiny model, the card's counts equal the files', missing images stay out of the JSON but in the JSONL, a
user's folder is never replaced, and the user registry round-trips (load_dataset by registered name)."""
from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from embedlab.errors import ConfigError, DataError
from embedlab.medvqa.dataset_tool.export import (assign_splits, export_project, register_export,
                                                 registered_exports, registry_path, unregister_export)
from embedlab.medvqa.dataset_tool.project import Project
from embedlab.medvqa.dataset_tool.qagen import QAConfig, generate_into
from embedlab.medvqa.dataset_tool.review import decide
from embedlab.medvqa.dataset_tool.types import Case, CaseImage, Concept, Decision
from embedlab.medvqa.datasets import load_dataset, load_export

REPORTS = {
    "chest": ("CT of the chest. Small left pleural effusion. Two nodules measuring 3 mm. No pneumothorax.",
              [("modality", "ct", "CT"), ("organ", "chest", "chest"), ("size", "small", "Small"),
               ("laterality", "left", "left"), ("finding", "pleural effusion", "pleural effusion"),
               ("count", "two", "Two", False, {"count": 2}), ("finding", "nodule", "nodules"),
               ("finding", "pneumothorax", "pneumothorax", True)]),
    "brain": ("Axial MRI of the brain. Right frontal infarct. No hemorrhage.",
              [("plane", "axial", "Axial"), ("modality", "mri", "MRI"), ("organ", "brain", "brain"),
               ("laterality", "right", "Right"), ("finding", "infarct", "infarct"),
               ("finding", "hemorrhage", "hemorrhage", True)]),
    "chest2": ("Frontal x-ray of the chest. Cardiomegaly. No consolidation.",
               [("plane", "frontal", "Frontal"), ("modality", "x-ray", "x-ray"), ("organ", "chest", "chest"),
                ("finding", "cardiomegaly", "Cardiomegaly"), ("finding", "consolidation", "consolidation", True)]),
    "abd": ("CT of the abdomen. Large liver mass. No ascites.",
            [("modality", "ct", "CT"), ("organ", "abdomen", "abdomen"), ("size", "large", "Large"),
             ("finding", "mass", "mass"), ("finding", "ascites", "ascites", True)]),
}


def _concepts(case_id, report, specs):
    out = []
    for n, (category, value, text, *rest) in enumerate(specs, 1):
        start = report.index(text)
        out.append(Concept(f"{case_id}-c{n}", case_id, category, value, text, start, start + len(text),
                           bool(rest and rest[0]), 0.9, rest[1] if len(rest) > 1 else {}))
    return out


def _build(root, *, patients=True) -> Project:
    project = Project.create(root, name="unit-test cases")
    rng = np.random.default_rng(0)
    cases, concepts = [], []
    for i in range(12):
        kind = list(REPORTS)[i % 4]
        report, specs = REPORTS[kind]
        cid = f"case{i:02d}"
        images = []
        for k in range(1 + i % 2):
            name = f"{cid}-{k}.png"
            Image.fromarray((rng.random((20, 20)) * 255).astype("uint8"), mode="L").save(project.images_dir / name)
            images.append(CaseImage(f"{cid}-{k}", name, f"upload/{name}", "png", 20, 20))
        if i == 11:  # an IU X-ray-like report whose image does not exist
            images = [CaseImage(f"{cid}-0", "", "CXR11.png", "missing")]
        cases.append(Case(cid, report, images, patient=f"p{i // 2}" if patients else ""))
        concepts += _concepts(cid, report, specs)
    project.write_cases(cases)
    project.write_concepts(concepts)
    project.mark_stage("extract", concepts=len(concepts), lexicon_version="test-1", lexicon_sha="abc")
    generate_into(project, QAConfig(variants=1, negatives=1, seed=0))
    return project


def _accept_all(project, *, but_reject=(), edit=None):
    # the review log written in one go (a decide() per pair would fsync hundreds of times); decide() for the rest
    lines = [json.dumps(Decision("qa", p.qa_id, "accepted", "ann", "2026-01-01T00:00:00+00:00").to_json()) + "\n"
             for p in project.qa_pairs() if p.qa_id not in but_reject]
    with open(project.root / "decisions.jsonl", "a", encoding="utf-8") as f:
        f.write("".join(lines))
    for qa_id in but_reject:
        decide(project, "qa", qa_id, "rejected", reviewer="bob")
    if edit:
        decide(project, "qa", edit[0], "edited", reviewer="bob", edit=edit[1])


@pytest.fixture(scope="module")
def reviewed(tmp_path_factory):
    project = _build(tmp_path_factory.mktemp("proj") / "p")
    pairs = project.qa_pairs()
    rejected = [p.qa_id for p in pairs if p.case_id == "case00"][:2]
    edited = next(p for p in pairs if p.question_type == "SIZE" and p.answer_type == "OPEN"
                  and p.case_id == "case03")
    _accept_all(project, but_reject=rejected, edit=(edited.qa_id, {"answer": "very large"}))
    return project, rejected, edited.qa_id


@pytest.fixture(scope="module")
def exported(reviewed, tmp_path_factory):
    project, _, _ = reviewed
    out = tmp_path_factory.mktemp("exports") / "by-image"
    card = export_project(project, out, split_by="image", seed=0)
    return project, out, card


def _jsonl(out, split):
    return [json.loads(line) for line in (out / f"{split}.jsonl").read_text().splitlines()]


def test_an_unreviewed_project_is_refused_unless_asked(tmp_path):
    project = _build(tmp_path / "p")
    with pytest.raises(ConfigError, match="all-unreviewed"):
        export_project(project, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    card = export_project(project, tmp_path / "out", include="all-unreviewed")
    assert card["reviewed"] is False and card["include"] == "all-unreviewed"
    assert "**Unreviewed**" in (tmp_path / "out" / "dataset_card.md").read_text()
    assert sum(card["splits"][s]["jsonl"]["rows"] for s in ("train", "val", "test")) == len(project.qa_pairs())


def test_no_image_is_in_two_splits_and_the_card_counts_the_files(exported, reviewed):
    project, out, card = exported
    _, rejected, edited = reviewed
    rows = {s: _jsonl(out, s) for s in ("train", "val", "test")}
    mevf = {s: json.loads((out / f"{s}set.json").read_text()) for s in ("train", "val", "test")}
    images = {s: {r["image_id"] for r in rows[s]} for s in rows}
    assert all(images[s] for s in images)
    assert not (images["train"] & images["val"] or images["train"] & images["test"] or images["val"] & images["test"])
    everything = [r for s in rows for r in rows[s]]
    assert {r["qa_id"] for r in everything}.isdisjoint(rejected)
    assert len(everything) == len(project.qa_pairs()) - len(rejected) == len({r["qa_id"] for r in everything})
    assert next(r for r in everything if r["qa_id"] == edited)["answer"] == "very large"
    for s in rows:
        assert {r["split"] for r in rows[s]} == {s}
        c = card["splits"][s]
        assert c["json"]["rows"] == len(mevf[s]) and c["jsonl"]["rows"] == len(rows[s])
        assert c["json"]["closed"] == sum(r["answer_type"] == "CLOSED" for r in mevf[s])
        assert c["json"]["open"] == sum(r["answer_type"] == "OPEN" for r in mevf[s])
        assert c["json"]["by_type"] == {t: n for t, n in Counter(r["question_type"] for r in mevf[s]).items()} | \
            {t: 0 for t in c["json"]["by_type"] if t not in {r["question_type"] for r in mevf[s]}}
        assert c["json"]["images"] == len({r["image_name"] for r in mevf[s]})
        assert all((out / "images" / r["image_name"]).is_file() for r in mevf[s])
        assert set(mevf[s][0]) == {"qid", "image_name", "image_organ", "answer", "answer_type", "question_type",
                                   "question", "phrase_type"}
        for t, n in card["by_type_and_split"].items():
            assert n[s] == sum(r["question_type"] == t for r in mevf[s])
    # the missing image: in the JSONL with its flag, never in the JSON
    no_image = [r for r in everything if "no-image" in r["flags"]]
    assert no_image and all(r["image_name"] == "" and r["case_id"] == "case11" for r in no_image)
    assert card["no_image_left_out_of_json"] == len(no_image) == card["flags"]["no-image"]
    assert sum(len(m) for m in mevf.values()) == len(everything) - len(no_image)
    assert card["excluded"] == {"rejected": 2}
    negatives = [r for r in everything if r["negative"]]
    assert negatives and sum(card["splits"][s]["jsonl"]["negatives"] for s in rows) == len(negatives)
    assert card["lexicon"]["lexicon_version"] == "test-1" and card["generation"]["config"]["seed"] == 0
    assert card["review"]["qa"]["rejected"] == 2 and card["review"]["reviewers"] == ["ann", "bob"]
    assert json.loads((out / "card.json").read_text()) == card
    assert "| PRES |" in (out / "dataset_card.md").read_text()
    assert project.info["stages"]["export"]["rows"]["train"] == len(mevf["train"])


def test_the_export_loads_and_trains_a_tiny_model(exported, tmp_path, monkeypatch):
    from embedlab.medvqa.train import train_model

    monkeypatch.setenv("EMBEDLAB_CACHE", str(tmp_path / "cache"))
    _, out, card = exported
    train = load_export(out, "train")
    assert len(train) == card["splits"]["train"]["json"]["rows"]
    assert {r.answer_type for r in train} == {"CLOSED", "OPEN"} and {r.phrase_type for r in train} == {"freeform"}
    assert {r.organ for r in train} <= {"CHEST", "HEAD", "ABD"}
    assert [r.qid for r in load_dataset(str(out), "val")] == [r.qid for r in load_export(out, "val")]
    trained = train_model("cnn-ban", "tiny", train, tmp_path / "m", seed=0)
    assert trained is not None and (tmp_path / "m" / "train_log.jsonl").is_file()


def test_split_by_patient_keeps_each_patient_in_one_split(reviewed, tmp_path):
    project, _, _ = reviewed
    card = export_project(project, tmp_path / "out", split_by="patient", seed=3, formats=("jsonl",))
    patients = {c.case_id: c.patient for c in project.cases()}
    seen = {s: {patients[r["case_id"]] for r in _jsonl(tmp_path / "out", s)} for s in ("train", "val", "test")}
    assert all(seen.values())
    assert not (seen["train"] & seen["val"] or seen["train"] & seen["test"] or seen["val"] & seen["test"])
    assert not (tmp_path / "out" / "trainset.json").exists() and card["split_by"] == "patient"
    # the same seed splits the same way
    again = export_project(project, tmp_path / "again", split_by="patient", seed=3, formats=("jsonl",))
    assert again["splits"] == card["splits"]


def test_the_default_split_keeps_the_images_of_a_case_together(tmp_path):
    # a frontal and a lateral film of one study get the same report-derived pairs: by default they never straddle
    # train and test (and still no image is in two splits)
    project = _build(tmp_path / "p", patients=False)
    card = export_project(project, tmp_path / "out", include="all-unreviewed", formats=("jsonl",))
    assert card["split_by"] == "case"
    rows = [r for s in ("train", "val", "test") for r in _jsonl(tmp_path / "out", s)]
    split_of_case: dict[str, set] = {}
    split_of_image: dict[str, set] = {}
    for r in rows:
        split_of_case.setdefault(r["case_id"], set()).add(r["split"])
        split_of_image.setdefault(r["image_id"], set()).add(r["split"])
    assert len(split_of_case) == 12 and all(len(s) == 1 for s in split_of_case.values())
    assert all(len(s) == 1 for s in split_of_image.values())
    assert {s for v in split_of_case.values() for s in v} == {"train", "val", "test"}
    two = [c.case_id for c in project.cases() if len(c.images) == 2]
    assert two and all(len({r["image_id"] for r in rows if r["case_id"] == c}) == 2 for c in two)


def test_split_by_patient_is_refused_without_patient_ids(tmp_path):
    project = _build(tmp_path / "p", patients=False)
    with pytest.raises(ConfigError, match="patient id"):
        export_project(project, tmp_path / "out", split_by="patient", include="all-unreviewed")
    card = export_project(project, tmp_path / "out", split_by="case", include="all-unreviewed")
    cases = {s: {r["case_id"] for r in _jsonl(tmp_path / "out", s)} for s in ("train", "val", "test")}
    assert not (cases["train"] & cases["val"] or cases["train"] & cases["test"] or cases["val"] & cases["test"])
    assert card["split_by"] == "case"


def test_a_user_folder_is_never_replaced_and_an_export_is(reviewed, tmp_path):
    project, _, _ = reviewed
    user = tmp_path / "mine"
    user.mkdir()
    (user / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="did not write"):
        export_project(project, user)
    assert (user / "notes.txt").read_text() == "keep me" and len(list(tmp_path.iterdir())) == 1  # no staging left
    out = tmp_path / "export"
    export_project(project, out, seed=0)
    first = (out / "trainset.json").read_text()
    export_project(project, out, seed=1)  # embedlab's own export: replaced
    assert (out / ".embedlab-output").is_file() and (out / "trainset.json").read_text() != first
    with pytest.raises(ConfigError, match="holds the input|is \\(or holds\\) the input"):
        export_project(project, project.root.parent)
    images = sorted(p.name for p in project.images_dir.iterdir())
    for inside in (project.images_dir, project.root, project.root / "new"):  # the project's data, even with overwrite
        with pytest.raises(ConfigError, match="inside the project"):
            export_project(project, inside, overwrite=True)
    assert sorted(p.name for p in project.images_dir.iterdir()) == images
    with pytest.raises(ConfigError, match="fractions"):
        export_project(project, tmp_path / "x", fractions=(0.5, 0.1, 0.1))
    with pytest.raises(ConfigError, match="split_by"):
        export_project(project, tmp_path / "x", split_by="study")


def test_assign_splits_balances_pairs_and_fills_every_split():
    units = {f"u{i}": 1 + i % 4 for i in range(200)}
    split = assign_splits(units, (0.8, 0.1, 0.1), seed=0)
    pairs = Counter()
    for unit, s in split.items():
        pairs[s] += units[unit]
    total = sum(units.values())
    assert abs(pairs["train"] / total - 0.8) < 0.02 and abs(pairs["test"] / total - 0.1) < 0.02
    assert split == assign_splits(units, (0.8, 0.1, 0.1), seed=0) != assign_splits(units, (0.8, 0.1, 0.1), seed=1)
    assert set(assign_splits({"a": 5, "b": 1, "c": 1}, (0.8, 0.1, 0.1), 0).values()) == {"train", "val", "test"}
    assert set(assign_splits(units, (0.9, 0.1, 0.0), 0).values()) == {"train", "val"}


def test_the_registry_round_trips(exported, tmp_path, monkeypatch):
    _, out, card = exported
    monkeypatch.setenv("EMBEDLAB_REGISTRY", str(tmp_path / "reg" / "datasets.json"))
    assert registry_path() == tmp_path / "reg" / "datasets.json" and registered_exports() == {}
    entry = register_export("our-cases", out)
    assert entry["splits"] == ["train", "val", "test"]
    assert registered_exports()["our-cases"]["path"] == str(out.resolve())
    records = load_dataset("our-cases", "train")
    assert len(records) == card["splits"]["train"]["json"]["rows"]
    with pytest.raises(ConfigError, match="built-in"):
        register_export("vqa-rad", out)
    with pytest.raises(ConfigError, match="built-in Med-VQA task"):
        register_export("VQA-RAD-val", out)
    with pytest.raises(ConfigError, match="letters, digits"):
        register_export("../evil", out)
    with pytest.raises(ConfigError, match="not a dataset-tool export"):
        register_export("empty", tmp_path)
    other = tmp_path / "copy"
    other.mkdir()
    (other / "testset.json").write_text((out / "testset.json").read_text())
    with pytest.raises(ConfigError, match="already registered"):
        register_export("our-cases", other)
    assert register_export("our-cases", other, replace=True)["splits"] == ["test"]
    gone = tmp_path / "gone"
    gone.mkdir()
    (gone / "trainset.json").write_text((out / "trainset.json").read_text())
    register_export("gone", gone)
    (gone / "trainset.json").unlink()
    gone.rmdir()
    with pytest.raises(DataError, match="no longer exists"):
        load_dataset("gone", "train")
    assert unregister_export("our-cases") and not unregister_export("our-cases")
    with pytest.raises(Exception, match="unknown Med-VQA dataset"):
        load_dataset("our-cases", "train")
    # without EMBEDLAB_REGISTRY: XDG_CONFIG_HOME, else ~/.config
    monkeypatch.delenv("EMBEDLAB_REGISTRY")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert registry_path() == tmp_path / "xdg" / "embedlab" / "medvqa-datasets.json"
    monkeypatch.delenv("XDG_CONFIG_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert registry_path() == tmp_path / "home" / ".config" / "embedlab" / "medvqa-datasets.json"


class _Rewriter:
    name = "fake-lm"

    def rephrase(self, question):
        return f"Looking at the image, {question[0].lower()}{question[1:]}"


def test_paraphrases_export_as_para_rows(tmp_path):
    from embedlab.medvqa.dataset_tool.paraphrase import paraphrase_into

    project = _build(tmp_path / "p")
    before = len(project.qa_pairs())
    summary = paraphrase_into(project, _Rewriter(), share=0.5, seed=0)
    pairs = project.qa_pairs()
    assert summary["added_pairs"] == len(pairs) - before > 0 and project.info["stages"]["paraphrase"]["share"] == 0.5
    assert paraphrase_into(project, _Rewriter(), share=0.5, seed=0)["added_pairs"] == 0  # a rerun adds nothing new
    card = export_project(project, tmp_path / "out", include="all-unreviewed")
    para = [r for s in ("train", "val", "test") for r in json.loads((tmp_path / "out" / f"{s}set.json").read_text())
            if r["phrase_type"] == "para"]
    assert para and all(r["question"].startswith("Looking at the image") for r in para)
    assert sum(card["splits"][s]["jsonl"]["para"] for s in ("train", "val", "test")) == summary["added_pairs"]
    assert card["generation"]["paraphrase"]["model"] == "fake-lm"
    assert {r.phrase_type for r in load_export(tmp_path / "out", "train")} == {"freeform", "para"}


def test_a_registered_export_is_a_task_for_jobs_and_recipes(exported, tmp_path, monkeypatch):
    """Registered exports train through the job kinds (and so the web app's job builder) like the built-in tasks:
    trained on the export's train split, scored on its val split; an export without val and an unknown name are
    refused at submit with the names that exist."""
    from embedlab.bench.executors import InlineExecutor
    from embedlab.bench.jobs import JobQueue
    from embedlab.jobkinds import JobSpec
    from embedlab.medvqa.recipe import VQARecipe
    from embedlab.medvqa.tasks import all_tasks, resolve_task

    _, out, card = exported
    monkeypatch.setenv("EMBEDLAB_REGISTRY", str(tmp_path / "registry.json"))
    monkeypatch.setenv("EMBEDLAB_CACHE", str(tmp_path / "cache"))
    register_export("our-cases", out)
    task = resolve_task("our-cases")
    assert (task.dataset, task.train_split, task.eval_split) == ("our-cases", "train", "val")
    assert [t.name for t in all_tasks()][-1] == "our-cases" and resolve_task("vqa-rad-val").dataset == "vqa-rad"
    assert VQARecipe(model="cnn-ban", task="our-cases").resolved_task() == task
    only_test = tmp_path / "only-test"
    only_test.mkdir()
    (only_test / "testset.json").write_text((out / "testset.json").read_text())
    register_export("test-only", only_test)
    assert "test-only" not in [t.name for t in all_tasks()]
    with pytest.raises(ConfigError, match="needs train and val"):
        resolve_task("test-only")
    with pytest.raises(ConfigError, match="registered exports: our-cases, test-only"):
        resolve_task("our-casez")

    url = f"sqlite:///{tmp_path / 's.sqlite'}"
    queue = JobQueue(url)
    spec = JobSpec(kind="vqa-train", name="on-export", model="cnn-ban", tasks=("our-cases",), seed=0,
                   experiment="exports", config={"profile": "tiny", "train": {"epochs": 1}})
    ids = queue.submit([spec], [tmp_path / "job"])
    assert InlineExecutor(url).run(ids) == {ids[0]: "done"}
    rows = {r["metric"]: r for r in queue.store.query(experiment="exports")}
    assert rows["overall"]["task"] == "our-cases" and rows["overall"]["split"] == "val"
    assert rows["overall"]["dataset"] == "our-cases"
    with pytest.raises(ConfigError, match="unknown Med-VQA task 'nope'"):
        queue.submit([JobSpec(kind="vqa-train", name="x", model="cnn-ban", tasks=("nope",))], [tmp_path / "x"])


def test_generation_and_export_report_progress(tmp_path):
    """The long steps call progress(done, total) as they go (the web pages show it): generation per case, the
    export per image file copied; the last call is (total, total)."""
    project = _build(tmp_path / "p")
    _accept_all(project)
    cases = []
    generate_into(project, QAConfig(variants=1, negatives=1, seed=0), progress=lambda d, t: cases.append((d, t)))
    assert cases == [(i, 12) for i in range(1, 13)]
    images = []
    card = export_project(project, tmp_path / "out", seed=0,
                          progress=lambda d, t: images.append((d, t)))
    copied = len(list((tmp_path / "out" / "images").iterdir()))
    assert copied > 1 and images == [(i, copied) for i in range(1, copied + 1)]
    assert sum(v["json"]["images"] for v in card["splits"].values()) == copied
