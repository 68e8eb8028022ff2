"""Files placed at a pack's name by someone else, built at test time: each breaks one part of
the pack rule (datatools/packs.py, Pack.open) or of the record's (frame_folder.py), the way an
attacker or a damaged copy would. A small zip writer of its own lays out any member, index
and comment, so that the checks under test are never the writer's."""

from __future__ import annotations

import bz2
import json
import os
import socket
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

INDEX = ".datatools-pack.json"
DONE = ".datatools-done.json"
OUTSIDE = "/tmp/datatools-hostile-pack-escaped"  # what an absolute member name would create


@dataclass
class M:
    """A member as it lies in the file: `data` as stored (or an int: a hole of that many
    bytes, left sparse), and the fields its headers declare."""

    name: bytes
    data: bytes | int
    method: int = 0
    crc: int | None = None
    size: int | None = None  # the uncompressed size declared
    flags: int = 0


def build(path: Path, members: list[M], index: Callable[[dict], object] | bytes | None = None,
          comment: bytes | None = None, index_method: int = 0) -> None:
    """Write a zip: the members, then the index member (from the members' real data offsets,
    passed through `index` when it is a function, or these bytes as they are), then the
    central directory and the end record; the comment is datatools' unless given."""
    layout = []  # (member, local header offset, data offset)
    pos = 0
    for m in members:
        layout.append((m, pos, pos + 30 + len(m.name)))
        pos += 30 + len(m.name) + (m.data if isinstance(m.data, int) else len(m.data))
    table = {"version": 1, "members": {
        m.name.decode("utf-8", "surrogateescape"): [at, m.data if isinstance(m.data, int) else len(m.data)]
        for m, _, at in layout}}
    if not isinstance(index, bytes):
        index = json.dumps(table if index is None else index(table), sort_keys=True).encode()
    body = index
    stored = bz2.compress(body) if index_method == 12 else body
    idx = M(INDEX.encode(), stored, index_method, zlib.crc32(body), len(body))
    layout.append((idx, pos, pos + 30 + len(idx.name)))
    pos += 30 + len(idx.name) + len(stored)
    if comment is None:
        comment = f"datatools-pack {layout[-1][2]} {len(stored)}".encode()
    with open(path, "wb") as f:
        for m, header, _ in layout:
            f.seek(header)
            f.write(_local(m))
            if isinstance(m.data, int):
                f.seek(m.data, os.SEEK_CUR)
            else:
                f.write(m.data)
        f.seek(pos)
        directory = b"".join(_central(m, header) for m, header, _ in layout)
        f.write(directory)
        f.write(struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(layout), len(layout),
                            len(directory), pos, len(comment)) + comment)


def _fields(m: M) -> tuple[int, int, int]:
    stored = m.data if isinstance(m.data, int) else len(m.data)
    crc = m.crc if m.crc is not None else (0 if isinstance(m.data, int) else zlib.crc32(m.data))
    return crc, stored, m.size if m.size is not None else stored


def _local(m: M) -> bytes:
    crc, stored, size = _fields(m)
    return struct.pack("<4s2B4HL2L2H", b"PK\x03\x04", 20, 0, m.flags, m.method, 0, 33, crc,
                       stored, size, len(m.name), 0) + m.name


def _central(m: M, header: int) -> bytes:
    crc, stored, size = _fields(m)
    return struct.pack("<4s4B4HL2L5H2L", b"PK\x01\x02", 20, 3, 20, 0, m.flags, m.method, 0, 33,
                       crc, stored, size, len(m.name), 0, 0, 0, 0, 0o644 << 16, header) + m.name


def frames_of(frames: dict[str, bytes]) -> list[M]:
    return [M(name.encode(), data) for name, data in sorted(frames.items())]


def record(**fields) -> bytes:
    base = {"version": 2, "common": {"naming": "mmaction", "new_short": 64, "new_size": None},
            "parts": {"rgb": {"count": 3, "params": {"jpeg_quality": 95}}},
            "templates": ["img_{:05d}.jpg", "flow_{}_{:05d}.jpg"], "start_index": 1}
    return json.dumps({**base, **fields}).encode()


