"""Where things live: the data root, the cache and the results store, each overridable by an environment variable.

| variable              | default                                      | holds                                   |
|-----------------------|----------------------------------------------|-----------------------------------------|
| EMBEDLAB_DATA         | ../shared/data next to the project, if there  | local mirrors of the public datasets    |
| EMBEDLAB_CACHE        | ~/.cache/embedlab                            | corpus-embedding cache                  |
| EMBEDLAB_RESULTS_DB   | sqlite:///<cwd>/embedlab-results.sqlite       | results store (any SQLAlchemy URL)      |

This module only computes paths; it creates nothing.
"""
from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def data_root() -> Path | None:
    """The local dataset root, or None when neither EMBEDLAB_DATA nor the default mirror exists."""
    env = os.environ.get("EMBEDLAB_DATA")
    if env:
        return Path(env).expanduser()
    default = PROJECT_ROOT.parent / "shared" / "data"
    return default if default.is_dir() else None


def cache_dir() -> Path:
    env = os.environ.get("EMBEDLAB_CACHE")
    if env:
        return Path(env).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "embedlab"


def results_db_url(value: str | None = None) -> str:
    """A SQLAlchemy URL from ``value`` (a URL or a plain file path, taken as SQLite), else from
    EMBEDLAB_RESULTS_DB, else the default SQLite file in the working directory."""
    chosen = value or os.environ.get("EMBEDLAB_RESULTS_DB")
    if chosen:
        return chosen if "://" in chosen else f"sqlite:///{Path(chosen).expanduser().resolve()}"
    return f"sqlite:///{(Path.cwd() / 'embedlab-results.sqlite').resolve()}"
