"""What a frame folder holds: its file names (the prefixes and namings, counted in one place)
and its completion record, `.datatools-done.json` (core/records.py: written last, atomically,
trusted only when the files it counts are there).

A folder holds up to two parts, `rgb` (img_ files) and `flow` (flow_x_/flow_y_ pairs), each
with its count and the parameters that made it. What the parts must share lives in `common`
(the frame size rule and the naming): RGB and flow of one folder are of one size and one
numbering. Tasks are additive: flow can be added to a folder that has RGB, and the other way
round, as long as `common` agrees.

The trust check is cheap and made wherever a record is read (extract's skip, build-lists'
scan): each part's file count in the folder listing equals the record's, and its last file
name is there.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import re
import string

from ..core.fsio import NotRegular, file_kind, open_regular
from ..core.records import (
    MAX_RECORD_BYTES,
    FileStamp,
    parse_json,
    read_record,
    record_text,
    write_record,
)

DONE = ".datatools-done.json"
RGB_PREFIX = "img_"
FLOW_X_PREFIX = "flow_x_"
FLOW_Y_PREFIX = "flow_y_"
PART_PREFIXES = {"rgb": (RGB_PREFIX,), "flow": (FLOW_X_PREFIX, FLOW_Y_PREFIX)}

NAMINGS = {
    # name: (rgb template, flow template as MMAction2's filename_tmpl, start index)
    "mmaction": ("img_{:05d}.jpg", "flow_{}_{:05d}.jpg", 1),  # RawframeDataset's default
    "denseflow": ("img_{:05d}.jpg", "flow_{}_{:05d}.jpg", 0),  # denseflow writes 0-based names
}
RECORD_VERSION = 2


def prefixes_of(parts) -> tuple[str, ...]:
    """The file-name prefixes of these parts' frames ("rgb", "flow")."""
    return tuple(p for part in parts for p in PART_PREFIXES[part])


def read_done(frame_dir: str) -> dict | None:
    """The folder's record in the current format (older records are converted), or None."""
    return _current(read_record(os.path.join(frame_dir, DONE)))


def record_from_bytes(data: bytes) -> dict:
    """A record read from bytes others may have written (a pack's member DONE), in the current
    format, or ValueError saying which rule it breaks."""
    try:
        record = parse_json(data, MAX_RECORD_BYTES)
    except ValueError as exc:
        raise ValueError(f"its completion record is not JSON ({exc})") from None
    problem = record_problem(record)
    if problem:
        raise ValueError(f"its completion record {problem}")
    return _upgraded(record)


def _current(record: dict | None) -> dict | None:
    """The record in the current format; None for no record, or one that breaks
    record_problem's rules (a folder with such a record is a folder without one)."""
    if record is None or record_problem(record):
        return None
    return _upgraded(record)


def _upgraded(record: dict) -> dict:
    return record if "parts" in record else _from_version_1(record)


def _from_version_1(old: dict) -> dict:
    """Records written before tasks were additive: one `params` dict with the task in it."""
    p = old.get("params") or {}
    parts = {}
    if p.get("task") in ("rgb", "both"):
        parts["rgb"] = {"count": old.get("rgb_count", 0), "params": {"jpeg_quality": p.get("jpeg_quality")}}
    if p.get("task") in ("flow", "both"):
        parts["flow"] = {"count": old.get("flow_count", 0), "params": {
            "algo": p.get("algo"), "backend": p.get("backend"), "bound": p.get("bound"),
            "jpeg_quality": p.get("jpeg_quality")}}
    rgb_tmpl, flow_tmpl, start = NAMINGS.get(p.get("naming"), (None, None, None))
    return {"version": 1, "common": {k: p.get(k) for k in ("naming", "new_short", "new_size")},
            "parts": parts, "width": old.get("width"), "height": old.get("height"),
            "video": old.get("video"), "templates": [rgb_tmpl, flow_tmpl], "start_index": start}


# --- what a record may say -------------------------------------------------------------------
# A record is read from a root others share (a folder, a pack copied from a colleague), so
# every field a later step uses is checked for type and bounds before anything trusts it:
# the counts (a frame number has at most FRAME_DIGITS digits), the templates (only those a
# naming writes: a template's width is an allocation) and the start index.

