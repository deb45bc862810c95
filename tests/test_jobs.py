"""The job runner: matrix expansion, the job table's state machine (idempotent submit, compare-and-set claims,
cancel, retry, reaping lost workers), and the local executor on real text jobs — a matrix on 2 workers, a worker
killed mid-training (the retried job resumes from its checkpoint), a cancelled job, a resubmission that runs nothing.
"""
from __future__ import annotations

import json

import os
import signal
import threading

import pytest
import yaml

from embedlab.bench.executors import LocalExecutor
from embedlab.bench.jobs import JobQueue
from embedlab.bench.jobspec import expand, load_job_matrix
from embedlab.errors import ConfigError
from embedlab.jobkinds import JobSpec

from terminal import sigint_as_at_a_terminal
from tiny_training import recipe_file, steps_logged, train_job, wait_for


def _matrix(tmp_path, **kw):
    spec = {"kind": "evaluate", "tasks": ["stsb"], "seeds": [0, 1], "workdir": str(tmp_path / "w" / "{experiment}"),
            "matrix": {"model": ["a/m1", "b/m2"], "config.eval.batch_size": [16, 32]}, **kw}
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def test_matrix_expands_to_one_job_per_combination_and_seed(tmp_path):
    spec = load_job_matrix(_matrix(tmp_path))
    jobs = expand(spec)
    assert len(jobs) == 2 * 2 * 2
    names = sorted({j.name for j, _ in jobs})
    assert names == ["evaluate-model=m1-batch_size=16", "evaluate-model=m1-batch_size=32",
                     "evaluate-model=m2-batch_size=16", "evaluate-model=m2-batch_size=32"]
    first, folder = jobs[0]
    assert first.experiment == "grid" and first.model == "a/m1" and first.config == {"eval": {"batch_size": 16}}
    assert folder == tmp_path / "w" / "grid" / "evaluate-model=m1-batch_size=16-s0"
    assert len({j.config_hash() for j, _ in jobs}) == 4  # the seed is not part of the hash: it is stored beside it
    # Rows are labelled by model, not by configuration: the leaderboard picks the best batch size per model.
    assert sorted({j.label for j, _ in jobs}) == ["evaluate-m1", "evaluate-m2"]


def test_matrix_names_keep_paths_with_one_last_component_apart(tmp_path):
    spec = load_job_matrix(_matrix(tmp_path, matrix={"model": ["runs/a/final", "runs/b/final"]}))
    assert sorted({j.name for j, _ in expand(spec)}) == ["evaluate-model=a_final", "evaluate-model=b_final"]


@pytest.mark.parametrize("matrix,message", [({"optimizer": [1]}, "matrix.optimizer: not a matrix axis"),
                                            ({"threads": [1, 2]}, "matrix.threads: not a matrix axis"),
                                            ({"model": []}, "matrix.model: an empty list")])
def test_a_bad_matrix_names_the_key(tmp_path, matrix, message):
    with pytest.raises(ConfigError, match=message):
        expand(load_job_matrix(_matrix(tmp_path, matrix=matrix)))


def test_an_unknown_key_in_a_job_spec_names_file_and_key(tmp_path):
    path = _matrix(tmp_path, sedes=[1])
    with pytest.raises(ConfigError, match=r"grid.yaml: sedes: unknown key"):
        load_job_matrix(path)


def _job(name="j", seed=0, **config):
    return JobSpec(kind="evaluate", name=name, model="m", tasks=("stsb",), config=config, seed=seed)


def test_submit_is_idempotent_and_refuses_a_shared_output_folder(tmp_path):
    q = JobQueue(f"sqlite:///{tmp_path / 's.sqlite'}")
    a, = q.submit([_job()], [tmp_path / "a"])
    assert q.submit([_job()], [tmp_path / "a"]) == [a]  # same config and seed: the same job
    b, = q.submit([_job(seed=1)], [tmp_path / "b"])
    assert b != a
    with pytest.raises(ConfigError, match="would write .* the folder of job"):
        q.submit([_job(name="other", x=1)], [tmp_path / "a"])
    with pytest.raises(ConfigError, match="unknown task"):  # the kind's check runs before anything is added
        q.submit([JobSpec(kind="evaluate", name="z", tasks=("nope",))], [tmp_path / "z"])
    with pytest.raises(ConfigError, match="job kind"):
        q.submit([JobSpec(kind="paint", name="z", tasks=("stsb",))], [tmp_path / "z"])
    # All or nothing: the second spec is refused, so the first is not added either.
    with pytest.raises(ConfigError, match="would write"):
        q.submit([_job(name="new", y=1), _job(name="other", x=2)], [tmp_path / "new", tmp_path / "b"])
    with pytest.raises(ConfigError, match="two jobs of this submission"):
        q.submit([_job(name="p", z=1), _job(name="q", z=2)], [tmp_path / "same", tmp_path / "same"])
    assert len(q.list()) == 2
    # A finished job still owns its folder; forgetting it (not while it is queued) frees the folder.
    q.claim(a, "w", "test")
    q.finish(a, "w", [], {})
    with pytest.raises(ConfigError, match="jobs forget"):
        q.submit([_job(name="other", x=3)], [tmp_path / "a"])
    with pytest.raises(ConfigError, match="cancel it before forgetting"):
        q.forget(b)
    assert q.forget(a[:8])["id"] == a
    assert len(q.submit([_job(name="other", x=3)], [tmp_path / "a"])) == 1 and len(q.list()) == 2


