"""One video's extraction, the Dask work unit: decode once, write RGB and flow JPEGs into a
temporary folder, add a completion record, and rename the folder into place.

A folder without a completion record is never counted as done: Ctrl-C, a killed worker or a
crash leaves at most a `.<name>.tmp` folder, which the next run removes and redoes.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections import deque
from dataclasses import dataclass

import numpy as np

from .. import __version__
from .backends import create as create_backend
from .backends import is_batch_backend, is_video_tool
from .batcher import batcher_for
from .external import ToolError
from .frames import DecodeError, JpegWriter, iter_frames, resize, to_gray
from .options import ExtractOptions, output_size
from .quantize import quantize_flow

DONE = ".datatools-done.json"


@dataclass
class VideoJob:
    video_id: str
    video_path: str  # absolute
    frame_dir: str  # absolute final folder
    force: bool = False


@dataclass
class VideoOutcome:
    video_id: str
    status: str  # done, skipped, failed, refused
    rgb_count: int = 0
    flow_count: int = 0
    width: int | None = None
    height: int | None = None
    error: str | None = None
    seconds: float = 0.0


def read_done(frame_dir: str) -> dict | None:
    try:
        with open(os.path.join(frame_dir, DONE), encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def count_files(frame_dir: str, opts: ExtractOptions) -> tuple[int, int]:
    names = os.listdir(frame_dir)
    rgb = sum(n.startswith("img_") for n in names)
    fx = sum(n.startswith("flow_x_") for n in names)
    fy = sum(n.startswith("flow_y_") for n in names)
    return rgb, min(fx, fy)


def extract_video(job: VideoJob, opts: ExtractOptions) -> VideoOutcome:
    """Extract one video; never raises for a bad video (the outcome says why)."""
    t0 = time.perf_counter()
    done = read_done(job.frame_dir)
    if done is not None and not job.force:
        if done.get("params") != opts.params():
            return VideoOutcome(job.video_id, "refused", error=(
                f"{job.frame_dir} was made with other parameters ({_diff(done['params'], opts.params())}); "
                "use --force to redo it"))
        rgb, flow = count_files(job.frame_dir, opts)
        if (rgb, flow) == (done["rgb_count"], done["flow_count"]):
            return VideoOutcome(job.video_id, "skipped", rgb, flow, done.get("width"),
                                done.get("height"))
    parent, name = os.path.split(job.frame_dir)
    tmp = os.path.join(parent, f".{name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)  # left over from an interrupted run
    os.makedirs(tmp)
    try:
        if is_video_tool(opts.backend):
            outcome = _tool_into(job, opts, tmp)
        else:
            outcome = _extract_into(job, opts, tmp)
    except (DecodeError, ToolError) as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        what = "decoding failed: " if isinstance(exc, DecodeError) else ""
        return VideoOutcome(job.video_id, "failed", error=f"{what}{exc}",
                            seconds=time.perf_counter() - t0)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if outcome.rgb_count == 0 and (opts.rgb or outcome.flow_count == 0):
        shutil.rmtree(tmp, ignore_errors=True)
        outcome.status, outcome.error = "failed", "no frame could be decoded"
        return outcome
    record = {"params": opts.params(), "rgb_count": outcome.rgb_count,
              "flow_count": outcome.flow_count, "width": outcome.width, "height": outcome.height,
              "video": os.path.basename(job.video_path), "tool_version": __version__,
              "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
    with open(os.path.join(tmp, DONE), "w", encoding="utf-8") as f:
        json.dump(record, f)
    _replace_dir(tmp, job.frame_dir)
    outcome.seconds = time.perf_counter() - t0
    return outcome


def _diff(old: dict, new: dict) -> str:
    return ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in new if old.get(k) != new.get(k))


def _replace_dir(tmp: str, final: str) -> None:
    """Rename tmp to final; an old final (incomplete, or redone with --force) goes first."""
    if os.path.lexists(final):
        trash = f"{tmp}.old"
        shutil.rmtree(trash, ignore_errors=True)
        os.rename(final, trash)
        os.rename(tmp, final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.rename(tmp, final)


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
    return VideoOutcome(job.video_id, "done", rgb, flow, width, height)


def _extract_into(job: VideoJob, opts: ExtractOptions, folder: str) -> VideoOutcome:
    import cv2
    cv2.setNumThreads(1)  # one worker per core already fills the machine
    writer = JpegWriter(folder, opts.jpeg_quality)
    batched = opts.flow and is_batch_backend(opts.backend)
    backend = create_backend(opts.backend, opts.algo) if opts.flow and not batched else None
    batcher = batcher_for(opts.backend, opts.algo, opts.bound) if batched else None
    start = opts.start_index
    rgb_tmpl, flow_tmpl = opts.rgb_template, opts.flow_template
    out = VideoOutcome(job.video_id, "done")
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
                    limit = batcher.backend.batch_size(*size)
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
