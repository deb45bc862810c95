"""Executors: run queued jobs somewhere and wait for them. Two behind one interface, ``run(job_ids) -> states``.

- ``local`` (default): worker processes on this machine (``python -m embedlab.bench.worker --serve``), given jobs
  while the jobs' declared threads fit into ``cpus`` (default: the machine's cores) and reused from job to job (each
  job sets its own thread count). A worker that exits while its job is still "running" (SIGKILL, out of memory) has
  its job put back in the queue or failed (``JobQueue.fail``); Ctrl-C stops the workers, whose jobs go back to the
  queue.
- ``inline``: one job after another in this process (debugging, profiling; no isolation from a crash).
- ``ray``: each job a Ray task with its declared CPUs, GPUs and memory, on an existing cluster (``address`` or
  ``RAY_ADDRESS``) or a local instance. Installed with the ``ray`` extra.

Both only start jobs and watch them: claiming, heartbeats, results and retries are the queue's (jobs.py), so a job
behaves the same whichever executor ran it. Each job's log goes to ``<log_dir>/<job id>.log``.
"""
from __future__ import annotations

import logging
import os
import queue as queue_mod
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Sequence

from ..errors import ConfigError
from .jobs import TERMINAL, JobQueue

log = logging.getLogger("embedlab.jobs")
EXECUTORS = ("local", "ray", "inline")


class _Worker:
    """One worker process of the local executor: takes job ids on stdin, answers ``done <id>`` on its stdout."""

    def __init__(self, proc: subprocess.Popen):
        self.proc = proc
        self.job: str | None = None
        self.threads = 0
        self.replies: "queue_mod.Queue[str]" = queue_mod.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:  # ends when the worker exits
            self.replies.put(line.decode("utf-8", "replace").strip())

    def give(self, job_id: str, threads: int) -> None:
        self.job, self.threads = job_id, threads
        self.proc.stdin.write(f"{job_id}\n".encode())
        self.proc.stdin.flush()

    def finished(self) -> list[str]:
        done = []
        while True:
            try:
                line = self.replies.get_nowait()
            except queue_mod.Empty:
                return done
            if line.startswith("done ") and line[5:] == self.job:
                done.append(self.job)
                self.job, self.threads = None, 0


class LocalExecutor:
    """Worker processes on this machine, reused from job to job (a Python + torch start costs seconds; a tiny job,
    milliseconds). A worker serves at most ``jobs_per_worker`` jobs, then a fresh one takes its place."""

    name = "local"

    def __init__(self, store_url: str, cpus: int | None = None, log_dir: str | Path = "runs/job-logs",
                 poll_s: float = 0.2, show_progress: bool = False, jobs_per_worker: int = 50):
        self.store_url = store_url
        self.cpus = cpus or os.cpu_count() or 1
        self.log_dir = Path(log_dir)
        self.poll_s = poll_s
        self.show_progress = show_progress
        self.jobs_per_worker = jobs_per_worker

    def _start(self) -> _Worker:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
        cmd = [sys.executable, "-m", "embedlab.bench.worker", "--db", self.store_url, "--serve",
               "--executor", self.name, "--max-jobs", str(self.jobs_per_worker), "--log-dir", str(self.log_dir)] \
            + (["--progress"] if self.show_progress else [])
        log = open(self.log_dir / "workers.log", "ab")
        try:
            # start_new_session: a Ctrl-C in the terminal reaches this process only; it stops the workers itself.
            proc = subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                                    start_new_session=True)
        finally:
            log.close()
        return _Worker(proc)

    def run(self, job_ids: Sequence[str], on_change: Callable[[dict], None] | None = None) -> dict[str, str]:
        """Run the given jobs (those still queued; running ones elsewhere are waited for) until every one is in a
        final state; returns id -> state. ``on_change`` sees each job whenever its state changes."""
        queue = JobQueue(self.store_url)
        wanted = list(dict.fromkeys(job_ids))
        workers: list[_Worker] = []
        seen: dict[str, str] = {}
        last_reap = 0.0
        try:
            while True:
                jobs = queue.snapshot(wanted)
                for w in list(workers):
                    w.finished()
                    if w.proc.poll() is None:
                        continue
                    workers.remove(w)
                    if w.job is not None and queue.get(w.job)["status"] == "running":
                        # The worker died under its job without saying so (SIGKILL, out of memory, a crash).
                        state = queue.fail(w.job, f"worker process exited with code {w.proc.returncode} while the "
                                                  "job ran", retry=True)
                        log.warning("job %s: worker exited with %s; job now %s", w.job[:8], w.proc.returncode, state)
                        jobs[w.job] = queue.get(w.job)
                if time.monotonic() - last_reap > 5:  # workers of other processes or machines that stopped beating
                    queue.reap()
                    last_reap = time.monotonic()
                for job in jobs.values():
                    if seen.get(job["id"]) != job["status"]:
                        seen[job["id"]] = job["status"]
                        if on_change is not None:
                            on_change(job)
                busy = [w for w in workers if w.job is not None]
                if all(j["status"] in TERMINAL for j in jobs.values()) and not busy:
                    return {i: jobs[i]["status"] for i in wanted}
                used = sum(w.threads for w in busy)
                given = {w.job for w in busy}
                for job in jobs.values():
                    if job["status"] != "queued" or job["id"] in given:
                        continue
                    need = max(1, job["threads"])
                    if used and used + need > self.cpus:
                        continue
                    idle = next((w for w in workers if w.job is None and w.proc.poll() is None), None)
                    if idle is None:
                        idle = self._start()
                        workers.append(idle)
                    idle.give(job["id"], need)
                    used += need
                time.sleep(self.poll_s)
        except BaseException:
            for w in workers:  # Ctrl-C or an error here: the workers put their jobs back and stop
                if w.proc.poll() is None:
                    w.proc.send_signal(signal.SIGINT)
            deadline = time.monotonic() + 30
            for w in workers:
                try:
                    w.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    w.proc.kill()
                    w.proc.wait()
                if w.job is not None and queue.get(w.job)["status"] == "running":
                    queue.fail(w.job, "stopped with the executor", retry=True, count_attempt=False)
            raise
        finally:
            for w in workers:  # no more work: end of input makes an idle worker exit
                try:
                    if w.proc.poll() is None:
                        w.proc.stdin.close()
                except OSError:
                    pass
            for w in workers:
                try:
                    w.proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    w.proc.kill()


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
