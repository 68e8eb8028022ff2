"""The `opencv` flow backend: OpenCV's DualTVL1 (contrib optflow) and Farneback, on the CPU."""

from __future__ import annotations

import numpy as np

from ...core.errors import UserError
from ...schedule.resources import CPU_ONLY
from ..tvl1 import TVL1, TVL1Params

# Farneback as in OpenCV's samples and tutorials.
FARNEBACK = dict(pyr_scale=0.5, levels=3, winsize=15, iterations=3, poly_n=5, poly_sigma=1.2,
                 flags=0)


class OpenCVFlow:
    name = "opencv"
    runs_on = CPU_ONLY

    def __init__(self, algo: str, params: TVL1Params = TVL1):
        import cv2
        self.algo = algo
        self.params = params
        self._cv2 = cv2
        if algo == "tvl1":
            if not hasattr(cv2, "optflow"):
                raise UserError("cv2.optflow is missing (TV-L1 needs opencv-contrib-python-"
                                "headless); run `datatools doctor` for the fix")
            self._tvl1 = cv2.optflow.DualTVL1OpticalFlow_create(**params.opencv_kwargs())

    def compute(self, prev: np.ndarray, nxt: np.ndarray) -> np.ndarray:
        if self.algo == "tvl1":
            return self._tvl1.calc(prev, nxt, None)
        return self._cv2.calcOpticalFlowFarneback(prev, nxt, None, **FARNEBACK)
