"""Response times of the model evaluation pages with 10,000 result rows in the store, on SQLite and PostgreSQL.

    python benchmarks/web_pages.py      # 10,000 rows, 15 requests per page; writes docs/results/web_pages.json
    python benchmarks/web_pages.py --requests 5 --backends sqlite

Two stores per backend, each holding 10,000 rows as jobs write them (embedlab.results.make_rows, one run per
model x configuration x seed):

- ``text``: 10 models x 4 configurations x 5 seeds x 10 tasks (STS and retrieval) x 5 metrics: 2,000 of the rows are
  ``main_score`` (what the leaderboard ranks on), the rest other metrics the store keeps;
- ``medvqa``: 10 models x 4 configurations x 5 seeds x 2 tasks x 25 metrics (closed, open, overall, question types,
  blank / shuffled): the leaderboard reads its 400 main_score rows, then every row of the split for the Med-VQA tables.

Each page is requested through FastAPI's TestClient by a signed-in user (the whole app: middlewares, session,
database, leaderboard, templates; no network), ``--requests`` times after 2 warm-up requests; the table gives the
median and the 90th percentile, and the first request of the process (Altair's import and the chart schema load
land there). PostgreSQL is a throwaway server (tests/postgres_server.py: initdb into a temp folder, fsync off); when
it cannot start, its rows are skipped with the reason printed. It measures; it asserts nothing but that every
response is a 200.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
OUT = ROOT / "docs" / "results" / "web_pages.json"
PW = "a long benchmark passphrase"


def seed(store, scenario: str) -> dict:
    """10,000 rows; returns what the pages are asked about (experiment, two run ids, a model and its config)."""
    from embedlab.jobkinds import load_domains
    from embedlab.results import make_rows

    load_domains()
    if scenario == "text":
        tasks = [(f"sts{i}", "sts", "test") for i in range(5)] + [(f"ir{i}", "retrieval", "test") for i in range(5)]
        metric_names = ["main_score", "m1", "m2", "m3", "m4"]
    else:
        tasks = [("vqa-rad-val", "vqa", "val"), ("slake-val", "vqa", "val")]
        metric_names = (["main_score", "overall", "closed", "open", "blank_overall", "shuffled_overall",
                         "image_reliance", "open_token_f1", "unseen_fraction"]
                        + [f"type/T{i}" for i in range(11)] + [f"organ/O{i}" for i in range(5)])
    experiment = f"bench-{scenario}"
    runs = []
    n = 0
    for m in range(10):
        for c in range(4):
            config = {"model": f"model-{m}", "lr": [1e-5, 2e-5, 5e-5, 1e-4][c]}
            for s in range(5):
                run = uuid.uuid4().hex
                rows = []
                for t, (task, ttype, split) in enumerate(tasks):
                    base = 0.4 + 0.03 * m + 0.01 * c + 0.002 * s + 0.005 * t
                    scores = {k: min(base + 0.001 * i, 1.0) for i, k in enumerate(metric_names)}
                    rows += make_rows(domain="text" if scenario == "text" else "medvqa", model=f"model-{m}",
                                      task=task, task_type=ttype, dataset=task, split=split, scores=scores,
                                      experiment=experiment, seed=s, config=config, run_id=run, duration_s=1.0,
                                      extra={"model_dir": f"runs/{experiment}/m{m}-c{c}-s{s}"})
                store.add_run(rows)
                runs.append(run)
                n += len(rows)
    assert n == 10_000, n
    return {"experiment": experiment, "runs": runs[:2], "model": "model-9", "split": tasks[0][2]}


def pages(info: dict, config_hash: str) -> dict[str, str]:
    e, split = info["experiment"], info["split"]
    a, b = info["runs"]
    # paths relative to the app's root (the client joins them to its base URL)
    return {
        "leaderboard page": f"results?experiment={e}",
        "leaderboard JSON": f"api/results/leaderboard?experiment={e}",
        "leaderboard CSV": f"results/leaderboard.csv?experiment={e}",
        "number's rows (cell)": f"results/cell?experiment={e}&split={split}&model={info['model']}"
                                f"&config={config_hash}",
        "run page": f"results/runs/{a}",
        "compare 2 runs": f"results/compare?run={a}&run={b}",
    }


def measure(client, path: str, n: int) -> dict:
    times = []
    size = 0
    for i in range(n + 2):
        t0 = time.perf_counter()
        response = client.get(path)
        elapsed = time.perf_counter() - t0
        if response.status_code != 200:
            raise RuntimeError(f"{path}: {response.status_code} {response.text[:300]}")
        size = len(response.content)
        if i >= 2:  # two warm-up requests
            times.append(elapsed * 1000)
    times.sort()
    return {"median_ms": statistics.median(times), "p90_ms": times[min(len(times) - 1, int(0.9 * len(times)))],
            "min_ms": times[0], "bytes": size, "n": n}


def run_backend(backend: str, url_for, n: int, results: list, first: dict) -> None:
    from web_server import make_app, signed_in

    for scenario in ("text", "medvqa"):
        folder = Path(tempfile.mkdtemp(prefix=f"web-bench-{backend}-{scenario}-"))
        url = url_for(scenario, folder)
        app = make_app(folder, db_url=url)
        t0 = time.perf_counter()
        info = seed(app.state.store, scenario)
        seeded = time.perf_counter() - t0
        app.state.accounts.create_user("bench", PW, "researcher")
        with signed_in(app, "bench", PW) as client:
            t1 = time.perf_counter()
            board = client.get(f"results?experiment={info['experiment']}")
            if "process" not in first:  # the very first page of the process: imports, cold caches
                first["process"] = {"backend": backend, "scenario": scenario, "page": "leaderboard page",
                                    "ms": (time.perf_counter() - t1) * 1000}
            assert board.status_code == 200, board.text[:300]
            board = client.get(f"api/results/leaderboard?experiment={info['experiment']}").json()
            chosen = next(r for r in board["tables"][0]["rows"] if r["key"]["model"] == info["model"])
            for page, path in pages(info, chosen["key"]["config_hash"]).items():
                row = {"backend": backend, "scenario": scenario, "page": page, "path": path, **measure(client, path, n)}
                results.append(row)
                print(f"{backend:10s} {scenario:6s} {page:22s} median {row['median_ms']:7.1f} ms  "
                      f"p90 {row['p90_ms']:7.1f} ms  {row['bytes'] / 1024:7.1f} KiB", flush=True)
        print(f"  ({backend} {scenario}: 10,000 rows inserted in {seeded:.1f} s)", flush=True)
        app.state.store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=15, help="timed requests per page (after 2 warm-ups)")
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    results: list[dict] = []
    first: dict = {}
    skipped: dict[str, str] = {}
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    if "sqlite" in backends:
        run_backend("sqlite", lambda scenario, folder: f"sqlite:///{folder / 'results.sqlite'}", args.requests,
                    results, first)
    if "postgresql" in backends:
        try:
            from postgres_server import PostgresServer

            server = PostgresServer.start()
        except Exception as e:  # noqa: BLE001 - not installed, cannot run here: say why and go on
            skipped["postgresql"] = f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"
            print(f"PostgreSQL skipped: {skipped['postgresql']}", flush=True)
        else:
            try:
                run_backend("postgresql", lambda scenario, folder: server.create_database(f"bench_{scenario}"),
                            args.requests, results, first)
            finally:
                server.stop()
    print()
    print(f"{'page':24s} " + " ".join(f"{b + ' ' + s:>22s}" for b in backends if b not in skipped
                                        for s in ("text", "medvqa")))
    for page in dict.fromkeys(r["page"] for r in results):
        cells = []
        for b in backends:
            if b in skipped:
                continue
            for s in ("text", "medvqa"):
                r = next((x for x in results if (x["backend"], x["scenario"], x["page"]) == (b, s, page)), None)
                cells.append(f"{r['median_ms']:8.1f} ms (p90 {r['p90_ms']:6.1f})" if r else "-")
        print(f"{page:24s} " + " ".join(f"{c:>22s}" for c in cells))
    if first:
        print(f"\nfirst request of the process: {first['process']['page']} ({first['process']['backend']}) "
              f"{first['process']['ms']:.0f} ms")
    import torch

    payload = {
        "command": "python benchmarks/web_pages.py " + " ".join(sys.argv[1:]),
        "date": dt.date.today().isoformat(), "rows_in_store": 10_000, "requests_per_page": args.requests,
        "client": "fastapi.testclient.TestClient, signed-in researcher, in process",
        "machine": {"cpus": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version(),
                    "torch_threads": torch.get_num_threads()},
        "first_request": first.get("process"), "skipped": skipped, "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
