"""Leaderboards and report folders from the results store (embedlab.bench.leaderboard, embedlab.bench.report_site).

The store holds 3 models x 2 configurations x 3 seeds x 3 tasks (two STS, one retrieval) of main scores, plus rows
the leaderboard must ignore (another split, another metric, a stale older row, another experiment) and a geometry
task outside the average. Expectations are computed here with numpy from the values the test wrote, not with the
code under test.
"""
from __future__ import annotations

import csv
import datetime as dt
import json
import re
import uuid

import numpy as np
import pytest
from sqlalchemy.orm import Session

import embedlab.evaluate.tasks  # noqa: F401 - registers the text task types' display scales
from embedlab.bench import store as store_mod
from embedlab.bench.leaderboard import leaderboard
from embedlab.bench.report_site import build_report
from embedlab.bench.store import Job, ResultsStore
from embedlab.errors import ConfigError
from embedlab.results import make_rows

EXP = "exp-report"
MODELS = ("alpha", "beta", "gamma")
SEEDS = (0, 1, 2)
TASKS = {"stsb": "sts", "sts12": "sts", "scifact": "retrieval"}
CONFIGS = {m: [{"model": m, "recipe": "r.yaml", "lr": lr} for lr in (1e-5, 3e-5)] for m in MODELS}
# Mean main score (0-1 scale) per (model, config index, task). alpha's config 0 wins stsb by far but loses the
# average: picking per task would show 0.95 for alpha on stsb; the leaderboard must show config 1 on every task.
BASE = {
    ("alpha", 0): {"stsb": 0.95, "sts12": 0.50, "scifact": 0.40},
    ("alpha", 1): {"stsb": 0.80, "sts12": 0.78, "scifact": 0.70},
    ("beta", 0): {"stsb": 0.84, "sts12": 0.80, "scifact": 0.66},
    ("beta", 1): {"stsb": 0.70, "sts12": 0.72, "scifact": 0.60},
    ("gamma", 0): {"stsb": 0.60, "sts12": 0.55, "scifact": 0.30},
    ("gamma", 1): {"stsb": 0.62, "sts12": 0.58, "scifact": 0.33},
}
OLD = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
NEW = dt.datetime(2026, 1, 2, tzinfo=dt.timezone.utc)


def _value(model: str, cfg: int, seed: int, task: str) -> float:
    """A deterministic value per cell: the base plus a seed- and task-dependent wobble (so std > 0)."""
    wobble = np.random.default_rng([MODELS.index(model), cfg, seed, list(TASKS).index(task)]).normal(0, 0.02)
    return BASE[(model, cfg)][task] + float(wobble)


