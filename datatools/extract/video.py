"""One video's extraction, the Dask work unit: decode once, write RGB and flow JPEGs into a
temporary folder, add a completion record (done.py), and rename the folder into place.

With `--store packed` the JPEGs go straight into the video's pack (packs.PackWriter: a
temporary file renamed when complete, its record the last member); parts kept from an
earlier run (RGB when flow is added) are copied member by member from the old pack, which
stays whole until the new one replaces it. A video whose pack holds what is asked is skipped
from the pack's record and member names. Where a frame folder is there already (made with
`--store files`) or a whole-video tool writes the frames, the folder is finished first and
then packed (convert.pack_folder: written, verified, renamed, only then the folder deleted).

A folder without a completion record is never counted as done: Ctrl-C, a killed worker or a
crash leaves at most a `.<name>.tmp` folder, which the next run removes and redoes. Adding a
part (flow to RGB) builds the new folder from hard links to the kept files plus the new ones,
so the old folder is whole until the new one replaces it. A file at a pack's name that breaks
the pack rule (packs.Pack.open) is not ours: the video fails, naming it, and the file is
left as it is (never unpacked, replaced or deleted).
"""

from __future__ import annotations

import errno
import os
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core.fsio import failed_for_space
from ..core.records import FileStamp
from ..core.runlog import exception_text
from ..frames.convert import MismatchError, pack_folder, unpack_pack
from ..frames.folder import (
    NotAFrame,
    made_from,
    prefixes_of,
    read_done,
    trusted_parts,
)
from ..frames.packs import Pack, PackError, pack_path
from ..frames.writers import FolderWriter, PackedWriter, temporary_folder
from ..root.status import DONE, FAILED, OK, REFUSED, SKIPPED
from ..schedule.resources import CPU_THREADS
from ..validate.probe import TRUNCATION_SLACK, ProbeResult, probe_video
from .backends import create as create_backend
from .backends import is_batch_backend, is_video_tool
from .backends.external import ToolError
from .batcher import batcher_for
from .frames import DecodeError, JpegWriter, iter_frames, resize, to_gray
from .options import ExtractOptions, output_size
from .quantize import quantize_flow


@dataclass
class VideoJob:
    video_id: str
    video_path: str  # absolute
    frame_dir: str  # absolute final folder
    force: bool = False  # redo the requested parts even where they are done
    probe: bool = False  # never probed, or changed since: probe it (quick) before extracting
    frames: int | None = None  # frames its probe found: decoding fewer is a failure
    size: int | None = None  # the video file as the manifest saw it: a folder made from
    mtime_ns: int | None = None  # another file (size or mtime) is not reused


@dataclass
class VideoOutcome:
    video_id: str
    status: str  # done, skipped, failed, refused
    rgb_count: int = 0  # what the folder holds afterwards
    flow_count: int = 0
    width: int | None = None
    height: int | None = None
    error: str | None = None
    seconds: float = 0.0
    written_rgb: int = 0  # what this run wrote of it
    written_flow: int = 0
    record: dict | None = None  # the folder's completion record (done, skipped)
    storage: str = "files"  # where the frames are afterwards: files or packed
    probe: ProbeResult | None = None  # when the worker probed the video first
    detail: str | None = None  # a failure's traceback or the tool's output, for the run's log


@dataclass
class Plan:
    """What to do with a frame folder: the parts to write, the parts to keep, or a refusal."""

    todo: tuple[str, ...]
    keep: dict[str, dict] = field(default_factory=dict)  # part -> its record entry
    refusal: str | None = None
    dropped: tuple[str, ...] = ()  # parts the record counts whose files are not all there


