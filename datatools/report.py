"""What the user sees: progress while a step runs, summary tables and the first few offenders
after it.

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
from rich.table import Table

from .errors import one_line, shell_word
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


# The step running now, for the line printed when it is interrupted (cli.command).
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


def print_build_summary(result, root) -> None:
    table = Table(title=f"{result.dataset}: lists written to {root}", show_edge=False)
    for col in ("list", "lines", "in annotations"):
        table.add_column(col, justify="right" if col != "list" else "left")
    for lf in result.lists:
        table.add_row(lf.name, f"{lf.lines:,}", f"{lf.expected:,}")
    console.print(table)
    console.print(f"label map: {result.label_source}")
    if result.rebuilt_from is not None:
        warn(f"the manifest was unreadable: kept aside as {result.rebuilt_from}, "
             "rebuilt from the annotations, the files on disk and the completion "
             "records")
    if result.unchecked:
        console.print(f"{result.unchecked:,} listed video(s) were never checked (status "
                      f"unchecked); `datatools {result.dataset} validate --root {shell_word(root)}` checks "
                      "them and later lists leave out the bad ones")
    if result.bad:
        warn(name_some(result.bad, "video(s) left out of the lists as bad "
                       "(empty or failed validate; see status and error in the manifest)",
                       "video_path"))
    if result.incomplete:
        warn(name_some(result.incomplete, "frame folders hold fewer files "
                       "than their completion record counts, or were made from an earlier "
                       "version of the video (extract_status incomplete or stale; not listed; "
                       "re-run `datatools extract`)", "frame_dir"))
    if result.not_utf8:
        warn(name_some(result.not_utf8, "file(s) or folder(s) left out: their names are not "
                       "UTF-8, which no manifest or MMAction2 list can hold (rename them)", None))
    if result.unusable:
        warn(name_some(result.unusable, "files at packs' names are not datatools packs "
                       "(extract_status unusable, the reason in extract_error and the log; not "
                       "listed, left as they are: move them away, then extract again)",
                       "frame_dir", ".zip"))
        log_lines([r.extract_error or "" for r in result.unusable])
    if result.missing:
        warn(name_some(result.missing, "videos in a split but missing on "
                       "disk (status=missing in the manifest)"))
    if result.extra:
        console.print(name_some(result.extra, "files on disk in no split (status=extra, not listed)",
                                "video_path"))
    if result.no_extraction:
        plain(f"no frames extracted yet under {root}: the rawframes and flow lists are empty; "
              f"run `datatools extract --root {shell_word(root)}`, then build-lists again")
    if result.no_frames:
        warn(name_some(result.no_frames, "frame folders with no img_ "
                       "files (not listed; run `datatools extract`)", "frame_dir"))
    if result.flow_mismatch:
        warn(name_some(result.flow_mismatch, "frame folders whose flow_x "
                       "and flow_y counts differ (no flow listed)", "frame_dir"))


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


def print_validate_summary(result, catalog) -> None:
    from .status import VIDEO_STATUSES
    table = Table(title=f"{result.dataset}: videos by status", show_edge=False)
    table.add_column("status")
    table.add_column("videos", justify="right")
    for status in VIDEO_STATUSES:
        if result.counts.get(status):
            table.add_row(status, f"{result.counts[status]:,}")
    console.print(table)
    if result.kept:
        console.print(f"{result.probed:,} video(s) probed; {result.kept:,} unchanged since an earlier "
                      "probe at this level or deeper kept its verdict (--force probes them again)")
    bad = [r for r in result.records if r.status not in ("ok", "missing", "extra", "unchecked")]
    log_lines([f"{r.status}: {r.video_path}: {r.error}" for r in bad])
    for r in bad[:SHOW]:
        plain(f"  {r.status}: {r.video_path}: {r.error}")
    if len(bad) > SHOW:
        console.print(f"  … and {len(bad) - SHOW} more (see the manifest's status and error columns)")
    missing = [r for r in result.records if r.status == "missing"]
    if missing:
        console.print(name_some(missing, "missing"))
    extra = [r for r in result.records if r.status == "extra"]
    if extra:
        console.print(name_some(extra, "on disk in no split (extra)", "video_path"))
    splits = Table(title="per split: ok / in the annotations / the catalog expects", show_edge=False)
    for col in ("split", "subset", "ok", "annotated", "catalog"):
        splits.add_column(col, justify="right")
    for split in range(1, catalog.splits + 1):
        subsets = sorted({r.subset(split) for r in result.records if r.subset(split)} - {"unused"})
        for subset in subsets:
            members = [r for r in result.records if r.subset(split) == subset]
            ok = sum(r.status == "ok" for r in members)
            expected = catalog.expected_count(split, subset)
            splits.add_row(str(split), subset, f"{ok:,}", f"{len(members):,}",
                           f"{expected:,}" if expected else "-")
    console.print(splits)
    annotated = [r for r in result.records if r.status != "extra"]
    ok = sum(r.status == "ok" for r in annotated)
    total = catalog.raw.get("total_videos")
    line = f"{catalog.title}: {ok:,} of {len(annotated):,} annotated videos ok"
    if total:
        line += f" (the full dataset has {total:,})"
    console.print(line)
    held = [r for r in result.records if r.video_path and not r.exists and r.status != "missing"]
    if held:
        console.print(f"{len(held)} file(s) in quarantine/ (see quarantine/records.jsonl; "
                      "`validate --restore` puts them back)")
    if result.quarantined:
        console.print(f"{len(result.quarantined)} file(s) moved to quarantine/ "
                      f"(records in quarantine/records.jsonl; undo with --restore)")


def print_extract_summary(result, root) -> None:
    counts = result.counts
    table = Table(title=f"{result.dataset}: extraction in {root}", show_edge=False)
    for col in ("videos", "done", "skipped (already done)", "failed", "refused", "not ok"):
        table.add_column(col, justify="right")
    frames = sum(o.written_rgb for _, o in result.outcomes if o.status == "done")
    pairs = sum(o.written_flow for _, o in result.outcomes if o.status == "done")
    table.add_row(f"{len(result.outcomes) + len(result.not_ok):,}", f"{counts['done']:,}",
                  f"{counts['skipped']:,}", f"{counts['failed']:,}", f"{counts['refused']:,}",
                  f"{len(result.not_ok):,}")
    console.print(table)
    console.print(f"written now: {frames:,} RGB frames, {pairs:,} flow pairs")
    if result.failures:  # each was said on its own line as it happened
        plain(f"{len(result.failures):,} video(s) failed or refused, each named above with "
              "why (extract_error in the manifest; tracebacks in the log)")
    if result.not_ok:
        console.print(name_some(result.not_ok, "selected videos skipped because their status is "
                                "not ok (see validate)"))


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


def print_download_summary(result, root) -> None:
    if result.present:
        plain(f"{' and '.join(result.present)} already in {root} (not downloaded by datatools): "
              "used as they are, not downloaded")
    fetched = sum(f.transferred for f in result.fetched)
    console.print(f"{result.dataset}: {len(result.fetched)} file(s) fetched "
                  f"({fetched / 2**20:,.1f} MiB over the network), {len(result.unpacked)} "
                  f"unpacked, {len(result.skipped)} already done (downloads/records.jsonl)")
    unverified = [f.path.name for f in result.fetched if f.verified in ("none", "size")]
    if unverified:
        console.print(f"{len(unverified)} file(s) had no published checksum: sha256 computed and "
                      "recorded in downloads/records.jsonl")
    for subset, missing in result.missing.items():
        warn(f"{len(missing):,} {subset} clip(s) named in the annotations were in "
             f"no archive: listed in {root}/downloads/missing_{subset}.txt")
    if result.unmatched:
        console.print(f"{len(result.unmatched):,} file(s) in the archives are in no annotation: "
                      f"moved to {root}/downloads/unmatched/")


def print_datasets(rows: list[tuple[str, str, str]]) -> None:
    """(name, title, module) per dataset: what `datatools datasets` prints."""
    table = Table(show_edge=False)
    for col in ("dataset", "title", "module"):
        table.add_column(col)
    for row in rows:
        table.add_row(*row)
    console.print(table)
