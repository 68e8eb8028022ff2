"""Code errors are not data errors: what a step does with a task that raised.

Only what the decoder or the file says about a video may mark it bad (probe statuses, extract
failures). Any other exception in a task (TypeError, AttributeError, ImportError, ...) is a bug
in datatools or a library API that changed: it is written with its traceback to the run's log
(runlog.py), and after a few identical ones the step stops with one line, quarantines nothing, and the
manifest keeps what was known. A full disk in a worker stops the step at once (fsio).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from .errors import InternalError
from .fsio import disk_error, is_disk_error
from .runlog import RunLog, log_for

SAME_ERRORS = 3  # identical internal errors before a step stops


class TaskFailures:
    """Collects the tasks of one step that raised; raises when the step must stop."""

    def __init__(self, root: Path, step: str):
        self.root = Path(root)
        self.step = step
        self.log: RunLog | None = None
        self.kinds: Counter = Counter()
        self.items: list[str] = []

    def add(self, what: str, err) -> None:
        """`err` is a parallel.TaskError for the task that handled `what` (a video path)."""
        if is_disk_error(err.exc):
            raise disk_error(err.exc, Path(getattr(err.exc, "filename", None) or self.root)) from None
        self._write(what, err)
        self.kinds[err.reason] += 1
        self.items.append(what)
        if self.kinds[err.reason] >= SAME_ERRORS:
            raise self.error(stopped=True)

    def check(self) -> None:
        """At the end of the step: any internal error makes it fail (after the rest ran)."""
        if self.items:
            raise self.error(stopped=False)

    def error(self, stopped: bool) -> InternalError:
        reason = self.kinds.most_common(1)[0][0]
        how = "the step stopped" if stopped else "the other videos were done"
        return InternalError(
            f"internal error in datatools {self.step} ({reason}) on {len(self.items)} video(s), "
            f"first {self.items[0]}; {how}, no video was marked bad or quarantined, the manifest "
            f"keeps what was known. This is a bug, not your data: the traceback is in {self.log.path}")

    def _write(self, what: str, err) -> None:
        if self.log is None:
            self.log = log_for(self.root, self.step)
        self.log.error(what, err.traceback or err.reason)