FRAME_DIGITS = 9
MAX_FRAMES = 10**FRAME_DIGITS - 1
TEMPLATES = {"rgb": {n[0] for n in NAMINGS.values()}, "flow": {n[1] for n in NAMINGS.values()}}
STARTS = {n[2] for n in NAMINGS.values()}


def _is_int(value, low: int, high: int) -> bool:
    return type(value) is int and low <= value <= high


# The parameters a later step reads out of a record (into manifest columns, or to compare),
# and the JSON types each may have (exact types: to isinstance, a bool is an int).
PARAM_KINDS = {"algo": (str,), "backend": (str,), "build": (str,), "bound": (int, float),
               "jpeg_quality": (int,)}


def record_problem(record) -> str | None:
    """What makes `record` (parsed JSON) not a completion record, or None."""
    if type(record) is not dict:
        return "is not a JSON object"
    if "parts" not in record:
        return _version_1_problem(record)
    parts = record["parts"]
    if type(parts) is not dict or not set(parts) <= set(PART_PREFIXES):
        return "has parts other than rgb and flow"
    for part, info in parts.items():
        if type(info) is not dict:
            return f"has its {part} part as something other than an object"
        if not _is_int(info.get("count", 0), 0, MAX_FRAMES):
            return f"counts no 0..{MAX_FRAMES:,} frames for its {part} part"
        problem = _params_problem(info.get("params"), part)
        if problem:
            return problem
    templates = record.get("templates")
    if templates is not None:
        if type(templates) is not list or len(templates) != 2:
            return "has templates that are not a pair"
        for part, template in zip(("rgb", "flow"), templates):
            if template is not None and (type(template) is not str or template not in TEMPLATES[part]):
                return f"has the {part} template {_shown(template)}, which no naming writes"
    start = record.get("start_index")
    if start is not None and (type(start) is not int or start not in STARTS):
        return f"has the start index {_shown(start)}, which no naming uses"
    if type(record.get("common") or {}) is not dict:
        return "has common parameters that are not an object"
    return _common_problem(record)


def _version_1_problem(record: dict) -> str | None:
    """A record written before tasks were additive: the fields _from_version_1 reads."""
    p = record.get("params") or {}
    if type(p) is not dict:
        return "has params that are not an object"
    for key in ("rgb_count", "flow_count"):
        if record.get(key) is not None and not _is_int(record[key], 0, MAX_FRAMES):
            return f"has a bad {key}"
    for key in ("naming", "task"):
        if p.get(key) is not None and type(p[key]) is not str:
            return f"has a {key} that is not text"
    return _params_problem(p, "its") or _common_problem(record)


def _params_problem(params, part: str) -> str | None:
    if params is None:
        return None
    if type(params) is not dict:
        return f"has {part} params that are not an object"
    for key, kinds in PARAM_KINDS.items():
        value = params.get(key)
        if value is not None and (type(value) not in kinds
                                  or (type(value) is float and not math.isfinite(value))):
            return f"has a {part} {key} of the wrong kind ({_shown(value)})"
    return None


def _common_problem(record: dict) -> str | None:
    for key in ("width", "height"):
        if record.get(key) is not None and not _is_int(record[key], 1, 1 << 16):
            return f"has a bad {key}"
    for key in ("video_size", "video_mtime_ns"):
        if record.get(key) is not None and not _is_int(record[key], 0, 1 << 64):
            return f"has a bad {key}"
    if record.get("video") is not None and type(record["video"]) is not str:
        return "has a video name that is not text"
    return None


# --- what a frame folder may hold ---------------------------------------------------------
# Names come from disk and from packs anyone made. A frame's name is exactly what one of the
# namings' templates writes for some frame number: no path, no other spelling of a number,
# nothing two names could fold to. With the record (DONE) those are the only names a frame
# folder or a pack holds, so a name can never lead out of its folder or overwrite another.

