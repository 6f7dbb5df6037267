"""The error with an exit code that the command line reports as one line (``attnmesh: error: ...``);
raised by the file readers and writers of :mod:`attnmesh.io` as well, so it sits below both."""

from __future__ import annotations


class CliError(Exception):
    """A failure reported as one line, ``attnmesh: error: <message>``, with exit code ``code``."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code
