"""Errors that gtgm reports to the user as one clear line (the CLI exits non-zero on them)."""

from __future__ import annotations

from pathlib import Path


class GtgmError(Exception):
    """An error caused by the user's input or configuration, printed without a traceback."""


class InputError(GtgmError):
    """A problem with one input file: the message always starts with the file's path."""

    def __init__(self, path: str | Path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class ConfigError(GtgmError):
    """A bad configuration key or value: the message names the dotted key."""