def _template_pattern(template: str) -> str:
    """The regular expression of exactly the names a template writes: `{}` is the flow axis
    (x or y), `{:0Nd}` a frame number as it spells one (N digits, or more without a leading
    zero: img_00001.jpg and img_123456.jpg, never img_1.jpg or img_000001.jpg)."""
    pattern = ""
    for literal, field, spec, _ in string.Formatter().parse(template):
        pattern += re.escape(literal)
        if field is None:
            continue
        if not spec:
            pattern += "[xy]"
            continue
        width = int(re.fullmatch(r"0?([0-9]*)d", spec).group(1) or 1)
        pattern += (f"(?:[0-9]{{{width}}}|[1-9][0-9]{{{width},{FRAME_DIGITS - 1}}})" if width > 1
                    else f"(?:0|[1-9][0-9]{{0,{FRAME_DIGITS - 1}}})")
    return pattern


_FRAME_NAMES = [(part, re.compile(_template_pattern(template)))
                for part, templates in TEMPLATES.items() for template in sorted(templates)]
# Every frame name and the record's, as bytes: a whole listing checked in one match.
NAMES_PATTERN = "|".join([*(p.pattern for _, p in _FRAME_NAMES), re.escape(DONE)])


def frame_part(name: str) -> str | None:
    """The part ("rgb", "flow") whose frame `name` is, or None where no template writes it."""
    return _frame_part(name) if len(name) <= _LONGEST_FRAME_NAME else None


# A bound on the names a template writes: its own text plus a number of FRAME_DIGITS digits.
_LONGEST_FRAME_NAME = max(len(t) for ts in TEMPLATES.values() for t in ts) + FRAME_DIGITS


@functools.lru_cache(maxsize=1 << 16)  # every pack of a root holds the same few names (and
def _frame_part(name: str) -> str | None:  # none longer than a frame's is kept)
    for part, pattern in _FRAME_NAMES:
        if pattern.fullmatch(name):
            return part
    return None


def name_problem(name: str) -> str | None:
    """Why `name` cannot be in a frame folder (or a pack), or None: a frame's name or the
    record's."""
    if name == DONE or frame_part(name):
        return None
    if not name or name in (".", "..") or any(c in name for c in "/\\"):
        return f"{_shown(name)} is a path, not a file name"
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return f"{_shown(name)} has control characters"
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return f"{_shown(name)} is not UTF-8"
    return (f"{_shown(name)} is neither a frame (named like img_00001.jpg, flow_x_00001.jpg) "
            "nor the completion record")


def _shown(value) -> str:
    """A value from disk, printable on one line whatever bytes it holds (and however long)."""
    text = value if isinstance(value, str) else repr(value)
    text = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    text = text if len(text) <= 100 else text[:100] + "…"
    return ascii(text) if not text.isprintable() else repr(text)


# A frame read from a folder: regular files only, never through a link (a link to a secret
# file would end up in a pack; /dev/zero or a FIFO would never end), and no larger than this.
MAX_FRAME_BYTES = 64 << 20  # a 4K JPEG at quality 95 is about 3 MB


class NotAFrame(ValueError):
    """A file in a frame folder that cannot be read as a frame (a link, a FIFO, too large)."""


def read_frame_file(path: str) -> bytes:
    """The bytes of one frame file, or NotAFrame saying why it is not one."""
    try:
        fd, st = open_regular(path)
    except NotRegular as exc:
        raise NotAFrame(f"{path} is {exc}, not a frame (frames are read only from regular files)") from None
    try:
        if st.st_size > MAX_FRAME_BYTES:
            raise NotAFrame(f"{path} holds {st.st_size:,} bytes, more than a frame may "
                            f"({MAX_FRAME_BYTES:,})")
        chunks, left = [], st.st_size + 1  # one byte more: a file still growing is seen
        while left:
            chunk = os.read(fd, left)
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) != st.st_size:
        raise NotAFrame(f"{path} changed while it was read; run the command again")
    return data


def frame_files(folder: str) -> list[str]:
    """The names of a frame folder's files, sorted: frames and the record, each a regular
    file, or NotAFrame naming the first entry that is something else (or the folder, where it
    is a link)."""
    if os.path.islink(folder):  # its files are elsewhere (and would be deleted there)
        raise NotAFrame(f"{folder} is a symbolic link; frames are kept only in folders inside the root")
    names = []
    with os.scandir(folder) as entries:
        for entry in entries:
            problem = name_problem(entry.name)
            if problem:
                raise NotAFrame(f"{folder}: {problem}")
            if not entry.is_file(follow_symlinks=False):
                kind = file_kind(entry.stat(follow_symlinks=False).st_mode)
                raise NotAFrame(f"{entry.path} is {kind}, not a frame (frames are read only from "
                                "regular files)")
            names.append(entry.name)
    return sorted(names)


