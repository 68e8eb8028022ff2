"""The build-lists step: join the annotations with what is on disk, update the manifest, and
export MMAction2's text lists from it.

Unlike MMAction2's build_file_list.py, nothing is dropped silently: videos named by a split but
missing on disk, files on disk in no split, and frame folders without frames are all counted,
named in the summary and recorded in the manifest.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..core.errors import UserError
from ..datasets.base import Dataset
from ..root.lock import root_lock
from ..root.manifest import LIST_FORMATS, VideoRecord, list_line, mmaction_shuffles, split_members
from ..root.state import open_root, scan
from . import rerun
from .result import BuildResult, ListFile, categories


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


def build_lists(dataset: str, root: Path, formats: list[str] | None = None, level: int = 2,
                shuffle: bool = False, seed: int | None = None) -> BuildResult:
    """Scan `root`, update its manifest and write the MMAction2 lists for `formats`."""
    formats = formats or ["videos"]
    with root_lock(root, "build-lists"):
        args = {"formats": formats, "level": level, "shuffle": shuffle, "seed": seed}
        opened = open_root(dataset, root, level, rebuild=True)  # read once for both paths
        again = rerun.as_left(opened, args)
        if again is not None:
            return again
        scanned = scan(opened)
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
