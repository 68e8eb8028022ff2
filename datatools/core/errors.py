"""Errors a user can act on: each renders as one line naming the file and what to do; and the
exit codes, one meaning each, that a batch scheduler reads."""

from __future__ import annotations

import shlex

EXIT_PROBLEMS = 1  # the step ran; the data has problems it reported (missing, corrupt, failed)
EXIT_USAGE = 2  # bad options or input the user must fix (one line says what)
EXIT_INTERNAL = 3  # a bug in datatools or a library: the line names the log with the traceback
EXIT_DISK = 4  # the filesystem is full, over quota or read-only: the step stopped
EXIT_BUSY = 75  # another command holds the root's lock (EX_TEMPFAIL: try again later)
EXIT_INTERRUPTED = 130  # Ctrl-C: what finished is kept, re-run to resume
EXIT_TERMINATED = 143  # SIGTERM (a batch system's stop, walltime): the same, as 128 + 15


def one_line(text: str) -> str:
    """A message as one line, whatever a library put in it (tarfile's reasons span lines):
    one line per error is what a batch log's grep and a user's eye expect."""
    return "; ".join(part.strip() for part in str(text).splitlines() if part.strip())


def shell_word(value) -> str:
    """A path or value as it must be typed in a command a message suggests (quoted if it
    holds spaces or other characters a shell reads)."""
    return shlex.quote(str(value))


class UserError(Exception):
    """An error the CLI prints as one line (no traceback) before exiting non-zero."""


def one_of(option: str, value, choices, note: str = "") -> None:
    """The one check of a value against the words it may be: UserError
    `--task 'rbg': choose rgb, flow, both` (`note`: what the choices mean, appended)."""
    if value not in choices:
        raise UserError(f"{option} {value!r}: choose {', '.join(map(str, choices))}{note}")


def root_not_found(root, dataset: str | None = None) -> UserError:
    return UserError(f"{root}: data root not found; create it or run "
                     f"`datatools {dataset or '<dataset>'} download --root {shell_word(root)}`")


class NothingToDo(UserError):
    """The command has nothing to do here: said in one line, exit 0, nothing written (no log)."""


class InternalError(Exception):
    """A bug, not a bad input: one line naming the log with its traceback (EXIT_INTERNAL)."""


class ProblemsFound(UserError):
    """The work ran and found problems in the data (EXIT_PROBLEMS), said in one line."""


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
