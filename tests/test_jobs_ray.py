"""The ray executor on one local Ray instance (2 CPUs, started once for the module): a matrix of 2 evaluate jobs, a
Ray worker killed mid-training (the queue retries the job and it resumes from its checkpoint), a cancelled running
job, and a resubmission that runs nothing. Skipped when ray is not installed (`pip install embedlab[ray]`).
"""
from __future__ import annotations

import os
import signal
import sys
import threading

import pytest

pytest.importorskip("ray")

from embedlab.bench.executors import make_executor  # noqa: E402
from embedlab.bench.jobs import JobQueue  # noqa: E402
from embedlab.bench.ray_executor import RayExecutor, absolute_store_url  # noqa: E402
from embedlab.errors import ConfigError  # noqa: E402
from embedlab.jobkinds import JobSpec  # noqa: E402

from tiny_training import steps_logged, train_job, wait_for  # noqa: E402


@pytest.fixture(scope="module")
def ray_instance(tmp_path_factory):
    """One local Ray instance for the module, started by the executor itself. Its workers inherit this environment:
    a 0.3 s heartbeat (so a cancel is seen at once) and one thread per library."""
    import ray

    if ray.is_initialized():
        pytest.skip("this process is already connected to Ray")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EMBEDLAB_HEARTBEAT_S", "0.3")
        mp.setenv("RAY_USAGE_STATS_ENABLED", "0")
        mp.setenv("OMP_NUM_THREADS", "1")
        mp.delenv("RAY_ADDRESS", raising=False)
        ex = RayExecutor(f"sqlite:///{tmp_path_factory.mktemp('ray') / 's.sqlite'}", num_cpus=2)
        assert ex.started_local and ray.cluster_resources()["CPU"] == 2
        try:
            yield ex
        finally:
            ex.close()
    assert not ray.is_initialized()








def _executor(url):
    return RayExecutor(url, poll_s=0.2)


def _run_in_thread(url, job_ids, seen=None):
    result, seen = {}, seen if seen is not None else []
    thread = threading.Thread(target=lambda: result.update(_executor(url).run(job_ids, on_change=seen.append)))
    thread.start()
    return thread, result


def test_an_in_memory_store_is_refused_and_a_relative_one_made_absolute(tmp_path, monkeypatch):
    for url in ("sqlite://", "sqlite:///:memory:", "sqlite:///file:x?mode=memory&uri=true"):
        with pytest.raises(ConfigError, match="in-memory results store"):
            absolute_store_url(url)
    monkeypatch.chdir(tmp_path)
    assert absolute_store_url("sqlite:///r.sqlite") == f"sqlite:///{tmp_path / 'r.sqlite'}"
    assert absolute_store_url("r.sqlite") == f"sqlite:///{tmp_path / 'r.sqlite'}"
    assert absolute_store_url("postgresql+psycopg://u@h/db") == "postgresql+psycopg://u@h/db"


def test_without_ray_installed_the_executor_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    with pytest.raises(ConfigError, match=r"pip install embedlab\[ray\]"):
        make_executor("ray", f"sqlite:///{tmp_path / 's.sqlite'}")


def test_ray_executor_runs_a_matrix_and_a_resubmission_runs_nothing(ray_instance, tmp_path, train_root, data_root):
    url = f"sqlite:///{tmp_path / 's.sqlite'}"
    q = JobQueue(url)
    specs = [JobSpec(kind="evaluate", name=f"tiny-bs{bs}", model=str(train_root / "tiny-model"),
                     tasks=("stsb-dev",), config={"eval": {"batch_size": bs, "limit": 30}}, seed=0, experiment="g")
             for bs in (8, 16)]
    ids = q.submit(specs, [tmp_path / s.name for s in specs])
    seen = []
    states = make_executor("ray", url).run(ids, on_change=seen.append)
    assert states == {i: "done" for i in ids}
    assert {j["status"] for j in seen} >= {"queued", "done"}
    jobs = [q.get(i) for i in ids]
    assert all(j["executor"] == "ray" and j["attempts"] == 1 for j in jobs)
    assert all(int(j["worker"].rsplit(":", 1)[1]) != os.getpid() for j in jobs)  # ran in Ray workers, not here
    rows = q.store.query(experiment="g", metric="main_score")
    assert sorted(r["model"] for r in rows) == ["tiny-bs16", "tiny-bs8"]
    assert all(r["job_id"] in ids and r["seed"] == 0 and r["config_hash"] for r in rows)
    assert rows[0]["value"] == pytest.approx(rows[1]["value"], abs=1e-3)
    # The same spec again: the same jobs, already done; nothing runs, no row is added.
    assert q.submit(specs, [tmp_path / s.name for s in specs]) == ids
    assert _executor(url).run(ids) == {i: "done" for i in ids}
    assert len(q.store.query(experiment="g", metric="main_score")) == 2
    assert [q.get(i)["finished_at"] for i in ids] == [j["finished_at"] for j in jobs]


