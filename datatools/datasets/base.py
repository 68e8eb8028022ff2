"""What every dataset module shares: the parsed-annotation records and the layout rules.

A dataset module only knows its own files: where its annotations are, how to parse them into
`Annotations`, how its videos and frame folders are laid out under a data root, and how its
archives unpack into that layout (`Dataset.acquire`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..core.errors import AnnotationError, MissingAnnotationError, UserError
from . import catalog

# The subset words, written here once: what a split puts each video in. Lists are written for
# a dataset's `list_subsets` of SUBSETS; UNUSED is in a split's annotations but in none of its
# subsets (HMDB51's tag 0), never listed.
TRAIN, VAL, TEST = "train", "val", "test"
SUBSETS = (TRAIN, VAL, TEST)
UNUSED = "unused"

VIDEO_EXTENSIONS = (".avi", ".mp4", ".webm", ".mkv", ".mov", ".m4v", ".flv", ".3gp", ".mpg", ".mpeg")


@dataclass(slots=True)
class AnnotatedVideo:
    """One video named by the annotations, with its membership in every split. Slotted, its
    splits in one tuple: Kinetics-700 has 650,000 of them (docs/scale.md)."""

    video_id: str  # file stem, unique within the dataset: v_ApplyEyeMakeup_g08_c01, <ytid>_<s>_<e>
    class_name: str | None  # as the annotations spell it; None when they give no label
    class_index: int  # MMAction2's index; -1 when unlabelled
    class_dir: str  # folder between the videos dir and the file at level 2 ('' = flat)
    placed: tuple[tuple[int, str, int], ...] = ()  # (split, train/val/test/unused, position)

    @property
    def subsets(self) -> dict[int, str]:
        """split -> train/val/test/unused"""
        return {split: subset for split, subset, _ in self.placed}

    @property
    def orders(self) -> dict[int, int]:
        """split -> position in that split's file"""
        return {split: order for split, _, order in self.placed}


@dataclass
class Annotations:
    """Everything parsed from a dataset's annotation files."""

    dataset: str
    label_map: list[str]  # class names in index order
    label_source: str  # which file (or rule) the label map came from
    videos: dict[str, AnnotatedVideo] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)  # annotation files read

    def add(self, video: AnnotatedVideo, split: int, subset: str, order: int, where: tuple):
        """Record that `video` is in `subset` of `split`; `where` = (path, line, text) for errors."""
        have = self.videos.get(video.video_id)
        if have is None:
            self.videos[video.video_id] = have = video
        elif have.class_name != video.class_name:
            raise AnnotationError(*where, f"video {video.video_id!r} is already listed under class "
                                  f"{have.class_name!r}; fix or remove one of the two lines")
        subsets = have.subsets
        if split in subsets:
            raise AnnotationError(*where, f"video {video.video_id!r} is listed twice in split "
                                  f"{split} ({subsets[split]} and {subset}); remove one line")
        have.placed += ((split, subset, order),)