@pytest.fixture
def built(tmp_path, monkeypatch):
    """(store, expected values {(model, cfg, seed, task): display value}, {model: [config_hash per cfg]}, paths)."""
    monkeypatch.setattr(store_mod, "current_git_commit", lambda path=None: "c0ffee")
    store = ResultsStore(f"sqlite:///{tmp_path / 'results.sqlite'}")
    expected, hashes = {}, {}
    job_id = uuid.uuid4().hex
    for model in MODELS:
        for cfg, config in enumerate(CONFIGS[model]):
            for seed in SEEDS:
                rows = []
                for task, ttype in TASKS.items():
                    v = _value(model, cfg, seed, task)
                    expected[(model, cfg, seed, task)] = 100.0 * v
                    scores = {"main_score": v, "cosine_pearson": v - 0.1} if ttype == "sts" else \
                        {"main_score": v, "ndcg_at_10": v, "recall_at_100": 0.99}
                    rows += make_rows(domain="text", model=model, task=task, task_type=ttype, dataset=task,
                                      split="test", scores=scores, experiment=EXP, seed=seed, config=config,
                                      duration_s=2.5, job_id=job_id if (model, cfg, seed) == ("alpha", 1, 0) else None)
                rows += make_rows(domain="text", model=model, task="stsb-dev", task_type="sts", dataset="stsb",
                                  split="dev", scores={"main_score": 0.99}, experiment=EXP, seed=seed, config=config)
                store.add_run([{**r, "created_at": NEW} for r in rows])
                if seed == SEEDS[0]:
                    hashes.setdefault(model, []).append(rows[0]["config_hash"])
    # A stale, older row of a cell that was re-run: it must not count (and it would change alpha's pick).
    stale = make_rows(domain="text", model="alpha", task="stsb", task_type="sts", dataset="stsb", split="test",
                      scores={"main_score": 0.10}, experiment=EXP, seed=1, config=CONFIGS["alpha"][1])
    store.add_run([{**r, "created_at": OLD} for r in stale])
    # Another experiment's rows: not in this report.
    store.add_run(make_rows(domain="text", model="delta", task="stsb", task_type="sts", dataset="stsb", split="test",
                            scores={"main_score": 0.99}, experiment="other", seed=0, config={"x": 1}))
    # A geometry task (uniformity, not averaged) for one configuration of beta.
    for seed in SEEDS:
        store.add_run(make_rows(domain="text", model="beta", task="geometry", task_type="geometry", dataset="stsb",
                                split="test", scores={"main_score": -2.0 - seed}, experiment=EXP, seed=seed,
                                config=CONFIGS["beta"][0]))

    # Two jobs: alpha config 1 seed 0 with training logs, and one whose output folder is gone.
    run_dir = tmp_path / "runs" / "alpha-s0"
    run_dir.mkdir(parents=True)
    (run_dir / "train_log.jsonl").write_text(
        "".join(json.dumps({"step": s, "task": "sts:stsb", "lr": 1e-5, "loss": 2.0 / s, "pro": 0.1}) + "\n"
                for s in range(10, 60, 10)) + '{"step": 60, "loss": 0.2', encoding="utf-8")  # last line cut
    (run_dir / "dev_log.jsonl").write_text(
        "".join(json.dumps({"step": s, "mean": 70.0 + s / 10, "stsb-dev": 71.0}) + "\n" for s in (20, 40)),
        encoding="utf-8")
    gone = tmp_path / "runs" / "beta-s2-deleted"
    now = dt.datetime.now(dt.timezone.utc)
    prov = {"embedlab_version": "0.1.0", "git_commit": "deadbeef" * 5, "packages": {"torch": "2.13.0"},
            "python": "3.11.7", "machine": "x86_64", "host": "testhost", "cpus": 2}
    with Session(store.engine) as session, session.begin():
        session.add(Job(id=job_id, kind="train+evaluate", domain="text", experiment=EXP, name="alpha",
                        spec={"kind": "train+evaluate", "name": "alpha", "config": CONFIGS["alpha"][1], "seed": 0,
                              "tasks": list(TASKS), "threads": 1},
                        config_hash=hashes["alpha"][1], seed=0, status="done", output_dir=str(run_dir),
                        timings={"seconds": 754.2, "provenance": prov}, created_at=now, finished_at=now))
        session.add(Job(id=uuid.uuid4().hex, kind="train+evaluate", domain="text", experiment=EXP, name="beta",
                        spec={"kind": "train+evaluate", "name": "beta", "seed": 2}, config_hash=hashes["beta"][0],
                        seed=2, status="done", output_dir=str(gone), timings={"seconds": 1.0}, created_at=now))
    yield store, expected, hashes, {"run_dir": run_dir, "gone": gone}
    store.close()


def _expected_board(expected):
    """{model: (best cfg, mean, std, per-config means)} by the documented rule, with numpy."""
    out = {}
    for model in MODELS:
        means = []
        for cfg in range(2):
            per_seed = [np.mean([expected[(model, cfg, s, t)] for t in TASKS]) for s in SEEDS]
            means.append((np.mean(per_seed), np.std(per_seed, ddof=1)))
        best = int(np.argmax([m for m, _ in means]))
        out[model] = (best, means[best][0], means[best][1], means)
    return out


