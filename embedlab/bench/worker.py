"""A worker process of the local executor: ``python -m embedlab.bench.worker --db URL --job ID``.

Runs one job (embedlab.bench.jobs.run_job) and exits 0 when the job reached a final state or was not queued, 130
when interrupted (the job is back in the queue). Not meant to be started by hand; ``embedlab jobs`` does it.
"""
from __future__ import annotations

import argparse
import logging
import signal
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m embedlab.bench.worker")
    parser.add_argument("--db", required=True)
    parser.add_argument("--job", required=True)
    parser.add_argument("--executor", default="local")
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    # SIGTERM as Ctrl-C: the job goes back to the queue instead of being left "running".
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    from .jobs import run_job

    try:
        state = run_job(args.db, args.job, executor=args.executor, show_progress=args.progress)
    except KeyboardInterrupt:
        return 130
    logging.getLogger("embedlab.jobs").info("job %s: %s", args.job[:8], state)
    return 0


if __name__ == "__main__":
    sys.exit(main())