class Dataset:
    """Base for one dataset: its catalog entry, annotation parsing and on-disk layout."""

    name: str = ""
    #: subsets that get list files, per split
    list_subsets: tuple[str, ...] = (TRAIN, VAL)
    #: True where each subset has its own videos_<subset>/ folder (Kinetics)
    per_subset_dirs: bool = False
    #: True where videos always sit flat in the videos dir (SSv2), whatever --level says
    flat: bool = False
    #: the package whose data holds `<name>.json`, the catalog entry (a plugin names its own)
    catalog_package: str = catalog.CATALOG_PACKAGE

    @property
    def catalog(self) -> catalog.CatalogEntry:
        return catalog.load(self.name, self.catalog_package)

    @property
    def num_splits(self) -> int:
        return self.catalog.splits

    def check_selection(self, split: int, subset: str | None = None) -> None:
        """--split and --subset name what this dataset has (subset names are case-sensitive);
        a subset with no video in it selects none, it is not an error."""
        if not 1 <= split <= self.num_splits:
            raise UserError(f"--split {split}: {self.name} has {self.num_splits} split(s), "
                            f"numbered 1..{self.num_splits}")
        if subset is not None and subset not in self.list_subsets:
            raise UserError(f"--subset {subset}: {self.name} has the subsets "
                            f"{', '.join(self.list_subsets)}")

    # --- annotations -------------------------------------------------------------------
    def parse(self, ann_dir: Path) -> Annotations:
        raise NotImplementedError

    def find_annotation(self, ann_dir: Path, candidates: list[str], required: bool = True,
                        hint: str | None = None) -> Path | None:
        """The first of `candidates` (names relative to ann_dir) that exists."""
        for name in candidates:
            path = ann_dir / name
            if path.is_file():
                return path
        if required:
            raise MissingAnnotationError(ann_dir / candidates[0], self.name, hint)
        return None

    # --- layout ------------------------------------------------------------------------
    def video_dir(self, subset: str | None) -> str:
        """Folder (relative to the root) holding the videos of `subset`."""
        if self.per_subset_dirs and subset in SUBSETS:
            return f"videos_{subset}"
        return "videos"

    def frames_dir(self, subset: str | None) -> str:
        if self.per_subset_dirs and subset in SUBSETS:
            return f"rawframes_{subset}"
        return "rawframes"

    def key(self, video: AnnotatedVideo, level: int) -> str:
        """MMAction2's key for a video: its path below the videos dir, without extension."""
        if level == 1 or self.flat or not video.class_dir:
            return video.video_id
        return f"{video.class_dir}/{video.video_id}"

    # --- download ----------------------------------------------------------------------
    def present(self, root: Path) -> set[str]:
        """What of the dataset is already on disk ("annotations", "videos"), whoever put it
        there: annotation files that parse, and at least one video in a videos folder."""
        found = set()
        try:
            self.parse(root / "annotations")
            found.add("annotations")
        except (UserError, OSError):
            pass
        folders = {self.video_dir(s) for s in self.list_subsets} | {self.video_dir(None)}
        for folder in folders:
            base = root / folder
            if base.is_dir() and any(_videos_below(base, 1000)):
                found.add("videos")
                break
        return found

    def videos_layout(self, folder: Path) -> str | None:
        """What is wrong with an unpacked videos archive (its wrapping folder dropped), or
        None: the videos sit in class folders (`<Class>/<name>.avi`), or flat for a flat
        dataset."""
        depth = 1 if self.flat else 2
        videos = [p.relative_to(folder) for p in _videos_below(folder, 100_000)]
        if any(len(p.parts) == depth for p in videos):
            return None
        expected = "<name>.<ext> videos" if self.flat else "<Class>/<name>.<ext> videos"
        found = (f"{len(videos)} video(s), e.g. {videos[0].as_posix()}" if videos else
                 "no video file")
        return f"expected {expected}, found {found}"

    def acquire(self, s) -> None:
        """Get the catalog's sources and put their content in place, through `s`, the
        download session (acquire/session.py). The common case: every annotations archive
        unpacks into annotations/, every videos archive into videos/, each without the one
        folder it wraps everything in. A dataset whose archives unpack otherwise says so here."""
        items = [s.item(s.remote(src), place=s.unpack_into(s.root / "annotations"))
                 for src in s.sources("annotations")]
        items += [s.item(s.remote(src), place=s.unpack_into(s.root / "videos", self.videos_layout))
                  for src in s.sources("videos")]
        s.run(items)

    def list_name(self, split: int, subset: str, fmt: str) -> str:
        """MMAction2's file name for a list (it writes `val` where the split file says test)."""
        if self.num_splits > 1:
            return f"{self.name}_{subset}_split_{split}_{fmt}.txt"
        return f"{self.name}_{subset}_list_{fmt}.txt"


def _videos_below(folder: Path, most: int):
    """The video files among the first `most` files below `folder` (a large tree is not
    walked whole)."""
    n = 0
    for dirpath, _, files in os.walk(folder):
        for f in files:
            if Path(f).suffix.lower() in VIDEO_EXTENSIONS:
                yield Path(dirpath) / f
            n += 1
            if n >= most:
                return


def read_lines(path: Path) -> list[str]:
    """Lines of a text annotation file, without line endings (CRLF or LF)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise AnnotationError(path, None, None, f"cannot read: {exc.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise AnnotationError(path, line, None, "not UTF-8 text; is this the right file?") from None
    # Split on "\n" only, as Python's file iteration does (MMAction2 reads them that way).
    lines = [line[:-1] if line.endswith("\r") else line for line in text.split("\n")]
    if lines and lines[-1] == "":
        lines.pop()
    return lines
