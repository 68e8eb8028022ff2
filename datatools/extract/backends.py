"""Flow backends behind one small interface, chosen by name.

A backend turns a pair of same-sized grayscale uint8 frames into a float32 flow field
(H x W x 2, pixels). Later backends (native, denseflow, torch) register here too.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from ..errors import UserError


class FlowBackend(Protocol):
    name: str
    algo: str
    gpu: bool  # runs only on workers declaring a GPU (parallel.GPU), one video per GPU

    def compute(self, prev: np.ndarray, nxt: np.ndarray) -> np.ndarray:
        ...


def available() -> dict[str, type]:
    from .opencv_flow import OpenCVFlow
    return {"opencv": OpenCVFlow}


def needs_gpu(name: str) -> bool:
    backends = available()
    return bool(getattr(backends.get(name), "gpu", False))


def create(name: str, algo: str) -> FlowBackend:
    backends = available()
    if name == "auto":
        name = "opencv"
    if name not in backends:
        raise UserError(f"--backend {name!r}: choose auto or {', '.join(backends)}")
    return backends[name](algo)
