"""The extract step's driver: choose videos from the manifest, run `extract_video` for each on
the Dask cluster, and record what was made in the manifest (only the driver writes it)."""

from __future__ import annotations

import functools
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ..build import scan_root
from ..errors import UserError
from ..manifest import VideoRecord
from ..parallel import ClusterOptions, TaskError, WorkerCrash, dask_client, map_tasks
from ..report import progress_bar
from . import backends
from .options import ExtractOptions
from .video import VideoJob, VideoOutcome, extract_video


@dataclass
class Selection:
    split: int = 1
    subset: str | None = None  # None: every subset
    limit: int | None = None


@dataclass
class ExtractResult:
    dataset: str
    outcomes: list[tuple[VideoRecord, VideoOutcome]] = field(default_factory=list)
    not_ok: list[VideoRecord] = field(default_factory=list)  # selected but not status ok

    @property
    def counts(self) -> Counter:
        return Counter(o.status for _, o in self.outcomes)

    @property
    def failures(self) -> list[tuple[VideoRecord, VideoOutcome]]:
        return [(r, o) for r, o in self.outcomes if o.status in ("failed", "refused")]


def select(records: list[VideoRecord], sel: Selection) -> list[VideoRecord]:
    """Annotated videos of the selection in list order (extras are never extracted)."""
    chosen = [r for r in records if r.status != "extra" and r.subset(sel.split)
              and r.subset(sel.split) != "unused"
              and (sel.subset is None or r.subset(sel.split) == sel.subset)]
    chosen.sort(key=lambda r: (r.subset(sel.split) != "train", r.subset(sel.split),
                               r.order(sel.split)))
    return chosen[: sel.limit] if sel.limit is not None else chosen


def extract(root: Path, opts: ExtractOptions, sel: Selection | None = None,
            cluster: ClusterOptions | None = None, force: bool = False) -> ExtractResult:
    root = Path(root)
    scanned = scan_root(None, root)
    ds = scanned.dataset
    dataset = ds.name
    sel = sel or Selection()
    if sel.split > ds.num_splits:
        raise UserError(f"--split {sel.split}: {dataset} has {ds.num_splits} split(s)")
    if opts.flow or backends.is_video_tool(opts.backend):
        backends.create(opts.backend, opts.algo, opts.denseflow_bin)  # a missing tool stops here
    chosen = select(scanned.records, sel)
    result = ExtractResult(dataset)
    todo = []
    for rec in chosen:
        if rec.status != "ok" or not rec.video_path:
            result.not_ok.append(rec)
            continue
        subset = rec.subset_1 if ds.per_subset_dirs else None
        frame_dir = root / ds.frames_dir(subset) / rec.key
        frame_dir.parent.mkdir(parents=True, exist_ok=True)
        todo.append((rec, VideoJob(rec.video_id, str(root / rec.video_path), str(frame_dir), force)))
    by_id = {job.video_id: rec for rec, job in todo}
    # Largest files first, so that the run does not end with one worker busy on a long video
    # while the others idle.
    todo.sort(key=lambda pair: -(pair[0].size or 0))
    run = functools.partial(extract_video, opts=opts)
    try:
        with dask_client(cluster) as client, progress_bar(len(todo), "extracting") as advance:
            gpu = opts.flow and backends.needs_gpu(opts.backend)
            for job, outcome in map_tasks(client, run, [job for _, job in todo], gpu=gpu):
                if isinstance(outcome, (WorkerCrash, TaskError)):
                    outcome = VideoOutcome(job.video_id, "failed", error=f"worker: {outcome.reason}")
                rec = by_id[job.video_id]
                _record(rec, job, outcome, opts, root)
                result.outcomes.append((rec, outcome))
                advance()
    finally:
        # Whatever finished is recorded, also after Ctrl-C: the manifest matches the disk.
        scanned.save("extract", {**opts.params(), "split": sel.split, "subset": sel.subset,
                                 "limit": sel.limit, "force": force})
    return result


def _record(rec: VideoRecord, job: VideoJob, out: VideoOutcome, opts: ExtractOptions,
            root: Path) -> None:
    rec.extract_status, rec.extract_error = out.status, out.error
    if out.status not in ("done", "skipped"):
        return
    rec.frame_dir = str(Path(job.frame_dir).relative_to(root).as_posix())
    rec.rgb_count, rec.flow_count = out.rgb_count, out.flow_count
    rec.rgb_template = opts.rgb_template if opts.rgb else None
    rec.flow_template = opts.flow_template if opts.flow else None
    rec.start_index = opts.start_index
    rec.flow_algo = opts.algo if opts.flow else None
    rec.flow_bound = opts.bound if opts.flow else None
    rec.backend = opts.backend if opts.flow else None
