"""``embedlab jobs``: submit a job matrix, run queued jobs, list, show, cancel and retry them.

    embedlab jobs submit grid.yaml              # add the jobs (idempotent) and run them here until done
    embedlab jobs submit grid.yaml --no-wait    # only queue them; `embedlab jobs run` (here or elsewhere) runs them
    embedlab jobs list [--experiment E] [--status running]
    embedlab jobs show ID                       # status, progress, log tail, results
    embedlab jobs cancel ID / embedlab jobs retry ID
    embedlab jobs forget ID                     # drop a finished job's row (results and folder kept)

Every command works on the jobs table of the results store (``--db``, ``EMBEDLAB_RESULTS_DB``), so several processes
(or the web app) see the same jobs. Executors: ``local`` (worker processes, default), ``ray`` (``--address`` or
RAY_ADDRESS), ``inline`` (this process).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from ._common import _on_interrupt, _progress_bars, _say, _table, console

app = typer.Typer()
jobs_app = typer.Typer(help="Submit, run, list, show, cancel and retry jobs (model x dataset x config x seed).",
                       no_args_is_help=True)
app.add_typer(jobs_app, name="jobs")

_DB = typer.Option(None, "--db", help="results store URL or SQLite file (default: EMBEDLAB_RESULTS_DB)")
_EXECUTOR = typer.Option("local", "--executor", help="local | ray | inline")


def _executor(name: str, url: str, cpus: Optional[int], address: Optional[str], progress: bool):
    from ..bench.executors import make_executor

    kwargs: dict = {"show_progress": _progress_bars(progress)}
    if name in ("local", "ray") and cpus:
        kwargs["cpus"] = cpus
    if name == "ray" and address:
        kwargs["address"] = address
    return make_executor(name, url, **kwargs)


def _wait(queue, ids: list[str], executor: str, cpus, address, progress: bool) -> None:
    ex = _executor(executor, queue.store.url, cpus, address, progress)
    _on_interrupt("interrupted: running jobs went back to the queue; `embedlab jobs run` continues them")

    def said(job: dict) -> None:
        err = f" — {job['error'].strip().splitlines()[-1]}" if job["status"] == "failed" and job["error"] else ""
        _say(f"{job['id'][:8]} {job['name']} seed {job['seed']}: {job['status']}{err}")

    states = ex.run(ids, on_change=said)
    counts = {s: list(states.values()).count(s) for s in dict.fromkeys(states.values())}
    _say("jobs: " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    if any(s != "done" for s in states.values()):
        raise typer.Exit(1)


@jobs_app.command("submit")
def submit(
    spec: Path = typer.Argument(..., help="job matrix YAML (docs/jobs.md)"),
    db: Optional[str] = _DB,
    wait: bool = typer.Option(True, "--wait/--no-wait", help="run the jobs here until they finish"),
    executor: str = _EXECUTOR,
    cpus: Optional[int] = typer.Option(None, "--cpus", min=1, help="local executor: cores to fill (default: all)"),
    address: Optional[str] = typer.Option(None, "--address", help="ray executor: cluster address"),
    max_attempts: int = typer.Option(2, "--max-attempts", min=1, help="tries per job when a worker is lost"),
    requeue: bool = typer.Option(True, "--requeue/--no-requeue", help="put failed or cancelled jobs of the spec "
                                 "back in the queue (fresh attempts)"),
    show: bool = typer.Option(False, "--show", help="print the job matrix and stop (nothing is submitted)"),
    progress: bool = typer.Option(False, "--progress/--no-progress"),
) -> None:
    """Add the jobs of a matrix file (a job already known by config and seed is not added again) and run them."""
    from ..bench.jobs import JobQueue
    from ..bench.jobspec import expand, load_job_matrix

    jobs = expand(load_job_matrix(spec), str(spec))
    if show:
        console.print(_table(f"{len(jobs)} job(s) from {spec}", ["name", "kind", "model", "tasks", "seed", "folder"],
                             [[j.name, j.kind, j.model or "", ",".join(j.tasks), str(j.seed), str(f)]
                              for j, f in jobs]))
        return
    queue = JobQueue(db)
    before = {j["id"] for j in queue.list()}
    ids = queue.submit([j for j, _ in jobs], [f for _, f in jobs], max_attempts=max_attempts,
                       requeue_failed=requeue)
    added = set(ids) - before
    adopted = sum(1 for i in added if queue.get(i)["status"] == "done")  # their rows were in the store already
    _say(f"{len(ids)} job(s): {len(added) - adopted} new, "
         + (f"{adopted} done already (their results were in the store), " if adopted else "")
         + f"{len(ids) - len(added)} already known; store {queue.store.display_url}")
    if wait:
        _wait(queue, ids, executor, cpus, address, progress)


@jobs_app.command("run")
def run(
    db: Optional[str] = _DB,
    experiment: Optional[str] = typer.Option(None, "--experiment", help="only this experiment's jobs"),
    executor: str = _EXECUTOR,
    cpus: Optional[int] = typer.Option(None, "--cpus", min=1),
    address: Optional[str] = typer.Option(None, "--address"),
    progress: bool = typer.Option(False, "--progress/--no-progress"),
) -> None:
    """Run every queued job (of one experiment, if given) until it finishes."""
    from ..bench.jobs import JobQueue

    queue = JobQueue(db)
    queue.reap()
    ids = [j["id"] for j in queue.list(experiment=experiment, status="queued")]
    if not ids:
        _say("no queued jobs")
        return
    _wait(queue, ids, executor, cpus, address, progress)


@jobs_app.command("list")
def list_jobs(
    db: Optional[str] = _DB,
    experiment: Optional[str] = typer.Option(None, "--experiment"),
    status: Optional[str] = typer.Option(None, "--status", help="queued | running | done | failed | cancelled"),
) -> None:
    """The jobs in the store, oldest first."""
    from ..bench.jobs import JobQueue
    from ..bench.store import JOB_STATES, ResultsStore

    if status is not None and status not in JOB_STATES:
        raise typer.BadParameter(f"--status must be one of {', '.join(JOB_STATES)}; got {status!r}")
    queue = JobQueue(ResultsStore(db, create=False))
    import datetime as dt

    from ..bench.jobs import STALE_AFTER_S

    now = dt.datetime.now(dt.timezone.utc)
    rows = []
    for j in queue.list(experiment=experiment, status=status):
        progress = f"{100 * j['progress']:.0f}%" if j["progress"] is not None else ""
        state = j["status"]
        if state == "running" and j["heartbeat_at"] is not None:
            quiet = (now - j["heartbeat_at"]).total_seconds()
            if quiet > STALE_AFTER_S:  # its worker is probably gone; the next executor or `jobs run` reaps it
                state = f"running? (no heartbeat for {quiet / 60:.0f} min)"
        rows.append([j["id"][:8], j["experiment"] or "", j["name"], str(j["seed"]), j["kind"], state,
                     progress, str(j["attempts"]), (j["progress_text"] or "")[:40]])
    console.print(_table(f"jobs ({queue.store.display_url})",
                         ["id", "experiment", "name", "seed", "kind", "status", "progress", "tries", "doing"], rows))


@jobs_app.command("show")
def show(job_id: str = typer.Argument(..., help="job id or a unique prefix"), db: Optional[str] = _DB,
         as_json: bool = typer.Option(False, "--json", help="the whole job as JSON")) -> None:
    """One job: state, progress, timings, log tail, error and its results."""
    from ..bench.jobs import JobQueue
    from ..bench.store import ResultsStore

    queue = JobQueue(ResultsStore(db, create=False))
    job = queue.get(job_id)
    rows = queue.store.query(job_id=job["id"], metric="main_score")
    if as_json:
        print(json.dumps({**job, "results": rows}, default=str, indent=2))
        return
    for key in ("id", "experiment", "name", "kind", "seed", "status", "attempts", "max_attempts", "worker",
                "executor", "output_dir", "created_at", "started_at", "heartbeat_at", "finished_at", "progress_text"):
        console.print(f"{key}: {job[key]}")
    if job["timings"] and "seconds" in job["timings"]:
        console.print(f"seconds: {job['timings']['seconds']:.1f}")
    if rows:
        console.print(_table("results", ["task", "split", "main score"],
                             [[r["task"], r["split"], "n/a" if r["value"] is None else f"{r['value']:.2f}"]
                              for r in rows]))
    if job["error"]:
        console.print("error:\n" + job["error"].rstrip())
    if job["log_tail"]:
        console.print("log (last lines):\n" + job["log_tail"].rstrip())


@jobs_app.command("cancel")
def cancel(job_id: str = typer.Argument(...), db: Optional[str] = _DB) -> None:
    """Cancel a queued job now, or ask a running one to stop (within one heartbeat)."""
    from ..bench.jobs import JobQueue
    from ..bench.store import ResultsStore

    queue = JobQueue(ResultsStore(db, create=False))
    job = queue.get(job_id)
    _say(f"{job['id'][:8]} {job['name']}: {queue.cancel(job['id'])}")


@jobs_app.command("retry")
def retry(job_id: str = typer.Argument(...), db: Optional[str] = _DB,
          wait: bool = typer.Option(False, "--wait/--no-wait", help="run it here until it finishes"),
          executor: str = _EXECUTOR,
          cpus: Optional[int] = typer.Option(None, "--cpus", min=1),
          address: Optional[str] = typer.Option(None, "--address")) -> None:
    """Put a failed or cancelled job back in the queue (a training job resumes from its last checkpoint)."""
    from ..bench.jobs import JobQueue
    from ..bench.store import ResultsStore

    queue = JobQueue(ResultsStore(db, create=False))
    job = queue.get(job_id)
    _say(f"{job['id'][:8]} {job['name']}: {queue.retry(job['id'])}")
    if wait:
        _wait(queue, [job["id"]], executor, cpus, address, False)


@jobs_app.command("forget")
def forget(job_id: str = typer.Argument(...), db: Optional[str] = _DB) -> None:
    """Remove a done, failed or cancelled job from the jobs table (its results and folder stay), freeing its folder
    for a job of another configuration."""
    from ..bench.jobs import JobQueue
    from ..bench.store import ResultsStore

    queue = JobQueue(ResultsStore(db, create=False))
    job = queue.forget(job_id)
    _say(f"{job['id'][:8]} {job['name']}: forgotten; its folder {job['output_dir']} and its result rows are kept")
