"""Completion records: the one way a step says "this is done" and a later run decides whether
to believe it.

The rule, for every step: a record is written after the work, atomically (fsio), and holds
what the work left on disk (file counts, sizes, modification times, inodes); a later run skips
the work only while the disk still matches the record. Anything else is done again.

Where the records live: a frame folder's `.datatools-done.json` (frame_folder.py: parameters
and per-part counts, trusted when the counts and last names are on disk); a line of
`downloads/records.jsonl` (acquire/http.py: a verified file, trusted while its stamp matches;
an unpacked archive, trusted while the files it placed are still there); a manifest row
(a probe's verdict, trusted while the file's stamp matches: validate, build-lists).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from . import __version__
from .fsio import atomic_write


@dataclass(frozen=True)
class FileStamp:
    """A file as a record saw it. A field the record lacks (written by an older version) is
    not compared."""

    size: int | None
    mtime_ns: int | None = None
    inode: int | None = None

    @classmethod
    def of(cls, st: os.stat_result) -> FileStamp:
        return cls(st.st_size, st.st_mtime_ns, st.st_ino)

    @classmethod
    def at(cls, path: str | Path) -> FileStamp | None:
        try:
            return cls.of(os.stat(path))
        except OSError:
            return None

    def matches(self, seen: FileStamp | None) -> bool:
        """Whether `seen` (the file now) is the file this stamp recorded."""
        if seen is None or self.size is None or seen.size != self.size:
            return False
        return all(mine is None or now is None or mine == now
                   for mine, now in ((self.mtime_ns, seen.mtime_ns), (self.inode, seen.inode)))


def write_record(path: str | Path, record: dict) -> None:
    """A JSON record, written last and atomically, with the tool version and the time."""
    atomic_write(str(path), record_text(record))


def record_text(record: dict) -> str:
    """A record as write_record writes it (where it goes elsewhere, e.g. into a pack)."""
    return json.dumps({**record, "tool_version": __version__,
                       "finished": time.strftime("%Y-%m-%dT%H:%M:%S")})


def read_record(path: str | Path) -> dict | None:
    """The JSON record at `path`, or None where there is none or it cannot be read."""
    try:
        with open(path, encoding="utf-8") as f:
            record = json.load(f)
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def all_present(root: Path, paths: Iterable[str], elsewhere: Iterable[Path] = ()) -> bool:
    """Whether every file `paths` names (relative to root) is there, or under one of the
    `elsewhere` folders by the same relative path (where a later step moved it on purpose)."""
    others = [Path(e) for e in elsewhere]
    return all((root / rel).is_file() or any((e / rel).is_file() for e in others) for rel in paths)
