"""PRO loss speed: embedlab's vectorised ``pro_loss`` vs the Python-loop reference, forward + backward.

For each list size n (STS pairs per batch): random cosine-like scores in [-1, 1] (float32, requires grad) and labels on
the STS-B grid {0, 0.2, ..., 1} (many ties, as in real batches). One call = loss + backward. Each timed run repeats the
call enough times to last >= 20 ms and reports the time per call; the median of --repeats runs (after one warm-up) is
reported per implementation, with the ratio loop / vectorised and the largest difference in loss and gradient between
the two (a speed number for a wrong answer is worthless).

Threads: one intra-op thread by default (--threads). On a 2-core machine shared with other processes, two OpenMP
threads turn every small parallel op into a wait for a descheduled peer: measured here under load, the vectorised
n = 32 call took 24 ms with 2 threads and 0.36 ms with 1. One thread measures the algorithm, and it is what a
data-parallel trainer with one process per core uses anyway. The 1-minute load average is recorded with the result.

    .venv/bin/python benchmarks/pro_loss.py [--sizes 32 128 512] [--repeats 7] [--threads 1]
                                       [--out docs/results/pro_loss.json]

Results go to docs/results/pro_loss.json and are summarised in docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from embedlab import __version__  # noqa: E402
from embedlab.atomic import write_json  # noqa: E402
from embedlab.objectives.reference import pro_reference  # noqa: E402
from embedlab.objectives.sts import pro_loss  # noqa: E402


def make_inputs(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    scores = torch.rand(n, generator=g) * 2 - 1
    labels = torch.randint(0, 6, (n,), generator=g).float() / 5
    return scores, labels


def step(fn, scores: torch.Tensor, labels: torch.Tensor) -> tuple[float, torch.Tensor]:
    s = scores.clone().requires_grad_(True)
    loss = fn(s, labels)
    loss.backward()
    return loss.item(), s.grad


def per_call_seconds(fn, scores, labels, repeats: int, min_run_s: float = 0.02) -> list[float]:
    step(fn, scores, labels)  # warm-up: allocator, thread pool
    t0 = time.perf_counter()
    step(fn, scores, labels)
    inner = max(1, int(min_run_s / max(time.perf_counter() - t0, 1e-9)))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(inner):
            step(fn, scores, labels)
        times.append((time.perf_counter() - t0) / inner)
    return times


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[32, 128, 512])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1, see the docstring)")
    ap.add_argument("--out", default=str(ROOT / "docs" / "results" / "pro_loss.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    rows = []
    print(f"{'n':>6} {'vectorised ms':>14} {'loop ms':>10} {'loop/vectorised':>16} "
          f"{'max |Δloss|':>12} {'max |Δgrad|':>12}")
    for n in args.sizes:
        scores, labels = make_inputs(n)
        loss_v, grad_v = step(pro_loss, scores, labels)
        loss_r, grad_r = step(pro_reference, scores, labels)
        vec = per_call_seconds(pro_loss, scores, labels, args.repeats)
        loop = per_call_seconds(pro_reference, scores, labels, args.repeats)
        row = dict(n=n, vectorised_ms=1e3 * statistics.median(vec), loop_ms=1e3 * statistics.median(loop),
                   vectorised_runs_ms=[1e3 * t for t in vec], loop_runs_ms=[1e3 * t for t in loop],
                   max_abs_loss_diff=abs(loss_v - loss_r), max_abs_grad_diff=float((grad_v - grad_r).abs().max()))
        row["speedup"] = row["loop_ms"] / row["vectorised_ms"]
        rows.append(row)
        print(f"{n:>6} {row['vectorised_ms']:>14.3f} {row['loop_ms']:>10.2f} {row['speedup']:>15.1f}x "
              f"{row['max_abs_loss_diff']:>12.2e} {row['max_abs_grad_diff']:>12.2e}")

    result = dict(benchmark="pro_loss", what="forward+backward per call, float32, labels on a 6-level grid (ties)",
                  command=" ".join([".venv/bin/python benchmarks/pro_loss.py",
                                    *(argv if argv is not None else sys.argv[1:])]),
                  repeats=args.repeats, embedlab=__version__, torch=torch.__version__,
                  threads=torch.get_num_threads(), cpu=platform.machine(), python=platform.python_version(),
                  cpu_count=os.cpu_count(), load_avg_1min_at_end=os.getloadavg()[0],
                  date=datetime.date.today().isoformat(), sizes=rows)
    write_json(args.out, result)
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