def test_a_job_whose_rows_were_imported_into_a_fresh_store_is_recorded_done_not_run_again(tmp_path):
    from embedlab.bench.rowfiles import export_rows, import_rows

    def _job(seed=0, experiment="e"):
        return JobSpec(kind="evaluate", name="j", model="m", tasks=("stsb",), seed=seed, experiment=experiment)

    old = JobQueue(f"sqlite:///{tmp_path / 'old.sqlite'}")
    done, other = old.submit([_job(experiment="e"), _job(seed=1, experiment="e")], [tmp_path / "a", tmp_path / "b"])
    old.claim(done, "w", "test")
    spec = _job(experiment="e")
    row = {"model": "m", "task": "stsb", "task_type": "sts", "dataset": "stsb", "split": "test", "metric": "spearman",
           "value": 0.8, "experiment": "e", "seed": 0, "job_id": done, "config_hash": spec.config_hash()}
    old.finish(done, "w", [row], {})
    export_rows(old.store, "e", tmp_path / "e.json")

    fresh = JobQueue(f"sqlite:///{tmp_path / 'fresh.sqlite'}")
    assert import_rows(fresh.store, tmp_path / "e.json") == 1
    a, b = fresh.submit([_job(experiment="e"), _job(seed=1, experiment="e")], [tmp_path / "a", tmp_path / "b"])
    adopted = fresh.get(a)
    assert a == done and adopted["status"] == "done" and adopted["timings"] == {"adopted_from_results": True}
    assert adopted["result_run_ids"] == [fresh.store.query(experiment="e")[0]["run_id"]]
    assert fresh.get(b)["status"] == "queued"  # seed 1 has no rows: it runs
    assert fresh.submit([_job(experiment="e")], [tmp_path / "a"]) == [a]  # and a second submission changes nothing
    assert len(fresh.store.query(experiment="e")) == 1


def test_only_a_done_job_is_rerun_and_it_gets_attempts_to_spare(tmp_path):
    """``rerun`` (``embedlab experiment --rerun``) puts a done job back in the queue — also one adopted from stored
    rows, which was made with no attempts at all — and refuses a job in any other state."""
    q = JobQueue(f"sqlite:///{tmp_path / 's.sqlite'}")
    a, = q.submit([_job()], [tmp_path / "a"])
    with pytest.raises(ConfigError, match="only done jobs"):
        q.rerun(a)  # queued
    q.claim(a, "w", "test")
    with pytest.raises(ConfigError, match="is running"):
        q.rerun(a)
    q.finish(a, "w", [], {})
    assert q.rerun(a[:8]) == "queued"
    job = q.get(a)
    assert (job["status"], job["attempts"], job["finished_at"], job["progress"]) == ("queued", 0, None, None)
    assert q.claim(a, "w2", "test")["attempts"] == 1  # and a worker takes it as any queued job
    q.fail(a, "boom", retry=False, worker="w2")
    with pytest.raises(ConfigError, match="is failed.*jobs retry"):
        q.rerun(a)
    adopted = q.adopt(_job(name="imported", seed=7), tmp_path / "imp", [])
    assert q.get(adopted)["max_attempts"] == 0
    q.rerun(adopted)
    assert q.get(adopted)["max_attempts"] == 2  # a failure of the rerun can be retried once, as any job


def test_submit_on_the_command_line_says_which_jobs_were_done_already(tmp_path):
    from typer.testing import CliRunner

    from embedlab.cli import app

    path = _matrix(tmp_path)
    first, _ = expand(load_job_matrix(path))[0]
    url = f"sqlite:///{tmp_path / 's.sqlite'}"
    JobQueue(url).store.add_run([{"model": "m1", "task": "stsb", "task_type": "sts", "dataset": "stsb",
                                  "split": "test", "metric": "main_score", "value": 80.0, "experiment": "grid",
                                  "seed": first.seed, "config_hash": first.config_hash()}])
    out = CliRunner().invoke(app, ["jobs", "submit", str(path), "--db", url, "--no-wait"], env={"COLUMNS": "200"})
    assert out.exit_code == 0, out.output
    # Rich wraps the line at the console's width wherever the store path (the tmp folder) pushes it: compare words.
    assert "8 job(s): 7 new, 1 done already (their results were in the store), 0 already known" in \
        " ".join(out.output.split())


