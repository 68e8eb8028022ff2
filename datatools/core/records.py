"""Completion records: the one way a step says "this is done" and a later run decides whether
to believe it.

The rule, for every step: a record is written after the work, atomically (fsio), and holds
what the work left on disk (file counts, sizes, modification times); a later run skips
the work only while the disk still matches the record. Anything else is done again.

Where the records live: a frame folder's `.datatools-done.json` (frames/folder.py: parameters
and per-part counts, trusted when the counts and last names are on disk); a line of
`downloads/records.jsonl` (acquire/http.py: a verified file, trusted while its stamp matches;
an unpacked archive, trusted while the files it placed are still there; JsonLog, the
append-only log both records.jsonl files are); a manifest row
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
from .errors import UserError
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


class JsonLog:
    """An append-only log of JSON objects, one per line (`downloads/records.jsonl`,
    `quarantine/records.jsonl`), with one crash rule for every such log: an append is one
    write and an fsync, so a crash can leave only the last line cut short (no newline). A
    reader ignores that line; the next append first cuts it off, so that the new entry starts
    a line of its own (glued to the cut line, it would be lost with it). A line that is not
    JSON anywhere else was not written by a crash: `strict` readers stop with one line naming
    it, the others skip it."""

    def __init__(self, path: Path, what: str = "record"):
        self.path = Path(path)
        self.what = what

    def read(self, strict: bool = False) -> list[dict]:
        try:
            text = self.path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return []
        lines = text.split("\n")
        entries = []
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                if not isinstance(entry, dict):
                    raise ValueError("not an object")
            except ValueError:
                if number == len(lines):
                    break  # the last line, without its newline: an append a crash stopped
                if strict:
                    raise UserError(f"{self.path}:{number}: unreadable {self.what}; fix or "
                                    "remove the line") from None
                continue
            entries.append(entry)
        return entries

    def append(self, entry: dict) -> None:
        """One more line, on disk (fsynced) when this returns."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            end = _after_last_newline(fd)
            os.ftruncate(fd, end)
            os.lseek(fd, end, os.SEEK_SET)
            os.write(fd, (json.dumps(entry) + "\n").encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)

    def rewrite(self, entries: Iterable[dict]) -> None:
        """Replace the whole log, atomically."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(self.path, "".join(json.dumps(e) + "\n" for e in entries))


def _after_last_newline(fd: int) -> int:
    """Where the next line starts: the end of the file, or just after its last newline when
    the last line was cut short."""
    size = os.fstat(fd).st_size
    end = size
    while end > 0:
        start = max(0, end - 65536)
        block = os.pread(fd, end - start, start)
        if end == size and block.endswith(b"\n"):
            return size
        cut = block.rfind(b"\n")
        if cut >= 0:
            return start + cut + 1
        end = start
    return 0
