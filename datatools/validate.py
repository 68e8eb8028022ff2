"""The validate step: probe every video of a data root in parallel, record what was found in the
manifest, and optionally move bad files to quarantine."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, fields
from pathlib import Path

from . import quarantine
from .build import scan_root
from .errors import UserError
from .manifest import VideoRecord
from .parallel import ClusterOptions, WorkerCrash, dask_client, map_tasks
from .probe import BAD, ProbeResult, probe_task
from .report import progress_bar

LEVELS = ("quick", "full")


@dataclass
class ValidateResult:
    dataset: str
    records: list[VideoRecord]
    counts: Counter = field(default_factory=Counter)
    quarantined: list = field(default_factory=list)

    @property
    def not_ok(self) -> list[VideoRecord]:
        return [r for r in self.records if r.status != "ok"]


def apply_probe(rec: VideoRecord, res) -> None:
    if isinstance(res, WorkerCrash):
        res = ProbeResult("corrupt", size=rec.size, error=f"decoder crashed ({res.reason}, twice)")
    elif not isinstance(res, ProbeResult):  # the task raised: a bug, recorded with its reason
        res = ProbeResult("corrupt", size=rec.size, error=f"probe failed: {res.reason}")
    for f in fields(ProbeResult):
        if f.name != "status":
            setattr(rec, f.name, getattr(res, f.name))
    if rec.status != "extra":  # a file in no split stays `extra`; its probe is still recorded
        rec.status = res.status
    rec.exists = res.status != "missing"
    rec.decodable = res.decodable


def validate(dataset: str, root: Path, level: str = "quick", cluster: ClusterOptions | None = None,
             move_bad: bool = False) -> ValidateResult:
    if level not in LEVELS:
        raise UserError(f"--level {level!r}: choose quick or full")
    scanned = scan_root(dataset, root)
    root = scanned.root
    targets = [r for r in scanned.records if r.exists and r.video_path]
    with dask_client(cluster) as client, progress_bar(len(targets), "probing videos") as advance:
        tasks = [(str(root / r.video_path), level) for r in targets]
        by_path = {t[0]: r for t, r in zip(tasks, targets)}
        for (path, _), res in map_tasks(client, probe_task, tasks):
            apply_probe(by_path[path], res)
            advance()
    result = ValidateResult(dataset, scanned.records)
    if move_bad:
        bad = [r for r in scanned.records if r.exists and r.video_path
               and (r.status in BAD or (r.status == "extra" and r.error))]
        result.quarantined = quarantine.move_aside(root, bad)
    result.counts = Counter(r.status for r in scanned.records)
    scanned.save("validate", {"level": level, "quarantine": move_bad})
    return result


def restore(dataset: str, root: Path):
    """Put quarantined files back and record them in the manifest as found again."""
    restored, problems = quarantine.restore(root)
    scanned = scan_root(dataset, root)
    scanned.save("validate-restore", {"restored": len(restored)})
    return restored, problems
