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

A pack is written under a temporary name of its own (`.<name>.zip.<pid>-<random>.tmp`, created
exclusively), fsynced and renamed into place.

A pack is input: roots are shared and copied, so whatever sits at a pack's name is checked by
one rule (`Pack.open`) before any reader trusts a byte of it. See `Pack.open` for the rule; a
file that breaks it is `NotAPack`, which every caller turns into a failed video or an unlisted
row, never into a folder and never into a deletion.
"""

from __future__ import annotations

import collections
import functools
import json
import os
import re
import shutil
import struct
import uuid
import zipfile
import zlib
from dataclasses import dataclass
from typing import NamedTuple

from ..core.fsio import NotRegular, open_regular, rename_into_place
from .folder import DONE, MAX_FRAME_BYTES, NAMES_PATTERN, name_problem, record_from_bytes

SUFFIX = ".zip"
INDEX = ".datatools-pack.json"  # {"version": 1, "members": {name: [data offset, length]}}
INDEX_VERSION = 1
FIXED_TIME = (1980, 1, 1, 0, 0, 0)  # member timestamps: the same bytes for the same frames
COMMENT = "datatools-pack"  # the zip comment: "datatools-pack <index offset> <index length>"
TAIL = 256  # bytes read from the end: the end records (22, zip64 20 + 56) and a short comment

# What one pack may hold, so that opening or reading any file at a pack's name costs at most
# this much memory and time. 2**19 members: about 1.6 hours of RGB and flow at 30 fps.
MAX_MEMBERS = 1 << 19
MAX_DIRECTORY_BYTES = 64 << 20  # the zip's central directory


# Where a video's frames are stored (the manifest's frame_storage, extract's --store): a folder
# of files at frame_dir, or one pack at frame_dir + SUFFIX.
FILES, PACKED = "files", "packed"
STORAGES = (FILES, PACKED)


def pack_path(frame_dir: str) -> str:
    return frame_dir.rstrip("/") + SUFFIX


def stored_at(frame_dir: str, storage: str | None) -> str:
    """The path that holds a video's frames: its folder, or its pack."""
    return pack_path(frame_dir) if storage == PACKED else frame_dir


def temporary_path(final: str) -> str:
    """A new temporary name beside `final`, unique to this writer (create it exclusively)."""
    parent, name = os.path.split(final)
    return os.path.join(parent, f".{name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")


# Temporary names of writers killed before they finished (ours, and the fixed `.<name>.zip.tmp`
# earlier versions used; not extract's `.<name>.tmp` folders, which extract recovers from):
# removed by the walks that meet them, which run under the root's lock.
_LEFTOVER = re.compile(r"\..+\.(?:[0-9]+-[0-9a-f]{8}|zip)\.tmp\Z", re.S)


def is_leftover(name: str) -> bool:
    return bool(_LEFTOVER.match(name))


def remove_leftover(entry: os.DirEntry) -> None:
    """A killed writer's leftover (is_leftover): a file, a folder (unpack's), or a link (as a
    link: nothing it points to is touched)."""
    try:
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path, ignore_errors=True)
        else:
            os.unlink(entry.path)
    except FileNotFoundError:
        pass


class PackError(Exception):
    """A pack that cannot be used as it is (another version's, or the disk cannot read it)."""


