"""Where extract puts a video's frames: a folder of files or one pack, behind one interface,
so that the extraction computes frames and never asks where they go.

    writer.add(name, data)    one frame file (a JPEG's bytes)
    writer.keep(names)        frames of the previous folder (or pack) that stay as they are
    writer.finish(record)     the completion record last, then the result renamed into place
    writer.abort()            everything this writer wrote removed; nothing else touched

Each writes under a name of its own and renames when complete (core.fsio), so a kill leaves
the previous frames or the new ones, never a mix. `path` is the folder a whole-video tool
(denseflow, our native extractor) writes into: folders only.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat

from ..core.fsio import fsync_dir, remove_path, replace_dir
from .folder import DONE as RECORD_NAME
from .folder import NotAFrame, done_bytes, write_done
from .packs import FILES, PACKED, Pack, PackWriter, pack_path


def temporary_folder(frame_dir: str) -> str:
    """The folder a video's new frames are written in before they replace `frame_dir`."""
    parent, name = os.path.split(frame_dir)
    return os.path.join(parent, f".{name}.tmp")


class FolderWriter:
    storage = FILES

    def __init__(self, frame_dir: str):
        self.final = frame_dir
        self.path = temporary_folder(frame_dir)
        remove_path(self.path)  # left over from an interrupted run
        os.makedirs(self.path)

    def add(self, name: str, data) -> None:
        # The fewest system calls: a third of extraction time is the kernel creating small
        # files, and Python's open() adds fstat/ioctl/lseek calls.
        fd = os.open(os.path.join(self.path, name), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)

    def keep(self, names: list[str]) -> None:
        """The old folder's files as hard links (the old folder stays whole until the new one
        replaces it), copies where the filesystem has no hard links."""
        for name in names:
            src, dst = os.path.join(self.final, name), os.path.join(self.path, name)
            if not stat.S_ISREG(os.lstat(src).st_mode):  # never a link, folder or FIFO kept
                raise NotAFrame(f"{src} is not a regular file; the folder is left as it is "
                                "(move it away, then run extract again)")
            try:
                os.link(src, dst)
            except OSError as exc:
                if exc.errno not in (errno.EXDEV, errno.EPERM, errno.ENOTSUP, errno.EMLINK):
                    raise
                shutil.copy2(src, dst)

    def finish(self, record: dict) -> None:
        write_done(self.path, record)
        fsync_dir(self.path)
        replace_dir(self.path, self.final, f"{self.path}.old")

    def abort(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


class PackedWriter:
    storage = PACKED
    path = None  # a whole-video tool writes folders only

    def __init__(self, frame_dir: str):
        self.final = pack_path(frame_dir)
        for leftover in (temporary_folder(frame_dir), f"{temporary_folder(frame_dir)}.old"):
            remove_path(leftover)  # folders of an interrupted run that stored files
        self._pack = PackWriter(self.final)

    def add(self, name: str, data) -> None:
        self._pack.add(name, data)

    def keep(self, names: list[str]) -> None:
        """The old pack's members, each read with its CRC-32 checked, copied as they are."""
        if names:
            with Pack.open(self.final) as old:
                for name in names:
                    self._pack.add(name, old.read(name))

    def finish(self, record: dict) -> None:
        self._pack.add(RECORD_NAME, done_bytes(record))
        self._pack.finish()

    def abort(self) -> None:
        self._pack.abort()
