"""Backends that run a denseflow-compatible executable on a whole video.

`native`: our `datatools-flow` (native/, built with `make native`), found through
$DATATOOLS_FLOW, on PATH, or in the source tree's native/build/. It writes our names directly
(--start-index) and reports the frames it decoded.

`denseflow`: any executable with denseflow's command line (`VIDEO -o=OUT -a=ALGO -b=BOUND
-s=STEP [-nw= -nh= | -ns=]`), e.g. a lab's CUDA build of denseflow, or ours in its default
0-based mode. It writes 0-based names, which are renamed to the requested naming. Its own
report is not trusted: the frames are counted by decoding the video, and a folder with fewer
images or flow pairs than that is an error, not a success (denseflow lost the last frames of
long videos, denseflow #33/#60).

Both are given arguments as lists (no shell) and write into a scratch folder inside the
video's temporary folder; the files are then moved up, so the completion-record protocol of
video.py applies unchanged.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from ..errors import UserError
from .options import ExtractOptions

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
    built = Path(__file__).resolve().parents[2] / "native" / "build" / TOOL
    return str(built) if os.access(built, os.X_OK) else None


def count_frames(video: str) -> int:
    """Frames in a video, by decoding it (OpenCV, as the Python backend reads it)."""
    from .frames import iter_frames
    return sum(1 for _ in iter_frames(video))


class _VideoTool:
    """Common part: run the tool into a scratch folder, move and rename its files, check."""

    gpu = False
    video_tool = True  # handles whole videos (video.py hands it the video, not frame pairs)
    name = ""

    def __init__(self, algo: str, binary: str | None):
        self.algo = algo
        self.binary = binary

    def command(self, video: str, out: str, opts: ExtractOptions) -> list[str]:
        raise NotImplementedError

    def extract_into(self, video: str, folder: str, opts: ExtractOptions) -> tuple[int, int]:
        """Run the tool on `video`, leave our file names in `folder`; returns (rgb, flow)."""
        scratch = os.path.join(folder, SCRATCH)
        proc = subprocess.run(self.command(video, scratch, opts), capture_output=True, text=True)
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
            raise ToolError(f"{self.name} failed: {last}")
        written = os.path.join(scratch, Path(video).stem)
        if not os.path.isdir(written):
            raise ToolError(f"{self.name} wrote nothing for {video} (expected {written})")
        shift = opts.start_index - self.tool_start(opts)
        rgb = flow_x = flow_y = 0
        for entry in os.scandir(written):
            prefix, _, number = entry.name.rpartition("_")
            if prefix not in ("img", "flow_x", "flow_y") or not number.endswith(".jpg"):
                continue  # the tool's own markers
            if prefix == "img" and not opts.rgb:
                continue
            if prefix != "img" and not opts.flow:
                continue
            index = int(number[:-4]) + shift
            os.rename(entry.path, os.path.join(folder, f"{prefix}_{index:05d}.jpg"))
            rgb += prefix == "img"
            flow_x += prefix == "flow_x"
            flow_y += prefix == "flow_y"
        shutil.rmtree(scratch)
        frames = self.decoded_frames(proc.stdout, video)
        self.check(video, frames, rgb, flow_x, flow_y, opts)
        return rgb, min(flow_x, flow_y)

    def tool_start(self, opts: ExtractOptions) -> int:
        return 0

    def decoded_frames(self, stdout: str, video: str) -> int:
        return count_frames(video)

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

    def __init__(self, algo: str, binary: str | None = None):
        binary = binary or find_native()
        if binary is None:
            raise UserError(f"--backend native: {TOOL} not found; build it with `make native` "
                            "(needs cmake, libopencv-dev, libopencv-contrib-dev) or put it on PATH")
        super().__init__(algo, binary)

    def command(self, video, out, opts):
        # One thread: one Dask worker per core already fills the machine.
        cmd = [self.binary, video, "-o", out, "-a", ALGO_FLAGS[self.algo], "-b", str(opts.bound),
               "-s", "1" if opts.flow else "0", "--start-index", str(opts.start_index),
               "--quality", str(opts.jpeg_quality), "--threads", "1"]
        cmd += [x for pair in self.size_args(opts) for x in pair]
        return cmd + (["--flow-only"] if opts.flow and not opts.rgb else [])

    def tool_start(self, opts: ExtractOptions) -> int:
        return opts.start_index  # writes our names itself

    def decoded_frames(self, stdout: str, video: str) -> int:
        for line in stdout.splitlines():
            if line.startswith("{"):
                return int(json.loads(line)["frames"])
        raise ToolError(f"native: no report line for {video}")


class DenseflowFlow(_VideoTool):
    name = "denseflow"

    def __init__(self, algo: str, binary: str | None = None):
        if not binary:
            raise UserError("--backend denseflow needs --denseflow-bin PATH (a denseflow-"
                            "compatible executable)")
        if not (os.path.isfile(binary) and os.access(binary, os.X_OK)):
            raise UserError(f"--denseflow-bin {binary}: not an executable file")
        super().__init__(algo, binary)

    def command(self, video, out, opts):
        # denseflow's parser (OpenCV's CommandLineParser) takes -key=value.
        return [self.binary, video, f"-o={out}", f"-a={ALGO_FLAGS[self.algo]}",
                f"-b={opts.bound:g}", f"-s={1 if opts.flow else 0}",
                *(f"{k}={v}" for k, v in self.size_args(opts))]
