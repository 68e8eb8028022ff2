"""The validate step: probe every video of a data root in parallel, record what was found in the
manifest, and optionally move bad files to quarantine."""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from dataclasses import dataclass, field, fields
from pathlib import Path

from ..core.console import progress_bar
from ..core.errors import NothingToDo, one_of, root_not_found
from ..core.fsio import DiskError
from ..core.interruption import together
from ..core.task_errors import TaskFailures
from ..root import quarantine
from ..root.lock import root_lock
from ..root.manifest import VideoRecord
from ..root.state import scan_root
from ..root.status import BAD, EMPTY, EXTRA, MISSING, OK, PROBE_LEVELS, UNREADABLE
from ..schedule.client import ClusterOptions, TaskError, WorkerCrash, cluster_for, map_tasks
from .probe import ProbeResult, probe_task

LEVELS = PROBE_LEVELS
# Verdicts on the access to a file, not its content: they can change while the file does not.
TRANSIENT = (UNREADABLE, MISSING)
# The error of a file whose decoder took its worker down twice; the next run tries again (the
# worker may have died of something else: the OOM killer, a lost node).
CRASHED = "decoder crashed"


@dataclass
class ValidateOptions:
    check: str = "quick"  # how deep a probe looks: one of LEVELS
    quarantine: bool = False  # move bad files to ROOT/quarantine/

    def __post_init__(self):
        one_of("--check", self.check, LEVELS,
               " (quick: the container and a few frames; full: every frame)")


@dataclass
class ValidateResult:
    dataset: str
    records: list[VideoRecord]
    counts: Counter = field(default_factory=Counter)
    quarantined: list = field(default_factory=list)
    probed: int = 0  # videos probed by this run
    kept: int = 0  # videos whose earlier probe still holds (same file, same or deeper level)

    @property
    def not_ok(self) -> list[VideoRecord]:
        return [r for r in self.records if r.status != OK]


def apply_probe(rec: VideoRecord, res: ProbeResult | WorkerCrash) -> None:
    """Record a probe's verdict on the file it probed (a decoder that crashed its worker
    twice is the file's fault: such files abort decoders)."""
    if isinstance(res, WorkerCrash):
        res = ProbeResult("corrupt", size=rec.size, error=f"{CRASHED} ({res.reason}, twice)")
    for f in fields(ProbeResult):
        value = getattr(res, f.name)
        if f.name == "status" or (f.name == "size" and value is None):
            continue  # status: below; a probe that learned no size keeps the scan's
        setattr(rec, f.name, value)
    rec.probe_status = res.status
    if rec.status != EXTRA:  # a file in no split stays `extra`; its probe is still recorded
        rec.status = res.status
    rec.exists = res.status != MISSING
    rec.decodable = res.decodable


def probed_enough(rec: VideoRecord, level: str) -> bool:
    """Whether the row's probe stands for its file at `level`: the scan keeps a probe only
    while the file's stamp (size, mtime) matches (records.FileStamp), and a `full` probe
    stands for a `quick` one, not the other way round. A 0-byte file is `empty` by the scan's
    word, at any level."""
    if rec.size == 0 and rec.probe_status == EMPTY:
        return True
    return (rec.probe_status is not None and rec.probe_status not in TRANSIENT
            and not (rec.error or "").startswith(CRASHED)
            and rec.probe_level in LEVELS and LEVELS.index(rec.probe_level) >= LEVELS.index(level))


class Checkpoint:
    """Saves what a long run has found so far, now and then, so that a run killed outright
    (SIGKILL, a node lost) resumes from there: the next run keeps every probe whose file is
    unchanged. Every CHECKPOINT_SECONDS at least, and never spending more than a tenth of
    the run's time on saving (a manifest of 650,000 rows takes seconds to write)."""

    def __init__(self, save):
        self.save = save
        self.last = time.monotonic()
        self.cost = 0.0

    def maybe(self) -> None:
        now = time.monotonic()
        if now - self.last < max(CHECKPOINT_SECONDS, 10 * self.cost):
            return
        with contextlib.suppress(DiskError):  # a full disk stops the run at its end, not here
            self.save()
        self.last = time.monotonic()
        self.cost = self.last - now


CHECKPOINT_SECONDS = 60


def validate(dataset: str, root: Path, level: str = "quick", cluster: ClusterOptions | None = None,
             move_bad: bool = False, force: bool = False) -> ValidateResult:
    """Probe the videos whose files changed or were never probed at this level (all of them
    with `force`); record the verdicts in the manifest."""
    ValidateOptions(level)  # the one check of the probe depth
    with root_lock(root, "validate"):
        scanned = scan_root(dataset, root)
        root = scanned.root
        on_disk = [r for r in scanned.records if r.exists and r.video_path]
        targets = [r for r in on_disk if force or not probed_enough(r, level)]
        failures = TaskFailures(root, "validate")
        checkpoint = Checkpoint(lambda: scanned.save("validate", {"level": level, "quarantine": False,
                                                                  "interrupted": True}))
        try:
            with cluster_for(bool(targets), cluster) as client, \
                    progress_bar(len(targets), "validate") as advance:
                tasks = [(str(root / r.video_path), level) for r in targets]
                by_path = {t[0]: r for t, r in zip(tasks, targets)}
                # A quick probe takes milliseconds: chunks of them per task (schedule/tasks.py).
                for (path, _), res in map_tasks(client, probe_task, tasks, chunked=True):
                    if isinstance(res, TaskError):  # a bug, not a verdict on the file
                        failures.add(path, res)
                        advance()
                    else:
                        with together():  # saved as probed = counted as probed
                            apply_probe(by_path[path], res)
                            advance()
                    checkpoint.maybe()
            failures.check()
        except BaseException:
            # What was probed is kept (if the disk takes it); nothing is quarantined on the
            # word of a bug, an interruption or a full disk.
            with contextlib.suppress(DiskError):
                scanned.save("validate", {"level": level, "quarantine": False, "interrupted": True})
            raise
        result = ValidateResult(dataset, scanned.records, probed=len(targets),
                                kept=len(on_disk) - len(targets))
        if move_bad:
            bad = [r for r in scanned.records if r.exists and r.video_path
                   and (r.status in BAD or (r.status == EXTRA and r.error))]
            result.quarantined = quarantine.move_aside(root, bad)
        result.counts = Counter(r.status for r in scanned.records)
        scanned.save("validate", {"level": level, "quarantine": move_bad, "force": force},
                     changed=bool(targets or result.quarantined))
        return result


def restore(dataset: str, root: Path):
    """Put quarantined files back and record them in the manifest as found again. A root
    without a quarantine is left as it is (no lock file, no manifest written)."""
    root = Path(root)
    if not root.is_dir():
        raise root_not_found(root, dataset)
    if not quarantine.load(root):
        raise NothingToDo(f"nothing to restore: {root / quarantine.FOLDER} holds no "
                               "quarantined file (validate --quarantine puts bad files there)")
    with root_lock(root, "validate --restore"):
        restored, problems = quarantine.restore(root)
        scanned = scan_root(dataset, root)
        scanned.save("validate-restore", {"restored": len(restored)})
        return restored, problems
