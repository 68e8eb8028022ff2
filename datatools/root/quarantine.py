"""Quarantine: bad input files moved aside under <root>/quarantine/, never deleted.

Each moved file keeps its path relative to the root, and a line in quarantine/records.jsonl
says where it came from and why it was moved; `restore` puts everything back.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ..core.errors import UserError
from ..core.records import JsonLog

FOLDER = "quarantine"
RECORDS = "records.jsonl"


@dataclass
class QuarantineRecord:
    video_id: str
    original: str  # relative to the root
    moved_to: str  # relative to the root
    status: str
    reason: str
    size: int | None
    time: str


def records_path(root: Path) -> Path:
    return Path(root) / FOLDER / RECORDS


def _log(root: Path) -> JsonLog:
    return JsonLog(records_path(root), "quarantine record")


def load(root: Path) -> list[QuarantineRecord]:
    out = []
    for entry in _log(root).read(strict=True):
        try:
            out.append(QuarantineRecord(**entry))
        except TypeError:
            raise UserError(f"{records_path(root)}: a quarantine record with other fields "
                            f"({', '.join(sorted(map(str, entry)))}); fix or remove its line") from None
    return out


def _save(root: Path, records: list[QuarantineRecord]) -> None:
    _log(root).rewrite(asdict(r) for r in records)


def _append(root: Path, record: QuarantineRecord) -> None:
    """One more line, on disk before the next move (a move costs one line, not a rewrite of
    every earlier record)."""
    _log(root).append(asdict(record))


def move_aside(root: Path, videos) -> list[QuarantineRecord]:
    """Move each record's file to quarantine/<its path>; update the records in place."""
    root = Path(root)
    moved = []
    for rec in videos:
        dest_rel = f"{FOLDER}/{rec.video_path}"
        dest = root / dest_rel
        if dest.exists():
            raise UserError(f"{dest}: already in quarantine; restore or remove it first")
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.rename(root / rec.video_path, dest)
        q = QuarantineRecord(rec.video_id, rec.video_path, dest_rel, rec.status, rec.error or "",
                             rec.size, time.strftime("%Y-%m-%dT%H:%M:%S"))
        moved.append(q)
        _append(root, q)  # after each move, so that an interrupted run loses no record
        mark(rec, q)
    return moved


def mark(rec, q: QuarantineRecord) -> None:
    # video_path keeps the original location: identity, and how a restored file is recognised;
    # exists=False with a bad status is what "in quarantine" looks like in the manifest.
    rec.status, rec.exists, rec.video_path, rec.size = q.status, False, q.original, q.size
    rec.error = q.reason


def held(root: Path) -> dict[str, QuarantineRecord]:
    """The quarantined files by video id (a scan marks the videos it finds missing with
    them: `mark`)."""
    return {q.video_id: q for q in load(root)}


def restore(root: Path) -> tuple[list[QuarantineRecord], list[str]]:
    """Move every quarantined file back; returns (restored, problems)."""
    root = Path(root)
    restored, left, problems = [], [], []
    for q in load(root):
        src, dest = root / q.moved_to, root / q.original
        if dest.exists():
            problems.append(f"{dest}: exists, {q.moved_to} left in quarantine")
            left.append(q)
            continue
        if not src.exists():
            problems.append(f"{src}: quarantined file is gone; record dropped")
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.rename(src, dest)
        restored.append(q)
    _save(root, left)
    # Remove folders the moves emptied, bottom-up; the records file stays.
    for folder in sorted((p for p in (root / FOLDER).rglob("*") if p.is_dir()), reverse=True):
        try:
            folder.rmdir()
        except OSError:
            pass
    return restored, problems
