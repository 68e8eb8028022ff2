"""Ctrl-C and SIGTERM stop a command by raising KeyboardInterrupt in the main thread, and
`together()` holds that back over the few lines that must not be split: recording a finished
video in the manifest and counting it as done. Without it, a signal landing between the two
saved a video as done that the stop line did not count (or the other way round).

Python runs signal handlers in the main thread, between bytecodes; `together()` only defers
there, and a section is a handful of statements, so the stop is late by microseconds."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_depth = 0  # sections the main thread is inside now
_held = False  # a stop arrived inside one: raised when the outermost ends


def stop() -> None:
    """What a signal handler calls: KeyboardInterrupt now, or at the end of the section (a
    second stop while one is held: now, should a section hang)."""
    global _held
    if _depth and not _held:
        _held = True
        return
    raise KeyboardInterrupt


def _on_ctrl_c(signum, frame) -> None:
    stop()


def handle_ctrl_c() -> None:
    """Ctrl-C through stop(), unless SIGINT is ignored (a shell starting a job in the
    background ignores it, and that choice is kept)."""
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _on_ctrl_c)


@contextmanager
def together() -> Iterator[None]:
    """Run the block whole: a stop that arrives inside it is raised when it ends. Where the
    block raises, its own exception goes on (it ends the step as the stop would, and says
    more: a full disk, a bug)."""
    global _depth, _held
    if threading.current_thread() is not threading.main_thread():
        yield  # handlers never run in another thread: nothing to hold back
        return
    _depth += 1
    try:
        yield
    except BaseException:
        if _depth == 1:
            _held = False  # the block's own exception ends the step instead
        raise
    finally:
        _depth -= 1
    if _depth == 0 and _held:
        _held = False
        raise KeyboardInterrupt
