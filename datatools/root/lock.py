"""One writer per data root: every step that writes a root holds an OS lock on ROOT/.datatools.lock.

The lock is `flock` on a file inside the root, so the kernel drops it when the holder dies
(Ctrl-C, SIGKILL, a node lost): there is never a stale lock to delete by hand. The holder
writes who it is (host, PID, command, since when) into the file; a second command reads that
and exits at once with one line naming it.

Shared filesystems: on NFS, Linux maps flock onto NFS byte-range locks (NFSv4, or NFSv3 with
lockd), so commands on different clients exclude each other. Lustre needs the `flock` mount
option for that; with `localflock` only processes on the same node are excluded, and without
either the kernel refuses the lock (ENOSYS), which stops the command with a line saying so.
Set DATATOOLS_LOCK=off to run without the lock where the filesystem cannot lock (then nothing
keeps two commands apart).

Worker processes forked from the command share its open lock file, so the lock lasts until the
last of them has exited: while one lives it may still write. Taking the lock is also the first
write of every step, so a read-only root is found here, before any video is probed. Steps nest
(prepare runs download, validate, ...): a process that holds a root's lock may take it again.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..core.errors import UserError, root_not_found
from ..core.fsio import disk_errors

LOCK_NAME = ".datatools.lock"
LOCK_ENV = "DATATOOLS_LOCK"

_held: dict[str, int] = {}  # real path of a root -> nesting depth, in this process
_guard = threading.Lock()
_command: str | None = None  # the command line, when this process is the console command


def set_command(text: str) -> None:
    """What a holder calls itself in the lock file (cli.main sets the command line)."""
    global _command
    _command = text


class RootBusy(UserError):
    """Another command holds the root's lock."""


def lock_path(root: Path) -> Path:
    return Path(root) / LOCK_NAME


def holder(root: Path) -> dict | None:
    """Who holds (or last held) the root's lock, as that command wrote it."""
    try:
        return json.loads(lock_path(root).read_text(encoding="utf-8") or "null")
    except (OSError, ValueError):
        return None


def describe(info: dict | None) -> str:
    if not info:
        return "another datatools command (it has not said which yet)"
    text = (f"`{info.get('command', '?')}` (PID {info.get('pid', '?')} on {info.get('host', '?')}, "
            f"since {info.get('since', '?')})")
    if info.get("host") == socket.gethostname() and isinstance(info.get("pid"), int) \
            and not _alive(info["pid"]):
        text += ", which has exited: a worker process it started still holds the lock"
    return text


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextmanager
def root_lock(root: Path, step: str) -> Iterator[None]:
    """Hold the root's write lock for the block; raise RootBusy at once if another has it."""
    root = Path(root)
    if os.environ.get(LOCK_ENV, "").lower() == "off":
        yield
        return
    if not root.is_dir():
        raise root_not_found(root)
    key = os.path.realpath(root)
    with _guard:
        if key in _held:
            _held[key] += 1
            nested = True
        else:
            nested = False
    if nested:
        try:
            yield
        finally:
            with _guard:
                _held[key] -= 1
        return
    fd = _open(root)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise RootBusy(f"{root}: in use by {describe(holder(root))}; two commands on one "
                               "root would corrupt it. Wait for that one to finish (or stop it), "
                               "then run this again") from None
            raise UserError(f"{lock_path(root)}: the filesystem refused a lock ({exc.strerror}); "
                            "on Lustre mount with -o flock, or set DATATOOLS_LOCK=off if no "
                            "other command can run on this root") from None
        info = {"host": socket.gethostname(), "pid": os.getpid(), "step": step,
                "command": _command or f"{step} (called from {Path(sys.argv[0]).name})",
                "since": time.strftime("%Y-%m-%dT%H:%M:%S")}
        with disk_errors(root):
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(info).encode(), 0)
        with _guard:
            _held[key] = 1
        try:
            yield
        finally:
            with _guard:
                del _held[key]
    finally:
        os.close(fd)  # closing the file releases the lock


def _open(root: Path) -> int:
    try:
        with disk_errors(root):
            return os.open(lock_path(root), os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as exc:
        raise UserError(f"{root}: cannot write to the data root ({exc.strerror}); every step "
                        "that changes a root needs write access to it") from None