def test_claims_are_compare_and_set_and_lost_workers_are_reaped(tmp_path):
    q = JobQueue(f"sqlite:///{tmp_path / 's.sqlite'}")
    job_id, = q.submit([_job()], [tmp_path / "a"], max_attempts=2)
    assert q.claim(job_id, "w1", "local")["status"] == "running"
    assert q.claim(job_id, "w2", "local") is None  # already taken
    assert q.heartbeat(job_id, "w2") is True  # not w2's job: told to stop
    assert q.heartbeat(job_id, "w1") is False
    assert q.reap(stale_after=3600) == []
    assert q.reap(stale_after=0) == [job_id]  # no beat for 0 s: the worker is lost, attempt 1 of 2 -> queued
    assert q.get(job_id)["status"] == "queued"
    q.claim(job_id, "w3", "local")
    q.reap(stale_after=0)
    job = q.get(job_id)
    assert job["status"] == "failed" and job["attempts"] == 2 and "stopped without finishing" in job["error"]
    assert q.retry(job_id[:8]) == "queued" and q.get(job_id)["attempts"] == 0  # an id prefix works
    assert q.cancel(job_id) == "cancelled"  # a queued job: at once
    assert q.retry(job_id) == "queued"
    with pytest.raises(ConfigError, match="only failed or cancelled"):
        q.retry(job_id)


def test_local_executor_runs_a_matrix_on_two_workers_and_a_resubmission_runs_nothing(tmp_path, train_root,
                                                                                      data_root):
    url = f"sqlite:///{tmp_path / 's.sqlite'}"
    q = JobQueue(url)
    specs = [JobSpec(kind="evaluate", name=f"tiny-bs{bs}", model=str(train_root / "tiny-model"),
                     tasks=("stsb-dev",), config={"eval": {"batch_size": bs, "limit": 30}}, seed=0, experiment="g")
             for bs in (8, 16)]
    ids = q.submit(specs, [tmp_path / s.name for s in specs])
    seen = []
    states = LocalExecutor(url, cpus=2, log_dir=tmp_path / "logs", poll_s=0.2).run(ids, on_change=seen.append)
    assert states == {i: "done" for i in ids}
    assert {j["status"] for j in seen} >= {"queued", "done"}
    workers = {q.get(i)["worker"] for i in ids}
    assert len(workers) == 2  # two processes
    rows = q.store.query(experiment="g", metric="main_score")
    assert sorted(r["model"] for r in rows) == ["tiny-bs16", "tiny-bs8"]
    assert all(r["job_id"] in ids and r["seed"] == 0 and r["config_hash"] for r in rows)
    assert rows[0]["value"] == pytest.approx(rows[1]["value"], abs=1e-3)  # batch size does not change scores
    assert all(q.get(i)["result_run_ids"] == [r["run_id"] for r in rows if r["job_id"] == i] for i in ids)
    # The same spec again: the same jobs, already done; nothing runs, no row is added.
    assert q.submit(specs, [tmp_path / s.name for s in specs]) == ids
    assert LocalExecutor(url, cpus=2, log_dir=tmp_path / "logs").run(ids) == {i: "done" for i in ids}
    assert len(q.store.query(experiment="g", metric="main_score")) == 2








def test_a_killed_worker_is_retried_and_its_training_resumes_from_the_checkpoint(tmp_path, train_root, data_root,
                                                                                 monkeypatch):
    monkeypatch.setenv("EMBEDLAB_HEARTBEAT_S", "0.3")
    url = f"sqlite:///{tmp_path / 's.sqlite'}"
    q = JobQueue(url)
    folder = tmp_path / "run"
    job_id, = q.submit([train_job(train_root, steps=400)], [folder], max_attempts=2)
    result = {}
    thread = threading.Thread(target=lambda: result.update(LocalExecutor(url, cpus=2, log_dir=tmp_path / "logs",
                                                                         poll_s=0.2).run([job_id])))
    thread.start()
    wait_for(lambda: (folder / "checkpoints").is_dir() and any((folder / "checkpoints").iterdir())
              and len(steps_logged(folder)) >= 15)
    pid = int(q.get(job_id)["worker"].rsplit(":", 1)[1])
    os.kill(pid, signal.SIGKILL)
    thread.join(timeout=300)
    assert result == {job_id: "done"}
    job = q.get(job_id)
    assert job["attempts"] == 2 and job["status"] == "done"
    steps = steps_logged(folder)
    assert steps.count(1) == 1, "the retry started from scratch instead of the checkpoint"
    assert steps[-1] == 400 and len(steps) < 2 * 400
    rows = q.store.query(job_id=job_id, metric="main_score")
    assert len(rows) == 1
    # the retry's training time covers only the steps after the checkpoint: the row says where it resumed
    timing = json.loads((folder / "train_time.json").read_text())
    assert timing["resumed_from"] and 0 < timing["resumed_from"] < 400
    assert rows[0]["extra"]["resumed_from"] == timing["resumed_from"]


