"""The Med-VQA domain plugged into the core: a ``vqa-baseline`` job matrix (baselines x tasks) runs through the job
runner, its rows land in the store with domain "medvqa" on the x100 scale, equal to fitting and scoring by hand, and
the leaderboard reads them like any domain's."""
from __future__ import annotations

import pytest

from embedlab.bench.executors import InlineExecutor
from embedlab.bench.jobs import JobQueue
from embedlab.errors import ConfigError
from embedlab.jobkinds import JobSpec, get_kind


def _spec(model: str, **config) -> JobSpec:
    return JobSpec(kind="vqa-baseline", name=f"baseline-{model}", model=model, tasks=("vqa-rad-val",), seed=0,
                   experiment="vqa-baselines", config=config)


def test_baseline_jobs_store_the_numbers_a_direct_fit_gives(tmp_path, data_root):
    from embedlab.bench.leaderboard import leaderboard
    from embedlab.medvqa.baselines import BASELINES
    from embedlab.medvqa.datasets import load_dataset
    from embedlab.medvqa.metrics import score

    assert get_kind("vqa-baseline").domain == "medvqa"
    url = f"sqlite:///{tmp_path / 's.sqlite'}"
    queue = JobQueue(url)
    specs = [_spec("majority"), _spec("image-identity")]
    ids = queue.submit(specs, [tmp_path / s.name for s in specs])
    assert InlineExecutor(url).run(ids) == {i: "done" for i in ids}
    rows = {r["model"]: r for r in queue.store.query(experiment="vqa-baselines", metric="main_score")}
    assert set(rows) == {"baseline-majority", "baseline-image-identity"}
    assert all(r["domain"] == "medvqa" and r["task_type"] == "vqa" and r["split"] == "val" for r in rows.values())
    train, val = load_dataset("vqa-rad", "val-train"), load_dataset("vqa-rad", "val")
    by_hand = score(val, BASELINES.get("image-identity")(seed=0).fit(train).predict(val),
                    train_answers=[r.answer for r in train])["scores"]["overall"]
    assert rows["baseline-image-identity"]["value"] == pytest.approx(100 * by_hand)
    assert rows["baseline-image-identity"]["value"] > rows["baseline-majority"]["value"] + 10
    closed = queue.store.query(experiment="vqa-baselines", metric="closed")
    assert len(closed) == 2 and all(0 <= r["value"] <= 100 for r in closed)
    board = leaderboard(queue.store, experiment="vqa-baselines", domain="medvqa", split="val")
    assert board.entries[0].model == "baseline-image-identity"


def test_a_bad_baseline_job_is_refused_at_submit(tmp_path):
    queue = JobQueue(f"sqlite:///{tmp_path / 's.sqlite'}")
    with pytest.raises(ConfigError, match="vqa baseline"):
        queue.submit([_spec("oracle")], [tmp_path / "a"])
    with pytest.raises(ConfigError, match="closed_by"):
        queue.submit([_spec("majority", closed_by="guess")], [tmp_path / "a"])
    with pytest.raises(ConfigError, match="Med-VQA task"):
        queue.submit([JobSpec(kind="vqa-baseline", name="x", model="majority", tasks=("vqa-rad-nope",))],
                     [tmp_path / "a"])
    assert queue.list() == []


def test_embedlab_list_shows_both_domains():
    from typer.testing import CliRunner

    from embedlab.cli import app

    out = CliRunner().invoke(app, ["list"])
    assert out.exit_code == 0, out.output
    for name in ("train+evaluate", "vqa-baseline", "vqa-rad-val", "image-identity", "stsb"):
        assert name in out.output


