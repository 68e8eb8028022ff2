"""What the user sees while a step runs: progress, plain lines, one line per failed item
(the summaries after a step: pipeline/summaries.py).

On a terminal, progress is a redrawn bar. Anywhere else (a pipe, a file, a batch job's log) no
line is ever wrapped or redrawn: progress is a plain line every PROGRESS_SECONDS
(`extract: 1,200/13,320 videos, 95 frames/s, eta 2:10:00`), so that the log stays greppable.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from .errors import one_line
from .runlog import current as current_log

SHOW = 5  # offenders named per problem before "... and N more"

PROGRESS_ENV = "DATATOOLS_PROGRESS_SECONDS"  # seconds between plain progress lines


def _console() -> Console:
    # No markup: what is printed holds paths, and `[` in a path is not a style.
    if sys.stdout.isatty():
        return Console(highlight=False, markup=False)
    # Not a terminal: Rich would wrap at 80 columns and split paths; lines stay whole instead.
    return Console(highlight=False, markup=False, soft_wrap=True, width=4096)


console = _console()


def heading(text: str) -> None:
    """A step's title: a rule across a terminal, a plain line elsewhere."""
    if console.is_terminal:
        console.rule(text)
    else:
        console.print(f"== {text} ==")


def plain(text: str) -> None:
    """A line printed as it is."""
    console.print(text)


def warn(text: str) -> None:
    """A line that asks for attention (yellow on a terminal)."""
    console.print(text, style="yellow")


def progress_seconds() -> float:
    try:
        return max(0.0, float(os.environ.get(PROGRESS_ENV, "30")))
    except ValueError:
        return 30.0


@dataclass
class StepProgress:
    """How far the running step is: what the interruption line and the plain lines say."""

    step: str
    total: int
    what: str = "videos"
    done: int = 0
    amount: int = 0  # of `unit`, for the rate (frames written; bytes)
    unit: str | None = None
    started: float = 0.0

    def add(self, amount: int = 0) -> None:
        """One more item finished, with `amount` of `unit` (frames written)."""
        self.done += 1
        self.amount += amount

    def line(self) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        text = f"{self.step}: {self.done:,}/{self.total:,} {self.what}"
        if self.unit:
            text += f", {self.amount / elapsed:,.0f} {self.unit}/s"
        else:
            text += f", {self.done / elapsed:,.1f} {self.what}/s"
        if 0 < self.done < self.total:
            text += f", eta {_clock((self.total - self.done) * elapsed / self.done)}"
        return text


def _clock(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


# The step running now, for the line printed when it is interrupted (cli.app.command).
running: StepProgress | None = None


def name_some(records, what: str, attr: str | None = "key", suffix: str = "") -> str:
    """`what` counted, the first SHOW named (`attr` of each; None: the items are the names)."""
    names = [f"{getattr(r, attr) if attr else r}{suffix}" for r in records[:SHOW]]
    more = f", … and {len(records) - SHOW} more" if len(records) > SHOW else ""
    return f"{len(records)} {what}: {', '.join(names)}{more}"


def report_failure(line: str, detail: str | None = None, stderr: bool = False) -> None:
    """One failed item (a video, a download) as it happens: one line on the terminal (or on
    stderr), and the whole story (a traceback, a tool's output) in the run's log."""
    line = one_line(line)
    if stderr:
        print(line, file=sys.stderr, flush=True)
    else:
        plain(line)
    log = current_log()
    if log is not None:
        log.error(line, detail or "")


def log_lines(lines: list[str]) -> None:
    """Lines for the run's log only (the terminal shows the first few)."""
    log = current_log()
    if log is not None and lines:
        log.write("\n".join(lines))


@contextmanager
def progress_bar(total: int, step: str, what: str = "videos",
                 unit: str | None = None) -> Iterator[Callable[..., None]]:
    """Progress of a step over `total` items; yields `advance(amount=0)`, called once per
    finished item (`amount` of `unit`, e.g. frames, for the rate). A bar on a terminal,
    periodic plain lines elsewhere; `running` says how far it got."""
    with tracking(step, total, what, unit) as state:
        yield from _show_progress(state)


@contextmanager
def tracking(step: str, total: int, what: str = "videos",
             unit: str | None = None) -> Iterator[StepProgress]:
    """Count a step's finished items in `running`, for the line an interruption prints."""
    global running
    state = StepProgress(step, total, what, unit=unit, started=time.monotonic())
    running = state
    yield state
    running = None  # finished: an interruption later is not this step's (kept if it raised)


def _show_progress(state: StepProgress) -> Iterator[Callable[..., None]]:
    if console.is_terminal:
        columns = (TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), TimeRemainingColumn())
        with Progress(*columns, console=console, transient=False) as progress:
            task = progress.add_task(state.step, total=state.total)

            def advance(amount: int = 0) -> None:
                state.add(amount)
                progress.advance(task)
            yield advance
        return
    every = progress_seconds()
    last = [time.monotonic()]
    plain(state.line())

    def advance_plain(amount: int = 0) -> None:
        state.add(amount)
        now = time.monotonic()
        if now - last[0] >= every:
            last[0] = now
            plain(state.line())
    yield advance_plain
    if state.done:
        plain(state.line())