def plan_parts(job: VideoJob, opts: ExtractOptions, existing: dict | None,
               names: list[str] | None = None) -> Plan:
    """Tasks are additive: the requested parts are written unless done with the same
    parameters (always with --force); the folder's other parts are kept. A folder whose
    common parameters (size, naming) differ is refused, naming what --force would delete.
    `names`: what the folder holds (default: its listing; a pack's member names)."""
    wanted = opts.parts
    if existing is None:
        return Plan(wanted)
    trusted = trusted_parts(existing, _listing(job.frame_dir) if names is None else names)
    have = {p: info for p, info in existing["parts"].items() if trusted.get(p)}
    if not made_from(existing, FileStamp(job.size, job.mtime_ns)):
        return Plan(wanted)  # made from a file that has changed since: nothing to keep
    if existing.get("common") != opts.common_params():
        if have and not job.force:
            return Plan((), refusal=(
                f"{job.frame_dir} holds {_describe(have)} made with other parameters "
                f"({_diff(existing.get('common') or {}, opts.common_params())}), which one folder "
                f"cannot mix; --force deletes {'them' if len(have) > 1 else 'it'} and extracts "
                f"{' and '.join(wanted)} anew"))
        return Plan(wanted)
    todo, conflicts = [], []
    for part in wanted:
        info = have.get(part)
        if info is None or job.force:
            todo.append(part)
        elif info.get("params") != opts.part_params(part):
            conflicts.append(f"{_describe({part: info})} made with "
                             f"{_diff(info.get('params') or {}, opts.part_params(part))}")
    if conflicts:
        kept = [p for p in have if p not in wanted]
        return Plan((), refusal=(
            f"{job.frame_dir} holds {'; '.join(conflicts)}; --force redoes "
            f"{' and '.join(wanted)}" + (f" and keeps the {' and '.join(kept)}" if kept else "")))
    dropped = tuple(p for p in existing["parts"] if p not in have and p not in todo)
    return Plan(tuple(todo), {p: info for p, info in have.items() if p not in todo},
                dropped=dropped)


def _describe(parts: dict[str, dict]) -> str:
    words = {"rgb": "RGB image(s)", "flow": "flow pair(s)"}
    return " and ".join(f"{info.get('count', 0)} {words[p]}" for p, info in parts.items())


def _listing(folder: str) -> list[str]:
    try:
        return os.listdir(folder)
    except OSError:
        return []


def extract_video(job: VideoJob, opts: ExtractOptions) -> VideoOutcome:
    """Extract one video; never raises for a bad video (the outcome says why). A full disk or
    a bug raises: neither is a property of the video."""
    t0 = time.perf_counter()
    probe = None
    if job.probe:
        probe = probe_video(job.video_path, "quick")
        if probe.status != OK:
            return VideoOutcome(job.video_id, FAILED, error=f"{probe.status}: {probe.error}",
                                probe=probe, seconds=time.perf_counter() - t0)
    pack = pack_path(job.frame_dir)
    if os.path.islink(job.frame_dir):
        return VideoOutcome(job.video_id, FAILED, probe=probe, error=(
            f"{job.frame_dir} is a symbolic link; frames are kept in folders (or packs) inside "
            "the root: move it away, then run extract again"))
    _recover(job.frame_dir)
    try:
        if opts.store == "packed" and not is_video_tool(opts.backend) and not os.path.isdir(job.frame_dir):
            return _extract_pack(job, opts, pack, probe, t0)
        if os.path.lexists(pack):  # whatever is there: Pack.open decides
            outcome = _from_pack(job, opts, pack, probe)
            if outcome is not None:
                return outcome
        outcome = _extract_folder(job, opts, probe, t0)
        if opts.store == "packed" and outcome.status in (DONE, SKIPPED):
            pack_folder(Path(job.frame_dir))
            outcome.storage = "packed"
        return outcome
    except (PackError, NotAFrame, MismatchError) as exc:
        # What is at the video's pack or folder is not ours to use (or this version's, or the
        # disk cannot read it): the video fails naming it, and it is left as it is.
        return VideoOutcome(job.video_id, FAILED, error=str(exc), probe=probe,
                            storage="packed" if os.path.lexists(pack) else "files")


