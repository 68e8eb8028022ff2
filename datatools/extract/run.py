"""The extract step's driver: choose videos from the manifest, run `extract_video` for each on
the Dask cluster, and record what was made in the manifest (only the driver writes it)."""

from __future__ import annotations

import functools
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ..core.console import progress_bar, report_failure
from ..core.errors import UserError
from ..core.fsio import DiskError, gib
from ..core.interruption import together
from ..core.task_errors import TaskFailures
from ..datasets.base import TRAIN, UNUSED
from ..frames.folder import made_with_of
from ..frames.packs import stored_at
from ..root.lock import root_lock
from ..root.manifest import LISTED_STATUSES, VideoRecord
from ..root.rows import already_made, set_made
from ..root.state import scan_root
from ..root.status import DONE, EXTRA, FAILED, REFUSED, SKIPPED, UNCHECKED
from ..schedule.client import (
    ClusterOptions,
    TaskError,
    WorkerCrash,
    cluster_for,
    gpu_work,
    map_tasks,
)
from ..validate.run import apply_probe
from . import backends
from .options import ExtractOptions
from .video import VideoJob, VideoOutcome, extract_video


@dataclass
class Selection:
    split: int = 1
    subset: str | None = None  # None: every subset
    limit: int | None = None

    def __post_init__(self):
        if self.split < 1:
            raise UserError(f"--split {self.split}: splits are numbered from 1")
        if self.limit is not None and self.limit < 1:
            raise UserError(f"--limit {self.limit}: must be at least 1 (leave it out for all)")


@dataclass
class ExtractResult:
    dataset: str
    root: Path | None = None
    outcomes: list[tuple[VideoRecord, VideoOutcome]] = field(default_factory=list)
    not_ok: list[VideoRecord] = field(default_factory=list)  # selected but not status ok

    @property
    def counts(self) -> Counter:
        return Counter(o.status for _, o in self.outcomes)

    @property
    def failures(self) -> list[tuple[VideoRecord, VideoOutcome]]:
        return [(r, o) for r, o in self.outcomes if o.status in (FAILED, REFUSED)]


def select(records: list[VideoRecord], sel: Selection) -> list[VideoRecord]:
    """Annotated videos of the selection in list order (extras are never extracted)."""
    chosen = [r for r in records if r.status != EXTRA and r.subset(sel.split)
              and r.subset(sel.split) != UNUSED
              and (sel.subset is None or r.subset(sel.split) == sel.subset)]
    chosen.sort(key=lambda r: (r.subset(sel.split) != TRAIN, r.subset(sel.split),
                               r.order(sel.split)))
    return chosen[: sel.limit] if sel.limit is not None else chosen


def extract(root: Path, opts: ExtractOptions, sel: Selection | None = None,
            cluster: ClusterOptions | None = None, force: bool = False) -> ExtractResult:
    root = Path(root)
    with root_lock(root, "extract"):
        return _extract(root, opts, sel or Selection(), cluster, force)


