"""Atomic file output: write to a temporary file (or folder) next to the target, then rename over it.

An interrupted run therefore leaves either the old file or the new one, never half of one. Used for every result,
cache and report file embedlab writes.

Output folders (saved models, fused models, training runs) follow one ownership rule, enforced here and nowhere else:
embedlab replaces a folder only when it wrote that folder itself (it carries the marker file ``.embedlab-output``, or
is a model saved by an older embedlab: ``embedlab.json`` with ``embedlab_version``), when the folder is empty, or when
the caller passes ``overwrite=True`` (the CLI's ``--overwrite``). It never replaces one of the caller's inputs, a
folder holding an input, the working directory or one of its parents, whatever ``overwrite`` says. Staging folders of
a save killed mid-way are recognised by their own marker and removed by the next save next to them.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

from .errors import ConfigError


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``target``; on success rename it to ``target``, on error delete it."""
    target = Path(target)
    if target.exists() and not target.is_file() and not target.is_symlink():
        # A rename over a folder fails late; over a device or pipe (e.g. /dev/null) it would replace it.
        raise ConfigError(f"{target} is a folder, device or pipe, not a file embedlab can write")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    # mkstemp creates 0600 files; give the result the permissions a plain open() would have.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def write_text(target: str | Path, text: str) -> Path:
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(target)


