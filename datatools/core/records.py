"""Completion records: the one way a step says "this is done" and a later run decides whether
to believe it.

The rule, for every step: a record is written after the work, atomically (fsio), and holds
what the work left on disk (file counts, sizes, modification times); a later run skips
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
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .. import __version__
from .fsio import NotRegular, atomic_write, open_regular


@dataclass(frozen=True)
class FileStamp:
    """A file as a record saw it: its size and modification time in nanoseconds. A field
    the record lacks (written by an older version) is not compared.

    The inode is not part of it: a root copied with its timestamps (`cp -a`, `rsync -a`, to
    a node-local disk) holds the same files under new inodes, and its probes and frame
    records stay true. What changes a file's content changes its mtime (a rewrite, a new
    download renamed into place); a copy that keeps the mtime keeps the bytes."""

    size: int | None
    mtime_ns: int | None = None

    @classmethod
    def of(cls, st: os.stat_result) -> FileStamp:
        return cls(st.st_size, st.st_mtime_ns)

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
        return self.mtime_ns is None or seen.mtime_ns is None or self.mtime_ns == seen.mtime_ns


def write_record(path: str | Path, record: dict) -> None:
    """A JSON record, written last and atomically, with the tool version and the time."""
    atomic_write(str(path), record_text(record))


def record_text(record: dict) -> str:
    """A record as write_record writes it (where it goes elsewhere, e.g. into a pack)."""
    return json.dumps({**record, "tool_version": __version__,
                       "finished": time.strftime("%Y-%m-%dT%H:%M:%S")})


def read_record(path: str | Path) -> dict | None:
    """The JSON record at `path`, or None where there is none or it cannot be read (or is
    not a record: too large, nested too deep, not an object)."""
    try:
        fd, _ = open_regular(path)  # not a link, FIFO or device put at a record's name
    except (OSError, NotRegular):
        return None
    try:
        data = os.read(fd, MAX_RECORD_BYTES + 1)
        record = parse_json(data, MAX_RECORD_BYTES)
    except (OSError, ValueError):
        return None
    finally:
        os.close(fd)
    return record if isinstance(record, dict) else None


# Records and indexes are read from roots others share, so what a parser may be handed is
# bounded before it runs: its size, and how deep it nests (json recurses once per level).
MAX_RECORD_BYTES = 1 << 20
MAX_JSON_DEPTH = 8
_JSON_ESCAPE = re.compile(rb"\\.", re.S)
_JSON_STRING = re.compile(rb'"[^"]*"')
_JSON_NOT_BRACKET = re.compile(rb"[^\[\]{}]+")
_JSON_INNERMOST = re.compile(rb"\[\]|\{\}")


def parse_json(data: bytes, limit: int, depth: int = MAX_JSON_DEPTH):
    """JSON from bytes read off a disk, or ValueError saying why not: more than `limit`
    bytes, nested deeper than `depth`, not UTF-8, not JSON."""
    if len(data) > limit:
        raise ValueError(f"larger than {limit:,} bytes")
    # The brackets outside strings, innermost pairs taken away once per level allowed:
    # whatever is left nests deeper (or does not pair up, which json refuses anyway).
    brackets = _JSON_NOT_BRACKET.sub(b"", _JSON_STRING.sub(b"", _JSON_ESCAPE.sub(b"", data)))
    for _ in range(depth):
        brackets = _JSON_INNERMOST.sub(b"", brackets)
    if brackets:
        raise ValueError(f"nested deeper than {depth} levels, or not JSON")
    return json.loads(data.decode("utf-8"))  # UnicodeDecodeError and JSONDecodeError: ValueError


def all_present(root: Path, paths: Iterable[str], elsewhere: Iterable[Path] = ()) -> bool:
    """Whether every file `paths` names (relative to root) is there, or under one of the
    `elsewhere` folders by the same relative path (where a later step moved it on purpose)."""
    others = [Path(e) for e in elsewhere]
    return all((root / rel).is_file() or any((e / rel).is_file() for e in others) for rel in paths)
