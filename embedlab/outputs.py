"""Folders embedlab fills file by file (``embedlab convert``'s training files, the demo's report and results): the
ownership rule of embedlab.atomic applied to a folder that is written into rather than replaced whole.

``claim_folder(out)`` lets the work go on only when ``out`` is new, empty, carries embedlab's owner marker, or is
recognised by ``legacy`` as an earlier embedlab output (written before the marker existed); a user's folder is
refused before any work, so none of its files is overwritten. The folder is then created and marked, so a rerun
after an interruption is accepted. ``lock_folder(out)`` holds an exclusive kernel lock (flock) on a lock file in it for
the process's lifetime, so that two trainings launched into one folder do not mix their checkpoints.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from .atomic import OWNER_MARKER, check_writable_folder, owned_by_embedlab, write_json
from .errors import ConfigError


def check_claimable(out: str | Path, what: str, legacy: Callable[[Path], bool] = lambda p: False) -> Path:
    """ConfigError unless ``claim_folder`` would accept ``out``; creates nothing (a check before work is queued)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{what} {out} is a file, expected a folder")
    if out.is_dir() and any(out.iterdir()) and not owned_by_embedlab(out) and not legacy(out):
        shown = ", ".join(sorted(p.name for p in out.iterdir())[:3])
        raise ConfigError(f"{what} {out} is a folder embedlab did not write (it holds {shown}, ...); embedlab would "
                          f"replace files there: choose a new folder")
    check_writable_folder(out, what)
    return out


def claim_folder(out: str | Path, what: str, kind: str, legacy: Callable[[Path], bool] = lambda p: False) -> Path:
    """ConfigError unless embedlab may write files into ``out`` (see the module docstring); creates and marks it."""
    out = check_claimable(out, what, legacy)
    out.mkdir(parents=True, exist_ok=True)
    if not (out / OWNER_MARKER).is_file():
        write_json(out / OWNER_MARKER, {"written_by": "embedlab", "kind": kind})
    return out


LOCK_FILE = ".embedlab-train.lock"


def lock_folder(out: str | Path, what: str = "output_dir", user: str = "embedlab training"):
    """Lock ``out`` (an existing folder) for this process's lifetime; returns the open lock file, which the caller
    keeps. A second process gets a ConfigError naming the holder's pid; a killed holder releases the lock."""
    import fcntl

    out = Path(out)
    handle = open(out / LOCK_FILE, "a+", encoding="utf-8")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise ConfigError(f"{what} {out} is in use by another {user} ({holder}); wait for it or use another "
                          f"{what}") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()}\n")
    handle.flush()
    return handle