def test_a_killed_ray_worker_is_retried_by_the_queue_and_training_resumes(ray_instance, tmp_path, train_root,
                                                                          data_root):
    url = f"sqlite:///{tmp_path / 's.sqlite'}"
    q = JobQueue(url)
    folder = tmp_path / "run"
    job_id, = q.submit([train_job(train_root, steps=200)], [folder], max_attempts=2)
    seen = []
    thread, result = _run_in_thread(url, [job_id], seen)
    wait_for(lambda: (folder / "checkpoints").is_dir() and any((folder / "checkpoints").iterdir())
              and len(steps_logged(folder)) >= 15)
    pid = int(q.get(job_id)["worker"].rsplit(":", 1)[1])
    os.kill(pid, signal.SIGKILL)
    thread.join(timeout=180)
    assert result == {job_id: "done"}
    job = q.get(job_id)
    assert job["attempts"] == 2 and job["status"] == "done" and job["executor"] == "ray"
    assert int(job["worker"].rsplit(":", 1)[1]) != pid
    requeued = [j for j in seen if j["status"] == "queued" and j["error"]]
    assert len(requeued) == 1 and "the Ray task ended while the job ran" in requeued[0]["error"]
    steps = steps_logged(folder)
    assert steps.count(1) == 1, "the retry started from scratch instead of the checkpoint"
    assert steps[-1] == 200 and len(steps) < 2 * 200
    assert len(q.store.query(job_id=job_id, metric="main_score")) == 1


def test_cancelling_a_running_ray_job_stops_it(ray_instance, tmp_path, train_root, data_root):
    url = f"sqlite:///{tmp_path / 's.sqlite'}"
    q = JobQueue(url)
    folder = tmp_path / "run"
    job_id, = q.submit([train_job(train_root, steps=100000)], [folder])
    thread, result = _run_in_thread(url, [job_id])
    wait_for(lambda: len(steps_logged(folder)) >= 3)
    assert q.cancel(job_id) == "cancelling"
    thread.join(timeout=60)
    assert result == {job_id: "cancelled"}
    job = q.get(job_id)
    assert job["status"] == "cancelled" and job["finished_at"] is not None and job["attempts"] == 1
    assert q.store.query(job_id=job_id) == []


def test_an_error_in_the_executor_puts_its_running_jobs_back_in_the_queue(ray_instance, tmp_path, train_root,
                                                                          data_root):
    url = f"sqlite:///{tmp_path / 's.sqlite'}"
    q = JobQueue(url)
    folder = tmp_path / "run"
    job_id, = q.submit([train_job(train_root, steps=100000)], [folder])

    def stop_when_training(job):
        if job["status"] == "running":
            wait_for(lambda: len(steps_logged(folder)) >= 2)
            raise KeyboardInterrupt  # as Ctrl-C in the terminal that runs the executor

    with pytest.raises(KeyboardInterrupt):
        _executor(url).run([job_id], on_change=stop_when_training)
    job = q.get(job_id)
    # An interruption is not a failed attempt: the attempt is given back.
    assert job["status"] == "queued" and job["attempts"] == 0 and job["worker"] is None
    assert "interrupted" in job["error"]  # Ray's cancel raised KeyboardInterrupt in the task: run_job put it back


def test_the_web_app_launches_on_ray_and_serve_defaults_to_it(ray_instance, tmp_path, data_root):
    """`embedlab serve` launches the job pages' jobs on Ray when it is installed (a local instance, or --address);
    a launch from the API runs its job as a Ray task in this process's instance and the job page shows it done."""
    import time

    from web_server import api_token, make_app, signed_in

    from embedlab.cli.serve import resolve_executor

    assert resolve_executor("auto") == "ray" and resolve_executor("local") == "local"
    app = make_app(tmp_path, executor="ray")
    app.state.accounts.create_user("rita", "a long passphrase", "researcher")
    rita = signed_in(app, "rita", "a long passphrase")
    launched = rita.post("/api/jobs", headers=api_token(rita), json={
        "kind": "vqa-baseline", "models": ["majority", "question-only"], "tasks": ["vqa-rad-val"], "seeds": [0],
        "experiment": "on-ray"})
    assert launched.status_code == 201, launched.text
    deadline = time.monotonic() + 120
    while True:
        jobs = [rita.get(f"/api/jobs/{i}").json() for i in launched.json()["ids"]]
        if all(j["status"] in ("done", "failed", "cancelled") for j in jobs) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert [j["status"] for j in jobs] == ["done", "done"], [(j["status"], j["error"]) for j in jobs]
    assert all(j["executor"] == "ray" for j in jobs), [j.get("executor") for j in jobs]
