"""User-facing error families.

One exception type per family of failure the user can fix (bad config, bad data, unknown model, unknown choice).
Each is raised at the boundary with the file, line or field at fault; the CLI prints the message in one or two lines
and exits non-zero. Internal bugs are *not* wrapped: they keep their traceback.
"""
from __future__ import annotations

from pathlib import Path


class EmbedlabError(Exception):
    """Base class: every error the CLI should print as a short message rather than a traceback."""


class ConfigError(EmbedlabError):
    """A recipe, job or command-line option is invalid."""


class DataError(EmbedlabError):
    """A data file is missing or malformed. Carries the file and (when known) the 1-based line number."""

    def __init__(self, message: str, path: str | Path | None = None, line: int | None = None):
        self.path = str(path) if path is not None else None
        self.line = line
        where = ""
        if self.path is not None:
            where = f"{self.path}:{line}: " if line is not None else f"{self.path}: "
        super().__init__(where + message)


class ModelError(EmbedlabError):
    """A model cannot be resolved, loaded or saved."""


class UnknownChoiceError(ConfigError):
    """A name (model, task, pooling mode, dataset, ...) is not one of the registered choices."""

    def __init__(self, kind: str, name: str, choices):
        self.kind, self.name, self.choices = kind, name, sorted(choices)
        super().__init__(f"unknown {kind} {name!r}; valid choices: {', '.join(self.choices)}")