class NotAPack(PackError):
    """A file at a pack's name that breaks the pack rule (Pack.open): nothing in it is
    trusted, and it is left as it is."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: not a datatools pack: {reason}; it is left as it is "
                         "(move it away, then run the step again)")


class DamagedFrame(PackError):
    """A member whose bytes fail their CRC-32 (bit rot, a bad copy): the pack is ours, the
    frame is not to be used."""


class PackWriter:
    """Members added one by one to the temporary file; `finish` adds the index and renames.
    The temporary file is this writer's alone, so `abort` touches nothing else."""

    def __init__(self, final: str):
        self.final = final
        self.tmp = temporary_path(final)
        fd = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        self._file = os.fdopen(fd, "wb")
        self._zip = zipfile.ZipFile(self._file, "w", zipfile.ZIP_STORED, allowZip64=True)
        self.members: dict[str, list[int]] = {}

    def add(self, name: str, data: bytes) -> None:
        problem = name_problem(name)
        if problem or name in self.members:
            raise ValueError(f"{self.tmp}: {problem or f'{name} is already in it'}")
        if len(data) > MAX_FRAME_BYTES:
            raise ValueError(f"{self.final}: {name} holds {len(data):,} bytes, more than a "
                             f"pack member may ({MAX_FRAME_BYTES:,})")
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
        # Where the index lies, in the zip's comment (what earlier versions of the reader use).
        self._zip.comment = f"{COMMENT} {self._zip.fp.tell() - len(index)} {len(index)}".encode()
        self._zip.close()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        rename_into_place(self.tmp, self.final)

    def abort(self) -> None:
        # Not ZipFile.close: that writes a central directory. The file is closed and removed.
        self._zip.fp = None
        self._file.close()
        try:
            os.unlink(self.tmp)
        except FileNotFoundError:
            pass


# --- the pack rule ---------------------------------------------------------------------------
# Zip records, as the format (PKWARE's APPNOTE) lays them out, little-endian.
_END = struct.Struct("<4s4H2LH")  # end of central directory: 22 bytes + comment
_END64_LOCATOR = struct.Struct("<4sLQL")  # 20 bytes, just before the end record
_END64 = struct.Struct("<4sQ2H2L4Q")  # 56 bytes
# A central directory entry's fields the rule reads: signature, flags, method, CRC-32, stored
# and real sizes, name, extra and comment lengths, disk, local header offset (46 bytes, then
# the name, extra and comment).
_CENTRAL = struct.Struct("<4s4xHH4xLLLHHHH6xL")
_LOCAL = struct.Struct("<4s2B4HL2L2H")  # 30 bytes + name + extra, then the data
_UTF8_NAMES = 0x800  # the only general-purpose flag a pack's member has
_FULL32 = 0xFFFFFFFF  # "see the zip64 record"


class Member(NamedTuple):
    offset: int  # of the data
    length: int
    header: int  # offset of the local header
    crc: int


# NamedTuple's own constructor checks its arguments' count in Python; a pack opens hundreds.
_member = functools.partial(tuple.__new__, Member)


