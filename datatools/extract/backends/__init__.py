"""Flow backends behind one small interface, chosen by name.

A pair backend (`opencv`) turns a pair of same-sized grayscale uint8 frames into a float32
flow field (H x W x 2, pixels); video.py decodes, resizes, quantizes and writes around it.
A batch backend (`torch`: torch_flow.py) has `compute_batch_quantized(pairs, bound)` and
`batch_size(width, height)` instead: video.py hands its pairs to batcher.py, which computes
pairs of the videos a worker runs at once together. A video tool
(`native`, `denseflow`: external.py) is handed the whole video and writes the frame folder
itself (`video_tool = True`, `extract_into`).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Protocol

import numpy as np

from ...core.errors import one_of
from ...schedule.resources import CPU_ONLY
from ..options import ExtractOptions, resolve_backend
from .external import DenseflowFlow, NativeFlow
from .opencv_flow import OpenCVFlow
from .torch_flow import TorchFlow


class FlowBackend(Protocol):
    name: str
    algo: str
    runs_on: str  # where it computes: resources.CPU_ONLY, EITHER or CUDA_ONLY

    def compute(self, prev: np.ndarray, nxt: np.ndarray) -> np.ndarray:
        ...


def available() -> dict[str, type]:
    return {"opencv": OpenCVFlow, "native": NativeFlow, "denseflow": DenseflowFlow,
            "torch": TorchFlow}


def create(name: str, algo: str, denseflow_bin: str | None = None) -> FlowBackend:
    backends = available()
    name = resolve_backend(name)
    one_of("--backend", name, backends, " (or auto)")
    if name == "denseflow":
        return backends[name](algo, denseflow_bin)
    return backends[name](algo)


def prepare(opts: ExtractOptions) -> tuple[ExtractOptions, str]:
    """The options as the chosen backend computes them (a build that computes another
    algorithm is recorded with them), and where that runs: CPU_ONLY, EITHER or CUDA_ONLY.
    A missing tool or library stops the run here, in the driver."""
    if not (opts.flow or is_video_tool(opts.backend)):
        return opts, CPU_ONLY  # RGB only, decoded in Python
    backend = create(opts.backend, opts.algo, opts.denseflow_bin)
    if not opts.flow:
        return opts, CPU_ONLY  # a video tool writing RGB only computes no flow
    build = getattr(backend, "build_params", dict)().get("build")
    return (replace(opts, build=build) if build else opts), backend.runs_on


def is_video_tool(name: str) -> bool:
    return bool(getattr(available().get(name), "video_tool", False))


def is_batch_backend(name: str) -> bool:
    """A backend that computes many pairs at once (video.py feeds it through batcher.py)."""
    return hasattr(available().get(resolve_backend(name)), "compute_batch_quantized")