def test_leaderboard_picks_the_best_configuration_per_model(built):
    store, expected, hashes, _ = built
    lb = leaderboard(store, experiment=EXP)
    want = _expected_board(expected)
    assert want["alpha"][0] == 1 and want["beta"][0] == 0  # the fixture's design: different winners
    assert lb.tasks == ["stsb", "sts12", "scifact", "geometry"]
    assert lb.averaged == ["stsb", "sts12", "scifact"]  # geometry is shown, not averaged
    assert [e.model for e in lb.entries] == sorted(MODELS, key=lambda m: -want[m][1])
    assert [e.rank for e in lb.entries] == [1, 2, 3]
    for e in lb.entries:
        cfg, mean, std, _ = want[e.model]
        assert e.config_hash == hashes[e.model][cfg]
        assert e.n_seeds == 3 and e.average.n == 3
        assert e.average.mean == pytest.approx(mean, abs=1e-9)
        assert e.average.std == pytest.approx(std, abs=1e-9)
        for task in TASKS:
            vals = [expected[(e.model, cfg, s, task)] for s in SEEDS]
            assert e.tasks[task].mean == pytest.approx(np.mean(vals), abs=1e-9)
            assert e.tasks[task].std == pytest.approx(np.std(vals, ddof=1), abs=1e-9)
            assert e.tasks[task].n == 3
        sts = [np.mean([expected[(e.model, cfg, s, t)] for t in ("stsb", "sts12")]) for s in SEEDS]
        assert e.categories["sts"].mean == pytest.approx(np.mean(sts), abs=1e-9)
        assert e.categories["sts"].std == pytest.approx(np.std(sts, ddof=1), abs=1e-9)
        assert e.categories["retrieval"].mean == pytest.approx(e.tasks["scifact"].mean, abs=1e-9)
    alpha = next(e for e in lb.entries if e.model == "alpha")
    # Not the per-task luckiest configuration (config 0 has ~95 on stsb) and not the stale 10.0 row.
    assert alpha.tasks["stsb"].mean == pytest.approx(np.mean([expected[("alpha", 1, s, "stsb")] for s in SEEDS]))
    assert "geometry" not in alpha.tasks
    beta = next(e for e in lb.entries if e.model == "beta")
    assert beta.tasks["geometry"].mean == pytest.approx(-3.0) and beta.categories["geometry"].n == 3
    # Every configuration is listed, one chosen per model, with its own average.
    table = lb.config_table()
    assert len(table) == 6 and sum(r["selected"] for r in table) == 3
    for r in table:
        cfg = hashes[r["model"]].index(r["config_hash"])
        assert r["mean"] == pytest.approx(want[r["model"]][3][cfg][0], abs=1e-9)
    # The long tables carry the same numbers.
    rows = {(r["model"], r["task"]): r for r in lb.task_table()}
    assert rows[("alpha", "scifact")]["mean"] == pytest.approx(alpha.tasks["scifact"].mean)
    assert rows[("alpha", "geometry")]["n"] == 0 and rows[("alpha", "geometry")]["mean"] is None


def test_leaderboard_category_from_extra_key(built):
    store, *_ = built
    store.add_run(make_rows(domain="text", model="vqa", task="rad-closed", task_type="sts", dataset="rad",
                            split="test", scores={"main_score": 0.5}, experiment="vqa", seed=0,
                            extra={"question_type": "closed"}))
    store.add_run(make_rows(domain="text", model="vqa", task="rad-open", task_type="sts", dataset="rad",
                            split="test", scores={"main_score": 0.3}, experiment="vqa", seed=0))
    lb = leaderboard(store, experiment="vqa", category_key="question_type")
    assert lb.categories == {"closed": ["rad-closed"], "(none)": ["rad-open"]}
    assert lb.entries[0].categories["closed"].mean == pytest.approx(50.0)
    assert lb.entries[0].average.mean == pytest.approx(40.0) and lb.entries[0].average.std is None


