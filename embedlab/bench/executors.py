"""Executors: run queued jobs somewhere and wait for them. Two behind one interface, ``run(job_ids) -> states``.

- ``local`` (default): worker processes on this machine (``python -m embedlab.bench.worker``), started while the
  jobs' declared threads fit into ``cpus`` (default: the machine's cores), each with its thread count set in its
  environment. A worker that exits while its job is still "running" (SIGKILL, out of memory) has its job put back
  in the queue or failed (``JobQueue.fail``); Ctrl-C stops the workers, whose jobs go back to the queue.
- ``inline``: one job after another in this process (debugging, profiling; no isolation from a crash).
- ``ray``: each job a Ray task with its declared CPUs, GPUs and memory, on an existing cluster (``address`` or
  ``RAY_ADDRESS``) or a local instance. Installed with the ``ray`` extra.

Both only start jobs and watch them: claiming, heartbeats, results and retries are the queue's (jobs.py), so a job
behaves the same whichever executor ran it. Logs of each worker go to ``<log_dir>/<job id>.log``.
"""
from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

from ..errors import ConfigError
from .jobs import TERMINAL, JobQueue

log = logging.getLogger("embedlab.jobs")
EXECUTORS = ("local", "ray", "inline")


class LocalExecutor:
    name = "local"

    def __init__(self, store_url: str, cpus: int | None = None, log_dir: str | Path = "runs/job-logs",
                 poll_s: float = 0.5, show_progress: bool = False):
        self.store_url = store_url
        self.cpus = cpus or os.cpu_count() or 1
        self.log_dir = Path(log_dir)
        self.poll_s = poll_s
        self.show_progress = show_progress

    def _start(self, job: dict) -> subprocess.Popen:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        threads = str(max(1, job["threads"]))
        env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads,
               "TOKENIZERS_PARALLELISM": "false"}
        cmd = [sys.executable, "-m", "embedlab.bench.worker", "--db", self.store_url, "--job", job["id"],
               "--executor", self.name] + (["--progress"] if self.show_progress else [])
        out = open(self.log_dir / f"{job['id']}.log", "ab")
        try:
            # start_new_session: a Ctrl-C in the terminal reaches this process only; it stops the workers itself.
            return subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            out.close()

    def run(self, job_ids: Sequence[str], on_change: Callable[[dict], None] | None = None) -> dict[str, str]:
        """Run the given jobs (those still queued; running ones elsewhere are waited for) until every one is in a
        final state; returns id -> state. ``on_change`` sees each job whenever its state changes."""
        queue = JobQueue(self.store_url)
        wanted = list(dict.fromkeys(job_ids))
        procs: dict[str, tuple[subprocess.Popen, int]] = {}
        seen: dict[str, str] = {}
        try:
            while True:
                jobs = {j["id"]: j for j in queue.list(ids=wanted)}
                missing = [i for i in wanted if i not in jobs]
                if missing:
                    raise ConfigError(f"no job {missing[0]} in the store")
                for job_id, (proc, _) in list(procs.items()):
                    code = proc.poll()
                    if code is None:
                        continue
                    del procs[job_id]
                    job = queue.get(job_id)
                    if job["status"] == "running":  # the worker died without saying so (SIGKILL, OOM, crash)
                        state = queue.fail(job_id, f"worker process exited with code {code} while the job ran",
                                           retry=True)
                        log.warning("job %s (%s): worker exited with %s; job now %s", job_id[:8], job["name"],
                                    code, state)
                    jobs[job_id] = queue.get(job_id)
                queue.reap()  # workers of other processes or machines that stopped beating
                for job in jobs.values():
                    if seen.get(job["id"]) != job["status"]:
                        seen[job["id"]] = job["status"]
                        if on_change is not None:
                            on_change(job)
                if all(j["status"] in TERMINAL for j in jobs.values()) and not procs:
                    return {i: jobs[i]["status"] for i in wanted}
                busy = sum(t for _, t in procs.values())
                for job in jobs.values():
                    if job["status"] != "queued" or job["id"] in procs:
                        continue
                    need = max(1, job["threads"])
                    if busy and busy + need > self.cpus:
                        continue
                    procs[job["id"]] = (self._start(job), need)
                    busy += need
                time.sleep(self.poll_s)
        except BaseException:
            for proc, _ in procs.values():  # Ctrl-C or an error here: the workers put their jobs back and stop
                if proc.poll() is None:
                    proc.send_signal(2)
            deadline = time.monotonic() + 30
            for job_id, (proc, _) in procs.items():
                try:
                    proc.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                if queue.get(job_id)["status"] == "running":
                    queue.fail(job_id, "stopped with the executor", retry=True)
            raise


class InlineExecutor:
    """Runs the jobs one after another in this process (no isolation: for debugging, a profiler, or a notebook)."""

    name = "inline"

    def __init__(self, store_url: str, show_progress: bool = False, **_):
        self.store_url = store_url
        self.show_progress = show_progress

    def run(self, job_ids: Sequence[str], on_change: Callable[[dict], None] | None = None) -> dict[str, str]:
        from .jobs import run_job

        queue = JobQueue(self.store_url)
        for job_id in dict.fromkeys(job_ids):
            while queue.get(job_id)["status"] == "queued":  # a retryable failure goes back to the queue
                if on_change is not None:
                    on_change(queue.get(job_id))
                run_job(self.store_url, job_id, executor=self.name, show_progress=self.show_progress)
            if on_change is not None:
                on_change(queue.get(job_id))
        return {i: queue.get(i)["status"] for i in job_ids}


def make_executor(name: str, store_url: str, **kwargs):
    if name == "inline":
        return InlineExecutor(store_url, **kwargs)
    if name == "local":
        return LocalExecutor(store_url, **kwargs)
    if name == "ray":
        from .ray_executor import RayExecutor

        if "cpus" in kwargs:  # the size of a local Ray instance this process starts (ignored on a cluster)
            kwargs["num_cpus"] = kwargs.pop("cpus")
        return RayExecutor(store_url, **{k: v for k, v in kwargs.items()
                                         if k in ("address", "show_progress", "num_cpus")})
    raise ConfigError(f"unknown executor {name!r}; choose one of: {', '.join(EXECUTORS)}")
