"""Flow quantization, denseflow-compatible: clip to ±bound, map v -> round(255·(v + b) / (2b)).

Rounding is round-half-to-even on the double value, as denseflow's cvRound does (not mmcv's
`quantize_flow`, which floors into bins, and not truncation). Zero motion maps to 128.
"""

from __future__ import annotations

import numpy as np


def quantize_flow(v: np.ndarray, bound: float) -> np.ndarray:
    """float flow component -> uint8 image."""
    lo, hi = -float(bound), float(bound)
    # Same operation order as denseflow's CAST macro: 255 * (v - L) / (H - L), in double;
    # in place on one copy (a fresh array per step cost 0.4 ms a 340x256 pair, a tenth of
    # Farneback's overhead in our workers).
    x = v.astype(np.float64)
    np.clip(x, lo, hi, out=x)
    x -= lo
    x *= 255.0
    x /= hi - lo
    np.rint(x, out=x)
    return x.astype(np.uint8)


def dequantize_flow(q: np.ndarray, bound: float) -> np.ndarray:
    """uint8 image -> float flow component (the centre of each level)."""
    return q.astype(np.float32) * np.float32(2 * bound / 255.0) - np.float32(bound)
