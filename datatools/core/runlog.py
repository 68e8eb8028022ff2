"""One log file per command run, for whoever reads a batch job's output the next morning.

`ROOT/logs/<command>-<UTC time>-<pid>.log` holds the command line and the versions, every
per-video error with its traceback, and what the libraries say on their own (Dask's warnings,
Python warnings, the decoders' messages from the local workers, whose stderr is sent here):
the terminal keeps one line per failed video and the summary, whose last line names this file.
A command without a root, or whose root cannot be written, logs to the user's state folder.
"""

from __future__ import annotations

import logging
import os
import platform
import shlex
import sys
import tempfile
import threading
import time
import traceback
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOG_FOLDER = "logs"  # inside the data root
# Loggers of libraries that install handlers writing to the terminal themselves.
LIBRARY_LOGGERS = ("distributed", "dask", "dask_jobqueue", "tornado", "asyncio")

_current: RunLog | None = None
_logs: weakref.WeakSet = weakref.WeakSet()  # every live log, for the fork handler below


def _after_fork_in_child() -> None:
    # A worker forked while a driver thread held a log's lock would wait for it forever.
    for log in list(_logs):
        log._lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)


class RunLog:
    """An append-only text file shared by the driver's threads and the workers' stderr. It is
    created at its first line (the header comes first), so a command refused for its options
    before it wrote anything leaves no file behind."""

    def __init__(self, root: Path | None, name: str, argv: list[str]):
        self.root, self.name, self.argv = root, name, argv
        self._path: Path | None = None
        self._lock = threading.Lock()
        self.started = False  # the file has its header (a command that did work always does)
        self.pid = os.getpid()
        _logs.add(self)

    @property
    def path(self) -> Path:
        """Chosen (and its folder made) when first needed: ROOT/logs, else the state folder."""
        if self._path is None:
            self._path = _new_file(self.root, self.name)
        return self._path

    def write(self, text: str) -> None:
        """Append a line. A log never stops a command: when its disk refuses (full, read-only)
        it moves to the state folder, and when that refuses too it is dropped."""
        line = text if text.endswith("\n") else text + "\n"
        with self._lock:
            for fallback in (lambda: _new_file(None, self.name), lambda: Path(os.devnull)):
                try:
                    with open(self.path, "a", encoding="utf-8", errors="replace") as f:
                        f.write((_header(self.argv) if not self.started else "") + line)
                    self.started = True
                    return
                except OSError:
                    self._path, self.started = fallback(), False

    def start(self) -> Path:
        """Make sure the file exists (before others append to it: the workers' stderr)."""
        if not self.started:
            self.write(f"{_utc()} started")
        return self.path

    def error(self, what: str, detail: str) -> None:
        """One failed item (a video, a URL) with what is known of why: a traceback or a line."""
        self.write(f"--- {_utc()} {what}\n{detail.rstrip()}\n")


class _ToRunLog(logging.Handler):
    def __init__(self, log: RunLog):
        super().__init__(logging.WARNING)
        self.log = log
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if os.getpid() != self.log.pid:  # a forked worker: its stderr is the log (client.py)
                sys.stderr.write(self.format(record) + "\n")
                return
            self.log.write(self.format(record))
        except Exception:  # logging must never stop a command
            self.handleError(record)


def current() -> RunLog | None:
    """The log of the command running in this process, if it is one that keeps a log."""
    return _current


def log_for(root: Path | None, name: str) -> RunLog:
    """The current run's log, or (for library callers, which have none) a new one."""
    return _current or RunLog(root, name, sys.argv)


def exception_text(exc: BaseException) -> str:
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


@contextmanager
def run_log(name: str, root: Path | None, argv: list[str]) -> Iterator[RunLog]:
    """Keep this run's log for the block: header first, then Python's and the libraries'
    logging and warnings go to the file instead of the terminal."""
    global _current, _saved
    log = RunLog(root, name, argv)
    handler = _ToRunLog(log)
    top = logging.getLogger()
    previous_saved, _saved = _saved, [(top, top.level, top.handlers[:], top.propagate)]
    top.addHandler(handler)
    top.setLevel(logging.WARNING)  # the libraries' warnings and errors, not their chatter
    logging.captureWarnings(True)
    previous, _current = _current, log
    adopt_library_logs()
    try:
        yield log
    finally:
        _current = previous
        logging.captureWarnings(False)
        top.removeHandler(handler)
        for logger, level, handlers, propagate in reversed(_saved):
            logger.setLevel(level)
            logger.handlers[:] = handlers
            logger.propagate = propagate
        _saved = previous_saved


_saved: list = []  # loggers as they were before this run's log took them over


def adopt_library_logs() -> None:
    """Send the libraries' loggers to this run's log instead of the terminal. Dask configures
    its logging when it is first imported, so whoever imports it calls this again after."""
    if _current is None:
        return
    for logger_name in LIBRARY_LOGGERS:
        lib = logging.getLogger(logger_name)
        streams = [h for h in lib.handlers if isinstance(h, logging.StreamHandler)]
        if not streams and lib.propagate:
            continue
        _saved.append((lib, lib.level, lib.handlers[:], lib.propagate))
        for h in streams:
            lib.removeHandler(h)  # the terminal: this run's file takes their place
        lib.propagate = True


def _utc() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


# What a run's results depend on, as installed (package metadata: nothing is imported).
PACKAGES = ("numpy", "opencv-contrib-python-headless", "decord", "av", "pyarrow", "dask",
            "distributed", "dask-jobqueue", "torch", "mmaction2")


def _header(argv: list[str]) -> str:
    from importlib.metadata import PackageNotFoundError, version

    from .. import __version__
    versions = [f"datatools {__version__}", f"python {platform.python_version()}"]
    for package in PACKAGES:
        try:
            versions.append(f"{package} {version(package)}")
        except PackageNotFoundError:
            continue
    try:
        cwd = os.getcwd()
    except OSError:  # the folder the command was started in is gone
        cwd = os.environ.get("PWD", "?") + " (deleted)"
    return (f"command: {shlex.join(argv)}\ncwd: {cwd}\nhost: {platform.node()} "
            f"(PID {os.getpid()})\nstarted: {_utc()}\nversions: {', '.join(versions)}\n")


def state_folder() -> Path:
    """Where logs go without a usable root: $XDG_STATE_HOME/datatools/logs."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "datatools" / LOG_FOLDER


def _new_file(root: Path | None, name: str) -> Path:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    file_name = f"{name}-{stamp}-{os.getpid()}.log"
    candidates = [Path(root) / LOG_FOLDER] if root is not None and Path(root).is_dir() else []
    candidates += [state_folder(), Path(tempfile.gettempdir()) / "datatools-logs"]
    for folder in candidates:
        # The folder is made now, the file at the first line: a root that cannot take it
        # (read-only, full) sends the log to the next place.
        try:
            folder.mkdir(parents=True, exist_ok=True)
            if os.access(folder, os.W_OK):
                return folder / file_name
        except OSError:
            continue
    return Path(os.devnull)
