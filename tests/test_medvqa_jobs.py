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
