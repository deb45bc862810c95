"""The experiment files under experiments/ (the producers of the docs' numbers) load, expand into jobs, and agree with
experiments/queue.sh: every row and seed the queue names exists in the file it passes them to.

A renamed row or a dropped seed would otherwise surface hours into a queue run, as an error after the rows before
it, or worse, as a row that silently never runs."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest

from embedlab.bench.jobspec import expand, load_job_matrix
from embedlab.experiment import experiment_jobs, load_experiment

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = ROOT / "experiments"
QUEUE = EXPERIMENTS / "queue.sh"
TEXT = sorted(p for p in EXPERIMENTS.glob("*.yaml") if not p.name.startswith("medvqa_"))
MATRICES = sorted(EXPERIMENTS.glob("medvqa_*.yaml"))


@pytest.mark.parametrize("path", TEXT, ids=lambda p: p.name)
def test_text_experiment_loads_and_expands(path, tmp_path):
    spec = load_experiment(path)  # validates the file; recipes and overrides are loaded while expanding
    jobs = experiment_jobs(spec, tmp_path / spec.name)
    assert jobs, f"{path.name}: no jobs"
    names = [run.name for run in spec.runs]
    assert len(names) == len(set(names)), f"{path.name}: duplicate row names"


@pytest.mark.parametrize("path", MATRICES, ids=lambda p: p.name)
def test_job_matrix_loads_and_expands(path):
    assert expand(load_job_matrix(path), where=str(path))


def _for_lists(text: str, var: str) -> list[str]:
    """The words of every ``for VAR in WORDS; do`` of the script (continuation lines joined, comments dropped)."""
    text = re.sub(r"\\\n\s*", " ", text)
    out = []
    for m in re.finditer(rf"for {var} in (.*?); do", text):
        out += shlex.split(m.group(1), comments=True)
    return out


def _calls(text: str, fn: str) -> list[str]:
    return [shlex.split(m.group(1))[0] for m in re.finditer(rf"^\s*{fn} (.+)$", text, re.M)
            if not m.group(1).startswith('"$')]


def _seeds(arg: str) -> list[int]:
    return [int(s) for s in arg.split(",")]


def test_queue_script_parses():
    assert subprocess.run(["bash", "-n", str(QUEUE)], capture_output=True).returncode == 0


def test_queue_names_rows_and_seeds_its_experiments_have():
    text = QUEUE.read_text(encoding="utf-8")
    codiemb = {r.name: r for r in load_experiment(EXPERIMENTS / "codiemb_full.yaml").runs}
    cse = {r.name: r for r in load_experiment(EXPERIMENTS / "cse_sfp_full.yaml").runs}
    fusion = {r.name for r in load_experiment(EXPERIMENTS / "fusion_full.yaml").runs}

    row_seeds = _for_lists(text, "row_seed")
    pairs = _calls(text, "cse_sfp_rows")
    codiemb_rows = [w for w in row_seeds if not w.startswith(("fusion:", "cse:"))]
    for item in row_seeds:  # "cse:X" items of the list run cse_sfp_full rows from a case branch of their own
        if item.startswith("cse:"):
            assert re.search(rf"^\s*{re.escape(item)}\)", text, re.M), f"queue.sh lists {item} without a branch"
    assert len(codiemb_rows) >= 3 and len(pairs) >= 3, "the queue's lists were not found: update this test"
    for item in codiemb_rows:
        name, seed = item.split(":")
        assert name in codiemb, f"queue.sh names codiemb_full row {name!r}, not in experiments/codiemb_full.yaml"
        assert int(seed) in codiemb[name].seeds, f"queue.sh runs {name} seed {seed}, not among its seeds"
    for pair in pairs:
        rows, seeds = pair.rsplit(":", 1) if ":" in pair else (pair, None)  # no seeds: each row's own
        for name in rows.split(","):
            assert name in cse, f"queue.sh names cse_sfp_full row {name!r}, not in experiments/cse_sfp_full.yaml"
            assert seeds is None or set(_seeds(seeds)) <= set(cse[name].seeds), f"queue.sh runs {name} seeds {seeds}"
    fusion_rows = [row for _, rows in _fusion_batches(text) for row in rows]
    assert fusion_rows and set(fusion_rows) <= fusion, set(fusion_rows) - fusion
    assert set(fusion_rows) == fusion, f"fusion rows the queue never runs: {fusion - set(fusion_rows)}"
    assert "fusion:trajectories" in row_seeds and "fusion_trajectories ;;" in text


def _fusion_batches(text: str) -> list[tuple[set[str], list[str]]]:
    """(input folders, rows) of every ``fusion_batch "INPUTS" ROW...`` call of the script."""
    text = re.sub(r"\\\n\s*", " ", text)
    calls = [shlex.split(m.group(1)) for m in re.finditer(r"^\s*fusion_batch (\".*)$", text, re.M)]
    return [(set(words[0].split()), words[1:]) for words in calls]


def test_queue_checks_the_fusion_inputs_the_fusion_reads():
    """The queue runs the fusion only when its input checkpoints exist: the folders it checks must be the ones
    experiments/fusion_full.yaml fuses."""
    spec = load_experiment(EXPERIMENTS / "fusion_full.yaml")
    runs = {run.name: run for run in spec.runs}
    batches = _fusion_batches(QUEUE.read_text(encoding="utf-8"))
    assert len(batches) == 2
    for inputs, rows in batches:
        fused = {Path(m).parent.name for row in rows if runs[row].fuse is not None for m in runs[row].fuse.models}
        singles = {Path(runs[row].model).parent.name for row in rows if runs[row].fuse is None}
        assert fused == inputs, f"queue.sh checks {inputs}, the rows {rows} fuse {fused}"
        assert singles == inputs, f"the batch's single rows score {singles}, not its inputs {inputs}"