@dataclass
class Pack:
    """A pack that keeps the pack rule, opened for reading: its members by name."""

    path: str
    members: dict[str, Member]
    fd: int
    record: dict | None = None  # its completion record (member DONE), checked; None: none

    @classmethod
    def open(cls, path: str) -> Pack:
        """Open the file at a pack's name, or raise NotAPack saying which rule it breaks
        (PackError: another index version, or the disk's own error).

        The rule, every read bounded by the file's size and by MAX_DIRECTORY_BYTES: a regular
        file (not a link, FIFO or device) whose members' bytes are on disk (not sparse),
        ending in one zip end record whose comment places the index; its central directory
        lists at most MAX_MEMBERS members, each stored (method 0, not encrypted), named as a
        frame or the record (folder.name_problem: plain UTF-8 names that no path or case
        folding can confuse), once, no larger than a frame may be (MAX_FRAME_BYTES), its data
        just after its local header (no extra field, as our writer leaves it), no two members
        overlapping or running into the directory; the index is exactly the text our writer
        makes for those members (so it names each, with its offset and length, and is never
        parsed); the completion record, where there is one, keeps the record's rules
        (folder.record_problem). Every other member's local header (name, sizes, CRC)
        and its bytes' CRC-32 are checked when it is read, in the same single pread."""
        try:
            fd, st = open_regular(path)
        except NotRegular as exc:
            raise NotAPack(path, f"it is {exc}") from None
        except OSError as exc:
            raise PackError(f"{path}: {exc.strerror or exc}") from None
        try:
            pack = cls(path, _read_members(fd, st, path), fd)
            if DONE in pack.members:
                pack.record = _checked_record(pack)
            return pack
        except OSError as exc:  # the disk's error, not the file's content
            os.close(fd)
            raise PackError(f"{path}: {exc.strerror or exc}") from None
        except BaseException:
            os.close(fd)
            raise

    def names(self) -> list[str]:
        """The folder's file names (frames and the record), sorted."""
        return sorted(self.members)

    def read(self, name: str) -> bytes:
        """One member's bytes, with its local header, in one pread; KeyError for a name the
        pack does not hold, NotAPack or DamagedFrame where it is not what the directory says."""
        return _read_member(self.fd, self.path, name, self.members[name])

    def damaged(self, names: list[str]) -> set[str]:
        """Those of `names` whose bytes fail their CRC-32 (or that the pack lacks): reads them."""
        bad = set()
        for name in names:
            try:
                self.read(name)
            except (DamagedFrame, KeyError):
                bad.add(name)
        return bad

    def close(self) -> None:
        os.close(self.fd)

    def __enter__(self) -> Pack:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _read_members(fd: int, st: os.stat_result, path: str) -> dict[str, Member]:
    """The members of the regular file at `fd` by the pack rule (Pack.open), the index
    excepted."""
    def refuse(reason: str):
        raise NotAPack(path, reason)

    count, cd_at, directory, comment = _directory(fd, st.st_size, refuse)
    members = _entries(directory, count, cd_at, refuse)
    if INDEX not in members:
        refuse(f"it has no index member ({INDEX})")
    # Members' bytes that are not on disk (holes) would read as gigabytes of zeros.
    if sum(m.length for m in members.values()) > 2 * st.st_blocks * 512 + (1 << 20):
        refuse("it is sparse: its members' bytes are not on disk")
    index = members.pop(INDEX)
    if comment != f"{COMMENT} {index.offset} {index.length}".encode():
        refuse("its zip comment does not say where its index is")
    try:  # its local header, and its bytes' CRC-32 against the directory's
        data = _read_member(fd, path, INDEX, index)
    except DamagedFrame:
        refuse("its index fails its CRC-32")
    _check_index(data, members, path, refuse)
    spans = sorted((m.header, m.offset + m.length) for m in (*members.values(), index))
    for (_, end), (after, _) in zip(spans, spans[1:]):
        if end > after:
            refuse("two of its members overlap")
    return members


def _directory(fd: int, size: int, refuse) -> tuple[int, int, bytes, bytes]:
    """(member count, offset of the central directory, its bytes, the zip comment), read
    from the end records, each read bounded by the file's size and MAX_DIRECTORY_BYTES."""
    tail_at = max(0, size - TAIL)
    tail = os.pread(fd, size - tail_at, tail_at)
    end = _end_record(tail)
    if end is None:
        refuse("it does not end in a zip end record")
    end_at = tail_at + end
    (_, disk, cd_disk, _, count, cd_size, cd_at, _) = _END.unpack_from(tail, end)
    dir_end = end_at
    locator = tail[max(0, end - _END64_LOCATOR.size):end]
    if locator[:4] == b"PK\x06\x07" and len(locator) == _END64_LOCATOR.size:
        # zip64 (a pack past 2 GiB, or of more than 65,535 members): its record says where
        _, _, end64_at, _ = _END64_LOCATOR.unpack(locator)
        if end64_at != end_at - _END64_LOCATOR.size - _END64.size:
            refuse("its zip64 end record is not where its locator says")
        raw = os.pread(fd, _END64.size, end64_at)
        if len(raw) != _END64.size or raw[:4] != b"PK\x06\x06":
            refuse("its zip64 end record is missing")
        (_, _, _, _, disk, cd_disk, _, count, cd_size, cd_at) = _END64.unpack(raw)
        dir_end = end64_at
    if disk or cd_disk:
        refuse("it is a zip split over several disks")
    if cd_at + cd_size != dir_end:
        refuse("its central directory is not where its end record says")
    if count > MAX_MEMBERS or cd_size > MAX_DIRECTORY_BYTES or cd_size < count * _CENTRAL.size:
        refuse(f"its central directory lists {count:,} members in {cd_size:,} bytes (a pack "
               f"holds at most {MAX_MEMBERS:,} in {MAX_DIRECTORY_BYTES:,} bytes)")
    directory = os.pread(fd, cd_size, cd_at)
    if len(directory) != cd_size:
        refuse("it is shorter than its end record says")
    return count, cd_at, directory, tail[end + _END.size:]


