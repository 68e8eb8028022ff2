"""Whether a data root is as its manifest saw it, without parsing or listing it again.

A scan records, before it reads anything, a fingerprint of what it is about to read: every
annotation file's stamp (size, mtime), the mtime of every videos and frames folder and
of each folder directly below them (class folders at level 2), and the quarantine's records
file. A folder's mtime changes when an entry is added, removed or renamed in it; a file
rewritten in place keeps its folder's mtime but changes its own stamp, which every manifest
row holds for its video (and `frame_mtime_ns` for its frame folder). So a root whose
fingerprint is unchanged and whose every row still matches its file and folder (one stat
each) would scan to the same rows: a re-run starts from them (state.scan).

An mtime that a later change could keep (scan.settled_mtime: whole seconds, under 2 s old) is
recorded as None, which never matches: such a root is scanned in full next time.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..core.records import FileStamp
from ..datasets.base import Dataset
from . import quarantine
from .rows import frames_unchanged_on_disk
from .scan import settled_mtime


def fingerprint(ds: Dataset, root: Path, level: int) -> dict:
    """What a scan of `root` at `level` reads, as stamps (JSON-ready)."""
    annotations = {}
    for folder, _, files in os.walk(root / "annotations"):
        for name in files:
            path = os.path.join(folder, name)
            try:
                st = os.stat(path)
            except OSError:  # a dangling link, a file gone meanwhile: never matches
                annotations[os.path.relpath(path, root)] = [None, None]
                continue
            annotations[os.path.relpath(path, root)] = [st.st_size, settled_mtime(st.st_mtime_ns)]
    dirs = {}
    tops = {ds.video_dir(s) for s in (*ds.list_subsets, None)} | {
        ds.frames_dir(s) for s in (*ds.list_subsets, None)}
    for top in sorted(tops):
        dirs[top] = _mtime(root / top)
        if dirs[top] != ABSENT and level == 2:
            try:
                with os.scandir(root / top) as it:
                    for entry in it:
                        if entry.is_dir() and not entry.name.startswith("."):
                            dirs[f"{top}/{entry.name}"] = settled_mtime(entry.stat().st_mtime_ns)
            except OSError:  # unreadable: never matches, and the scan says why
                dirs[top] = None
    held = _mtime(quarantine.records_path(root))
    return {"level": level, "annotations": annotations, "dirs": dirs, "quarantine": held}


ABSENT = -1  # the mtime recorded for a folder or file that is not there


def _mtime(path: Path) -> int | None:
    try:
        return settled_mtime(os.stat(path).st_mtime_ns)
    except OSError:
        return ABSENT


def unchanged(recorded: dict | None, now: dict, root: Path, rows) -> bool:
    """Whether the root is as the scan that made `rows` saw it (`recorded`: that scan's
    fingerprint; `now`: this one's). `rows`: records, or anything with their video_path,
    exists, size, mtime_ns, frame_dir, frame_storage and frame_mtime_ns."""
    prefix = f"{root}{os.sep}"
    return same_folders(recorded, now) and all(row_unchanged(prefix, row) for row in rows)


def same_folders(recorded: dict | None, now: dict) -> bool:
    """The annotations, the folders and the quarantine as recorded (and every mtime
    recorded one a later change could not keep)."""
    return bool(recorded) and recorded == now and not _has_none(now)


def row_unchanged(prefix: str, row) -> bool:
    """A row's video file and frames (folder or pack) as the row recorded them (`prefix`: the root and
    a separator; the paths are relative to it)."""
    if row.exists and row.video_path:
        seen = FileStamp.at(prefix + row.video_path)
        if not FileStamp(row.size, row.mtime_ns).matches(seen):
            return False
    return not row.frame_dir or frames_unchanged_on_disk(prefix, row)


def _has_none(now: dict) -> bool:
    """An mtime that could not be told apart from a later change (None) never matches."""
    return (now["quarantine"] is None or None in now["dirs"].values()
            or any(stamp[1] is None for stamp in now["annotations"].values()))