def test_vqa_train_jobs_train_score_and_store_image_reliance(tmp_path, data_root, monkeypatch):
    """A tiny library model through the job runner: rows with the blank/shuffled scores, the model saved in the job's
    folder, and `vqa-eval` of that folder giving the same overall score."""
    monkeypatch.setenv("EMBEDLAB_CACHE", str(tmp_path / "cache"))
    url = f"sqlite:///{tmp_path / 's.sqlite'}"
    queue = JobQueue(url)
    spec = JobSpec(kind="vqa-train", name="mevf-ban-tiny", model="mevf-ban", tasks=("vqa-rad-val",), seed=1,
                   experiment="vqa-models", config={"profile": "tiny", "train": {"epochs": 1}})
    ids = queue.submit([spec], [tmp_path / "job"])
    assert InlineExecutor(url).run(ids) == {ids[0]: "done"}
    rows = {r["metric"]: r for r in queue.store.query(experiment="vqa-models")}
    assert {"overall", "closed", "open", "blank_overall", "shuffled_overall", "image_reliance"} <= set(rows)
    assert rows["image_reliance"]["value"] == pytest.approx(rows["overall"]["value"] - rows["blank_overall"]["value"])
    model_dir = tmp_path / "job" / "vqa-rad-val"
    assert (model_dir / "model.json").is_file()
    ev = JobSpec(kind="vqa-eval", name="eval", model=str(model_dir), tasks=("vqa-rad-val",), experiment="vqa-eval")
    ids = queue.submit([ev], [tmp_path / "eval"])
    assert InlineExecutor(url).run(ids) == {ids[0]: "done"}
    again = {r["metric"]: r for r in queue.store.query(experiment="vqa-eval")}
    assert again["overall"]["value"] == pytest.approx(rows["overall"]["value"])


def test_bad_vqa_train_jobs_are_refused_at_submit(tmp_path):
    queue = JobQueue(f"sqlite:///{tmp_path / 's.sqlite'}")
    bad = [JobSpec(kind="vqa-train", name="a", model="mevf-bann", tasks=("vqa-rad-val",)),
           JobSpec(kind="vqa-train", name="b", model="mevf-ban", tasks=("vqa-rad-val",), config={"train": {"x": 1}}),
           JobSpec(kind="vqa-train", name="c", model="mevf-ban", tasks=("vqa-rad-val",), config={"profile": "gpu"}),
           JobSpec(kind="vqa-eval", name="d", model=str(tmp_path), tasks=("vqa-rad-val",))]
    for spec, match in zip(bad, ["mevf-bann", "unknown key", "profile", "not a trained Med-VQA model"]):
        with pytest.raises(ConfigError, match=match):
            queue.submit([spec], [tmp_path / spec.name])


def test_embedlab_vqa_train_and_eval_from_the_command_line(tmp_path, data_root, monkeypatch):
    from typer.testing import CliRunner

    from embedlab.bench.store import ResultsStore
    from embedlab.cli import app

    monkeypatch.setenv("EMBEDLAB_CACHE", str(tmp_path / "cache"))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"model: cnn-san\nprofile: tiny\ntask: vqa-rad-image\noutput_dir: {tmp_path / 'm'}\n")
    db = str(tmp_path / "s.sqlite")
    out = CliRunner().invoke(app, ["vqa", "train", str(recipe), "seed=2", "train.epochs=1", "--db", db,
                                   "--no-progress"], env={"COLUMNS": "200"})
    assert out.exit_code == 0, out.output
    assert "reliance" in out.output and (tmp_path / "m" / "model.safetensors").is_file()
    out = CliRunner().invoke(app, ["vqa", "eval", "--model", str(tmp_path / "m"), "--task", "vqa-rad-image",
                                   "--db", db])
    assert out.exit_code == 0, out.output
    rows = ResultsStore(db).query(metric="overall", latest_only=False)
    assert len(rows) == 2 and rows[0]["value"] == pytest.approx(rows[1]["value"])
    assert {r["seed"] for r in rows} >= {2}
    out = CliRunner().invoke(app, ["vqa", "train", str(recipe), "train.epoch=1", "--db", db])
    assert isinstance(out.exception, ConfigError) and "unknown key" in str(out.exception)  # main() prints it