def _end_record(tail: bytes) -> int | None:
    """Where in `tail` (the file's last bytes) the end record starts: the one whose comment
    runs exactly to the end of the file."""
    at = tail.rfind(b"PK\x05\x06")
    while at >= 0:
        if at + _END.size <= len(tail) and at + _END.size + _END.unpack_from(tail, at)[-1] == len(tail):
            return at
        at = tail.rfind(b"PK\x05\x06", 0, at)
    return None


_ALLOWED_NAMES = re.compile(f"(?:{NAMES_PATTERN}|{re.escape(INDEX)})".encode())
_ALL_ALLOWED = re.compile(b"(?:%s)(?:\n(?:%s))*" % ((_ALLOWED_NAMES.pattern,) * 2))
_SIGNATURE = b"PK\x01\x02"


def _entries(directory: bytes, count: int, cd_at: int, refuse) -> dict[str, Member]:
    """Every entry of the central directory by the pack rule, as a member whose data starts
    just after its local header. A pack opens for every clip a training reads, so an entry as
    our writer makes it costs one unpack and one test; anything else goes to _odd_entry,
    which says what is wrong (or reads a zip64 field)."""
    names, values = [], []
    unpack, fixed, fixed_local = _CENTRAL.unpack_from, _CENTRAL.size, _LOCAL.size
    pos, end = 0, len(directory)
    for _ in range(count):
        if pos + fixed > end:
            refuse("its central directory is cut short")
        sig, flags, method, crc, csize, size, nlen, elen, clen, disk, header = unpack(directory, pos)
        start = pos + fixed
        pos = start + nlen + elen + clen
        name_end = header + fixed_local + nlen
        if (sig != _SIGNATURE or pos > end or flags & ~_UTF8_NAMES or method or disk or csize != size
                or size > MAX_FRAME_BYTES or header == _FULL32 or size == _FULL32
                or name_end + size > cd_at):
            size, header = _odd_entry(directory, start, cd_at, refuse)
            name_end = header + fixed_local + nlen
        names.append(directory[start:start + nlen])
        values.append((name_end, size, header, crc))
    if pos != end:
        refuse("its central directory holds more than its end record counts")
    joined = b"\n".join(names)
    # one match for every name (none holds a line break: the count of them says so)
    if count and not (_ALL_ALLOWED.fullmatch(joined) and joined.count(b"\n") == count - 1):
        for raw in names:
            if not _ALLOWED_NAMES.fullmatch(raw):
                try:
                    name = raw.decode("utf-8")
                except UnicodeDecodeError:
                    refuse(f"a member name is not UTF-8 ({raw[:80]!r})")
                refuse(f"member {name_problem(name)}")
    # Every name allowed is lower-case ASCII (the templates, the record, the index): unique as
    # written is unique after case folding too.
    members = dict(zip(joined.decode("ascii").split("\n") if count else [], map(_member, values)))
    if len(members) != count:
        twice = [n for n, c in collections.Counter(names).items() if c > 1]
        refuse(f"member {twice[0].decode()} is there twice")
    return members


def _odd_entry(directory: bytes, start: int, cd_at: int, refuse) -> tuple[int, int]:
    """An entry unlike our writer's: refused saying why, or (size, local header offset)
    where it is only a zip64 one (a pack past 2 GiB)."""
    sig, flags, method, _, csize, size, nlen, elen, clen, disk, header = \
        _CENTRAL.unpack_from(directory, start - _CENTRAL.size)
    name = directory[start:start + nlen].decode("utf-8", "backslashreplace")[:80]
    if sig != _SIGNATURE or start + nlen + elen + clen > len(directory):
        refuse("its central directory is not a list of entries")
    if flags & ~_UTF8_NAMES or disk:
        refuse(f"member {name} is encrypted or uses zip features a pack never has")
    if method:
        refuse(f"member {name} is compressed (method {method}); pack members are stored")
    if _FULL32 in (csize, size, header):
        csize, size, header = _zip64_sizes(directory[start + nlen:start + nlen + elen],
                                           csize, size, header, name, refuse)
    if csize != size:
        refuse(f"member {name} is stored with two different sizes")
    if size > MAX_FRAME_BYTES:
        refuse(f"member {name} holds {size:,} bytes, more than a member may ({MAX_FRAME_BYTES:,})")
    if header + _LOCAL.size + nlen + size > cd_at:
        refuse(f"member {name} lies beyond the data area")
    return size, header


