"""What is on disk under a data root: video files and frame folders, keyed the MMAction2 way.

A key is the path below the videos (or rawframes) folder without extension, `Class/name` at
level 2 and `name` at level 1, which is how MMAction2's build_file_list.py joins disk and
annotations.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from ..frames.folder import DONE, count_names, read_done, trusted_parts
from ..frames.packs import SUFFIX, Pack, PackError, is_leftover, remove_leftover


@dataclass
class FrameFolder:
    """A frame folder as found: its path and mtime; what it holds once `load`ed (listing a
    folder of a thousand frames costs far more than the stat that finds it, so a scan whose
    manifest row for the folder still holds skips it: state.join_disk)."""

    path: str  # relative to the root (posix)
    rgb: int = 0
    flow_x: int = 0
    flow_y: int = 0
    record: dict | None = None  # its completion record, if it has one
    trusted: bool = False  # the record's counts and last file names match the folder
    mtime_ns: int | None = None  # the folder's (or pack's), when the scan found it
    location: str | None = None  # where to list it; None once loaded
    storage: str = "files"  # or "packed": `location` is the pack (packs.py)
    problem: str | None = None  # a file at a pack's name that is not one: why (not listed)

    def load(self) -> FrameFolder:
        """Count its files and read its completion record (once)."""
        if self.location is not None:
            if self.storage == "packed":
                names, record, self.problem = _pack_contents(self.location)
            else:
                names = os.listdir(self.location)
                record = read_done(self.location) if DONE in names else None
            self.rgb, self.flow_x, self.flow_y = count_names(names)
            if record is not None:
                self.record = record
                self.trusted = all(trusted_parts(self.record, names,
                                                 (self.rgb, self.flow_x, self.flow_y)).values())
            self.location = None
        return self


def _pack_contents(path: str) -> tuple[list[str], dict | None, str | None]:
    """A pack's member names and record, and what is wrong with it where it breaks the pack
    rule (then it holds nothing: not listed, and left as it is)."""
    try:
        with Pack.open(path) as pack:
            return pack.names(), pack.record, None
    except PackError as exc:
        return [], None, str(exc)


def _visible(folder, not_utf8: list[str], sweep: bool = False) -> list:
    """The entries of `folder` not hidden, by name. One whose name is not UTF-8 (Python holds
    it with surrogates) fits no manifest cell or MMAction2 list: it is left out, its path
    added to `not_utf8`. With `sweep` (frame folders' parents), leftovers of a pack writer
    killed before it finished (packs.is_leftover) are removed as they are met: every scan runs
    under the root's lock, so no writer of them is alive."""
    with os.scandir(folder) as it:
        entries = list(it)
    shown = []
    for e in entries:
        if e.name.startswith("."):
            if sweep and is_leftover(e.name):
                remove_leftover(e)
            continue
        try:
            e.name.encode("utf-8")
        except UnicodeEncodeError:
            not_utf8.append(os.fsencode(e.path).decode("utf-8", "backslashreplace"))
            continue
        shown.append(e)
    return sorted(shown, key=lambda e: e.name)


def _entries(folder: Path, level: int, not_utf8: list[str]):
    """(relative path, entry) of visible entries, like glob('*') at level 1 and glob('*/*')
    at level 2. At level 2, files lying directly in `folder` are yielded too: unlabelled test
    videos have no class folder."""
    if not folder.is_dir():
        return
    for first in _visible(folder, not_utf8):
        if level == 1 or not first.is_dir():
            yield first.name, first
        else:
            for e in _visible(first.path, not_utf8):
                yield f"{first.name}/{e.name}", e


class DiskIndex:
    """Entries of one folder, found by exact key or, failing that, by unique file stem. A
    claimed entry leaves the index (what is left is unclaimed); the stems are indexed only
    when a key is first not found (a root laid out as its annotations say never needs them)."""

    def __init__(self, items: dict[str, object], not_utf8: list[str] | None = None):
        self.items = items  # key -> payload, unclaimed
        self.not_utf8 = not_utf8 or []  # paths left out: names that are not UTF-8
        self._by_stem: dict[str, str | None] | None = None  # stem -> its one key (None: several)

    def claim(self, key: str, stem: str):
        """The payload for `key` (or a unique entry with the same stem elsewhere), or None."""
        found = self.items.pop(key, None)
        if found is not None:
            return found
        if self._by_stem is None:
            self._by_stem = {}
            for k in self.items:
                s = k.rsplit("/", 1)[-1]
                self._by_stem[s] = None if s in self._by_stem else k
        other = self._by_stem.get(stem)
        return self.items.pop(other, None) if other is not None else None

    def unclaimed(self):
        return list(self.items.items())


def scan_videos(root: Path, video_dir: str, level: int) -> DiskIndex:
    """Index of `root/video_dir` entries: key -> path relative to root."""
    items, not_utf8 = {}, []
    for rel, _entry in _entries(root / video_dir, level, not_utf8):
        key = rel.rsplit(".", 1)[0] if "." in rel.rsplit("/", 1)[-1] else rel
        items[key] = f"{video_dir}/{rel}"
    return DiskIndex(items, not_utf8)


# A folder's mtime changes whenever an entry is added, removed or renamed in it, so a folder
# whose mtime is what a manifest row recorded still holds the files that row counts. Only
# recorded when it can be told apart from a later change: fine-grained (not whole seconds,
# as some network file systems keep) or older than SETTLED_SECONDS.
SETTLED_SECONDS = 2


def settled_mtime(mtime_ns: int | None) -> int | None:
    """The mtime to record for a folder, or None where a later change could keep it."""
    if mtime_ns is None:
        return None
    if mtime_ns % 1_000_000_000 or time.time_ns() - mtime_ns > SETTLED_SECONDS * 10**9:
        return mtime_ns
    return None


def found_folder(entry: os.DirEntry, rel: str) -> FrameFolder:
    """A frame folder as a directory listing shows it, not yet loaded."""
    return FrameFolder(rel, mtime_ns=entry.stat().st_mtime_ns, location=entry.path)


def found_pack(entry: os.DirEntry, rel: str) -> FrameFolder:
    """A pack (`<rel>.zip`) standing for the frame folder `rel`, not yet loaded."""
    return FrameFolder(rel[: -len(SUFFIX)], mtime_ns=entry.stat(follow_symlinks=False).st_mtime_ns,
                       location=entry.path, storage="packed")


def _is_pack(entry: os.DirEntry) -> bool:
    """Whatever stands at a pack's name that is not a folder (a FIFO, a link, a device, a
    file): Pack.open decides what it is."""
    return entry.name.endswith(SUFFIX) and not entry.is_dir(follow_symlinks=False)


def scan_frames(root: Path, frames_dir: str, level: int) -> DiskIndex:
    """Index of frame folders under `root/frames_dir`: key -> FrameFolder (not loaded, except
    the top-level ones at level 2).

    At level 2 a top-level folder that itself holds frames is a flat (unlabelled) one. A pack
    (`<name>.zip`, packs.py) stands where its folder would; where both are (a `datatools pack`
    killed before it deleted the folder), the pack is the one: it is complete.
    """
    items, not_utf8 = {}, []
    top = root / frames_dir
    if not top.is_dir():
        return DiskIndex(items)
    for first in _visible(top, not_utf8, sweep=True):
        if _is_pack(first):
            items[first.name[: -len(SUFFIX)]] = found_pack(first, f"{frames_dir}/{first.name}")
            continue
        if not first.is_dir():
            continue
        found = found_folder(first, f"{frames_dir}/{first.name}")
        if level == 1 or found.load().rgb or found.flow_x or found.flow_y or found.record:
            items[first.name] = found
            continue
        for e in _visible(first.path, not_utf8, sweep=True):
            rel = f"{first.name}/{e.name}"
            if _is_pack(e):
                items[rel[: -len(SUFFIX)]] = found_pack(e, f"{frames_dir}/{rel}")
            elif e.is_dir() and rel not in items:
                items[rel] = found_folder(e, f"{frames_dir}/{rel}")
    return DiskIndex(items, not_utf8)