def write_done(folder: str, record: dict) -> None:
    write_record(os.path.join(folder, DONE), {**record, "version": RECORD_VERSION})


def done_bytes(record: dict) -> bytes:
    """The record as write_done writes it, for a pack's member DONE."""
    return record_text({**record, "version": RECORD_VERSION}).encode()


def count_names(names) -> tuple[int, int, int]:
    """(img_, flow_x_, flow_y_) files among a folder's entry names: the one frame count."""
    rgb = fx = fy = 0
    for name in names:
        if name.startswith(RGB_PREFIX):
            rgb += 1
        elif name.startswith(FLOW_X_PREFIX):
            fx += 1
        elif name.startswith(FLOW_Y_PREFIX):
            fy += 1
    return rgb, fx, fy


def last_names(record: dict, part: str, count: int) -> list[str]:
    """The file names a part of `count` files ends with (nothing to check for an empty part)."""
    rgb_tmpl, flow_tmpl = (record.get("templates") or [None, None])
    start = record.get("start_index")
    if not count or start is None:
        return []
    last = start + count - 1
    if part == "rgb":
        return [rgb_tmpl.format(last)] if rgb_tmpl else []
    return [flow_tmpl.format("x", last), flow_tmpl.format("y", last)] if flow_tmpl else []


def trusted_parts(record: dict, names: list[str] | set[str],
                  counts: tuple[int, int, int] | None = None) -> dict[str, bool]:
    """Per part of the record: whether the folder listing `names` holds what it counts
    (`counts`: count_names(names), where the caller has it already)."""
    names = set(names)
    rgb, fx, fy = counts if counts is not None else count_names(names)
    counts = {"rgb": rgb, "flow": min(fx, fy)}
    out = {}
    for part, info in record["parts"].items():
        want = info.get("count", 0)
        out[part] = counts.get(part) == want and all(n in names for n in last_names(record, part, want))
    return out


def made_from(record: dict, video: FileStamp) -> bool:
    """Whether the record's frames were made from `video` as it is now (records that did not
    note their video, and videos whose size is unknown, are taken to be)."""
    size, mtime = record.get("video_size"), record.get("video_mtime_ns")
    return (size, mtime) == (None, None) or video.size is None or FileStamp(size, mtime).matches(video)


def manifest_fields(record: dict) -> dict:
    """The manifest's extraction columns for a folder with this (trusted) record."""
    parts = record["parts"]
    rgb_tmpl, flow_tmpl = record.get("templates") or [None, None]
    flow = (parts.get("flow") or {}).get("params") or {}
    return {"rgb_template": rgb_tmpl if "rgb" in parts else None,
            "flow_template": flow_tmpl if "flow" in parts else None,
            "start_index": record.get("start_index"),
            "flow_algo": flow.get("algo"), "flow_bound": flow.get("bound"),
            "backend": flow.get("backend")}


# --- what a folder was made with, in one manifest cell --------------------------------------
# `made_with` holds, per part of a trusted record, a digest of the parameters that made it
# (the common ones and the part's own): "rgb=3f2a9c01d4e5;flow=…". A re-run of extract skips
# a video whose row says its parts were made with the requested parameters without sending
# it to a worker; a row is only carried over while its folder is unchanged (root/scan.py).


def _digest(common: dict | None, params: dict | None) -> str:
    text = json.dumps([common or {}, params or {}], sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def made_with(record: dict) -> str:
    """The manifest's `made_with` cell for a trusted completion record."""
    common = record.get("common")
    return ";".join(f"{part}={_digest(common, info.get('params'))}"
                    for part, info in sorted(record["parts"].items()))


def made_with_of(opts) -> dict[str, str]:
    """Per part an extraction with `opts` writes: the digest its record would hold."""
    return {part: _digest(opts.common_params(), opts.part_params(part)) for part in opts.parts}
