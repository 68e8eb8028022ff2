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

from . import datasets, quarantine
from .datasets.base import AnnotatedVideo, Dataset
from .errors import UserError
from .manifest import (
    LIST_FORMATS,
    ManifestMeta,
    VideoRecord,
    list_line,
    mmaction_shuffles,
    read_manifest,
    require_manifest,
    split_members,
    write_manifest,
    write_text_atomic,
)
from .scan import DiskIndex, scan_frames, scan_videos

# Recorded for a frame folder holding unequal numbers of flow_x and flow_y files.
FLOW_MISMATCH = "flow_x/flow_y counts differ"

# Columns a re-scan keeps from an earlier manifest when the file it describes is unchanged.
PROBE_FIELDS = ("status", "decodable", "frame_count", "fps", "width", "height",
                "duration", "codec", "error", "probe_level")
EXTRACT_FIELDS = ("rgb_template", "flow_template", "start_index", "flow_algo", "flow_bound",
                  "backend", "extract_status", "extract_error")


@dataclass
class ListFile:
    name: str
    split: int
    subset: str
    fmt: str
    lines: int
    expected: int  # videos the annotations put in this split/subset


@dataclass
class BuildResult:
    dataset: str
    records: list[VideoRecord]
    lists: list[ListFile] = field(default_factory=list)
    missing: list[VideoRecord] = field(default_factory=list)
    extra: list[VideoRecord] = field(default_factory=list)
    no_frames: list[VideoRecord] = field(default_factory=list)  # frame folder with 0 img_ files
    flow_mismatch: list[VideoRecord] = field(default_factory=list)  # flow_x count != flow_y
    label_source: str = ""

    @property
    def problems(self) -> int:
        return len(self.missing) + len(self.no_frames) + len(self.flow_mismatch)


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

    def save(self, step: str, args: dict) -> None:
        self.steps[step] = args
        meta = ManifestMeta(dataset=self.dataset.name, label_map=self.label_map,
                            label_source=self.label_source, level=self.level, steps=self.steps)
        write_manifest(self.root, self.records, meta)


def scan_root(dataset: str | None, root: Path, level: int | None = None) -> ScannedRoot:
    """Parse the annotations, scan the disk and carry over what earlier steps learned.

    `dataset` None means: the dataset of the root's manifest (which must exist). `level` None
    means: as the previous manifest was built (2 for a new root).
    """
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root}: data root not found; create it or run "
                        f"`datatools {dataset or '<dataset>'} download --root {root}`")
    previous = read_manifest(root)
    if dataset is None:
        dataset = require_manifest(root)[1].dataset
    ds = datasets.get(dataset)
    if level is None:
        level = previous[1].level if previous else 2
    if level not in (1, 2):
        raise UserError(f"--level {level}: must be 1 (flat folders) or 2 (class folders)")
    ann = ds.parse(root / "annotations")
    records = join_disk(ds, ann.videos.values(), root, level)
    quarantine.mark_quarantined(root, records)
    if previous is not None:
        carry_over(records, previous[0])
    return ScannedRoot(ds, root, level, records, ann.label_map, ann.label_source,
                       dict(previous[1].steps) if previous else {})


def build_lists(dataset: str, root: Path, formats: list[str] | None = None, level: int = 2,
                shuffle: bool = False, seed: int | None = None) -> BuildResult:
    """Scan `root`, update its manifest and write the MMAction2 lists for `formats`."""
    formats = formats or ["videos"]
    scanned = scan_root(dataset, root, level)
    records = scanned.records
    result = BuildResult(dataset, records, label_source=scanned.label_source)
    for r in records:
        if r.status == "missing":
            result.missing.append(r)
        elif r.status == "extra":
            result.extra.append(r)
    if any(f != "videos" for f in formats):
        for r in records:
            if r.frame_dir and not r.rgb_count and r.status != "extra":
                result.no_frames.append(r)
    result.flow_mismatch = [r for r in records if r.extract_error == FLOW_MISMATCH]
    result.lists = export_lists(scanned.dataset, scanned.root, records, formats, shuffle, seed)
    scanned.save("build-lists", {"formats": formats, "level": level, "shuffle": shuffle,
                                 "seed": seed})
    return result


