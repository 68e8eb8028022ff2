"""Backends that run a denseflow-compatible executable on a whole video.

`native`: our `datatools-flow` (native/, built with `make native`), found through
$DATATOOLS_FLOW, on PATH, or in the source tree's native/build/. Each worker keeps one
extractor running in `--serve` mode and hands it one video at a time (starting it per video
would cost 0.12 s of loading OpenCV's shared libraries each time); it writes our names
straight into the video's temporary folder and reports the frames it decoded.

`denseflow`: any executable with denseflow's command line (`VIDEO -o=OUT -a=ALGO -b=BOUND
-s=STEP [-nw= -nh= | -ns=]`), e.g. a lab's CUDA build of denseflow, or ours in its default
0-based mode. It writes 0-based names, which are renamed to the requested naming. Its own
report is not trusted: the frames are counted by decoding the video, and a folder with fewer
images or flow pairs than that is an error, not a success (denseflow lost the last frames of
long videos, denseflow #33/#60).

Both are given arguments as lists (no shell), die with the worker that started them, and
write inside the video's temporary folder, so the completion-record protocol of video.py
applies unchanged.
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import NamedTuple

import datatools

from ...core.errors import UserError
from ...frames.folder import FLOW_X_PREFIX, FLOW_Y_PREFIX, RGB_PREFIX, count_names
from ...schedule.resources import CPU_ONLY, CPU_THREADS, CUDA_ONLY
from ..options import ExtractOptions
from ..tvl1 import TVL1, TVL1Params

TOOL = "datatools-flow"
ALGO_FLAGS = {"tvl1": "tvl1", "farneback": "farn"}
SCRATCH = ".tool-out"


class ToolError(Exception):
    """The external extractor failed or wrote an incomplete result for one video."""


def find_native() -> str | None:
    env = os.environ.get("DATATOOLS_FLOW")
    if env:
        return env if os.access(env, os.X_OK) else None
    on_path = shutil.which(TOOL)
    if on_path:
        return on_path
    source_tree = Path(datatools.__file__).resolve().parent.parent  # an editable install's checkout
    built = source_tree / "native" / "build" / TOOL
    return str(built) if os.access(built, os.X_OK) else None


def _die_with_parent() -> None:
    """In the child, before exec: get SIGKILL when the worker process dies, so an extractor
    never goes on writing into a folder that a retry elsewhere is about to reuse."""
    if sys.platform.startswith("linux"):
        import ctypes
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def count_frames(video: str) -> int:
    """Frames in a video, by decoding it (OpenCV, as the Python backend reads it)."""
    from ..frames import iter_frames
    return sum(1 for _ in iter_frames(video))


class ToolResult(NamedTuple):
    rgb: int
    flow: int
    size: tuple[int, int] | None  # (width, height) of the images, where the tool reports it


BUILD_SECONDS = 10  # for an executable to answer --show-build


@functools.cache
def build_of(binary: str) -> dict | None:
    """What an extractor says about its build (`--show-build`: {"cuda": true|false}), or None
    for one that does not answer (an older build, a denseflow)."""
    try:
        proc = subprocess.run([binary, "--show-build"], capture_output=True, text=True,
                              timeout=BUILD_SECONDS, preexec_fn=_die_with_parent)
        report = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired, ValueError, IndexError):
        return None
    return report if isinstance(report, dict) and isinstance(report.get("cuda"), bool) else None


class _VideoTool:
    """What both share: the interface video.py uses, the count check, the size arguments, and
    where it computes: a CUDA build is GPU work (backends.CUDA_ONLY), one process per GPU
    worker, which the worker's own CUDA_VISIBLE_DEVICES pins to its device."""

    video_tool = True  # handles whole videos (video.py hands it the video, not frame pairs)
    name = ""
    cuda_unless_told = False  # what a tool that does not report its build is taken to be
    # A worker's task threads take turns: one extractor process at a time per worker, so a
    # GPU worker runs one on its GPU (a CPU worker has one task thread anyway).
    _one_at_a_time = threading.Lock()

    def __init__(self, algo: str, binary: str | None):
        self.algo = algo
        self.binary = binary

    @property
    def cuda(self) -> bool:
        """Whether it computes this algorithm with CUDA (a CUDA build computes TV-L1 there;
        Farneback stays on the CPU in every build)."""
        if self.algo != "tvl1":
            return False
        report = build_of(self.binary)
        return report["cuda"] if report is not None else self.cuda_unless_told

    @property
    def runs_on(self) -> str:
        return CUDA_ONLY if self.cuda else CPU_ONLY

    def build_params(self) -> dict:
        """Recorded with the flow's parameters where the tool reports a CUDA build: OpenCV's
        CUDA TV-L1 is another algorithm (no median filter, inner x outer iterations in one
        loop), so a folder made by one build is never taken for the other's. A tool that does
        not report its build (denseflow) records what it always did."""
        report = build_of(self.binary)
        return {"build": "cuda"} if self.cuda and report is not None and report["cuda"] else {}

    def extract_into(self, video: str, folder: str, opts: ExtractOptions) -> ToolResult:
        """Write `video`'s frame folder contents into `folder`; returns the counts written."""
        with self._one_at_a_time:
            return self._run(video, folder, opts)

    def _run(self, video: str, folder: str, opts: ExtractOptions) -> ToolResult:
        raise NotImplementedError

    def check(self, video, frames, rgb, flow_x, flow_y, opts) -> None:
        problems = []
        if opts.rgb and rgb != frames:
            problems.append(f"{rgb} images")
        if opts.flow and not flow_x == flow_y == max(frames - 1, 0):
            problems.append(f"{flow_x}/{flow_y} flow_x/flow_y images")
        if problems:
            raise ToolError(f"{self.name} wrote {' and '.join(problems)} for {frames} decoded "
                            f"frames (expected {frames} images, {max(frames - 1, 0)} flow pairs): "
                            "an incomplete result")

    def size_args(self, opts: ExtractOptions) -> list[tuple[str, str]]:
        if opts.new_size:
            return [("-nw", str(opts.new_size[0])), ("-nh", str(opts.new_size[1]))]
        if opts.new_short:
            return [("-ns", str(opts.new_short))]
        return []


