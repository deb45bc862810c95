"""The job runner's state and its worker: the ``jobs`` table of the results store is the source of truth.

    queue = JobQueue(store)
    ids = queue.submit([JobSpec(kind="evaluate", name="minilm", tasks=("stsb",), seed=0)], output_dirs=["runs/x"])
    run_job(store.url, ids[0])            # what a worker process (local executor) or a Ray task runs
    queue.get(ids[0])["status"]           # queued -> running -> done | failed | cancelled

States: ``queued`` (waiting), ``running`` (a worker claimed it and beats its heartbeat), ``done`` (its result rows
are in the store, written in the same transaction that marks it done), ``failed`` (an error a retry cannot fix,
or attempts used up), ``cancelled``. Every change is a compare-and-set UPDATE, so two workers never run one job.

- Submitting is idempotent: a job is keyed by its config hash and seed; submitting the same spec again returns the
  existing job and never re-runs a finished one (``requeue_failed`` puts failed/cancelled ones back in the queue).
  A spec whose result rows are in the store already (rows imported from a committed results file into a fresh
  store) is recorded as done with them instead of running again.
- Two jobs never share an output folder: a submit that names the folder of another job (another configuration or
  seed, in any state but cancelled) is refused; ``forget`` removes a finished job's row to free its folder.
- A worker that dies (SIGKILL, OOM) is noticed by its executor (the process exit) or by ``reap`` (a heartbeat
  older than ``stale_after``): the job goes back to the queue while attempts remain, else it fails — it is never left
  "running". A retried training job resumes from its last checkpoint (the trainer's run folder).
- Cancelling a queued job is immediate; a running one gets ``cancel_requested`` and its worker stops at the next
  heartbeat (KeyboardInterrupt in the job's thread), marking it cancelled.

The queue knows kinds only by name (embedlab.jobkinds); it never imports a domain. Executors (local processes, Ray)
are in executors.py.
"""
from __future__ import annotations

import _thread
import collections
import datetime as dt
import logging
import os
import socket
import threading
import time
import traceback
import uuid
from pathlib import Path
from typing import Any, Iterable, Sequence

from sqlalchemy import and_, case, delete, or_, select, update
from sqlalchemy import false as sa_false
from sqlalchemy import true as sa_true
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ..errors import ConfigError, EmbedlabError
from ..jobkinds import JobContext, JobSpec, get_kind
from ..outputs import check_claimable, claim_folder
from ..results import json_safe, provenance
from .store import Job, Result, ResultsStore

log = logging.getLogger("embedlab.jobs")

