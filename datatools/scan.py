"""What is on disk under a data root: video files and frame folders, keyed the MMAction2 way.

A key is the path below the videos (or rawframes) folder without extension, `Class/name` at
level 2 and `name` at level 1, which is how MMAction2's build_file_list.py joins disk and
annotations.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

RGB_PREFIX = "img_"
FLOW_X_PREFIX = "flow_x_"
FLOW_Y_PREFIX = "flow_y_"


@dataclass
class FrameFolder:
    path: str  # relative to the root (posix)
    rgb: int
    flow_x: int
    flow_y: int


def _entries(folder: Path, level: int):
    """(relative path, name) of visible entries `level` folders deep, like glob('*'[/'*'])."""
    if not folder.is_dir():
        return
    with os.scandir(folder) as top:
        firsts = sorted((e for e in top if not e.name.startswith(".")), key=lambda e: e.name)
    for first in firsts:
        if level == 1:
            yield first.name, first
        elif first.is_dir():
            with os.scandir(first.path) as inner:
                for e in sorted(inner, key=lambda e: e.name):
                    if not e.name.startswith("."):
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
    for rel, entry in _entries(root / video_dir, level):
        key = rel.rsplit(".", 1)[0] if "." in rel.rsplit("/", 1)[-1] else rel
        items[key] = f"{video_dir}/{rel}"
    return DiskIndex(items)


def count_frames(folder: Path) -> tuple[int, int, int]:
    """(img_, flow_x_, flow_y_) file counts in a frame folder."""
    rgb = fx = fy = 0
    with os.scandir(folder) as it:
        for e in it:
            name = e.name
            if name.startswith(RGB_PREFIX):
                rgb += 1
            elif name.startswith(FLOW_X_PREFIX):
                fx += 1
            elif name.startswith(FLOW_Y_PREFIX):
                fy += 1
    return rgb, fx, fy


def scan_frames(root: Path, frames_dir: str, level: int) -> DiskIndex:
    """Index of frame folders under `root/frames_dir`: key -> FrameFolder."""
    items = {}
    for rel, entry in _entries(root / frames_dir, level):
        if entry.is_dir():
            items[rel] = FrameFolder(f"{frames_dir}/{rel}", *count_frames(Path(entry.path)))
    return DiskIndex(items)