def join_disk(ds: Dataset, videos, root: Path, level: int) -> list[VideoRecord]:
    """One record per annotated video (found or missing) plus one per unclaimed file on disk."""
    video_index: dict[str, DiskIndex] = {}
    frame_index: dict[str, DiskIndex] = {}

    def index_for(cache, folder, scan):
        if folder not in cache:
            cache[folder] = scan(root, folder, level)
        return cache[folder]

    records = []
    for video in videos:
        subset = next(iter(video.subsets.values()), None) if ds.per_subset_dirs else None
        rec = _record(ds, video, level)
        path = index_for(video_index, ds.video_dir(subset), scan_videos).claim(rec.key, video.video_id)
        if path is not None:
            rec.video_path, rec.status, rec.exists = path, "ok", True
            rec.size = _size(root, path)
        frames = index_for(frame_index, ds.frames_dir(subset), scan_frames).claim(rec.key, video.video_id)
        if frames is not None:
            _set_frames(rec, frames)
        records.append(rec)
    # Files on disk that no annotation claims: reported as extra, never listed.
    for folder in ([ds.video_dir(s) for s in ds.list_subsets] if ds.per_subset_dirs else ["videos"]):
        for key, path in index_for(video_index, folder, scan_videos).unclaimed():
            stem = key.rsplit("/", 1)[-1]
            rec = VideoRecord(dataset=ds.name, video_id=stem, key=key, video_path=path,
                              status="extra", exists=True, size=_size(root, path))
            records.append(rec)
    return records


def _record(ds: Dataset, video: AnnotatedVideo, level: int) -> VideoRecord:
    rec = VideoRecord(dataset=ds.name, video_id=video.video_id, key=ds.key(video, level),
                      class_name=video.class_name, class_index=video.class_index)
    for split, subset in video.subsets.items():
        setattr(rec, f"subset_{split}", subset)
        setattr(rec, f"order_{split}", video.orders[split])
    return rec


def _set_frames(rec: VideoRecord, frames) -> None:
    rec.frame_dir = frames.path
    rec.rgb_count = frames.rgb
    if frames.flow_x != frames.flow_y:
        # Half a flow pair on disk: list no flow for this video and say why.
        rec.flow_count = 0
        rec.extract_error = FLOW_MISMATCH
    else:
        rec.flow_count = frames.flow_x


def _size(root: Path, rel: str) -> int | None:
    try:
        return os.stat(os.path.join(root, rel)).st_size
    except OSError:
        return None


def carry_over(records: list[VideoRecord], old: list[VideoRecord]) -> None:
    """Keep probe and extraction results for files that have not changed since they were made."""
    by_id = {r.video_id: r for r in old}
    for rec in records:
        prev = by_id.get(rec.video_id)
        if prev is None:
            continue
        if rec.video_path and prev.video_path == rec.video_path and prev.size == rec.size \
                and prev.probe_level is not None:
            for name in PROBE_FIELDS:
                setattr(rec, name, getattr(prev, name))
        if rec.frame_dir and prev.frame_dir == rec.frame_dir and rec.extract_error is None:
            for name in EXTRACT_FIELDS:
                setattr(rec, name, getattr(prev, name))


def export_lists(ds: Dataset, root: Path, records: list[VideoRecord], formats: list[str],
                 shuffle: bool, seed: int | None) -> list[ListFile]:
    """Write every list file for `formats`; order = annotation order unless shuffled."""
    groups = []  # (split, subset) in MMAction2's shuffle order
    for split in range(1, ds.num_splits + 1):
        for subset in ds.list_subsets:
            groups.append((split, subset))
    out: list[ListFile] = []
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
        write_text_atomic(root / name, lines)
        out.append(ListFile(name, split, subset, fmt, len(lines), expected))
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