class NativeFlow(_VideoTool):
    name = "native"
    _servers: dict[tuple, subprocess.Popen] = {}  # per worker process: options -> extractor

    def __init__(self, algo: str, binary: str | None = None, params: TVL1Params = TVL1):
        self.params = params
        binary = binary or find_native()
        if binary is None:
            raise UserError(f"--backend native: {TOOL} not found; build it with `make native` "
                            "(needs cmake, libopencv-dev, libjpeg-dev) or put it on PATH")
        super().__init__(algo, binary)

    def server_command(self, opts: ExtractOptions) -> list[str]:
        cmd = [self.binary, "--serve", "-a", ALGO_FLAGS[self.algo], "--tvl1", self.params.native_arg(),
               "-b", str(opts.bound),
               "-s", "1" if opts.flow else "0", "--start-index", str(opts.start_index),
               "--quality", str(opts.jpeg_quality), "--threads", str(CPU_THREADS)]
        cmd += [x for pair in self.size_args(opts) for x in pair]
        return cmd + (["--flow-only"] if opts.flow and not opts.rgb else [])

    def _server(self, opts: ExtractOptions) -> subprocess.Popen:
        cmd = tuple(self.server_command(opts))
        proc = self._servers.get(cmd)
        if proc is None or proc.poll() is not None:
            proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=subprocess.DEVNULL, text=True, bufsize=1,
                                    preexec_fn=_die_with_parent)
            self._servers[cmd] = proc
        return proc

    def _run(self, video: str, folder: str, opts: ExtractOptions) -> ToolResult:
        if "\t" in video + folder or "\n" in video + folder:
            raise ToolError("native: paths with tabs or newlines are not supported")
        proc = self._server(opts)
        try:
            proc.stdin.write(f"{video}\t{folder}\n")
            proc.stdin.flush()
            line = proc.stdout.readline()
        except BrokenPipeError:
            line = ""
        if not line:
            self._servers.pop(tuple(self.server_command(opts)), None)
            raise ToolError(f"native: the extractor exited (status {proc.wait()}) on {video}")
        report = json.loads(line)
        if "error" in report:
            raise ToolError(f"native: {report['error']}")
        rgb, flow_x, flow_y = count_names(os.listdir(folder))
        self.check(video, int(report["frames"]), rgb, flow_x, flow_y, opts)
        return ToolResult(rgb, min(flow_x, flow_y), (int(report["width"]), int(report["height"])))


@atexit.register
def _stop_servers() -> None:
    """Let idle extractors finish at exit. A forked Dask worker (schedule/client.py) exits without
    atexit; its extractors, idle between videos, then end by _die_with_parent."""
    for proc in NativeFlow._servers.values():
        if proc.poll() is None:
            proc.stdin.close()
            proc.wait(timeout=30)


class DenseflowFlow(_VideoTool):
    name = "denseflow"
    cuda_unless_told = True  # denseflow computes flow with OpenCV's CUDA module only

    def __init__(self, algo: str, binary: str | None = None):
        if not binary:
            raise UserError("--backend denseflow needs --denseflow-bin PATH (a denseflow-"
                            "compatible executable)")
        if not (os.path.isfile(binary) and os.access(binary, os.X_OK)):
            raise UserError(f"--denseflow-bin {binary}: not an executable file")
        super().__init__(algo, binary)

    def command(self, video: str, out: str, opts: ExtractOptions) -> list[str]:
        # denseflow's parser (OpenCV's CommandLineParser) takes -key=value.
        return [self.binary, video, f"-o={out}", f"-a={ALGO_FLAGS[self.algo]}",
                f"-b={opts.bound:g}", f"-s={1 if opts.flow else 0}",
                *(f"{k}={v}" for k, v in self.size_args(opts))]

    def _run(self, video: str, folder: str, opts: ExtractOptions) -> ToolResult:
        """Run the tool into a scratch folder (it writes OUT/<video stem>/, 0-based), move its
        files up under our names, and count the video's frames ourselves to check them."""
        scratch = os.path.join(folder, SCRATCH)
        proc = subprocess.run(self.command(video, scratch, opts), capture_output=True, text=True,
                              preexec_fn=_die_with_parent)
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
            raise ToolError(f"{self.name} failed: {last}")
        written = os.path.join(scratch, Path(video).stem)
        if not os.path.isdir(written):
            raise ToolError(f"{self.name} wrote nothing for {video} (expected {written})")
        moved = []
        wanted = (RGB_PREFIX,) * opts.rgb + (FLOW_X_PREFIX, FLOW_Y_PREFIX) * opts.flow
        for entry in os.scandir(written):
            prefix = next((p for p in wanted if entry.name.startswith(p)), None)
            number = entry.name[len(prefix):-4] if prefix else ""
            if not (number.isdigit() and entry.name.endswith(".jpg")):
                continue  # the tool's own markers, or a part not asked for
            index = int(number) + opts.start_index  # denseflow counts from 0
            moved.append(f"{prefix}{index:05d}.jpg")
            os.rename(entry.path, os.path.join(folder, moved[-1]))
        shutil.rmtree(scratch)
        rgb, flow_x, flow_y = count_names(moved)
        self.check(video, count_frames(video), rgb, flow_x, flow_y, opts)
        return ToolResult(rgb, min(flow_x, flow_y), None)
