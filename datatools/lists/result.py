"""What build-lists reports: the lists it wrote and the videos its summary names, counted by
one rule (`categories`) for a scan's records and for a re-run's manifest columns (rerun.py)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..root.manifest import VideoRecord
from ..root.rows import FLOW_MISMATCH
from ..root.status import EXTRA, MISSING, OK, UNCHECKED, UNLISTED_EXTRACTIONS, UNUSABLE

# Recorded for a frame folder holding unequal numbers of flow_x and flow_y files.


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
    records: Sequence[VideoRecord]  # every row (rerun.py: read from the manifest when asked)
    lists: list[ListFile] = field(default_factory=list)
    missing: list[VideoRecord] = field(default_factory=list)
    extra: list[VideoRecord] = field(default_factory=list)
    no_frames: list[VideoRecord] = field(default_factory=list)  # frame folder with 0 img_ files
    flow_mismatch: list[VideoRecord] = field(default_factory=list)  # flow_x count != flow_y
    incomplete: list[VideoRecord] = field(default_factory=list)  # fewer files than recorded
    unusable: list[VideoRecord] = field(default_factory=list)  # not a pack at a pack's name
    not_utf8: list[str] = field(default_factory=list)  # paths left out: names not UTF-8
    unchecked: int = 0  # listed, never probed
    bad: list[VideoRecord] = field(default_factory=list)  # a probe (or size 0) said bad
    label_source: str = ""
    rebuilt_from: Path | None = None  # an unreadable manifest, kept aside there
    frames_found: bool = False  # some video of the root has a frame folder

    @property
    def no_extraction(self) -> bool:
        """Frame lists were asked for, and no video of the root has a frame folder yet."""
        asked = any(lf.fmt in ("rawframes", "flow") for lf in self.lists)
        return asked and not self.frames_found

    def add(self, row, where: list[str]) -> list[str]:
        """Count `row` (a record, or anything with its status and frame_dir) in the summary's
        `where` (categories()); returns the names of the lists it belongs in, for the caller
        to add it to (a record, or a row number: rerun.py)."""
        self.unchecked += "unchecked" in where
        self.frames_found = self.frames_found or bool(row.frame_dir)
        return [w for w in where if w != "unchecked"]

    @property
    def problems(self) -> int:
        return (len(self.missing) + len(self.no_frames) + len(self.flow_mismatch)
                + len(self.incomplete) + len(self.unusable))


def categories(row, frame_lists: bool) -> list[str]:
    """Which of the summary's counts a row is in: the one rule for a scan's records and for
    a re-run's manifest columns."""
    status = row.status
    where = [MISSING if status == MISSING else EXTRA if status == EXTRA else
             "unchecked" if status == UNCHECKED else "bad" if status != OK else ""]
    if row.extract_status == UNUSABLE:  # a file to move away, whatever lists were asked for
        where.append("unusable")
    elif frame_lists and row.frame_dir and not row.rgb_count and status != EXTRA:
        where.append("no_frames")
    if row.extract_error == FLOW_MISMATCH:
        where.append("flow_mismatch")
    if row.extract_status in UNLISTED_EXTRACTIONS and row.extract_status != UNUSABLE:
        where.append("incomplete")
    return [w for w in where if w]
