"""Errors a user can act on: each renders as one line naming the file and what to do."""

from __future__ import annotations


class UserError(Exception):
    """An error the CLI prints as one line (no traceback) before exiting non-zero."""


class AnnotationError(UserError):
    """A malformed or inconsistent line in an annotation file."""

    def __init__(self, path, line: int | None, text: str | None, reason: str):
        self.path, self.line, self.text, self.reason = str(path), line, text, reason
        where = f"{self.path}:{line}" if line is not None else self.path
        shown = f": {text!r}" if text is not None else ""
        super().__init__(f"{where}{shown}: {reason}")


class MissingAnnotationError(UserError):
    """An annotation file the dataset needs is not where it is expected."""

    def __init__(self, path, dataset: str, hint: str | None = None):
        self.path = str(path)
        fix = hint or f"run `datatools {dataset} download --root <root> --what annotations`"
        super().__init__(f"{self.path}: annotation file not found; {fix}")
