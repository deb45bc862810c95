"""Several processes on one jobs table at once (PostgreSQL and a SQLite file): all submit the same specs, then race
to claim, beat and finish the jobs and write their result rows. Afterwards: one job per spec (no duplicate), each
claimed and finished exactly once, every result row present, and no process saw an error ("database is locked",
a serialization failure, a unique violation surfacing)."""
from __future__ import annotations

import multiprocessing as mp
import queue
import traceback
import uuid

from embedlab.bench.jobs import JobQueue
from embedlab.jobkinds import JobSpec

PROCS, JOBS, ROWS = 4, 12, 3


def _specs(tag: str) -> list[JobSpec]:
    return [JobSpec(kind="evaluate", name=f"{tag}-{i}", model="m", tasks=("stsb",), seed=i % 3,
                    config={"eval": {"batch_size": 8 + i}}) for i in range(JOBS)]


def _worker(url: str, tag: str, n: int, folder: str, barrier, results) -> None:
    try:
        import embedlab.evaluate.tasks  # noqa: F401 - the sts display scale, as a worker of the text domain has it

        barrier.wait(timeout=120)
        q = JobQueue(url)
        specs = _specs(tag)
        ids = q.submit(specs, [f"{folder}/{s.name}" for s in specs])
        done = []
        for job_id in ids:
            me = f"proc-{n}"
            if q.claim(job_id, me, "test") is None:
                continue
            assert q.heartbeat(job_id, me, 0.5, "half") is False
            rows = [{"model": tag, "task": "stsb", "task_type": "sts", "dataset": "stsb", "split": "test",
                     "metric": f"m{k}", "value": float(k), "job_id": job_id} for k in range(ROWS)]
            assert q.finish(job_id, me, rows, {"seconds": 0.0}) is not None
            done.append(job_id)
        results.put((n, ids, done, None))
    except BaseException:
        results.put((n, None, None, traceback.format_exc()))


def _race(url: str, folder) -> None:
    tag = uuid.uuid4().hex[:8]
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(PROCS), ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(url, tag, n, str(folder), barrier, results)) for n in range(PROCS)]
    for p in procs:
        p.start()
    reports = []
    try:
        for _ in procs:
            reports.append(results.get(timeout=300))
    except queue.Empty:
        pass
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    errors = [f"process {n}:\n{e}" for n, _, _, e in reports if e]
    assert not errors, "\n".join(errors)
    assert len(reports) == PROCS
    id_lists = [ids for _, ids, _, _ in reports]
    assert all(ids == id_lists[0] for ids in id_lists)  # every process got the same job ids for the same specs
    finished = [j for _, _, done, _ in reports for j in done]
    assert sorted(finished) == sorted(id_lists[0])  # each job finished exactly once, by one process
    q = JobQueue(url)
    jobs = [j for j in q.list() if j["name"].startswith(tag)]
    assert len(jobs) == JOBS and all(j["status"] == "done" and j["attempts"] == 1 for j in jobs)
    rows = [r for r in q.store.query(model=tag)]
    assert len(rows) == JOBS * ROWS and {r["job_id"] for r in rows} == {j["id"] for j in jobs}


def test_processes_racing_on_postgresql_lose_and_duplicate_nothing(postgres_server, tmp_path):
    _race(postgres_server.create_database(f"jobs_{uuid.uuid4().hex[:8]}"), tmp_path)


def test_processes_racing_on_a_sqlite_file_lose_and_duplicate_nothing(tmp_path):
    _race(f"sqlite:///{tmp_path / 's.sqlite'}", tmp_path)
