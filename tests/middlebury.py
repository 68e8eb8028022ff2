"""Middlebury optical-flow ground truth (../shared/data/flow/middlebury): reading .flo files
and the end-point error the flow tests measure."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
from conftest import SHARED

RUBBER = SHARED / "flow" / "middlebury" / "RubberWhale"


def read_flo(path: Path) -> np.ndarray:
    """float32 magic 202021.25, int32 width, int32 height, then interleaved u, v."""
    data = path.read_bytes()
    magic, w, h = struct.unpack("<fii", data[:12])
    assert abs(magic - 202021.25) < 1e-3
    return np.frombuffer(data[12:], np.float32).reshape(h, w, 2)


def epe(flow: np.ndarray, reference: np.ndarray) -> float:
    """Mean end-point error over the pixels the reference knows (values above 1e9: unknown)."""
    valid = (np.abs(reference) < 1e9).all(axis=2)
    return float(np.linalg.norm(flow - reference, axis=2)[valid].mean())
