"""The ``ray`` executor: each queued job a Ray task, on an existing Ray cluster or a local instance.

    ex = RayExecutor("postgresql+psycopg://me@db/results", address="ray://head:10001")   # or RAY_ADDRESS
    ex.run(job_ids, on_change=print)   # -> {job id: "done" | "failed" | "cancelled"}

What it does:

- Connects to the cluster at ``address`` (else ``RAY_ADDRESS``), or starts a local instance when neither is given
  (``num_cpus`` sizes it); a process already connected to Ray (``ray.init`` done) is used as it is.
- Starts every queued job as a task that calls ``embedlab.bench.jobs.run_job(store_url, job_id, executor="ray")``
  with the job's resources: ``num_cpus`` = its threads, ``num_gpus`` = ``resources["gpus"]``, ``memory`` =
  ``resources["memory_gb"]``, and ``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` = its threads in the task's environment
  (run_job sets torch's threads). On a local instance a job that wants more CPUs than it has gets them all (it runs
  alone, as with the local executor); on a cluster it waits until Ray can place it.
- Retries are the queue's, not Ray's (``max_retries=0``): a task that ends while its job is still "running" (the
  worker process was killed, ran out of memory, the node was lost) has its job put back in the queue or failed by
  ``JobQueue.fail``, and a job back in the queue is started again as a new task. A retried training job resumes
  from its checkpoint, which therefore must be on storage the next node sees.
- Cancelling (``embedlab jobs cancel``) works as everywhere: the job's heartbeat sees the request and stops it.
- Ctrl-C or an error in ``run`` cancels its tasks (a KeyboardInterrupt in each, which puts the job back in the
  queue; a task that has not stopped after ``grace_s`` is force-killed and its job put back by this process), then
  re-raises.

What it does not do: ship code or data. Every node needs embedlab (and the job's models and data, at the same
paths) installed, and must reach the results store: an absolute SQLite path works on a single machine (a local
instance); a cluster of several machines needs PostgreSQL. Logs of the jobs are in the workers' log files
(``/tmp/ray/session_latest/logs/worker-*``); the last lines of each job are in its row (``embedlab jobs show``).
It does not shut down a cluster it connected to (``close()`` stops a local instance it started).
"""
from __future__ import annotations

import logging
import os
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from ..errors import ConfigError, EmbedlabError
from ..settings import results_db_url
from .jobs import TERMINAL, JobQueue

log = logging.getLogger("embedlab.jobs")

INSTALL_HINT = "the ray executor needs `pip install embedlab[ray]`"
MAX_START_FAILURES = 3  # a task that fails this often before claiming its job (broken environment): give up
_local_instance = False  # this process started the Ray instance it is connected to (fixed size, this machine)