def _extract(root: Path, opts: ExtractOptions, sel: Selection, cluster: ClusterOptions | None,
             force: bool) -> ExtractResult:
    scanned = scan_root(None, root)
    ds = scanned.dataset
    dataset = ds.name
    ds.check_selection(sel.split, sel.subset)
    opts, device = backends.prepare(opts)  # a missing tool stops here
    chosen = select(scanned.records, sel)
    result = ExtractResult(dataset, root)
    todo = []
    made_with = made_with_of(opts)
    for rec in chosen:
        # Unchecked videos (never probed, or changed since) are probed by the worker first.
        if rec.status not in LISTED_STATUSES or not rec.video_path:
            result.not_ok.append(rec)
            continue
        if (not force and rec.status != UNCHECKED and already_made(rec, made_with)
                and (opts.store == "files" or rec.frame_storage == opts.store)):
            # The scan trusted its folder's record, which holds these parts with these
            # parameters: the worker would only say so.
            rec.extract_status, rec.extract_error = SKIPPED, None
            result.outcomes.append((rec, VideoOutcome(rec.video_id, SKIPPED, rec.rgb_count or 0,
                                                      rec.flow_count or 0)))
            continue
        subset = rec.subset_1 if ds.per_subset_dirs else None
        frame_dir = root / ds.frames_dir(subset) / rec.key
        frame_dir.parent.mkdir(parents=True, exist_ok=True)
        todo.append((rec, VideoJob(rec.video_id, str(root / rec.video_path), str(frame_dir), force,
                                   probe=rec.status == UNCHECKED, frames=rec.frame_count,
                                   size=rec.size, mtime_ns=rec.mtime_ns)))
    by_id = {job.video_id: rec for rec, job in todo}
    # Largest files first, so that the run does not end with one worker busy on a long video
    # while the others idle.
    todo.sort(key=lambda pair: -(pair[0].size or 0))
    run = functools.partial(extract_video, opts=opts)
    failures = TaskFailures(root, "extract")
    skipped_here = len(result.outcomes)  # by the driver, before any task
    try:
        with cluster_for(bool(todo), cluster) as client, \
                progress_bar(len(todo), "extract", unit="frames") as advance:
            gpu = bool(todo) and gpu_work(device, client, cluster)
            # CPU videos in chunks where they are short (one task each cost the driver 4.7 ms
            # against 0.8 ms, docs/scale.md); a GPU worker's threads share its batches, so
            # GPU videos go one per task.
            for job, outcome in map_tasks(client, run, [job for _, job in todo], gpu=gpu,
                                          chunked=not gpu):
                if isinstance(outcome, TaskError):
                    failures.add(job.video_path, outcome)
                    advance()
                    continue
                if isinstance(outcome, WorkerCrash):
                    outcome = VideoOutcome(job.video_id, FAILED, error=f"worker: {outcome.reason}")
                rec = by_id[job.video_id]
                with together():  # saved as done = counted as done, also when stopped here
                    _record(rec, job, outcome, root)
                    result.outcomes.append((rec, outcome))
                    advance(outcome.written_rgb or outcome.written_flow)
                if outcome.status in (FAILED, REFUSED):
                    report_failure(f"{outcome.status}: {rec.video_path}: {outcome.error}",
                                   outcome.detail)
        failures.check()
    except DiskError as exc:
        left = len(todo) - (len(result.outcomes) - skipped_here)
        raise DiskError(f"{exc} ({left} video(s) not extracted; about "
                        f"{_space_per_video(result)} each)") from None
    finally:
        # Whatever finished is recorded, also after Ctrl-C or a full disk: the manifest
        # matches the disk (if the disk takes it: a manifest that cannot be written leaves
        # the previous one, and the completion records still say what is done).
        scanned.save("extract", {**opts.params(), "split": sel.split, "subset": sel.subset,
                                 "limit": sel.limit, "force": force}, changed=bool(todo))
    return result


def _space_per_video(result: ExtractResult) -> str:
    """What one finished frame folder takes on disk, from up to 20 of them (an estimate)."""
    sizes = []
    for rec, out in result.outcomes[-20:]:
        if out.status == DONE and rec.frame_dir:
            folder = result.root / rec.frame_dir
            if folder.is_dir():
                sizes.append(sum(e.stat().st_size for e in os.scandir(folder)))
    return gib(sum(sizes) / len(sizes)) if sizes else "unknown"


def _record(rec: VideoRecord, job: VideoJob, out: VideoOutcome, root: Path) -> None:
    if out.probe is not None:  # the worker probed it first: what it found goes in too
        apply_probe(rec, out.probe)
    rec.extract_status, rec.extract_error = out.status, out.error
    if out.status not in (DONE, SKIPPED):
        return
    try:  # the folder as the worker left it: the next scan need not list it (root/scan.py)
        mtime = os.stat(stored_at(job.frame_dir, out.storage)).st_mtime_ns
    except OSError:
        mtime = None
    set_made(rec, out.record, Path(job.frame_dir).relative_to(root).as_posix(), out.storage, mtime)