def _zip64_sizes(extra: bytes, csize: int, size: int, header: int, name: str, refuse):
    """The sizes and offset a zip64 extra field gives for the fields set to 0xFFFFFFFF."""
    pos = 0
    while pos + 4 <= len(extra):
        kind, length = struct.unpack_from("<2H", extra, pos)
        if pos + 4 + length > len(extra):
            break
        if kind == 1:
            values = [int.from_bytes(extra[at:at + 8], "little")
                      for at in range(pos + 4, pos + 4 + length - 7, 8)]
            out = []
            for value in (size, csize, header):
                if value == _FULL32:
                    if not values:
                        refuse(f"member {name} has a short zip64 field")
                    value = values.pop(0)
                out.append(value)
            size, csize, header = out
            return csize, size, header
        pos += 4 + length
    refuse(f"member {name} lacks its zip64 field")


def _check_index(data: bytes, members: dict[str, Member], path: str, refuse) -> None:
    """The index is the one text our writer makes for these members (json.dumps, sorted
    keys): compared as bytes, never parsed. One of another version says so."""
    expected = json.dumps({"version": INDEX_VERSION, "members": {n: m[:2] for n, m in members.items()}},
                          sort_keys=True).encode()
    if data == expected:
        return
    version = re.search(rb'"version": ([0-9]{1,9})\}\Z', data)
    if version and int(version.group(1)) != INDEX_VERSION:
        raise PackError(f"{path}: pack index version {int(version.group(1))}, this datatools reads "
                        f"{INDEX_VERSION}; upgrade datatools")
    at = next((i for i, (a, b) in enumerate(zip(data, expected)) if a != b), min(len(data), len(expected)))
    refuse(f"its index does not match its directory (from byte {at}: "
           f"{data[max(0, at - 20):at + 20].decode('utf-8', 'backslashreplace')!r})")


def _checked_record(pack: Pack) -> dict:
    """The record a pack holds, by the record's rules (folder.record_problem)."""
    try:
        return record_from_bytes(pack.read(DONE))
    except ValueError as exc:
        raise NotAPack(pack.path, str(exc)) from None


def _read_member(fd: int, path: str, name: str, m: Member) -> bytes:
    data = os.pread(fd, m.offset + m.length - m.header, m.header)
    if len(data) != m.offset + m.length - m.header:
        raise NotAPack(path, f"it is shorter than its directory says ({name})")
    (sig, _, _, flags, method, _, _, crc, csize, size, nlen, elen) = _LOCAL.unpack_from(data)
    if (sig != b"PK\x03\x04" or flags & ~_UTF8_NAMES or method != 0 or crc != m.crc
            or size != m.length or csize != m.length or _LOCAL.size + nlen + elen != m.offset - m.header
            or data[_LOCAL.size:_LOCAL.size + nlen] != name.encode()):
        raise NotAPack(path, f"the local header of {name} does not match its directory entry")
    body = data[m.offset - m.header:]
    if zlib.crc32(body) != m.crc:
        raise DamagedFrame(f"{path}: {name} fails its CRC-32 (the pack is damaged); extract it again")
    return body


def verify(path: str) -> str | None:
    """None when the file keeps the pack rule and every member's bytes hold their CRC-32,
    else what is wrong."""
    try:
        with Pack.open(path) as pack:
            for name in pack.names():
                pack.read(name)
    except PackError as exc:
        return str(exc)
    return None
