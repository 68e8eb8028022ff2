"""A data root as every step starts from it: opened once (its dataset, its manifest's footer and
its fingerprint, each read once), then scanned (the annotations joined with what is on disk,
merged with the previous manifest's rows), or taken as the previous manifest left it when
nothing changed (fingerprint.py)."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq

from .. import datasets
from ..core.errors import UserError, root_not_found
from ..core.fsio import atomic_write_many, disk_errors
from ..datasets.base import AnnotatedVideo, Dataset
from . import quarantine
from .fingerprint import fingerprint, same_folders, unchanged
from .manifest import (
    ManifestMeta,
    ManifestUnreadable,
    VideoRecord,
    manifest_path,
    no_manifest,
    open_manifest,
    read_all_rows,
    set_aside,
    write_manifest,
    written_by_this_version,
)
from .rows import carry_over, frames_kept, set_found
from .scan import DiskIndex, scan_frames, scan_videos
from .status import EMPTY, EXTRA, UNCHECKED

LEVELS = (1, 2)  # 2: Class/name folders; 1: flat


@dataclass
class OpenedRoot:
    """A data root as a step first sees it: its dataset and level, its manifest's file with the
    footer read, and its fingerprint, taken before anything else is read (a change meanwhile
    shows next time). Each is read once: a re-run answered from the manifest (lists/rerun.py)
    and a scan (`scan`) both start from here."""

    dataset: Dataset
    root: Path
    level: int
    disk: dict
    parquet: pq.ParquetFile | None = None
    meta: ManifestMeta | None = None
    rebuild: bool = False  # an unreadable manifest is set aside and the root scanned afresh
    rebuilt_from: Path | None = None

    @property
    def current(self) -> bool:
        """Whether the manifest's rows are this dataset's, written by this version."""
        return (self.meta is not None and self.meta.dataset == self.dataset.name
                and written_by_this_version(self.meta))

    def folders_as_recorded(self) -> bool:
        """The annotations and folders as the manifest's scan recorded them."""
        return self.current and same_folders(self.meta.disk, self.disk)

    def previous_rows(self) -> list[VideoRecord] | None:
        if self.parquet is None:
            return None
        try:
            return read_all_rows(self.root, self.parquet)
        except ManifestUnreadable:
            if not self.rebuild:
                raise
            self.parquet, self.meta, self.rebuilt_from = None, None, set_aside(self.root)
            return None


def open_root(dataset: str | None, root: Path, level: int | None = None,
              rebuild: bool = False) -> OpenedRoot:
    """`dataset` None means: the dataset of the root's manifest (which must exist). `level`
    None means: as the previous manifest was built (2 for a new root). `rebuild`: an unreadable
    manifest is moved aside and the root scanned as if it had none (build-lists does this)."""
    root = Path(root)
    if not root.is_dir():
        raise root_not_found(root, dataset)
    rebuilt_from = None
    try:
        opened = open_manifest(root)
    except ManifestUnreadable:
        if not rebuild or dataset is None:
            raise
        opened, rebuilt_from = None, set_aside(root)
    parquet, meta = opened if opened is not None else (None, None)
    if dataset is None:
        if meta is None:
            raise no_manifest(root)
        dataset = meta.dataset
    ds = datasets.get(dataset)
    if level is None:
        level = meta.level if meta is not None else 2
    if level not in LEVELS:
        raise UserError(f"--level {level}: must be 1 (flat folders) or 2 (class folders)")
    return OpenedRoot(ds, root, level, fingerprint(ds, root, level), parquet, meta, rebuild,
                      rebuilt_from)


@dataclass
class ScannedRoot:
    """A data root's annotations joined with its disk, merged with its previous manifest."""

    dataset: Dataset
    root: Path
    level: int
    records: list[VideoRecord]
    label_map: list[str]
    label_source: str
    steps: dict  # earlier steps' arguments, from the previous manifest
    rebuilt_from: Path | None = None  # an unreadable manifest set aside by this scan
    disk: dict = field(default_factory=dict)  # what this scan read (fingerprint.py)
    as_before: bool = False  # the root is as the previous manifest's scan saw it: its rows
    lists_written: list = field(default_factory=list)  # the previous manifest's (lists/rerun.py)
    not_utf8: list[str] = field(default_factory=list)  # paths left out (scan.py says why)

    def save(self, step: str, args: dict, lists: dict[Path, bytes] | None = None,
             changed: bool = True, planned=()) -> None:
        """Write the manifest (and `lists` with it, as one step, `planned` their ListFiles);
        a full or read-only disk stops the step with one line, leaving the previous files in
        place. `changed=False`: the step changed no row; with the root as before, the same
        arguments and the same lists described, only list files whose content differs from
        what is planned are written."""
        described = describe(lists, planned) if lists else []
        if (not changed and self.as_before and self.steps.get(step) == args
                and (lists is None or described == self.lists_written)):
            lists = {path: data for (path, data), d in zip((lists or {}).items(), described)
                     if not holds(path, d["bytes"], d["sha256"])}
            if not lists:
                return
            with disk_errors(next(iter(lists))):
                atomic_write_many(lists)
            return
        self.steps[step] = args
        meta = ManifestMeta(dataset=self.dataset.name, label_map=self.label_map,
                            label_source=self.label_source, level=self.level, steps=self.steps,
                            disk=self.disk, lists=described)
        with disk_errors(manifest_path(self.root)):
            write_manifest(self.root, self.records, meta, lists)


