"""Packed frame storage: one file per video in place of its frame folder.

`rawframes/<Class>/<name>.zip` holds exactly the files the folder `rawframes/<Class>/<name>/`
would hold, byte for byte (the JPEGs and, where there is one, the completion record), as
stored (uncompressed) members of a zip, plus an index member written last.

Why a stored zip: any machine reads it with standard tools (`unzip -l`, `unzip`, Python's
zipfile) and no datatools code; every member carries a CRC-32; a stored member's bytes lie
contiguous in the file, so with the index (each member's data offset and length) one frame is
one `pread`; and a video is one file where a folder is hundreds (inode quotas, copies to
node-local disk). JPEGs do not compress, so storing them costs nothing: a pack is the frames'
bytes plus ~100 bytes per member, less than the 4 KiB block each small file takes.

A pack is written under a hidden temporary name (`.<name>.zip.tmp`), fsynced and renamed into
place: a pack at its final name is complete; anything else is a leftover to delete.
"""

from __future__ import annotations

import json
import os
import zipfile
import zlib
from dataclasses import dataclass

from .fsio import fsync_dir

SUFFIX = ".zip"
INDEX = ".datatools-pack.json"  # {"version": 1, "members": {name: [data offset, length]}}
INDEX_VERSION = 1
FIXED_TIME = (1980, 1, 1, 0, 0, 0)  # member timestamps: the same bytes for the same frames
COMMENT = "datatools-pack"  # the zip comment: "datatools-pack <index offset> <index length>"
TAIL = 256  # bytes read from the end to find the comment (the end record is 22 + the comment)


def pack_path(frame_dir: str) -> str:
    return frame_dir.rstrip("/") + SUFFIX


def temporary_path(final: str) -> str:
    parent, name = os.path.split(final)
    return os.path.join(parent, f".{name}.tmp")


class PackError(Exception):
    """A pack that cannot be used as it is (unreadable, or another version's)."""


class PackDamaged(PackError):
    """A file at a pack's name that is not a complete pack of ours: nothing in it is trusted."""


class PackWriter:
    """Members added one by one to the temporary file; `finish` adds the index and renames."""

    def __init__(self, final: str):
        self.final = final
        self.tmp = temporary_path(final)
        self._zip = zipfile.ZipFile(self.tmp, "w", zipfile.ZIP_STORED, allowZip64=True)
        self.members: dict[str, list[int]] = {}

    def add(self, name: str, data: bytes) -> None:
        if name in self.members or name == INDEX:
            raise ValueError(f"{name} is already in {self.tmp}")
        info = zipfile.ZipInfo(name, date_time=FIXED_TIME)
        info.compress_type = zipfile.ZIP_STORED
        info.external_attr = 0o644 << 16
        self._zip.writestr(info, data)
        # A stored member's data is the last thing written for it: it ends where the file is now.
        self.members[name] = [self._zip.fp.tell() - len(data), len(data)]

    def finish(self) -> None:
        index = json.dumps({"version": INDEX_VERSION, "members": self.members}, sort_keys=True).encode()
        info = zipfile.ZipInfo(INDEX, date_time=FIXED_TIME)
        info.external_attr = 0o644 << 16
        self._zip.writestr(info, index)
        # Where the index lies, in the zip's comment (the file's last bytes): a reader finds
        # it with one read of the tail instead of parsing the whole central directory.
        self._zip.comment = f"{COMMENT} {self._zip.fp.tell() - len(index)} {len(index)}".encode()
        self._zip.close()
        fd = os.open(self.tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(self.tmp, self.final)
        fsync_dir(os.path.dirname(self.final) or ".")

    def abort(self) -> None:
        try:
            self._zip.close()
        except (OSError, ValueError):
            pass
        try:
            os.unlink(self.tmp)
        except FileNotFoundError:
            pass


@dataclass
class Pack:
    """A complete pack, opened for reading: its members' offsets and lengths."""

    path: str
    members: dict[str, list[int]]
    fd: int

    @classmethod
    def open(cls, path: str) -> Pack:
        fd = os.open(path, os.O_RDONLY)
        try:
            index = json.loads(_index_bytes(fd, path))
            if not isinstance(index, dict) or not isinstance(index.get("members"), dict):
                raise ValueError("its index is not a pack index")
        except (zipfile.BadZipFile, KeyError, ValueError) as exc:
            os.close(fd)
            raise PackDamaged(f"{path} is not a complete frame pack ({exc}); delete it and run "
                              "the step that made it again") from None
        except OSError as exc:  # the disk's error, not the file's content
            os.close(fd)
            raise PackError(f"{path}: {exc}") from None
        if index.get("version") != INDEX_VERSION:
            os.close(fd)
            raise PackError(f"{path}: pack index version {index.get('version')!r}, this datatools "
                            f"reads {INDEX_VERSION}; upgrade datatools")
        return cls(path, index["members"], fd)  # name -> [offset, length], as the writer wrote them

    def names(self) -> list[str]:
        return sorted(self.members)

    def read(self, name: str) -> bytes:
        offset, length = self.members[name]
        data = os.pread(self.fd, length, offset)
        if len(data) != length:
            raise PackDamaged(f"{self.path} is shorter than its index says ({name})")
        return data

    def damaged(self, names: list[str]) -> set[str]:
        """Those of `names` whose bytes fail the CRC-32 the zip's directory holds for them
        (or that it does not list): reads them all."""
        try:
            with zipfile.ZipFile(self.path) as zf:
                crcs = {info.filename: info.CRC for info in zf.infolist()}
        except (zipfile.BadZipFile, OSError):
            return set(names)
        bad = set()
        for name in names:
            try:
                if zlib.crc32(self.read(name)) != crcs.get(name):
                    bad.add(name)
            except (PackDamaged, KeyError):
                bad.add(name)
        return bad

    def close(self) -> None:
        os.close(self.fd)

    def __enter__(self) -> Pack:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _index_bytes(fd: int, path: str) -> bytes:
    """The index member's bytes: located by the zip comment our writer leaves, or (a pack
    whose comment was lost, e.g. rewritten by another zip tool) through the zip's directory."""
    size = os.fstat(fd).st_size
    tail = os.pread(fd, min(size, TAIL), max(0, size - TAIL))
    end = tail.rfind(b"PK\x05\x06")
    if end >= 0 and len(tail) >= end + 22:
        words = tail[end + 22:].split()
        if len(words) == 3 and words[0] == COMMENT.encode():
            offset, length = int(words[1]), int(words[2])
            data = os.pread(fd, length, offset)
            if len(data) == length:
                return data
    with zipfile.ZipFile(path) as zf:
        return zf.read(INDEX)


def verify(path: str) -> str | None:
    """None when every member's CRC-32 holds and the index matches the zip's own directory,
    else what is wrong."""
    try:
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()
            if bad is not None:
                return f"{path}: member {bad} fails its CRC-32"
            listed = {i.filename for i in zf.infolist()} - {INDEX}
    except (zipfile.BadZipFile, OSError) as exc:
        return f"{path}: {exc}"
    try:
        with Pack.open(path) as pack:
            if set(pack.members) != listed:
                return f"{path}: the index does not list the zip's members"
    except PackError as exc:
        return str(exc)
    return None