def variants(frames: dict[str, bytes]) -> dict[str, Callable[[Path], None]]:
    """Name -> a function writing that hostile file at a pack's path. `frames`: a real
    video's frame files (three img_ frames at least)."""
    good = frames_of(frames)
    first, second = good[0], good[1]

    def with_members(*extra: M, index=None, **kw) -> Callable[[Path], None]:
        return lambda path: build(path, good + list(extra), index=index, **kw)

    def pointing(at: Callable[[dict], int]) -> Callable[[dict], dict]:
        def change(index: dict) -> dict:
            index["members"][first.name.decode()][0] = at(index)
            return index
        return change

    def at_directory(path: Path) -> None:
        # the index points the first frame at the directory's bytes; every CRC holds for
        # what the directory lists (found by building twice: the index's length moves it)
        where = [0]
        for _ in range(3):
            build(path, good, index=pointing(lambda index: where[0]))
            data = path.read_bytes()
            where[0] = struct.unpack_from("<L", data, len(data) - 22 - _comment_len(data) + 16)[0]

    def sparse_member(path: Path) -> None:
        build(path, [M(b"img_00001.jpg", 2 << 30)] + good[1:])

    def fifo(path: Path) -> None:
        os.mkfifo(path)

    def socket_file(path: Path) -> None:
        here = os.getcwd()  # a socket's path is short (108 bytes): bound by its name, from beside it
        os.chdir(path.parent)
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.bind(path.name)
        finally:
            os.chdir(here)

    def folder_link(path: Path) -> None:
        path.with_name(path.name + ".target").mkdir()
        os.symlink(path.name + ".target", path)

    def holes(path: Path) -> None:
        # 40 members of 60 MiB that are not on disk, each with the CRC-32 its zeros have
        hole = 60 << 20
        zeros = zlib.crc32(bytes(hole))
        build(path, [M(f"img_{i:05d}.jpg".encode(), hole, crc=zeros) for i in range(1, 41)])

    def link_to(target: str) -> Callable[[Path], None]:
        return lambda path: os.symlink(target, path)

    deep = b'{"version": 1, "members": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    return {
        "traversal_name": with_members(M(b"../../../../escaped.txt", b"escaped")),
        "absolute_name": with_members(M(f"{OUTSIDE}/x.txt".encode(), b"escaped")),
        "index_points_at_another_frame": with_members(
            index=pointing(lambda index: index["members"][second.name.decode()][0])),
        "index_points_at_the_directory": at_directory,
        "duplicate_names": with_members(M(first.name, b"another copy of the first frame")),
        "deflated_member": lambda path: build(path, [M(first.name, _deflate(first.data), 8,
                                                       zlib.crc32(first.data), len(first.data))] + good[1:]),
        "bzip2_index_bomb": lambda path: build(path, good, index=b" " * (64 << 20), index_method=12),
        "bzip2_member_declaring_4_gib": lambda path: build(
            path, [M(first.name, bz2.compress(b"\0" * (8 << 20)), 12, 0, (4 << 30) - 1)] + good[1:]),
        "index_length_10e12": with_members(comment=b"datatools-pack 100 1000000000000"),
        "comment_announcing_10e11": with_members(comment=b"datatools-pack 99999999999 99999999999"),
        "index_nested_100000_deep": lambda path: build(path, good, index=deep),
        "record_template_a_gigabyte_wide": with_members(M(DONE.encode(), record(
            templates=["img_{:1000000000d}.jpg", None]))),
        "record_parts_of_the_wrong_type": with_members(M(DONE.encode(), record(parts={"rgb": "x"}))),
        "record_count_a_billion": with_members(M(DONE.encode(), record(
            parts={"rgb": {"count": 10**12, "params": {}}}))),
        "record_nested_deep": with_members(M(DONE.encode(), b"[" * 50_000 + b"]" * 50_000)),
        "record_start_index_a_list": with_members(M(DONE.encode(), record(start_index=[]))),
        "record_start_index_a_float": with_members(M(DONE.encode(), record(start_index=1.0))),
        "record_template_a_list": with_members(M(DONE.encode(), record(templates=[[], None]))),
        "record_bound_a_string": with_members(M(DONE.encode(), record(parts={
            "flow": {"count": 1, "params": {"algo": "tvl1", "bound": "20"}}}))),
        "name_with_a_line_break": with_members(M(b"img_00009.jpg\nimg_00010.jpg", b"x")),
        "sparse_member_of_2_gib": sparse_member,
        "name_not_utf8": with_members(M(b"img_0000\xff.jpg", b"x")),
        "name_with_a_slash": with_members(M(b"sub/img_00009.jpg", b"x")),
        "name_differing_in_case": with_members(M(b"IMG_00001.jpg", b"x")),
        "index_entry_a_string": with_members(index=lambda i: {**i, "members": {
            **i["members"], first.name.decode(): "x"}}),
        "index_entry_booleans": with_members(index=pointing(lambda index: True)),
        "index_entry_negative": with_members(index=lambda i: {**i, "members": {
            **i["members"], first.name.decode(): [5, -10]}}),
        "index_without_a_member": with_members(index=lambda i: {**i, "members": {
            k: v for k, v in i["members"].items() if k != first.name.decode()}}),
        "encrypted_member": lambda path: build(path, [M(first.name, first.data, flags=1)] + good[1:]),
        "truncated": lambda path: (build(path, good), _truncate(path)),
        "not_a_zip": lambda path: path.write_bytes(b"not a zip at all\n"),
        "empty": lambda path: path.write_bytes(b""),
        "fifo": fifo,
        "socket": socket_file,
        "link_to_a_folder": folder_link,
        "sparse_holes_that_hold_their_crc": holes,
        "link_to_dev_zero": link_to("/dev/zero"),
        "link_to_a_secret": link_to("/etc/shadow"),
    }


def _deflate(data: bytes) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    return c.compress(data) + c.flush()


def _comment_len(data: bytes) -> int:
    return len(data) - data.rfind(b"PK\x05\x06") - 22


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
