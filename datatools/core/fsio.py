"""Writing files that survive a crash, a power loss or a full disk, and saying so when the disk
is the problem.

Every file the tool keeps as a record (the manifest, completion records, download records,
quarantine records, the MMAction2 lists) goes through `atomic_write`: a temporary file in the
same folder, written, flushed and fsynced, renamed over the old one, and the folder fsynced, so
that after a power loss the old or the new file is there, never an empty or half one. Files are
created with the permissions the user's umask gives (0666 & ~umask), like any other tool's.

A full disk, a quota or a read-only filesystem is not a property of a video: `disk_error` turns
the OSError into one line naming the filesystem and the space, and the step stops.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import UserError

# Errors that mean: the destination cannot take more, whatever is being written.
DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)


# Free bytes below which a tool that failed (an external extractor, a RAR reader) is taken to
# have failed for want of space: its own message may not say so.
NEARLY_FULL = 1 << 20


def failed_for_space(path: Path) -> bool:
    return free_bytes(path) < NEARLY_FULL


class DiskError(UserError):
    """The filesystem is full, over quota or read-only: the step stops."""


def is_disk_error(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in DISK_ERRNOS


def _existing(path: Path) -> Path:
    """`path`, or its nearest parent that exists."""
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def mount_point(path: Path) -> Path:
    """The mount point of the filesystem holding `path`."""
    path = _existing(path)
    while not os.path.ismount(path):
        path = path.parent
    return path


def free_bytes(path: Path) -> int:
    return shutil.disk_usage(_existing(path)).free


def gib(n: int | float) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def disk_error(exc: OSError, where: Path, needed: int | None = None) -> DiskError:
    """One line for a full, over-quota or read-only filesystem under `where`."""
    mount = mount_point(where)
    if exc.errno == errno.EROFS:
        return DiskError(f"{where}: the filesystem at {mount} is read-only; nothing more was "
                         "written. Remount it read-write or use a --root on a writable disk")
    what = "over quota" if exc.errno == errno.EDQUOT else "full"
    need = f", needs about {gib(needed)} more" if needed else ""
    return DiskError(f"{where}: the filesystem at {mount} is {what} ({gib(free_bytes(where))} "
                     f"free{need}); the step stopped and what was finished is kept. Free some "
                     "space (or move the root), then re-run the same command to resume")


@contextmanager
def disk_errors(where: Path, needed: int | None = None) -> Iterator[None]:
    """Inside the block, a full, over-quota or read-only disk becomes a DiskError naming
    `where`; other errors pass."""
    try:
        yield
    except OSError as exc:
        if not is_disk_error(exc):
            raise
        raise disk_error(exc, Path(where), needed) from None


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def rename_into_place(tmp, final) -> None:
    """The last step of a write-then-rename whose writer made `tmp` itself (a pack, an
    unpacked folder) and fsynced it: rename it to `final`, then fsync the folder, so that a
    crash leaves no name or the finished file."""
    os.replace(tmp, final)
    fsync_dir(os.path.dirname(os.fspath(final)) or ".")


def fsync_file(path) -> None:
    """A file written by someone else's writes (a download's part) made durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_dir(tmp, final, aside) -> None:
    """Put the folder `tmp` (finished and fsynced by its writer) at `final`, where something
    may stand: that goes to `aside` first and is removed after. A run killed between the two
    renames leaves `aside` and `tmp` with no `final`: its writer recovers from them (extract:
    the finished one wins). The parent folder is fsynced."""
    if os.path.lexists(final):
        remove_path(aside)
        os.rename(final, aside)
        os.rename(tmp, final)
        remove_path(aside)
    else:
        os.rename(tmp, final)
    fsync_dir(os.path.dirname(os.fspath(final)) or ".")


def remove_path(path) -> None:
    """Whatever is at `path` removed, a link as a link: nothing it points to is touched."""
    if os.path.islink(path) or os.path.isfile(path):
        os.unlink(path)
    else:
        shutil.rmtree(path, ignore_errors=True)


def _temp_beside(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")


def write_temp(path: Path, data: bytes) -> Path:
    """The first half of an atomic write: `data` in a fsynced temporary file beside `path`
    (created 0666 & ~umask). Rename it with `commit`, or remove it with `discard`."""
    tmp = _temp_beside(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    return tmp


def commit(pairs: Iterable[tuple[Path, Path]]) -> None:
    """Rename each temporary file over its final path, then fsync the folders once each."""
    pairs = list(pairs)
    folders = set()
    done = 0
    try:
        for tmp, final in pairs:
            os.replace(tmp, final)
            folders.add(final.parent)
            done += 1
    except BaseException:
        discard(t for t, _ in pairs[done:])
        raise
    for folder in folders:
        fsync_dir(folder)


def discard(temps: Iterable[Path]) -> None:
    for tmp in temps:
        Path(tmp).unlink(missing_ok=True)


def atomic_write(path: Path, data: bytes | str) -> None:
    """Replace `path` with `data` so that a crash or power loss leaves the old or the new file."""
    path = Path(path)
    if isinstance(data, str):
        data = data.encode("utf-8")
    commit([(write_temp(path, data), path)])


def atomic_write_many(files: dict[Path, bytes]) -> None:
    """Write several files as one step: every temporary file is written before any is renamed,
    so a full disk part-way leaves all the old files in place."""
    temps: list[tuple[Path, Path]] = []
    try:
        for path, data in files.items():
            temps.append((write_temp(Path(path), data), Path(path)))
    except BaseException:
        discard(t for t, _ in temps)
        raise
    commit(temps)


# --- reading what others may have put in a root ---------------------------------------------

class NotRegular(ValueError):
    """What stands at a path where a regular file was to be read (its words: "a symbolic
    link", "a FIFO", ...)."""


def file_kind(mode: int) -> str:
    """What a stat mode is, in words."""
    for test, words in ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISDIR, "a folder"),
                        (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                        (stat.S_ISCHR, "a device"), (stat.S_ISBLK, "a device")):
        if test(mode):
            return words
    return "a regular file" if stat.S_ISREG(mode) else "not a regular file"


def open_regular(path) -> tuple[int, os.stat_result]:
    """A regular file opened for reading and its stat, never through a link (whose target
    could be a secret, or outside the root) and never blocking on a FIFO: NotRegular saying
    what is there instead. Other errors (missing, unreadable) are the OSError they are."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # O_NOFOLLOW's answer for a link
            raise NotRegular("a symbolic link") from None
        if exc.errno == errno.ENXIO:  # opening a socket
            raise NotRegular("a socket") from None
        raise
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise NotRegular(file_kind(st.st_mode))
    return fd, st
