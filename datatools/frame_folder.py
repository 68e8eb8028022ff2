"""What a frame folder holds: its file names (the prefixes and namings, counted in one place)
and its completion record, `.datatools-done.json` (completion.py: written last, atomically,
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

import hashlib
import json
import os

from . import status
from .completion import FileStamp, read_record, record_text, write_record

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


def read_done_in_pack(pack) -> dict | None:
    """The record a pack (packs.Pack) holds as its member DONE, or None."""
    if DONE not in pack.members:
        return None
    try:
        record = json.loads(pack.read(DONE))
    except ValueError:
        return None
    return _current(record if isinstance(record, dict) else None)


def _current(record: dict | None) -> dict | None:
    if record is None:
        return None
    if "parts" not in record:
        record = _from_version_1(record)
    return record if isinstance(record.get("parts"), dict) else None


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
# it to a worker; a row is only carried over while its folder is unchanged (lists/scan.py).


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


def already_made(rec, wanted: dict[str, str]) -> bool:
    """Whether a manifest row's folder holds every wanted part, made with these parameters."""
    if rec.extract_status not in status.COMPLETE or not rec.made_with:
        return False
    have = dict(item.split("=", 1) for item in rec.made_with.split(";") if "=" in item)
    return all(have.get(part) == digest for part, digest in wanted.items())