@pytest.mark.parametrize("sigint", ["default", "ignored"])
def test_cancelling_a_running_job_stops_it(sigint, tmp_path, train_root, data_root, monkeypatch):
    """Also when the executor's process ignores SIGINT (a `cmd &` from a script): its workers inherit that, and the
    executor stops them with SIGINT."""
    monkeypatch.setenv("EMBEDLAB_HEARTBEAT_S", "0.3")
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN if sigint == "ignored" else signal.default_int_handler)
    try:
        url = f"sqlite:///{tmp_path / 's.sqlite'}"
        q = JobQueue(url)
        folder = tmp_path / "run"
        job_id, = q.submit([train_job(train_root, steps=100000)], [folder])
        result = {}
        thread = threading.Thread(target=lambda: result.update(LocalExecutor(url, cpus=2, log_dir=tmp_path / "logs",
                                                                             poll_s=0.2).run([job_id])))
        thread.start()  # the worker processes inherit this process's SIGINT disposition
        wait_for(lambda: len(steps_logged(folder)) >= 3)
        assert q.cancel(job_id) == "cancelling"
        thread.join(timeout=120)
        assert result == {job_id: "cancelled"}
        job = q.get(job_id)
        assert job["status"] == "cancelled" and job["finished_at"] is not None
        assert q.store.query(job_id=job_id) == []  # no results from a cancelled job
    finally:
        signal.signal(signal.SIGINT, previous)


def test_ctrl_c_on_the_cli_puts_the_running_job_back_in_the_queue(tmp_path, train_root, data_root):
    """`embedlab jobs submit` interrupted: exit 130, the worker stopped, its job queued again (never left running),
    and `embedlab jobs run` then finishes it from its checkpoint."""
    import subprocess
    import sys

    recipe = recipe_file(train_root)
    spec = tmp_path / "one.yaml"
    spec.write_text(yaml.safe_dump({
        "kind": "train+evaluate", "name": "t", "tasks": ["stsb-dev"], "seeds": [3],
        "workdir": str(tmp_path / "w"),
        "config": {"recipe": recipe, "overrides": ["train.max_steps=100000", "train.save_every=10"],
                   "eval": {"limit": 10}}}))
    db = str(tmp_path / "s.sqlite")
    env = {**os.environ, "EMBEDLAB_HEARTBEAT_S": "0.3", "OMP_NUM_THREADS": "1"}
    cli = [sys.executable, "-m", "embedlab"]
    proc = subprocess.Popen([*cli, "jobs", "submit", str(spec), "--db", db], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=sigint_as_at_a_terminal)
    folder = tmp_path / "w" / "t-s3"
    wait_for(lambda: len(steps_logged(folder)) >= 12)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    [job] = JobQueue(db).list()
    assert job["status"] == "queued" and "interrupted" in (job["error"] or "")
    assert "went back to the queue" in err


def test_a_job_never_writes_into_a_folder_of_the_users_own_files(tmp_path, train_root, data_root):
    from embedlab.bench.executors import InlineExecutor

    mine = tmp_path / "my-notes"
    mine.mkdir()
    (mine / "thesis.tex").write_text("mine")
    url = f"sqlite:///{tmp_path / 's.sqlite'}"
    q = JobQueue(url)
    spec = JobSpec(kind="evaluate", name="e", model=str(train_root / "tiny-model"), tasks=("stsb-dev",),
                   config={"eval": {"limit": 10}})
    with pytest.raises(ConfigError, match="embedlab did not write"):
        q.submit([spec], [mine])  # refused before it is queued
    later = tmp_path / "later"
    job_id, = q.submit([spec], [later])
    later.mkdir()
    (later / "data.csv").write_text("mine too")  # the user's files arrive before the job runs
    assert InlineExecutor(url).run([job_id]) == {job_id: "failed"}
    assert "embedlab did not write" in q.get(job_id)["error"]
    assert sorted(p.name for p in later.iterdir()) == ["data.csv"] and (mine / "thesis.tex").read_text() == "mine"
