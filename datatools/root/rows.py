"""A manifest row made from what the steps learned, in one place: what a frame folder's (or
pack's) completion record puts in it, what a scan carries over from the previous row, and
whether the frames a row describes are still as it recorded them."""

from __future__ import annotations

import os

from ..core.records import FileStamp
from ..frames.folder import made_from, made_with, manifest_fields
from ..frames.packs import FILES, stored_at
from .manifest import VideoRecord
from .scan import FrameFolder, settled_mtime
from .status import COMPLETE, DONE, EXTRA, FAILED, INCOMPLETE, STALE, UNUSABLE

# What a probe learned about a file: kept with the file until it changes (its stamp: size and
# mtime, records.FileStamp) or a new probe replaces it, and kept while the file is missing.
PROBE_FIELDS = ("probe_status", "decodable", "frame_count", "fps", "width", "height",
                "duration", "codec", "error", "probe_level")
IDENTITY_FIELDS = ("size", "mtime_ns", "inode")
EXTRACT_FIELDS = ("rgb_template", "flow_template", "start_index", "flow_algo", "flow_bound",
                  "backend", "extract_status", "extract_error")
# What a done frame folder's row says about the folder itself: kept while the folder is
# unchanged, else read again from its completion record (never carried over on its own).
FRAME_FIELDS = ("frame_dir", "rgb_count", "flow_count", "frame_mtime_ns", "made_with", "frame_storage")

FLOW_MISMATCH = "flow_x/flow_y counts differ"  # the extract_error of half a flow pair on disk


# --- whether the frames are as the row recorded them: ONE rule, for a scan that found the
# folder (or pack) and for a re-run that only stats what the row names ---------------------

def frames_as_recorded(row, storage: str, mtime_ns: int | None) -> bool:
    """Whether the frames found now (stored as `storage`, with this mtime) are the ones the
    row counted: the same storage, and the mtime it recorded then (no file added, removed or
    renamed in a folder; a pack rewritten changes its own mtime). A row that never recorded a
    settled mtime never matches."""
    return (row.frame_mtime_ns is not None and (row.frame_storage or FILES) == storage
            and row.frame_mtime_ns == mtime_ns)


def frames_unchanged_on_disk(prefix: str, row) -> bool:
    """`frames_as_recorded` for a row's frames as they are on disk now: one stat of its folder,
    or of its pack (`prefix`: the root and a separator; the row's paths are relative)."""
    storage = row.frame_storage or FILES
    try:
        mtime = os.stat(prefix + stored_at(row.frame_dir, storage)).st_mtime_ns
    except OSError:
        return False
    return frames_as_recorded(row, storage, mtime)


def stamp(rec: VideoRecord) -> FileStamp:
    """The video file as this row saw it."""
    return FileStamp(rec.size, rec.mtime_ns)


def same_file(rec: VideoRecord, prev: VideoRecord) -> bool:
    """Whether the file found now is the one `prev` describes (records.FileStamp)."""
    return stamp(prev).matches(stamp(rec))


# --- rows from completion records -----------------------------------------------------------

def set_made(rec: VideoRecord, record: dict, frame_dir: str, storage: str,
             mtime_ns: int | None) -> None:
    """A row for frames whose (trusted) completion record is `record`: what each part counts,
    the parameters that made them, where they are, and their folder's (or pack's) mtime when
    counted (None: not settled yet, the next scan counts again)."""
    parts = record["parts"]
    rec.frame_dir, rec.frame_storage = frame_dir, storage
    rec.rgb_count = parts.get("rgb", {}).get("count", 0)
    rec.flow_count = parts.get("flow", {}).get("count", 0)
    for name, value in manifest_fields(record).items():
        setattr(rec, name, value)
    rec.made_with, rec.frame_mtime_ns = made_with(record), settled_mtime(mtime_ns)


