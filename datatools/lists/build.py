"""The build-lists step: join the annotations with what is on disk, update the manifest, and
export MMAction2's text lists from it.

Unlike MMAction2's build_file_list.py, nothing is dropped silently: videos named by a split but
missing on disk, files on disk in no split, and frame folders without frames are all counted,
named in the summary and recorded in the manifest.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from .. import datasets
from ..completion import FileStamp
from ..datasets.base import AnnotatedVideo, Dataset
from ..errors import UserError, root_not_found
from ..frame_folder import made_from, made_with, manifest_fields
from ..fsio import atomic_write_many, disk_errors
from ..lock import root_lock
from ..manifest import (
    LIST_FORMATS,
    ManifestMeta,
    ManifestUnreadable,
    VideoRecord,
    list_line,
    manifest_path,
    mmaction_shuffles,
    read_manifest,
    require_manifest,
    set_aside,
    split_members,
    write_manifest,
)
from ..status import COMPLETE, DONE, EMPTY, EXTRA, FAILED, INCOMPLETE, STALE, UNCHECKED, UNUSABLE
from ..validate import quarantine
from . import rerun
from .fingerprint import fingerprint, unchanged
from .result import FLOW_MISMATCH, BuildResult, ListFile, categories
from .scan import DiskIndex, FrameFolder, scan_frames, scan_videos, settled_mtime

# What a probe learned about a file: kept with the file until it changes (its stamp: size and
# mtime, completion.FileStamp) or a new probe replaces it, and kept while the file is missing.
PROBE_FIELDS = ("probe_status", "decodable", "frame_count", "fps", "width", "height",
                "duration", "codec", "error", "probe_level")
IDENTITY_FIELDS = ("size", "mtime_ns", "inode")
EXTRACT_FIELDS = ("rgb_template", "flow_template", "start_index", "flow_algo", "flow_bound",
                  "backend", "extract_status", "extract_error")
# What a done frame folder's row says about the folder itself: kept while the folder is
# unchanged, else read again from its completion record (never carried over on its own).
FRAME_FIELDS = ("frame_dir", "rgb_count", "flow_count", "frame_mtime_ns", "made_with", "frame_storage")


@dataclass
class ListOptions:
    level: int = 2  # 2: Class/name; 1: flat
    shuffle: bool = False
    seed: int | None = None
    probe_level: str | None = None  # prepare's old `--level quick|full` (deprecated)


def parse_formats(text: str) -> list[str]:
    formats = [f.strip() for f in text.split(",") if f.strip()]
    bad = [f for f in formats if f not in LIST_FORMATS]
    if bad or not formats:
        raise UserError(f"--format {text!r}: choose from {', '.join(LIST_FORMATS)} "
                        "(comma-separated)")
    return formats


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
    lists_written: list = field(default_factory=list)  # the previous manifest's (rerun.py)
    not_utf8: list[str] = field(default_factory=list)  # paths left out (scan.py says why)

    def save(self, step: str, args: dict, lists: dict[Path, bytes] | None = None,
             changed: bool = True, planned=()) -> None:
        """Write the manifest (and `lists` with it, as one step, `planned` their ListFiles);
        a full or read-only disk stops the step with one line, leaving the previous files in
        place. `changed=False`: the step changed no row; with the root as before, the same
        arguments and the same lists described, only list files whose content differs from
        what is planned are written."""
        described = rerun.describe(lists, planned) if lists else []
        if (not changed and self.as_before and self.steps.get(step) == args
                and (lists is None or described == self.lists_written)):
            lists = {path: data for (path, data), d in zip((lists or {}).items(), described)
                     if not rerun.holds(path, d["bytes"], d["sha256"])}
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
    """Parse the annotations, scan the disk and carry over what earlier steps learned.

    `dataset` None means: the dataset of the root's manifest (which must exist). `level` None
    means: as the previous manifest was built (2 for a new root). `rebuild`: an unreadable
    manifest is moved aside and the root scanned as if it had none (build-lists does this).
    """
    root = Path(root)
    if not root.is_dir():
        raise root_not_found(root, dataset)
    try:
        previous = read_manifest(root)
    except ManifestUnreadable:
        if not rebuild or dataset is None:
            raise
        previous = None
        rebuilt_from = set_aside(root)
    else:
        rebuilt_from = None
    if dataset is None:
        dataset = require_manifest(root)[1].dataset
    ds = datasets.get(dataset)
    if level is None:
        level = previous[1].level if previous else 2
    if level not in (1, 2):
        raise UserError(f"--level {level}: must be 1 (flat folders) or 2 (class folders)")
    steps = dict(previous[1].steps) if previous else {}
    disk = fingerprint(ds, root, level)  # before anything is read: a change meanwhile shows next time
    if previous is not None and previous[1].dataset == ds.name and rerun.written_by_this_version(
            previous[1]) and unchanged(previous[1].disk, disk, root, previous[0]):
        meta = previous[1]
        return ScannedRoot(ds, root, level, previous[0], meta.label_map, meta.label_source, steps,
                           rebuilt_from, disk, as_before=True, lists_written=meta.lists)
    ann = ds.parse(root / "annotations")
    # One row per video at a time: each previous row and each annotation is let go once its
    # new row is made (a driver of Kinetics-700 would otherwise hold both, docs/scale.md).
    known = {r.video_id: r for r in previous[0]} if previous is not None else {}
    previous = None
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
                       rebuilt_from, disk, not_utf8=not_utf8)


def build_lists(dataset: str, root: Path, formats: list[str] | None = None, level: int = 2,
                shuffle: bool = False, seed: int | None = None) -> BuildResult:
    """Scan `root`, update its manifest and write the MMAction2 lists for `formats`."""
    formats = formats or ["videos"]
    with root_lock(root, "build-lists"):
        args = {"formats": formats, "level": level, "shuffle": shuffle, "seed": seed}
        again = rerun.as_left(dataset, root, args)
        if again is not None:
            return again
        scanned = scan_root(dataset, root, level, rebuild=True)
        records = scanned.records
        result = BuildResult(dataset, records, label_source=scanned.label_source,
                             rebuilt_from=scanned.rebuilt_from, not_utf8=scanned.not_utf8)
        frame_lists = any(f != "videos" for f in formats)
        for r in records:
            for where in result.add(r, categories(r, frame_lists)):
                getattr(result, where).append(r)
        planned = plan_lists(scanned.dataset, records, formats, shuffle, seed)
        scanned.save("build-lists", args, lists={root / lf.name: "".join(lines).encode()
                                                 for lf, lines in planned}, changed=False,
                     planned=[lf for lf, _ in planned])
        result.lists = [lf for lf, _ in planned]
        return result


def join_disk(ds: Dataset, videos: list, root: Path, level: int,
              known: dict[str, VideoRecord], settle) -> tuple[list[VideoRecord], list[str]]:
    """One record per annotated video (found or missing) plus one per unclaimed file on disk;
    `settle(record)` completes each as it is made. `videos` is emptied as it goes. `known`:
    the previous manifest's rows by video id; a frame folder its row says is done, unchanged
    since (folder mtime) and made from the same file, is not listed again. Also returns the
    paths the scan left out, names that are not UTF-8."""
    video_index: dict[str, DiskIndex] = {}
    frame_index: dict[str, DiskIndex] = {}

    def index_for(cache, folder, scan):
        if folder not in cache:
            cache[folder] = scan(root, folder, level)
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
            if prev is not None and _unchanged(frames, rec, prev):
                _keep_frames(rec, prev)
            else:
                _set_frames(rec, frames.load())
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


def _unchanged(frames: FrameFolder, rec: VideoRecord, prev: VideoRecord) -> bool:
    """Whether `prev` still describes this frame folder: done, the folder's mtime as recorded
    then (no file added, removed or renamed), made from the same video file."""
    return (prev.extract_status in COMPLETE and prev.frame_dir == frames.path
            and (prev.frame_storage or "files") == frames.storage
            and prev.frame_mtime_ns is not None and prev.frame_mtime_ns == frames.mtime_ns
            and rec.size is not None and same_file(rec, prev))


def _keep_frames(rec: VideoRecord, prev: VideoRecord) -> None:
    for name in FRAME_FIELDS + EXTRACT_FIELDS:
        setattr(rec, name, getattr(prev, name))


def _set_frames(rec: VideoRecord, frames: FrameFolder) -> None:
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
    if not made_from(frames.record, FileStamp(rec.size, rec.mtime_ns)):
        rec.extract_status = STALE
        rec.extract_error = "made from an earlier version of the video; re-run `datatools extract`"
        return
    if frames.trusted:  # what the record counts; a stray file of a part it lacks is not listed
        parts = frames.record["parts"]
        rec.rgb_count = parts.get("rgb", {}).get("count", 0)
        rec.flow_count = parts.get("flow", {}).get("count", 0)
        for name, value in manifest_fields(frames.record).items():
            setattr(rec, name, value)
        rec.extract_status, rec.extract_error = DONE, None
        rec.made_with, rec.frame_mtime_ns = made_with(frames.record), settled_mtime(frames.mtime_ns)
    else:
        counts = {p: i.get("count") for p, i in frames.record["parts"].items()}
        rec.extract_status = INCOMPLETE
        rec.extract_error = (f"holds {frames.rgb} img and {min(frames.flow_x, frames.flow_y)} "
                             f"flow file(s), its completion record counts "
                             f"{counts.get('rgb', 0)} and {counts.get('flow', 0)}; "
                             "re-run `datatools extract`")


def _stat(rec: VideoRecord, root: Path) -> None:
    try:
        st = os.stat(os.path.join(root, rec.video_path))
    except OSError:
        return
    rec.size, rec.mtime_ns, rec.inode = st.st_size, st.st_mtime_ns, st.st_ino or None
    if st.st_size == 0 and rec.status != EXTRA:  # never listed, whatever a probe said once
        rec.status, rec.probe_status, rec.error = EMPTY, EMPTY, "0 bytes"


def stamp(rec: VideoRecord) -> FileStamp:
    """The video file as this row saw it."""
    return FileStamp(rec.size, rec.mtime_ns)


def same_file(rec: VideoRecord, prev: VideoRecord) -> bool:
    """Whether the file found now is the one `prev` describes (completion.FileStamp)."""
    return stamp(prev).matches(stamp(rec))


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


def plan_lists(ds: Dataset, records: list[VideoRecord], formats: list[str],
               shuffle: bool, seed: int | None) -> list[tuple[ListFile, list[str]]]:
    """Every list file for `formats` with its lines; order = annotation order unless shuffled."""
    groups = []  # (split, subset) in MMAction2's shuffle order
    for split in range(1, ds.num_splits + 1):
        for subset in ds.list_subsets:
            groups.append((split, subset))
    out: list[tuple[ListFile, list[str]]] = []
    planned: dict[tuple, tuple[list[str], int]] = {}
    for split, subset in groups:
        members = split_members(records, split, subset)
        for fmt in formats:
            base = (ds.video_dir if fmt == "videos" else ds.frames_dir)(subset)
            lines = [line for r in members if (line := list_line(r, fmt, base)) is not None]
            planned[(split, subset, fmt)] = (lines, len(members))
    if shuffle:
        _shuffle(planned, groups, formats, seed)
    for (split, subset, fmt), (lines, expected) in planned.items():
        name = ds.list_name(split, subset, fmt)
        out.append((ListFile(name, split, subset, fmt, len(lines), expected), lines))
    return out


def _shuffle(planned, groups, formats, seed):
    """Shuffle like MMAction2 (see `mmaction_shuffles`): RGB-type lists take the RGB
    permutation, flow lists the flow one."""
    for fmt in formats:
        sizes = [len(planned[(sp, su, fmt)][0]) for sp, su in groups]
        perms = mmaction_shuffles(sizes, seed)
        for (sp, su), (rgb_perm, flow_perm) in zip(groups, perms):
            lines, expected = planned[(sp, su, fmt)]
            perm = flow_perm if fmt == "flow" else rgb_perm
            planned[(sp, su, fmt)] = ([lines[i] for i in perm], expected)