class DownloadProgress:
    """Byte progress, one bar per file in flight (plain lines off a terminal), safe to drive
    from several threads."""

    def __init__(self):
        columns = (TextColumn("{task.description}", markup=False), BarColumn(), DownloadColumn(),
                   TransferSpeedColumn(), TimeRemainingColumn())
        self.progress = Progress(*columns, console=console, transient=False) \
            if console.is_terminal else None

    def __enter__(self):
        if self.progress is not None:
            self.progress.start()
        return self

    def __exit__(self, *exc):
        if self.progress is not None:
            self.progress.stop()

    def file(self, name: str) -> FileBar | FileLines:
        return FileBar(self.progress, name) if self.progress is not None else FileLines(name)


class FileBar:
    """One file's bar; chunks are summed and drawn at most ten times a second."""

    def __init__(self, progress: Progress, name: str):
        self.progress = progress
        self.task = progress.add_task(name, total=None)
        self.pending = 0
        self.last = 0.0

    def start(self, total: int | None, done: int) -> None:
        self.pending = 0
        self.progress.update(self.task, total=total, completed=done)

    def advance(self, n: int) -> None:
        self.pending += n
        now = time.monotonic()
        if now - self.last > 0.1:
            self.progress.update(self.task, advance=self.pending)
            self.pending, self.last = 0, now

    def close(self) -> None:
        self.progress.update(self.task, advance=self.pending)
        self.progress.remove_task(self.task)


class FileLines:
    """One file's progress as a plain line every PROGRESS_SECONDS (off a terminal)."""

    def __init__(self, name: str):
        self.name = name
        self.total: int | None = None
        self.done = self.started_at = 0
        self.t0 = self.last = time.monotonic()
        self.every = progress_seconds()

    def start(self, total: int | None, done: int) -> None:
        self.total, self.done, self.started_at = total, done, done
        self.t0 = time.monotonic()

    def advance(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            plain(self.line(now))

    def line(self, now: float) -> str:
        rate = (self.done - self.started_at) / max(now - self.t0, 1e-9)
        text = f"download: {self.name} {self.done / 2**20:,.1f}"
        if self.total:
            text += f" of {self.total / 2**20:,.1f}"
        text += f" MiB, {rate / 2**20:,.1f} MiB/s"
        if self.total and rate > 0 and self.done < self.total:
            text += f", eta {_clock((self.total - self.done) / rate)}"
        return text

    def close(self) -> None:
        if self.done > self.started_at:
            plain(self.line(time.monotonic()))