def _run_in_task(store_url: str, job_id: str, show_progress: bool) -> str:
    """The body of a Ray task (a module-level function, so that workers import it rather than unpickle code)."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    from .jobs import run_job

    return run_job(store_url, job_id, executor="ray", show_progress=show_progress)


def absolute_store_url(store_url: str | None) -> str:
    """The store URL with a SQLite path made absolute (a task may run in another folder); an in-memory SQLite
    store is refused (every process would see its own, empty, database)."""
    from sqlalchemy.engine import make_url

    url = results_db_url(store_url)
    try:
        parsed = make_url(url)
    except Exception as e:
        raise ConfigError(f"results store URL {url!r} is not a valid SQLAlchemy URL ({e})") from None
    if parsed.get_backend_name() != "sqlite":
        return url
    database = parsed.database or ""
    if database in ("", ":memory:") or database.startswith("file:") or parsed.query.get("mode") == "memory":
        raise ConfigError(f"the ray executor cannot use the in-memory results store {url!r}: its tasks run in other "
                          "processes; give a SQLite file (or PostgreSQL for a cluster of several machines)")
    return parsed.set(database=str(Path(database).expanduser().resolve())).render_as_string(hide_password=False)


@dataclass
class _Task:
    ref: Any  # ray.ObjectRef
    attempts: int  # the job's attempts when the task was started: the task's claim makes it attempts + 1


class RayExecutor:
    name = "ray"

    def __init__(self, store_url: str, address: str | None = None, show_progress: bool = False,
                 poll_s: float = 0.5, num_cpus: int | None = None, env_vars: dict[str, str] | None = None,
                 grace_s: float = 10.0, reap_every_s: float = 5.0):
        try:
            import ray
        except ImportError:
            raise ConfigError(INSTALL_HINT) from None
        self._ray = ray
        self.store_url = absolute_store_url(store_url)
        self.show_progress = show_progress
        self.poll_s = poll_s
        self.env_vars = dict(env_vars or {})
        self.grace_s = grace_s
        self.reap_every_s = reap_every_s
        address = address or os.environ.get("RAY_ADDRESS") or None
        global _local_instance
        self.started_local = False
        if not ray.is_initialized():
            _local_instance = False
        if ray.is_initialized():
            if address:
                log.info("already connected to Ray; not connecting to %s", address)
        else:
            if address is None:
                os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
            try:
                ray.init(address=address, num_cpus=num_cpus if address is None else None, ignore_reinit_error=True,
                         include_dashboard=False, log_to_driver=False)
            except ConnectionError as e:
                raise ConfigError(f"cannot connect to the Ray cluster at {address}: {e}") from None
            self.started_local = _local_instance = address is None
        # On a fixed-size local instance an oversized job could never be placed: it gets the whole instance.
        self._cap_cpus = float(ray.cluster_resources().get("CPU", 0)) if _local_instance else None
        self._remote = ray.remote(_run_in_task)
        if address and self.store_url.startswith("sqlite") and len(ray.nodes()) > 1:
            log.warning("the Ray cluster has %d nodes but the results store is a SQLite file (%s): tasks on other "
                        "machines cannot reach it; use PostgreSQL", len(ray.nodes()), self.store_url)

    def close(self) -> None:
        """Stop the local Ray instance this executor started (nothing when it connected to a running one)."""
        global _local_instance
        if self.started_local and self._ray.is_initialized():
            self._ray.shutdown()
            _local_instance = False
        self.started_local = False

    # -- starting tasks -------------------------------------------------------------------------------------------
    def _options(self, job: dict) -> dict[str, Any]:
        resources = job.get("resources") or {}
        threads = max(1, int(job.get("threads") or 1))
        cpus: float = threads
        if self._cap_cpus:
            cpus = min(cpus, self._cap_cpus)
        opts: dict[str, Any] = {"num_cpus": cpus, "num_gpus": resources.get("gpus", 0) or 0, "max_retries": 0,
                                "runtime_env": {"env_vars": {"OMP_NUM_THREADS": str(threads),
                                                             "MKL_NUM_THREADS": str(threads),
                                                             "TOKENIZERS_PARALLELISM": "false", **self.env_vars}}}
        if resources.get("memory_gb"):
            opts["memory"] = int(float(resources["memory_gb"]) * 2**30)
        return opts

    def _start(self, job: dict) -> _Task:
        ref = self._remote.options(**self._options(job)).remote(self.store_url, job["id"], self.show_progress)
        log.info("job %s (%s): started as Ray task %s", job["id"][:8], job["name"], ref.hex()[:12])
        return _Task(ref, job["attempts"])

    # -- running ----------------------------------------------------------------------------------------------------
    def run(self, job_ids: Sequence[str], on_change: Callable[[dict], None] | None = None) -> dict[str, str]:
        """Run the given jobs (those still queued; running ones elsewhere are waited for) until every one is in a
        final state; returns id -> state. ``on_change`` sees each job whenever its state changes."""
        ray = self._ray
        queue = JobQueue(self.store_url)
        wanted = list(dict.fromkeys(job_ids))
        tasks: dict[str, _Task] = {}
        seen: dict[str, str] = {}
        start_failures: Counter[str] = Counter()
        last_reap = 0.0
        try:
            while True:
                jobs = queue.snapshot(wanted)
                if tasks:
                    by_ref = {t.ref: job_id for job_id, t in tasks.items()}
                    ready, _ = ray.wait(list(by_ref), num_returns=len(by_ref), timeout=0)
                    for ref in ready:
                        job_id = by_ref[ref]
                        jobs[job_id] = self._ended(queue, job_id, tasks.pop(job_id), start_failures)
                if time.monotonic() - last_reap >= self.reap_every_s:
                    last_reap = time.monotonic()
                    if queue.reap():  # workers of other executors (or lost nodes) that stopped beating
                        jobs = {j["id"]: j for j in queue.list(ids=wanted)}
                for job in jobs.values():
                    if seen.get(job["id"]) != job["status"]:
                        seen[job["id"]] = job["status"]
                        if on_change is not None:
                            on_change(job)
                if all(j["status"] in TERMINAL for j in jobs.values()) and not tasks:
                    return {i: jobs[i]["status"] for i in wanted}
                for job in jobs.values():
                    if job["status"] == "queued" and job["id"] not in tasks:
                        tasks[job["id"]] = self._start(job)
                if tasks:  # sleeps until a task ends or poll_s passed
                    ray.wait([t.ref for t in tasks.values()], num_returns=1, timeout=self.poll_s)
                else:
                    time.sleep(self.poll_s)
        except BaseException:
            self._stop(queue, tasks)
            raise

    def _ended(self, queue: JobQueue, job_id: str, task: _Task, start_failures: Counter) -> dict:
        """A task ended: if its job is still "running" under the task's claim, the task died without saying so."""
        ray = self._ray
        result, error = None, None
        try:
            result = ray.get(task.ref)
        except Exception as e:  # WorkerCrashedError, TaskCancelledError, OutOfMemoryError, RayTaskError, ...
            error = e
        job = queue.get(job_id)
        claimed_by_task = result != "skipped" and job["attempts"] == task.attempts + 1
        if job["status"] == "running" and claimed_by_task:
            reason = f"{type(error).__name__}: {_first_line(error)}" if error is not None else "no error"
            state = queue.fail(job_id, f"the Ray task ended while the job ran ({reason})", retry=True,
                               worker=job["worker"])
            log.warning("job %s (%s): Ray task ended while running (%s); job now %s", job_id[:8], job["name"],
                        reason, state)
            job = queue.get(job_id)
        elif error is not None and job["status"] == "queued" and job["attempts"] == task.attempts:
            start_failures[job_id] += 1  # the task failed before claiming the job (environment, import, ...)
            log.warning("job %s (%s): its Ray task failed before starting it: %s", job_id[:8], job["name"], error)
            if start_failures[job_id] >= MAX_START_FAILURES:
                raise EmbedlabError(f"job {job_id[:8]} ({job['name']}): its Ray task failed {MAX_START_FAILURES} "
                                    f"times before starting the job; last error: {error}")
        return job

    def _stop(self, queue: JobQueue, tasks: dict[str, _Task]) -> None:
        """Cancel the tasks (KeyboardInterrupt in each: run_job puts its job back), force-kill those that do not stop
        within grace_s, and put back any job still "running" under one of their claims."""
        ray = self._ray
        if not tasks:
            return
        refs = [t.ref for t in tasks.values()]
        for ref in refs:
            try:
                ray.cancel(ref, force=False)
            except Exception as e:
                log.warning("cancelling Ray task %s: %s", ref.hex()[:12], e)
        try:
            _, pending = ray.wait(refs, num_returns=len(refs), timeout=self.grace_s)
        except Exception:
            pending = refs
        for ref in pending:
            try:
                ray.cancel(ref, force=True)
            except Exception as e:
                log.warning("force-cancelling Ray task %s: %s", ref.hex()[:12], e)
        if pending:
            try:
                ray.wait(pending, num_returns=len(pending), timeout=self.grace_s)
            except Exception:
                pass
        for job_id, task in tasks.items():
            try:
                job = queue.get(job_id)
                if job["status"] == "running" and job["attempts"] == task.attempts + 1:
                    queue.fail(job_id, "stopped with the executor", retry=True, worker=job["worker"],
                               count_attempt=False)
            except Exception as e:  # never hide the error that stopped the executor
                log.warning("job %s: could not put it back in the queue: %s", job_id[:8], e)


def _first_line(error: BaseException | None) -> str:
    text = str(error).strip().splitlines()
    return text[0][:300] if text else ""
