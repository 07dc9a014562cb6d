"""The one error the detect room raises for a model it cannot use, naming the file and why.

Its message must never be more than one line: a user reads it on a console or in a log."""

from __future__ import annotations

from pathlib import Path


class ModelError(Exception):
    """A model (or its labels) that cannot be used: missing, corrupt, or an unknown layout."""

    def __init__(self, path: Path | str, reason: str) -> None:
        self.path = Path(path)
        self.reason = " ".join(reason.split())  # one line, whatever onnxruntime said
        super().__init__(f"{self.path}: {self.reason}")