TERMINAL = ("done", "failed", "cancelled")
LIVE = ("queued", "running")
HEARTBEAT_S = float(os.environ.get("EMBEDLAB_HEARTBEAT_S", 5.0))  # seconds between a worker's beats
STALE_AFTER_S = 120.0  # a running job whose heartbeat is older than this lost its worker
LOG_TAIL_LINES = 40


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class JobQueue:
    """Reads and changes the ``jobs`` table of ``store`` (a ResultsStore or URL)."""

    def __init__(self, store: ResultsStore | str | None = None):
        self.store = store if isinstance(store, ResultsStore) else ResultsStore(store)
        self.engine = self.store.engine

    # -- submitting ---------------------------------------------------------------------------------------------
    def submit(self, specs: Sequence[JobSpec], output_dirs: Sequence[str | Path], max_attempts: int = 2,
               requeue_failed: bool = False) -> list[str]:
        """Add the jobs that are not in the table yet (keyed by config hash + seed); return every spec's job id.

        All or nothing: each kind's ``validate`` runs for every spec first, and the jobs are added in one
        transaction, so a refused spec leaves no job of the batch behind. A folder already belonging to another job
        (another configuration or seed, in any state but cancelled) is refused: two jobs never write one folder.
        ``requeue_failed`` puts failed and cancelled jobs of the batch back in the queue with fresh attempts."""
        if len(specs) != len(output_dirs):
            raise ValueError("one output folder per job")
        for spec in specs:
            kind = get_kind(spec.kind)
            if kind.validate is not None:
                kind.validate(spec)
        outs = [str(check_claimable(Path(out).resolve(), f"job {spec.name} folder"))
                for spec, out in zip(specs, output_dirs)]  # never a folder of the user's own files
        keys = [spec.config_hash() for spec in specs]
        seen: dict[str, tuple[str, int]] = {}
        for spec, out, key in zip(specs, outs, keys):  # within the batch itself
            if seen.setdefault(out, (key, spec.seed)) != (key, spec.seed):
                raise ConfigError(f"job {spec.name} (seed {spec.seed}): two jobs of this submission would write {out}")
        for attempt in range(5):
            try:
                with Session(self.engine) as session, session.begin():
                    return [self._add(session, spec, out, key, max_attempts, requeue_failed)
                            for spec, out, key in zip(specs, outs, keys)]
            except IntegrityError:
                # Another process added one of these jobs between our look and our insert: the whole batch rolled
                # back; look again (those jobs are found now). No savepoints: SQLite's driver commits at RELEASE.
                if attempt == 4:
                    raise
        raise AssertionError("unreachable")

    def _add(self, session: Session, spec: JobSpec, out: str, key: str, max_attempts: int,
             requeue_failed: bool) -> str:
        def same_job():
            return session.scalars(select(Job).where(Job.config_hash == key, Job.seed == spec.seed)).first()

        existing = same_job()
        if existing is None:
            clash = session.scalars(select(Job).where(Job.output_dir == out, Job.status != "cancelled",
                                                      or_(Job.config_hash != key, Job.seed != spec.seed))).first()
            if clash is not None:
                raise ConfigError(f"job {spec.name} (seed {spec.seed}) would write {out}, the folder of job "
                                  f"{clash.id[:8]} ({clash.name}, seed {clash.seed}, {clash.status}) of another "
                                  f"configuration; give it another folder, or `embedlab jobs forget {clash.id[:8]}` "
                                  "and move that folder away")
            adopted = self._adopt_stored_results(session, spec, out, key)
            if adopted is not None:
                return adopted
            job = Job(id=uuid.uuid4().hex, kind=spec.kind, domain=get_kind(spec.kind).domain,
                      experiment=spec.experiment, name=spec.name, spec=json_safe(spec.to_dict()), config_hash=key,
                      seed=spec.seed, status="queued", attempts=0, max_attempts=max_attempts, threads=spec.threads,
                      resources=json_safe(spec.resources) or None, output_dir=out, cancel_requested=False,
                      created_at=_now())
            session.add(job)
            session.flush()  # a duplicate from another process fails here (IntegrityError: submit looks again)
            return job.id
        if requeue_failed and existing.status in ("failed", "cancelled"):
            existing.status, existing.error, existing.cancel_requested = "queued", None, False
            existing.attempts, existing.finished_at = 0, None
        return existing.id

    def _adopt_stored_results(self, session: Session, spec: JobSpec, out: str, key: str) -> str | None:
        """A job the table does not know whose result rows are in the store already (a fresh store into which a
        committed results file was imported, or a store whose job table was cleared): recorded as done with those
        rows, not run again. Returns the job's id, or None when the store holds no rows of this config and seed."""
        rows = session.execute(select(Result.job_id, Result.run_id).where(
            Result.config_hash == key, Result.seed == spec.seed, Result.status == "ok")).all()
        if not rows:
            return None
        old_id = next((r.job_id for r in rows if r.job_id), None)
        taken = old_id is not None and session.get(Job, old_id) is not None
        job_id = old_id if old_id and not taken else uuid.uuid4().hex
        now = _now()
        session.add(Job(id=job_id, kind=spec.kind, domain=get_kind(spec.kind).domain, experiment=spec.experiment,
                        name=spec.name, spec=json_safe(spec.to_dict()), config_hash=key, seed=spec.seed,
                        status="done", attempts=0, max_attempts=0, threads=spec.threads,
                        resources=json_safe(spec.resources) or None, output_dir=out, cancel_requested=False,
                        progress=1.0, progress_text="its results were already in the store",
                        result_run_ids=sorted({r.run_id for r in rows if r.run_id}),
                        timings={"adopted_from_results": True}, created_at=now, finished_at=now))
        session.flush()
        log.info("job %s (seed %d): its results are in the store already; recorded as done", spec.name, spec.seed)
        return job_id

    def forget(self, job_id: str) -> dict[str, Any]:
        """Remove a finished, failed or cancelled job from the table (its result rows and its folder stay), so that
        its folder may be given to another job. A queued or running job is refused: cancel it first."""
        job = self.get(job_id)
        with Session(self.engine) as session, session.begin():
            gone = session.execute(delete(Job).where(Job.id == job["id"], Job.status.in_(TERMINAL)))
        if gone.rowcount != 1:
            raise ConfigError(f"job {job['id'][:8]} is {job['status']}; cancel it before forgetting it")
        return job

    def adopt(self, spec: JobSpec, output_dir: str | Path, rows: Sequence[dict[str, Any]]) -> str:
        """Record a job that was done before the job table knew it (an experiment's imported records): a done
        job row and its result rows, in one transaction. A job already known gets the rows as its newest results.
        Returns the job's id."""
        key = spec.config_hash()
        config = {k: v for k, v in spec.to_dict().items() if k not in ("threads", "resources")}
        with Session(self.engine) as session, session.begin():
            existing = session.scalars(select(Job).where(Job.config_hash == key, Job.seed == spec.seed)).first()
            job_id = existing.id if existing is not None else uuid.uuid4().hex
            objects, run_id = self.store.result_objects(
                [{**r, "job_id": job_id, "config": config, "config_hash": key} for r in rows])
            if existing is not None:  # rows recorded later for a known job: they are its newest results
                session.add_all(objects)
                return job_id
            now = _now()
            session.add(Job(id=job_id, kind=spec.kind, domain=get_kind(spec.kind).domain, experiment=spec.experiment,
                            name=spec.name, spec=json_safe(spec.to_dict()), config_hash=key, seed=spec.seed,
                            status="done", attempts=0, max_attempts=0, threads=spec.threads,
                            output_dir=str(Path(output_dir).resolve()), cancel_requested=False, progress=1.0,
                            progress_text="imported from the experiment's records", result_run_ids=[run_id],
                            timings={"imported": True}, created_at=now, finished_at=now))
            session.add_all(objects)
        return job_id

    # -- reading ------------------------------------------------------------------------------------------------
    def find(self, spec: JobSpec) -> dict[str, Any] | None:
        """The job of this configuration and seed, as a dict, or None when the table does not know it."""
        with Session(self.engine) as session:
            job = session.scalars(select(Job).where(Job.config_hash == spec.config_hash(),
                                                    Job.seed == spec.seed)).first()
            return None if job is None else job.to_dict()

    def get(self, job_id: str) -> dict[str, Any]:
        """The job with this id (or unique id prefix, as ``embedlab jobs`` shows them), as a dict."""
        with Session(self.engine) as session:
            found = session.scalars(select(Job).where(Job.id.startswith(job_id, autoescape=True))).all()
        if not found:
            raise ConfigError(f"no job {job_id!r} in {self.store.display_url}")
        if len(found) > 1:
            raise ConfigError(f"job id prefix {job_id!r} matches {len(found)} jobs; give more characters")
        return found[0].to_dict()

    def list(self, experiment: str | None = None, status: str | Iterable[str] | None = None,
             ids: Iterable[str] | None = None) -> list[dict[str, Any]]:
        stmt = select(Job)
        if experiment is not None:
            stmt = stmt.where(Job.experiment == experiment)
        if status is not None:
            stmt = stmt.where(Job.status.in_([status] if isinstance(status, str) else list(status)))
        if ids is not None:
            stmt = stmt.where(Job.id.in_(list(ids)))
        with Session(self.engine) as session:
            return [j.to_dict() for j in session.scalars(stmt.order_by(Job.created_at, Job.id))]

    def snapshot(self, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """id -> job for exactly these ids (what an executor looks at on each round); ConfigError if one is gone."""
        jobs = {j["id"]: j for j in self.list(ids=ids)}
        missing = [i for i in ids if i not in jobs]
        if missing:
            raise ConfigError(f"no job {missing[0]} in {self.store.display_url}")
        return jobs

    # -- state changes (each one compare-and-set) -------------------------------------------------------------------
    def _update(self, job_id: str, where: Sequence = (), **values) -> bool:
        with Session(self.engine) as session, session.begin():
            done = session.execute(update(Job).where(Job.id == job_id, *where).values(**values))
        return done.rowcount == 1

    def claim(self, job_id: str, worker: str, executor: str) -> dict[str, Any] | None:
        """queued -> running for this worker; None when someone else has it (or it is no longer queued)."""
        now = _now()
        with Session(self.engine) as session, session.begin():
            done = session.execute(update(Job).where(Job.id == job_id, Job.status == "queued",
                                                     Job.cancel_requested.is_(False))
                                   .values(status="running", attempts=Job.attempts + 1, worker=worker,
                                           executor=executor, started_at=now, heartbeat_at=now, error=None))
        return self.get(job_id) if done.rowcount == 1 else None

    def heartbeat(self, job_id: str, worker: str, progress: float | None = None, text: str | None = None,
                  log_tail: str | None = None) -> bool:
        """Record that ``worker`` is alive; returns True when the job should stop (cancelled, or taken away)."""
        values: dict[str, Any] = {"heartbeat_at": _now()}
        if progress is not None:
            values["progress"] = float(progress)
        if text is not None:
            values["progress_text"] = text[:512]
        if log_tail is not None:
            values["log_tail"] = log_tail
        if not self._update(job_id, (Job.status == "running", Job.worker == worker), **values):
            return True  # reaped or otherwise no longer ours: stop
        return bool(self.get(job_id)["cancel_requested"])

    def finish(self, job_id: str, worker: str, rows: Sequence[dict[str, Any]], timings: dict[str, Any],
               log_tail: str | None = None) -> str | None:
        """Write the job's result rows and mark it done, in one transaction; returns the run id of its rows
        (None when the job was taken from this worker meanwhile: then nothing is written)."""
        objects, run_id = self.store.result_objects(rows) if rows else ([], None)
        with Session(self.engine) as session, session.begin():
            done = session.execute(update(Job).where(Job.id == job_id, Job.status == "running", Job.worker == worker)
                                   .values(status="done", progress=1.0, progress_text="done", finished_at=_now(),
                                           result_run_ids=[run_id] if run_id else [], timings=json_safe(timings),
                                           log_tail=log_tail))
            if done.rowcount != 1:
                session.rollback()
                return None
            session.add_all(objects)
        return run_id

    def fail(self, job_id: str, error: str, retry: bool, worker: str | None = None,
             log_tail: str | None = None, count_attempt: bool = True) -> str:
        """A running job stopped with ``error``: back to the queue when ``retry`` and attempts remain, cancelled when a
        cancel was asked for, else failed — decided inside one UPDATE, so a cancel arriving meanwhile cannot leave
        the job queued with its cancel flag set (claim would then refuse it forever). ``count_attempt=False``
        (an interruption, not a failure of the job) gives the attempt back. Returns the new state."""
        attempts = Job.attempts if count_attempt else Job.attempts - 1
        requeue = and_(sa_true() if retry else sa_false(), attempts < Job.max_attempts,
                       Job.cancel_requested.is_(False))
        state = case((requeue, "queued"), (Job.cancel_requested.is_(True), "cancelled"), else_="failed")
        where = [Job.status == "running"] + ([Job.worker == worker] if worker else [])
        values: dict[str, Any] = {"status": state, "error": error[-4000:], "worker": None, "attempts": attempts,
                                  "finished_at": case((requeue, None), else_=_now())}
        if log_tail is not None:
            values["log_tail"] = log_tail
        self._update(job_id, where, **values)
        return self.get(job_id)["status"]

    def cancel(self, job_id: str) -> str:
        """queued -> cancelled now; running -> cancel_requested (its worker stops within a heartbeat)."""
        job = self.get(job_id)
        if self._update(job["id"], (Job.status == "queued",), status="cancelled", cancel_requested=True,
                        finished_at=_now()):
            return "cancelled"
        if self._update(job["id"], (Job.status == "running",), cancel_requested=True):
            return "cancelling"
        return self.get(job["id"])["status"]

    def retry(self, job_id: str) -> str:
        """failed / cancelled -> queued with fresh attempts (a training job resumes from its last checkpoint)."""
        job = self.get(job_id)
        if not self._update(job["id"], (Job.status.in_(("failed", "cancelled")),), status="queued", attempts=0,
                            cancel_requested=False, error=None, finished_at=None, worker=None):
            raise ConfigError(f"job {job['id'][:8]} is {job['status']}; only failed or cancelled jobs are retried")
        return "queued"

    def rerun(self, job_id: str) -> str:
        """done -> queued with fresh attempts: the job runs again (``embedlab experiment --rerun``). Its folder is
        kept: a training job reuses a finished model of the same recipe and resumes a partial one, so a model is
        retrained only where its folder lacks it (a job adopted from committed records on another machine). The
        rows it stores then are newer than its old ones, which the experiment's export replaces with them."""
        job = self.get(job_id)
        # A job adopted from records was made with max_attempts 0 (it was never to run): give it the usual two.
        attempts = case((Job.max_attempts < 2, 2), else_=Job.max_attempts)
        if not self._update(job["id"], (Job.status == "done",), status="queued", attempts=0, max_attempts=attempts,
                            progress=None, progress_text=None, cancel_requested=False, error=None, finished_at=None,
                            worker=None):
            raise ConfigError(f"job {job['id'][:8]} is {job['status']}; only done jobs are run again "
                              "(`embedlab jobs retry` puts back failed or cancelled ones)")
        return "queued"

    def reap(self, stale_after: float = STALE_AFTER_S, worker: str | None = None) -> list[str]:
        """Running jobs whose worker is gone — heartbeat older than ``stale_after`` seconds, or (``worker`` given)
        claimed by that worker — go back to the queue (or fail when attempts are used up). Returns their ids."""
        cutoff = _now() - dt.timedelta(seconds=stale_after)
        cond = [Job.heartbeat_at < cutoff] + ([Job.worker == worker] if worker else [])
        with Session(self.engine) as session:
            lost = [j.id for j in session.scalars(select(Job).where(Job.status == "running", or_(*cond)))]
        for job_id in lost:
            self.fail(job_id, "the worker stopped without finishing (killed, or no heartbeat for "
                              f"{stale_after:.0f} s)", retry=True)
        return lost


# -- the worker ---------------------------------------------------------------------------------------------------
class _Tail(logging.Handler):
    """Keeps the job's last log lines for the heartbeat (``embedlab jobs show``)."""

    def __init__(self, n: int = LOG_TAIL_LINES):
        super().__init__(logging.INFO)
        self.lines: collections.deque[str] = collections.deque(maxlen=n)
        self.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s", "%H:%M:%S"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append(self.format(record))
        except Exception:  # a log line must never break the job
            pass

    def text(self) -> str:
        return "\n".join(self.lines)


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def run_job(store_url: str, job_id: str, executor: str = "local", show_progress: bool = False,
            heartbeat_s: float | None = None) -> str:
    """Claim job ``job_id`` and run it in this process; returns its final state ("skipped" when it was not
    queued). Used by worker processes and Ray tasks alike."""
    queue = JobQueue(store_url)
    me = worker_name()
    job = queue.claim(job_id, me, executor)
    if job is None:
        return "skipped"
    spec = JobSpec.from_dict(job["spec"])
    tail = _Tail()
    root = logging.getLogger("embedlab")
    root.addHandler(tail)
    if root.level == logging.NOTSET or root.level > logging.INFO:
        root.setLevel(logging.INFO)
    state: dict[str, Any] = {"progress": 0.0, "text": "starting", "stop": False}
    stop_beating = threading.Event()

    def on_progress(fraction: float | None, text: str) -> None:
        if fraction is not None:
            state["progress"] = fraction
        state["text"] = text

    def beat() -> None:
        while not stop_beating.wait(heartbeat_s or HEARTBEAT_S):
            try:
                if queue.heartbeat(job_id, me, state["progress"], state["text"], tail.text()):
                    state["stop"] = True
                    _thread.interrupt_main()  # KeyboardInterrupt in the job's thread: it stops where it is
                    return
            except Exception as e:  # a database hiccup: try again at the next beat
                log.warning("heartbeat of job %s failed: %s", job_id[:8], e)

    import torch

    torch.set_num_threads(max(1, spec.threads))
    t0 = time.perf_counter()
    beater = threading.Thread(target=beat, name=f"heartbeat-{job_id[:8]}", daemon=True)
    beater.start()
    try:
        # The job's folder is claimed (new, empty or embedlab's; marked) before the kind writes anything into it.
        out = claim_folder(job["output_dir"], f"job {spec.name} folder", kind=f"job:{spec.kind}")
        ctx = JobContext(out, threads=spec.threads, show_progress=show_progress, on_progress=on_progress)
        outcome = get_kind(spec.kind).run(spec, ctx)
        stop_beating.set()
        config = {k: v for k, v in spec.to_dict().items() if k not in ("threads", "resources")}
        rows = [{**r, "job_id": job_id, "experiment": spec.experiment, "seed": spec.seed, "config": config,
                 "config_hash": spec.config_hash()} for r in outcome.rows]
        timings = {"seconds": time.perf_counter() - t0, **_info_summary(outcome.info), "provenance": provenance()}
        run_id = queue.finish(job_id, me, rows, timings, tail.text())
        return "done" if run_id is not None or not rows else queue.get(job_id)["status"]
    except KeyboardInterrupt:
        stop_beating.set()
        if state["stop"]:
            return queue.fail(job_id, "cancelled", retry=False, worker=me, log_tail=tail.text())
        queue.fail(job_id, "interrupted (Ctrl-C / SIGINT): back to the queue", retry=True, worker=me,
                   log_tail=tail.text(), count_attempt=False)
        raise
    except EmbedlabError as e:  # bad config or data: the same error on every attempt, so no retry
        stop_beating.set()
        return queue.fail(job_id, f"{type(e).__name__}: {e}", retry=False, worker=me, log_tail=tail.text())
    except Exception:
        stop_beating.set()
        return queue.fail(job_id, traceback.format_exc(limit=20), retry=True, worker=me, log_tail=tail.text())
    finally:
        stop_beating.set()
        root.removeHandler(tail)


def _info_summary(info: dict[str, Any]) -> dict[str, Any]:
    """The outcome's info as JSON (sweeps and paths included); anything not JSON-able is shown as text."""
    try:
        return json_safe(info)
    except TypeError:
        return {k: str(v) for k, v in info.items()}