def write_json(target: str | Path, obj: Any) -> Path:
    return write_text(target, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


OWNER_MARKER = ".embedlab-output"  # in every folder embedlab writes: "this folder is embedlab's to replace"
STAGING_MARKER = ".embedlab-staging"  # in a folder being written; holds the writer's pid


def _mode_dir(path: Path) -> None:
    """mkdtemp makes 0700 folders; give them the permissions a plain mkdir would (group-readable under umask 022)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o777 & ~umask)


def _mode_tree(root: Path) -> None:
    """Give every file and folder under ``root`` the permissions plain open()/mkdir() would (some writers, e.g.
    safetensors through a temp file, leave 0600), so a saved model is readable by the group like other tools'."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(root, 0o777 & ~umask)
    for folder, dirs, files in os.walk(root):
        for d in dirs:
            p = os.path.join(folder, d)
            if not os.path.islink(p):
                os.chmod(p, 0o777 & ~umask)
        for f in files:
            p = os.path.join(folder, f)
            if not os.path.islink(p):
                os.chmod(p, 0o666 & ~umask)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def owned_by_embedlab(folder: str | Path) -> bool:
    """True when ``folder`` is a folder embedlab wrote (its marker, or a model saved by an older embedlab)."""
    folder = Path(folder)
    if (folder / OWNER_MARKER).is_file():
        return True
    legacy = folder / "embedlab.json"
    if legacy.is_file() and (folder / "modules.json").is_file():
        try:
            return "embedlab_version" in json.loads(legacy.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
    return False


def _is_within(inner: Path, outer: Path) -> bool:
    return inner == outer or outer in inner.parents


def check_output_dir(target: str | Path, *, overwrite: bool = False, inputs: Iterable[str | Path] = (),
                     what: str = "output folder") -> Path:
    """Raise ConfigError unless embedlab may put a new folder at ``target`` (the ownership rule above); call it
    before the work starts so a refusal costs nothing. Returns the target as given."""
    target = Path(target)
    resolved = target.expanduser().resolve()
    cwd = Path.cwd().resolve()
    if _is_within(cwd, resolved) or resolved == Path(resolved.anchor) or resolved == Path.home().resolve():
        raise ConfigError(f"{what} {target} is the working directory, one of its parents or your home folder; "
                          f"embedlab never replaces it: choose a new folder")
    for item in inputs:
        if item is None:
            continue
        candidate = Path(str(item)).expanduser()
        if not candidate.exists():
            continue  # a package model name or hub id, not a path
        if _is_within(candidate.resolve(), resolved):
            raise ConfigError(f"{what} {target} is (or holds) the input {item}; embedlab never replaces an input: "
                              f"choose a new folder")
    if target.is_symlink():
        if overwrite:
            return target
        raise ConfigError(f"{what} {target} is a symbolic link; choose a new folder or pass --overwrite")
    if not target.exists():
        _check_parent_writable(target, resolved, what)
        return target
    if not target.is_dir():
        if overwrite:
            return target
        raise ConfigError(f"{what} {target} is a file, expected a folder; choose a new folder or pass --overwrite")
    if overwrite or owned_by_embedlab(target):
        return target
    contents = sorted(p.name for p in target.iterdir())
    if contents:
        shown = ", ".join(contents[:3]) + (", ..." if len(contents) > 3 else "")
        raise ConfigError(f"{what} {target} is a folder embedlab did not write (it holds {shown}); choose a new "
                          f"folder or pass --overwrite to replace it")
    return target


def check_output_file(target: str | Path, *, overwrite: bool = False, inputs: Iterable[str | Path] = (),
                      owned: bool = False, what: str = "output file") -> Path:
    """Raise ConfigError unless embedlab may write the single file ``target``: never an input (whatever
    ``overwrite`` says), never a folder; an existing file only when the caller knows embedlab wrote it (``owned``,
    e.g. listed in embedlab's own manifest) or with ``overwrite=True``."""
    target = Path(target)
    resolved = target.expanduser().resolve()
    for item in inputs:
        if item is not None and Path(str(item)).expanduser().exists() and \
                Path(str(item)).expanduser().resolve() == resolved:
            raise ConfigError(f"{what} {target} is also an input ({item}); embedlab never overwrites an input: "
                              f"choose another file")
    if target.is_dir():
        raise ConfigError(f"{what} {target} is a folder, expected a file path")
    if target.exists() and not target.is_file():  # never replace a device or pipe, --overwrite or not
        raise ConfigError(f"{what} {target} is a device or pipe, not a file embedlab may replace")
    if target.exists() and not (owned or overwrite):
        raise ConfigError(f"{what} {target} already exists; choose another file or pass --overwrite to replace it")
    _check_parent_writable(target, resolved, what)
    return target


def check_writable_folder(folder: str | Path, what: str = "folder") -> Path:
    """ConfigError unless ``folder`` is, or can be created as, a folder embedlab can write into: its nearest
    existing ancestor must be a writable folder, not a file. Call it before the work that will write there."""
    folder = Path(folder)
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise ConfigError(f"{what} {folder}: {probe} is a file, not a folder; give a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(f"{what} {folder}: cannot write to {probe} (permission denied); give another folder")
    return folder


def _check_parent_writable(target: Path, resolved: Path, what: str) -> None:
    """The folder that will hold ``target`` must be writable (see check_writable_folder)."""
    check_writable_folder(resolved.parent, f"{what} {target}: folder")


def staging_dir(target: str | Path, tag: str = "tmp") -> Path:
    """A new, marked staging folder next to ``target`` (for ``replace_dir``). Staging folders of earlier saves to
    the same target whose writer is gone (a kill mid-save) are removed first."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(target)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.{tag}-", dir=target.parent))
    try:
        _mode_dir(staging)
        (staging / STAGING_MARKER).write_text(f"{os.getpid()}\n", encoding="utf-8")
    except BaseException:  # e.g. a full disk: an unmarked staging folder would never be recognised as ours later
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return staging


def clean_stale(target: str | Path) -> list[Path]:
    """Remove ``.<name>.*`` folders next to ``target`` left by a killed embedlab save (marked as staging or owned
    by embedlab, and their writer's process is gone). Returns what was removed."""
    target = Path(target)
    removed = []
    if not target.parent.is_dir():
        return removed
    for cand in target.parent.glob(f".{glob_escape(target.name)}.*"):
        if not cand.is_dir() or cand.is_symlink():
            continue
        marker = cand / STAGING_MARKER
        pid = None
        if marker.is_file():
            try:
                pid = int(marker.read_text().strip() or 0)
            except (OSError, ValueError):
                pid = 0
        elif owned_by_embedlab(cand) and ".old-" in cand.name:
            try:
                pid = int(cand.name.rsplit(".old-", 1)[1])
            except ValueError:
                pid = 0
        if pid is None or (pid and _pid_alive(pid)):
            continue
        shutil.rmtree(cand, ignore_errors=True)
        removed.append(cand)
    return removed


def glob_escape(name: str) -> str:
    import glob

    return glob.escape(name)


def replace_dir(staging: str | Path, target: str | Path, *, overwrite: bool = False,
                inputs: Iterable[str | Path] = ()) -> None:
    """Swap a finished folder into place: rename is atomic per folder, so the old folder is moved aside first and
    removed only once the new one is in place (a crash leaves the old or the new folder, never a mix).

    The ownership rule is checked again here (the target may have changed while the work ran); the new folder gets
    the owner marker, so embedlab may replace it later."""
    staging, target = Path(staging), Path(target)
    check_output_dir(target, overwrite=overwrite, inputs=inputs)
    (staging / STAGING_MARKER).unlink(missing_ok=True)
    write_json(staging / OWNER_MARKER, {"written_by": "embedlab", "pid": os.getpid()})
    _mode_tree(staging)
    old = None
    if target.is_symlink() or (target.exists() and not target.is_dir()):
        target.unlink()
    elif target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
    os.replace(staging, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
