"""The house's rules, checked: import-linter contracts in pyproject.toml (domains never import bench, evaluate never
imports the store or the job runner, bench reaches a domain only through registries, the core imports nothing above
it, the CLI over the applications over bench), ruff, and a docstring at the top of every module."""
from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def _tool(name: str) -> str:
    found = BIN / name
    return str(found) if found.exists() else (shutil.which(name) or name)


def test_import_contracts_are_kept():
    out = subprocess.run([_tool("lint-imports"), "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "0 broken" in out.stdout


def test_a_broken_contract_is_reported(tmp_path):
    """The checker is live: a contract that today's code breaks (the CLI does import bench) fails."""
    config = tmp_path / "contracts.toml"
    config.write_text('[tool.importlinter]\nroot_package = "embedlab"\n\n[[tool.importlinter.contracts]]\n'
                      'name = "the CLI never imports bench (false on purpose)"\ntype = "forbidden"\n'
                      'source_modules = ["embedlab.cli"]\nforbidden_modules = ["embedlab.bench"]\n')
    out = subprocess.run([_tool("lint-imports"), "--no-cache", "--config", str(config)], cwd=ROOT,
                         capture_output=True, text=True)
    assert out.returncode != 0 and "BROKEN" in out.stdout


def test_ruff_passes():
    out = subprocess.run([_tool("ruff"), "check", "embedlab", "tests", "benchmarks", "experiments"], cwd=ROOT,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-3000:]


def test_every_module_says_what_it_does():
    missing = []
    for path in sorted((ROOT / "embedlab").rglob("*.py")):
        if "migrations/versions" in path.as_posix() and path.name == "__init__.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        if not ast.get_docstring(tree) and path.stat().st_size > 0:
            missing.append(str(path.relative_to(ROOT)))
    assert not missing, f"modules without a docstring: {missing}"