def _read_pack(pack: str) -> tuple[dict | None, list[str]]:
    """The pack's record and member names; PackError for a file that is not a pack (or not
    one this version reads, or one the disk cannot read)."""
    with Pack.open(pack) as p:
        return p.record, p.names()


def _plan_for_pack(job: VideoJob, opts: ExtractOptions, pack: str, existing: dict | None,
                   names: list[str]) -> tuple[Plan, list[str]]:
    """plan_parts on the pack's members and the members to trust: where work is to be done,
    only those that hold their CRC-32. A kept part with a damaged frame is redone if asked
    for, else left out (as a folder's part with a file missing), never copied with a fresh CRC."""
    plan = plan_parts(job, opts, existing, names)
    if plan.refusal or not plan.keep or not (plan.todo or plan.dropped):
        return plan, names
    prefixes = prefixes_of(plan.keep)
    with Pack.open(pack) as p:
        damaged = p.damaged([n for n in names if n.startswith(prefixes)])
    if not damaged:
        return plan, names
    names = [n for n in names if n not in damaged]
    return plan_parts(job, opts, existing, names), names


def _from_pack(job: VideoJob, opts: ExtractOptions, pack: str, probe) -> VideoOutcome | None:
    """Skipped, refused or failed from what the video's pack holds; None when there is work
    to do, for which the pack has been unpacked into the folder (or, damaged, deleted)."""
    existing, names = _read_pack(pack)
    plan = plan_parts(job, opts, existing, names)
    if plan.refusal:
        return VideoOutcome(job.video_id, REFUSED, error=plan.refusal, probe=probe, storage="packed")
    if os.path.isdir(job.frame_dir):
        # A folder beside a complete pack is what a killed `pack` had not deleted yet: it goes
        # once the pack is found to hold its files byte for byte (pack_folder), else the video
        # fails and both stay as they are.
        pack_folder(Path(job.frame_dir))
    if existing is not None and not (plan.todo or plan.dropped):
        return _skipped(job, existing, probe, "packed")
    try:
        unpack_pack(Path(pack))  # checks every CRC first
    except PackError as exc:
        return VideoOutcome(job.video_id, FAILED, probe=probe, storage="packed", error=(
            f"{exc}; `extract --store packed` redoes its damaged parts, or delete the pack"))
    return None


def _extract_pack(job: VideoJob, opts: ExtractOptions, pack: str, probe, t0: float) -> VideoOutcome:
    """The frames straight into the video's pack: the parts to do written, the parts to
    keep copied from the old pack, the record last, then renamed over the old pack."""
    existing, names = _read_pack(pack) if os.path.lexists(pack) else (None, [])
    plan, names = _plan_for_pack(job, opts, pack, existing, names)
    if plan.refusal:
        return VideoOutcome(job.video_id, REFUSED, error=plan.refusal, probe=probe, storage="packed")
    if existing is not None and not (plan.todo or plan.dropped):
        return _skipped(job, existing, probe, "packed")
    kept = [n for n in names if n.startswith(prefixes_of(plan.keep))] if plan.keep else []
    return _write(job, opts, plan, existing, PackedWriter(job.frame_dir), kept, probe, t0)


def _skipped(job: VideoJob, record: dict, probe, storage: str) -> VideoOutcome:
    """Nothing to do: what the record says the folder (or pack) holds."""
    parts = record["parts"]
    return VideoOutcome(job.video_id, SKIPPED, parts.get("rgb", {}).get("count", 0),
                        parts.get("flow", {}).get("count", 0), record.get("width"),
                        record.get("height"), record=record, probe=probe, storage=storage)