def set_found(rec: VideoRecord, frames: FrameFolder) -> None:
    """A frame folder's counts as on disk; what its completion record says, if it has one
    and the files it counts are there (else the folder is `incomplete` and not listed)."""
    rec.frame_dir = frames.path
    rec.frame_storage = frames.storage
    rec.rgb_count = frames.rgb
    if frames.problem is not None:  # a file at the pack's name that is not one: left alone
        rec.flow_count, rec.made_with, rec.frame_mtime_ns = 0, None, None
        rec.extract_status, rec.extract_error = UNUSABLE, frames.problem
        return
    if frames.flow_x != frames.flow_y:
        # Half a flow pair on disk: list no flow for this video and say why.
        rec.flow_count = 0
        rec.extract_error = FLOW_MISMATCH
    else:
        rec.flow_count = frames.flow_x
    if frames.record is None:
        return  # made by another tool (or an older datatools): listed as found
    if not made_from(frames.record, stamp(rec)):
        rec.extract_status = STALE
        rec.extract_error = "made from an earlier version of the video; re-run `datatools extract`"
        return
    if frames.trusted:  # what the record counts; a stray file of a part it lacks is not listed
        set_made(rec, frames.record, frames.path, frames.storage, frames.mtime_ns)
        rec.extract_status, rec.extract_error = DONE, None
    else:
        counts = {p: i.get("count") for p, i in frames.record["parts"].items()}
        rec.extract_status = INCOMPLETE
        rec.extract_error = (f"holds {frames.rgb} img and {min(frames.flow_x, frames.flow_y)} "
                             f"flow file(s), its completion record counts "
                             f"{counts.get('rgb', 0)} and {counts.get('flow', 0)}; "
                             "re-run `datatools extract`")


def frames_kept(frames: FrameFolder, rec: VideoRecord, prev: VideoRecord) -> bool:
    """Whether `prev` still describes the frames a scan found: complete, as recorded then
    (`frames_as_recorded`), made from the same video file. Then its row is kept, unlisted."""
    if not (prev.extract_status in COMPLETE and prev.frame_dir == frames.path
            and frames_as_recorded(prev, frames.storage, frames.mtime_ns)
            and rec.size is not None and same_file(rec, prev)):
        return False
    for name in FRAME_FIELDS + EXTRACT_FIELDS:
        setattr(rec, name, getattr(prev, name))
    return True


def carry_over(rec: VideoRecord, prev: VideoRecord) -> None:
    """Keep what earlier steps learned about a video (`prev`: its previous row): a probe stays
    with its file until the file changes (then it is `unchecked` again), and survives while
    the file is missing; extraction results stay with their frame folder."""
    if rec.exists:
        if prev.probe_status is not None and rec.size and same_file(rec, prev):
            for name in PROBE_FIELDS:
                setattr(rec, name, getattr(prev, name))
            if rec.status != EXTRA:
                rec.status = prev.probe_status
    elif prev.probe_status is not None or prev.size is not None:
        # Nothing on disk now (a wrong --level, a file moved away): keep what is known
        # about the file, so that it is recognised when it is back.
        for name in PROBE_FIELDS + IDENTITY_FIELDS:
            if getattr(rec, name) is None:
                setattr(rec, name, getattr(prev, name))
    if rec.extract_status is not None:
        return  # the folder's completion record said
    if rec.frame_dir and prev.frame_dir == rec.frame_dir and rec.extract_error is None:
        for name in EXTRACT_FIELDS:
            setattr(rec, name, getattr(prev, name))
    elif not rec.frame_dir and prev.extract_status == FAILED:
        rec.extract_status, rec.extract_error = prev.extract_status, prev.extract_error


def already_made(rec, wanted: dict[str, str]) -> bool:
    """Whether a row's frames hold every wanted part, made with these parameters (`wanted`:
    folder.made_with_of the requested options)."""
    if rec.extract_status not in COMPLETE or not rec.made_with:
        return False
    have = dict(item.split("=", 1) for item in rec.made_with.split(";") if "=" in item)
    return all(have.get(part) == digest for part, digest in wanted.items())