def test_report_folder(built, tmp_path):
    store, expected, hashes, paths = built
    out = tmp_path / "report"
    report = build_report(store, out, experiment=EXP, title="Report test")
    want = _expected_board(expected)
    names = {p.relative_to(out).as_posix() for p in report.files}
    assert {"index.html", "report.md", "leaderboard.csv", "results.json", "charts/scores.svg", "charts/scores.png",
            "charts/categories.svg", "charts/loss.svg", "charts/dev.svg", "charts/loss.png"} <= names
    for p in report.files:
        assert p.is_file() and p.stat().st_size > 0
    assert not list(tmp_path.glob(".report.*"))  # no staging folder left behind

    html = (out / "index.html").read_text(encoding="utf-8")
    for model in MODELS:
        assert model in html
    assert "delta" not in html  # another experiment's model
    charts = re.findall(r'<figure id="chart-([a-z]+)">\s*<div class="chart"><svg', html)
    assert charts == ["scores", "categories", "loss", "dev"]  # one inline SVG per chart, training curves included
    assert html.count("<svg") == 4
    # Self-contained: no script, no stylesheet link, no external src/href.
    assert "<script" not in html and "<link" not in html
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", html)
    assert "@import" not in html and "url(http" not in html
    ids = re.findall(r'\bid="([^"]+)"', html)
    assert len(ids) == len(set(ids))  # inline SVGs do not share ids
    # The missing job folder is reported, not a crash.
    assert str(paths["gone"]) in html and "is gone" in html
    assert any(str(paths["gone"]) in n for n in report.notes)
    # Provenance of the job: commit, packages, machine, config hash, wall time, data.
    assert "deadbeef" * 5 in html and "torch 2.13.0" in html and "testhost" in html
    assert hashes["alpha"][1] in html and "12.57 min" in html and "scifact (scifact, test)" in html

    md = (out / "report.md").read_text(encoding="utf-8")
    for e in report.leaderboard.entries:
        cfg, mean, std, _ = want[e.model]
        line = f"| {e.rank} | {e.model} | `{hashes[e.model][cfg][:8]}` | 3 | "
        assert any(x.startswith(line) and f"{mean:.2f} ± {std:.2f}" in x for x in md.splitlines()), line
        task_cells = [f"{np.mean(v):.2f} ± {np.std(v, ddof=1):.2f}" for v in
                      ([expected[(e.model, cfg, s, t)] for s in SEEDS] for t in TASKS)]
        row = next(x for x in md.splitlines() if x.startswith(f"| {e.model} | ") or
                   x.startswith(f"| **{e.model}** | "))
        for cell in task_cells:
            assert cell in row
    assert "![Scores per task" in md and "(charts/scores.svg)" in md and "charts/loss.png" in md
    assert "is gone" in md

    with open(out / "leaderboard.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    averages = {r["model"]: r for r in rows if r["level"] == "average"}
    assert set(averages) == set(MODELS)
    for model, r in averages.items():
        cfg, mean, std, _ = want[model]
        assert r["config_hash"] == hashes[model][cfg]
        assert float(r["mean"]) == pytest.approx(mean, abs=1e-9)
        assert float(r["std"]) == pytest.approx(std, abs=1e-9)
        assert int(r["n"]) == 3 and r["seeds"] == "0 1 2"
    scifact = {r["model"]: float(r["mean"]) for r in rows if r["level"] == "task" and r["name"] == "scifact"}
    for model in MODELS:
        cfg = want[model][0]
        assert scifact[model] == pytest.approx(np.mean([expected[(model, cfg, s, "scifact")] for s in SEEDS]))

    data = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert data["meta"]["experiment"] == EXP and len(data["configurations"]) == 6
    # The rows behind the tables: the newest per cell, this experiment's, main_score on test only.
    assert len(data["rows"]) == 6 * 3 * 3 + 3
    assert {r["metric"] for r in data["rows"]} == {"main_score"} and {r["split"] for r in data["rows"]} == {"test"}
    assert all(r["value"] != pytest.approx(10.0) for r in data["rows"])

    loss_svg = (out / "charts" / "loss.svg").read_text(encoding="utf-8")
    assert "alpha s0" in loss_svg and "Training loss" in loss_svg

    # Building again replaces the folder (embedlab wrote it); a folder of someone else's is refused.
    build_report(store, out, experiment=EXP, formats=("html",))
    assert not (out / "report.md").exists() and (out / "index.html").is_file()
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="did not write"):
        build_report(store, foreign, experiment=EXP)
    assert (foreign / "notes.txt").read_text() == "keep me"


def test_report_metrics_table_shows_the_chosen_configuration(built, tmp_path):
    store, expected, hashes, _ = built
    board = _expected_board(expected)
    report = build_report(store, tmp_path / "r", experiment=EXP, formats=("md",),
                          metrics=["cosine_pearson", "main_score"])
    md = (report.out_dir / "report.md").read_text(encoding="utf-8")
    section = md.split("## Metrics")[1].split("## ")[0]
    head = next(line for line in section.splitlines() if line.startswith("| model"))
    assert "cosine_pearson (stsb, test)" in head and "main_score (stsb-dev, dev)" in head
    assert "ndcg_at_10" not in head and "cosine_pearson (scifact" not in head  # the asked metrics, where they exist
    cols = [c.strip() for c in head.strip("|").split("|")]
    for model in MODELS:
        best = board[model][0]
        row = next(line for line in section.splitlines() if line.startswith(f"| {model} "))
        cells = dict(zip(cols, [c.strip() for c in row.strip("|").split("|")]))
        pearson = [expected[(model, best, s, "stsb")] - 10.0 for s in SEEDS]  # cosine_pearson = v - 0.1
        assert cells["cosine_pearson (stsb, test)"] == f"{np.mean(pearson):.2f} ± {np.std(pearson, ddof=1):.2f}"
        sci = [expected[(model, best, s, "scifact")] for s in SEEDS]
        assert cells["main_score (scifact, test)"] == f"{np.mean(sci):.2f} ± {np.std(sci, ddof=1):.2f}"
    with pytest.raises(ConfigError, match="no rows of metric.*nope"):
        build_report(store, tmp_path / "r2", experiment=EXP, metrics=["main_score", "nope"])