def _extract_folder(job: VideoJob, opts: ExtractOptions, probe, t0: float) -> VideoOutcome:
    existing = read_done(job.frame_dir)
    plan = plan_parts(job, opts, existing)
    if plan.refusal:
        return VideoOutcome(job.video_id, REFUSED, error=plan.refusal, probe=probe)
    if not plan.todo and not plan.dropped:
        return _skipped(job, existing, probe, "files")
    prefixes = prefixes_of(plan.keep)
    kept = [n for n in os.listdir(job.frame_dir) if n.startswith(prefixes)] if prefixes else []
    return _write(job, opts, plan, existing, FolderWriter(job.frame_dir), kept, probe, t0)


def _write(job: VideoJob, opts: ExtractOptions, plan: Plan, existing: dict | None, writer,
           kept: list[str], probe, t0: float) -> VideoOutcome:
    """The plan's parts computed into `writer` (frames/writers.py), the kept frames carried
    over, the record last."""
    try:
        outcome = _write_parts(job, opts, plan, existing, writer, probe, t0)
        if outcome.status == FAILED:
            return outcome
        writer.keep(kept)
        writer.finish(outcome.record)
    except BaseException:
        writer.abort()
        raise
    outcome.storage = writer.storage
    outcome.seconds = time.perf_counter() - t0
    return outcome


def _write_parts(job: VideoJob, opts: ExtractOptions, plan: Plan, existing: dict | None, writer,
                 probe: ProbeResult | None, t0: float) -> VideoOutcome:
    """Decode the video and hand the plan's parts to `writer`; the outcome carries the record
    of what the result holds, the kept parts included. A bad video: a failed outcome, what was
    written discarded; anything else raises (the caller discards)."""
    expected = probe.frame_count if probe is not None else job.frames
    if plan.todo:
        work = opts.only(plan.todo)
        try:
            try:
                if is_video_tool(work.backend):
                    outcome = _tool_into(job, work, writer.path)
                else:
                    outcome = _extract_into(job, work, writer.add)
                _check_complete(outcome, work, expected)
            except ToolError:
                if failed_for_space(writer.path):
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), writer.path) from None
                raise
        except (DecodeError, ToolError) as exc:
            writer.abort()
            what = "decoding failed: " if isinstance(exc, DecodeError) else ""
            return VideoOutcome(job.video_id, FAILED, error=f"{what}{exc}", probe=probe,
                                seconds=time.perf_counter() - t0, detail=exception_text(exc))
        outcome.probe = probe
        if outcome.rgb_count == 0 and (work.rgb or outcome.flow_count == 0):
            writer.abort()
            outcome.status, outcome.error = FAILED, "no frame could be decoded"
            return outcome
    else:  # only a part whose files went missing to leave out: rebuilt without it
        outcome = VideoOutcome(job.video_id, DONE, width=existing.get("width"),
                               height=existing.get("height"), probe=probe)
    outcome.written_rgb, outcome.written_flow = outcome.rgb_count, outcome.flow_count
    parts = dict(plan.keep)
    for part in plan.todo:
        count = outcome.rgb_count if part == "rgb" else outcome.flow_count
        parts[part] = {"count": count, "params": opts.part_params(part)}
    outcome.record = {
        "common": opts.common_params(), "parts": parts,
        "templates": [opts.rgb_template, opts.flow_template], "start_index": opts.start_index,
        "width": outcome.width, "height": outcome.height,
        "video": os.path.basename(job.video_path), "video_size": job.size,
        "video_mtime_ns": job.mtime_ns}
    outcome.rgb_count = parts.get("rgb", {}).get("count", 0)
    outcome.flow_count = parts.get("flow", {}).get("count", 0)
    return outcome


def _check_complete(out: VideoOutcome, work: ExtractOptions, expected: int | None) -> None:
    """A decoder that stops early is a failure with the reason, not a shorter success."""
    decoded = out.rgb_count if work.rgb else out.flow_count + 1 if out.flow_count else 0
    if expected and decoded + TRUNCATION_SLACK < expected:
        raise DecodeError(f"decoding stopped after {decoded} of the {expected} frames the file "
                          "holds (cut short or damaged); check it with `validate --check full`")


