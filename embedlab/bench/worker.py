"""A worker process of the local executor.

    python -m embedlab.bench.worker --db URL --job ID      # run one job, exit
    python -m embedlab.bench.worker --db URL --serve       # run the job ids read from stdin, one per line

In ``--serve`` mode (what the local executor starts) each job id read from stdin is run (embedlab.bench.jobs.run_job)
and answered with ``done <id>`` on stdout once the job is in the store's hands (done, failed, cancelled or back in the
queue); everything else the process prints goes to stderr (the executor's log), so the answers cannot be mixed with
library output. The worker exits at end of input, after ``--max-jobs`` jobs, or on Ctrl-C / SIGTERM (130; its job is
back in the queue). Each job's log lines also go to ``<log-dir>/<job id>.log``. Not meant to be started by hand.
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m embedlab.bench.worker")
    parser.add_argument("--db", required=True)
    parser.add_argument("--job")
    parser.add_argument("--serve", action="store_true")
    parser.add_argument("--max-jobs", type=int, default=50)
    parser.add_argument("--log-dir")
    parser.add_argument("--executor", default="local")
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args(argv)
    if bool(args.job) == args.serve:
        parser.error("give either --job ID or --serve")
    answers = sys.stdout
    if args.serve:  # keep stdout for the answers: anything printed by libraries goes to stderr instead
        answers = os.fdopen(os.dup(1), "w", buffering=1)
        os.dup2(2, 1)
        sys.stdout = sys.stderr
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    # SIGTERM as Ctrl-C: the job goes back to the queue instead of being left "running".
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    # SIGINT is how the executor stops a worker (Ctrl-C, cancel): Python leaves it ignored when the worker inherits
    # SIG_IGN (a `cmd &` in a non-interactive shell), and such a worker could never be stopped; so install it here.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    from .jobs import run_job

    def one(job_id: str) -> str:
        handler = None
        if args.log_dir:
            Path(args.log_dir).mkdir(parents=True, exist_ok=True)
            handler = logging.FileHandler(Path(args.log_dir) / f"{job_id}.log", encoding="utf-8")
            handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s"))
            logging.getLogger().addHandler(handler)
        try:
            state = run_job(args.db, job_id, executor=args.executor, show_progress=args.progress)
            logging.getLogger("embedlab.jobs").info("job %s: %s", job_id[:8], state)
            return state
        finally:
            if handler is not None:
                logging.getLogger().removeHandler(handler)
                handler.close()

    try:
        if not args.serve:
            one(args.job)
            return 0
        for n, line in enumerate(sys.stdin, 1):
            job_id = line.strip()
            if not job_id:
                continue
            one(job_id)
            answers.write(f"done {job_id}\n")
            answers.flush()
            if n >= args.max_jobs:
                break
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