def test_report_without_rows_is_a_clear_error(built, tmp_path):
    store, *_ = built
    out = tmp_path / "empty-report"
    with pytest.raises(ConfigError, match=r"no results for experiment 'nope'.*experiments in it: exp-report, other"):
        build_report(store, out, experiment="nope")
    assert not out.exists()
    with pytest.raises(ConfigError, match=r"no accuracy results on split 'test'.*metrics .*main_score"):
        leaderboard(store, experiment=EXP, metric="accuracy")
    with pytest.raises(ConfigError, match="unknown report format"):
        build_report(store, out, experiment=EXP, formats=("pdf",))


def test_report_from_a_url_and_an_empty_store(tmp_path):
    url = f"sqlite:///{tmp_path / 'fresh.sqlite'}"
    ResultsStore(url).close()
    with pytest.raises(ConfigError, match="no results for experiment 'x'.*holds no experiment"):
        build_report(url, tmp_path / "r", experiment="x")
    with pytest.raises(ConfigError, match="no results store"):
        build_report(f"sqlite:///{tmp_path / 'missing.sqlite'}", tmp_path / "r", experiment="x")
    assert not (tmp_path / "missing.sqlite").exists()


def test_training_curves_of_per_task_folders_and_epoch_logs_and_no_note_for_queued_jobs(tmp_path):
    """A vqa-train job trains one model per task in a sub-folder and logs per epoch: one curve per sub-folder, over
    epochs; a queued job has no folder yet, which is not "gone"."""
    from embedlab.bench.report_site import _training_curves

    done = tmp_path / "vqa-s0"
    for task, losses in (("vqa-rad-val", [3.0, 2.0, 1.5]), ("vqa-rad-image", [4.0, 3.0])):
        (done / task).mkdir(parents=True)
        (done / task / "train_log.jsonl").write_text(
            json.dumps({"stage": "multitask", "epochs": 30}) + "\n"
            + "".join(json.dumps({"epoch": e, "loss": v}) + "\n" for e, v in enumerate(losses)), encoding="utf-8")
    jobs = [{"id": "a" * 32, "name": "vqa", "seed": 0, "kind": "vqa-train", "status": "done", "config_hash": "h",
             "output_dir": str(done)},
            {"id": "b" * 32, "name": "vqa", "seed": 1, "kind": "vqa-train", "status": "queued", "config_hash": "h",
             "output_dir": str(tmp_path / "vqa-s1")},
            {"id": "c" * 32, "name": "vqa", "seed": 2, "kind": "vqa-train", "status": "done", "config_hash": "h",
             "output_dir": str(tmp_path / "deleted")}]
    curves, notes = _training_curves(jobs)
    by_run: dict = {}
    for p in curves["loss"]:
        by_run.setdefault(p["run"], []).append((p["step"], p["value"]))
    assert by_run == {"vqa s0 vqa-rad-image": [(1.0, 4.0), (2.0, 3.0)],
                      "vqa s0 vqa-rad-val": [(1.0, 3.0), (2.0, 2.0), (3.0, 1.5)]}
    assert len(notes) == 1 and "cccccccc" in notes[0] and "is gone" in notes[0]  # the queued one: no note


def test_many_jobs_without_their_folder_are_summed_up_in_one_note(tmp_path):
    """Rows imported from a results file on a machine that never ran the jobs: one note naming every job, not one per
    job (27 lines of notes would bury the report)."""
    from embedlab.bench.report_site import MAX_GONE_NOTES, _training_curves

    n = MAX_GONE_NOTES + 2
    jobs = [{"id": f"{i:032x}", "name": "vqa", "seed": i, "kind": "vqa-train", "status": "done", "config_hash": "h",
             "output_dir": str(tmp_path / "jobs" / f"vqa-s{i}")} for i in range(n)]
    curves, notes = _training_curves(jobs)
    assert curves == {"loss": [], "dev": []}
    assert len(notes) == 1 and f"{n} jobs' output folders are gone" in notes[0]
    assert str(tmp_path / "jobs") in notes[0] and all(f"vqa s{i}" in notes[0] for i in range(n))
    _, few = _training_curves(jobs[:MAX_GONE_NOTES])
    assert len(few) == MAX_GONE_NOTES and all("is gone" in x for x in few)


def test_provenance_does_not_call_a_queued_jobs_folder_gone(tmp_path):
    from embedlab.bench.report_site import _provenance

    base = {"name": "vqa", "kind": "vqa-train", "config_hash": "h" * 64, "spec": {"name": "vqa"}, "timings": {},
            "output_dir": str(tmp_path / "no-such-folder")}
    jobs = [{**base, "id": "a" * 32, "seed": 0, "status": "queued"},
            {**base, "id": "b" * 32, "seed": 1, "status": "done"}]
    missing = {p["seed"]: p["folder_missing"] for p in _provenance(jobs, [])}
    assert missing == {0: False, 1: True}
