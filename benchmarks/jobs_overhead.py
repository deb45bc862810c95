"""Scheduling overhead of the job runner: N tiny real jobs through each executor against the same work in a loop.

    python benchmarks/jobs_overhead.py                   # 100 jobs; writes docs/results/jobs_overhead.json
    python benchmarks/jobs_overhead.py --jobs 20 --executors inline,local

Each job is an ``evaluate`` job of a tiny random BERT (2 layers, hidden 32, the MiniLM tokenizer) on 16 STS-B dev
pairs — a job whose own work is a few milliseconds, so what is measured is the runner: the store round trips
(submit, claim, heartbeat, finish with its rows), and for ``local`` a worker process per job (Python + torch import),
for ``ray`` a Ray task. The reference is a plain loop calling the same job function (``text_jobs.run_evaluate``) in
this process with no store. Overhead per job = (executor wall time - loop wall time) / N. The jobs' scores are
checked to be equal to the loop's, so every path did the same work.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))


def _tiny_model(folder: Path) -> str:
    from conftest import make_tiny_bert

    from embedlab.text import Embedder

    backbone, tok = make_tiny_bert()
    Embedder(backbone, tok, max_length=32, name="tiny-bert").save(folder)
    return str(folder)


def _specs(model: str, n: int, tag: str):
    from embedlab.jobkinds import JobSpec

    # Distinct configs (batch size 1..n) so that every job is its own job, not a duplicate of the first.
    return [JobSpec(kind="evaluate", name=f"{tag}-{i}", model=model, tasks=("stsb-dev",), seed=0, experiment=tag,
                    config={"eval": {"batch_size": i + 1, "limit": 16}}) for i in range(n)]


def run_loop(specs, work: Path) -> tuple[float, list[float]]:
    from embedlab.jobkinds import JobContext
    from embedlab.text_jobs import run_evaluate

    t0 = time.perf_counter()
    scores = []
    for s in specs:
        out = run_evaluate(s, JobContext(work / s.name, threads=1))
        scores.append(next(r["value"] for r in out.rows if r["metric"] == "main_score"))
    return time.perf_counter() - t0, scores


def run_executor(name: str, specs, work: Path, cpus: int) -> tuple[float, list[float]]:
    from embedlab.bench.executors import make_executor
    from embedlab.bench.jobs import JobQueue

    url = f"sqlite:///{work / f'{name}.sqlite'}"
    queue = JobQueue(url)
    kwargs = {"cpus": cpus} if name in ("local", "ray") else {}
    if name == "local":
        kwargs["log_dir"] = work / "logs"
    executor = make_executor(name, url, **kwargs)
    t0 = time.perf_counter()
    ids = queue.submit(specs, [work / name / s.name for s in specs])
    states = executor.run(ids)
    seconds = time.perf_counter() - t0
    if hasattr(executor, "close"):
        executor.close()
    bad = {k: v for k, v in states.items() if v != "done"}
    if bad:
        raise SystemExit(f"{name}: {len(bad)} job(s) not done: {queue.get(next(iter(bad)))['error']}")
    by_job = {r["job_id"]: r["value"] for r in queue.store.query(metric="main_score")}
    return seconds, [by_job[i] for i in ids]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--executors", default="inline,local,ray")
    parser.add_argument("--cpus", type=int, default=2, help="cores the local and ray executors fill")
    parser.add_argument("--out", default=str(ROOT / "docs" / "results" / "jobs_overhead.json"))
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import torch

    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="embedlab-jobs-bench-"))
    try:
        model = _tiny_model(work / "tiny")
        run_loop(_specs(model, 2, "warm"), work / "warm")  # imports and the data's first read out of the timing
        loop_s, loop_scores = run_loop(_specs(model, args.jobs, "loop"), work / "loop")
        rows = [{"path": "plain loop (reference)", "seconds": loop_s, "per_job_ms": 1000 * loop_s / args.jobs,
                 "overhead_ms_per_job": 0.0, "ratio": 1.0}]
        print(f"{args.jobs} jobs; plain loop: {loop_s:.2f} s ({1000 * loop_s / args.jobs:.1f} ms/job)")
        for name in [e for e in args.executors.split(",") if e]:
            if name == "ray":
                try:
                    import ray  # noqa: F401
                except ImportError:
                    print("ray: not installed, skipped")
                    continue
            seconds, scores = run_executor(name, _specs(model, args.jobs, name), work, args.cpus)
            if [round(s, 9) for s in scores] != [round(s, 9) for s in loop_scores]:
                raise SystemExit(f"{name}: scores differ from the loop's: the jobs did not do the same work")
            overhead = 1000 * (seconds - loop_s) / args.jobs
            rows.append({"path": name, "seconds": seconds, "per_job_ms": 1000 * seconds / args.jobs,
                         "overhead_ms_per_job": overhead, "ratio": seconds / loop_s})
            print(f"{name:>6}: {seconds:.2f} s ({1000 * seconds / args.jobs:.1f} ms/job), overhead {overhead:+.1f} "
                  f"ms/job, {seconds / loop_s:.2f}x the loop")
        result = {"command": "python " + " ".join([Path(sys.argv[0]).as_posix().split("/embedlab/")[-1],
                                                   *sys.argv[1:]]),
                  "jobs": args.jobs, "cpus": args.cpus, "torch_threads_per_job": 1, "machine": os.cpu_count(),
                  "rows": rows}
        from embedlab.atomic import write_json

        write_json(args.out, result)
        print(f"written {args.out}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
