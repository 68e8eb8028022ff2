"""What is on disk under a data root: video files and frame folders, keyed the MMAction2 way.

A key is the path below the videos (or rawframes) folder without extension, `Class/name` at
level 2 and `name` at level 1, which is how MMAction2's build_file_list.py joins disk and
annotations.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..frame_folder import DONE, count_names, read_done, trusted_parts


@dataclass
class FrameFolder:
    path: str  # relative to the root (posix)
    rgb: int
    flow_x: int
    flow_y: int
    record: dict | None = None  # its completion record, if it has one
    trusted: bool = False  # the record's counts and last file names match the folder


def _visible(folder) -> list:
    with os.scandir(folder) as it:
        return sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)


def _entries(folder: Path, level: int):
    """(relative path, entry) of visible entries, like glob('*') at level 1 and glob('*/*')
    at level 2. At level 2, files lying directly in `folder` are yielded too: unlabelled test
    videos have no class folder."""
    if not folder.is_dir():
        return
    for first in _visible(folder):
        if level == 1 or not first.is_dir():
            yield first.name, first
        else:
            for e in _visible(first.path):
                yield f"{first.name}/{e.name}", e


class DiskIndex:
    """Entries of one folder, found by exact key or, failing that, by unique file stem."""

    def __init__(self, items: dict[str, object]):
        self.items = items  # key -> payload
        self.claimed: set[str] = set()
        by_stem: dict[str, list[str]] = {}
        for key in items:
            by_stem.setdefault(key.rsplit("/", 1)[-1], []).append(key)
        self._by_stem = {stem: keys[0] for stem, keys in by_stem.items() if len(keys) == 1}

    def claim(self, key: str, stem: str):
        """The payload for `key` (or a unique entry with the same stem elsewhere), or None."""
        found = key if key in self.items else self._by_stem.get(stem)
        if found is None or found in self.claimed:
            return None
        self.claimed.add(found)
        return self.items[found]

    def unclaimed(self):
        return [(k, v) for k, v in self.items.items() if k not in self.claimed]


def scan_videos(root: Path, video_dir: str, level: int) -> DiskIndex:
    """Index of `root/video_dir` entries: key -> path relative to root."""
    items = {}
    for rel, _entry in _entries(root / video_dir, level):
        key = rel.rsplit(".", 1)[0] if "." in rel.rsplit("/", 1)[-1] else rel
        items[key] = f"{video_dir}/{rel}"
    return DiskIndex(items)


def frame_folder(folder: Path, rel: str) -> FrameFolder:
    """A frame folder's file counts and, where it has one, its completion record and whether
    the files that record counts are there."""
    names = os.listdir(folder)
    rgb, fx, fy = count_names(names)
    found = FrameFolder(rel, rgb, fx, fy)
    if DONE in names:
        found.record = read_done(str(folder))
        if found.record is not None:
            found.trusted = all(trusted_parts(found.record, names, (rgb, fx, fy)).values())
    return found


def scan_frames(root: Path, frames_dir: str, level: int) -> DiskIndex:
    """Index of frame folders under `root/frames_dir`: key -> FrameFolder.

    At level 2 a top-level folder that itself holds frames is a flat (unlabelled) one.
    """
    items = {}
    top = root / frames_dir
    if not top.is_dir():
        return DiskIndex(items)
    for first in _visible(top):
        if not first.is_dir():
            continue
        found = frame_folder(Path(first.path), f"{frames_dir}/{first.name}")
        if level == 1 or found.rgb or found.flow_x or found.flow_y or found.record:
            items[first.name] = found
            continue
        for e in _visible(first.path):
            if e.is_dir():
                rel = f"{first.name}/{e.name}"
                items[rel] = frame_folder(Path(e.path), f"{frames_dir}/{rel}")
    return DiskIndex(items)