def _diff(old: dict, new: dict) -> str:
    return ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in new if old.get(k) != new.get(k))


def _recover(final: str) -> None:
    """A run killed between replace_dir's two renames left no final folder: put back the
    finished new one (it has its record), else the old one."""
    if os.path.lexists(final):
        return
    tmp = temporary_folder(final)
    for candidate in (tmp, f"{tmp}.old"):
        if not os.path.islink(candidate) and read_done(candidate) is not None:
            os.rename(candidate, final)
            return


def _tool_into(job: VideoJob, opts: ExtractOptions, folder: str) -> VideoOutcome:
    """A whole-video backend writes the folder; the frame size is what the tool reports, or
    read back from its first image (a third-party denseflow reports none)."""
    tool = create_backend(opts.backend, opts.algo, opts.denseflow_bin)
    rgb, flow, size = tool.extract_into(job.video_path, folder, opts)
    if size is None:
        import cv2
        first = opts.rgb_template.format(opts.start_index) if rgb else opts.flow_template.format(
            "x", opts.start_index)
        image = cv2.imread(os.path.join(folder, first), cv2.IMREAD_UNCHANGED)
        size = image.shape[1::-1] if image is not None else (None, None)
    width, height = size
    return VideoOutcome(job.video_id, DONE, rgb, flow, width, height)


def _extract_into(job: VideoJob, opts: ExtractOptions, put) -> VideoOutcome:
    """Decode, compute and encode; each JPEG's bytes go to `put(name, data)`."""
    import cv2
    cv2.setNumThreads(CPU_THREADS)  # a forked worker's OpenCV was loaded before WORKER_ENV
    writer = JpegWriter(opts.jpeg_quality, put)
    batched = opts.flow and is_batch_backend(opts.backend)
    backend = create_backend(opts.backend, opts.algo) if opts.flow and not batched else None
    batcher = batcher_for(opts.backend, opts.algo, opts.bound) if batched else None
    start = opts.start_index
    rgb_tmpl, flow_tmpl = opts.rgb_template, opts.flow_template
    out = VideoOutcome(job.video_id, DONE)
    size = None
    prev_gray = None
    in_flight: deque = deque()  # futures of this video's pairs in the batcher, in order
    limit = 1

    def write_flow(qx: np.ndarray, qy: np.ndarray) -> None:
        k = start + out.flow_count
        writer.write(flow_tmpl.format("x", k), np.ascontiguousarray(qx))
        writer.write(flow_tmpl.format("y", k), np.ascontiguousarray(qy))
        out.flow_count += 1

    def write_finished(keep: int) -> None:
        """Write the oldest pairs' flows once computed, until at most `keep` are in flight."""
        while in_flight and (len(in_flight) > keep or in_flight[0].done()):
            q = in_flight.popleft().result()
            write_flow(q[..., 0], q[..., 1])

    try:
        for i, frame in enumerate(iter_frames(job.video_path)):
            if size is None:
                size = output_size(frame.shape[1], frame.shape[0], opts)
                out.width, out.height = size
                if batched:  # enough pairs in flight for this video alone to fill a batch
                    limit = 2 * batcher.backend.batch_size(*size)  # and stage the next one
            frame = resize(frame, size)
            if opts.rgb:
                writer.write(rgb_tmpl.format(start + i), frame)
                out.rgb_count += 1
            if opts.flow:
                gray = to_gray(frame)
                if prev_gray is not None:
                    if batched:
                        in_flight.append(batcher.submit(prev_gray, gray, job))
                        write_finished(limit)
                    else:
                        q = quantize_flow(backend.compute(prev_gray, gray), opts.bound)
                        write_flow(q[..., 0], q[..., 1])
                prev_gray = gray
        write_finished(0)
    finally:
        for fut in in_flight:  # a failed video: its pairs still queued are not computed
            fut.cancel()
    return out
