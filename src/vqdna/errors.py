"""Errors a user can act on. The CLI prints them without a traceback."""

from __future__ import annotations

from pathlib import Path


class VQDNAError(Exception):
    """Base class for errors that are the user's input or configuration, not a bug."""


class ConfigError(VQDNAError):
    """The configuration does not match the schema or is inconsistent."""


class InputError(VQDNAError):
    """A bad input file. The message always names the file and, when known, the record or line."""

    def __init__(self, path: str | Path, message: str, *, record: str | None = None, line: int | None = None):
        self.path = str(path)
        self.record = record
        self.line = line
        where = self.path
        if line is not None:
            where += f":{line}"
        if record is not None:
            where += f" (record {record!r})"
        super().__init__(f"{where}: {message}")