def scan_root(dataset: str | None, root: Path, level: int | None = None,
              rebuild: bool = False) -> ScannedRoot:
    """Open the root and scan it (`open_root` says what the arguments mean)."""
    return scan(open_root(dataset, root, level, rebuild))


def scan(opened: OpenedRoot) -> ScannedRoot:
    """Parse the annotations, scan the disk and carry over what earlier steps learned; a root
    as the previous manifest's scan saw it starts from that manifest's rows instead."""
    ds, root, level, disk = opened.dataset, opened.root, opened.level, opened.disk
    rows = opened.previous_rows()
    meta = opened.meta
    steps = dict(meta.steps) if meta is not None else {}
    if rows is not None and opened.current and unchanged(meta.disk, disk, root, rows):
        return ScannedRoot(ds, root, level, rows, meta.label_map, meta.label_source, steps,
                           opened.rebuilt_from, disk, as_before=True, lists_written=meta.lists)
    ann = ds.parse(root / "annotations")
    # One row per video at a time: each previous row and each annotation is let go once its
    # new row is made (a driver of Kinetics-700 would otherwise hold both, docs/scale.md).
    known = {r.video_id: r for r in rows} if rows is not None else {}
    rows = None
    videos = list(ann.videos.values())
    ann.videos.clear()
    held = quarantine.held(root)

    def settle(rec: VideoRecord) -> None:
        q = held.get(rec.video_id)
        if q is not None and not rec.exists:  # found missing because it sits in quarantine
            quarantine.mark(rec, q)
        prev = known.pop(rec.video_id, None)
        if prev is not None:
            carry_over(rec, prev)

    records, not_utf8 = join_disk(ds, videos, root, level, known, settle)
    return ScannedRoot(ds, root, level, records, ann.label_map, ann.label_source, steps,
                       opened.rebuilt_from, disk, not_utf8=not_utf8)


def join_disk(ds: Dataset, videos: list, root: Path, level: int,
              known: dict[str, VideoRecord], settle) -> tuple[list[VideoRecord], list[str]]:
    """One record per annotated video (found or missing) plus one per unclaimed file on disk;
    `settle(record)` completes each as it is made. `videos` is emptied as it goes. `known`:
    the previous manifest's rows by video id; a frame folder its row says is done, unchanged
    since (folder mtime) and made from the same file, is not listed again. Also returns the
    paths the scan left out, names that are not UTF-8."""
    video_index: dict[str, DiskIndex] = {}
    frame_index: dict[str, DiskIndex] = {}

    def index_for(cache, folder, scan_folder):
        if folder not in cache:
            cache[folder] = scan_folder(root, folder, level)
        return cache[folder]

    records = []
    for i, video in enumerate(videos):
        videos[i] = None
        subset = next(iter(video.subsets.values()), None) if ds.per_subset_dirs else None
        rec = _record(ds, video, level)
        path = index_for(video_index, ds.video_dir(subset), scan_videos).claim(rec.key, video.video_id)
        if path is not None:
            rec.video_path, rec.exists, rec.status = path, True, UNCHECKED
            _stat(rec, root)
        frames = index_for(frame_index, ds.frames_dir(subset), scan_frames).claim(rec.key, video.video_id)
        if frames is not None:
            prev = known.get(rec.video_id)
            if prev is None or not frames_kept(frames, rec, prev):
                set_found(rec, frames.load())
        settle(rec)
        records.append(rec)
    # Files on disk that no annotation claims: reported as extra, never listed.
    for folder in ([ds.video_dir(s) for s in ds.list_subsets] if ds.per_subset_dirs else ["videos"]):
        for key, path in index_for(video_index, folder, scan_videos).unclaimed():
            stem = key.rsplit("/", 1)[-1]
            rec = VideoRecord(dataset=ds.name, video_id=stem, key=key, video_path=path,
                              status=EXTRA, exists=True)
            _stat(rec, root)
            settle(rec)
            records.append(rec)
    not_utf8 = [p for index in (*video_index.values(), *frame_index.values()) for p in index.not_utf8]
    return records, not_utf8


def _record(ds: Dataset, video: AnnotatedVideo, level: int) -> VideoRecord:
    rec = VideoRecord(dataset=ds.name, video_id=video.video_id, key=ds.key(video, level),
                      class_name=video.class_name, class_index=video.class_index)
    for split, subset in video.subsets.items():
        setattr(rec, f"subset_{split}", subset)
        setattr(rec, f"order_{split}", video.orders[split])
    return rec


def _stat(rec: VideoRecord, root: Path) -> None:
    try:
        st = os.stat(os.path.join(root, rec.video_path))
    except OSError:
        return
    rec.size, rec.mtime_ns, rec.inode = st.st_size, st.st_mtime_ns, st.st_ino or None
    if st.st_size == 0 and rec.status != EXTRA:  # never listed, whatever a probe said once
        rec.status, rec.probe_status, rec.error = EMPTY, EMPTY, "0 bytes"


def describe(lists: dict[Path, bytes], planned) -> list[dict]:
    """What the manifest keeps of the lists build-lists writes with it (`planned`: their
    ListFiles, in the same order)."""
    return [{**{"name": lf.name, "split": lf.split, "subset": lf.subset, "fmt": lf.fmt,
                "lines": lf.lines, "expected": lf.expected},
             "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
            for lf, (path, data) in zip(planned, lists.items())]


def holds(path: Path, size: int, sha256: str) -> bool:
    """Whether the file at `path` has this size and content (sha256)."""
    try:
        if path.stat().st_size != size:
            return False
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest() == sha256
    except OSError:
        return False
