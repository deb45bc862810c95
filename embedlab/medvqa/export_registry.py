"""The Med-VQA export registry: a user's JSON file naming dataset-tool export folders, so that
``load_dataset(name, split)`` (datasets.py) and the task list (tasks.py) find exports by name.

    register("our-cases", "runs/vqa-data/cases-export", reserved=["vqa-rad", "vqa-rad-val"])   # -> the entry
    registered_exports()        # {name: {"path", "registered", "splits"}}
    registered_folder("our-cases")

The file is ``$EMBEDLAB_REGISTRY``, else ``$XDG_CONFIG_HOME/embedlab/medvqa-datasets.json`` (``~/.config`` when
unset); writes hold a lock beside it and replace it atomically. This module imports nothing else of the Med-VQA
domain (the loaders, tasks and the dataset tool import it), and it does not read exports: ``datasets.load_export``
does. The dataset tool's ``export.register_export`` adds the built-in dataset and task names as reserved.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..atomic import write_json
from ..errors import ConfigError, DataError

SPLITS = ("train", "val", "test")  # an export's splits, each a <split>set.json (MEVF rows)
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def registry_path() -> Path:
    env = os.environ.get("EMBEDLAB_REGISTRY")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base).expanduser() / "embedlab" / "medvqa-datasets.json"


def _read_registry(path: Path) -> dict[str, dict[str, Any]]:
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"the Med-VQA dataset registry is not valid JSON ({exc}); fix or delete it", path) from None
    except OSError as exc:
        raise DataError(f"cannot read the Med-VQA dataset registry: {exc.strerror or exc}", path) from None
    datasets = data.get("datasets") if isinstance(data, dict) else None
    if not isinstance(datasets, dict) or not all(isinstance(v, dict) and "path" in v for v in datasets.values()):
        raise DataError("the Med-VQA dataset registry should be {\"datasets\": {name: {\"path\": ...}}}", path)
    return datasets


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(f".{path.name}.lock"), "a+", encoding="utf-8") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # two registrations at once must not lose one of them
        yield


def registered_exports() -> dict[str, dict[str, Any]]:
    """name -> {"path", "registered", "splits"} from the user's registry file (empty when there is none)."""
    return _read_registry(registry_path())


def registered_export_path(name: str) -> Path | None:
    """The folder registered as ``name``, or None (``load_dataset`` calls this for names it does not know)."""
    entry = registered_exports().get(name)
    return Path(entry["path"]) if entry else None


def registered_folder(name: str) -> Path:
    """The folder of a registered export, which must still exist."""
    folder = registered_export_path(name)
    if folder is None:
        raise ConfigError(f"no registered Med-VQA export named {name!r} (registry: {registry_path()})")
    if not folder.is_dir():
        raise DataError(f"registered export {name!r} points to a folder that no longer exists; register it again "
                        f"or unregister it", folder)
    return folder


def register(name: str, folder: str | Path, *, replace: bool = False, reserved: Iterable[str] = (),
             reserved_kind: str = "built-in name") -> dict[str, Any]:
    """Register an export folder under ``name``. A name already taken by another folder needs ``replace=True``;
    a ``reserved`` name (compared case-insensitively) is refused."""
    if not isinstance(name, str) or not NAME.match(name):
        raise ConfigError(f"a dataset name is letters, digits, '.', '_' or '-' (starting with a letter or digit, "
                          f"at most 100), got {name!r}")
    reserved = list(reserved)
    if name.lower() in {n.lower() for n in reserved}:
        raise ConfigError(f"{name!r} is a {reserved_kind} ({', '.join(reserved)}); choose another name")
    folder = Path(folder).expanduser().resolve()
    splits = [s for s in SPLITS if (folder / f"{s}set.json").is_file()]
    if not folder.is_dir() or not splits:
        raise ConfigError(f"{folder} is not a dataset-tool export (no trainset.json, valset.json or testset.json)")
    path = registry_path()
    with _locked(path):
        datasets = _read_registry(path)
        old = datasets.get(name)
        if old and Path(old["path"]) != folder and not replace:
            raise ConfigError(f"dataset name {name!r} is already registered for {old['path']}; pass replace=True "
                              f"(--replace) to point it at {folder}")
        entry = {"path": str(folder), "registered": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                 "splits": splits}
        datasets[name] = entry
        write_json(path, {"datasets": dict(sorted(datasets.items()))})
    return entry


def unregister_export(name: str) -> bool:
    """Remove ``name`` from the registry (the folder stays); False when it was not registered."""
    path = registry_path()
    with _locked(path):
        datasets = _read_registry(path)
        if name not in datasets:
            return False
        del datasets[name]
        write_json(path, {"datasets": datasets})
    return True
