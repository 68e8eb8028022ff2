"""The `opencv` flow backend: OpenCV's DualTVL1 (contrib optflow) and Farneback, on the CPU."""

from __future__ import annotations

import numpy as np

from ...errors import UserError

# OpenCV's own DualTVL1 defaults, spelled out so that a change in OpenCV cannot move them.
TVL1 = dict(tau=0.25, lambda_=0.15, theta=0.3, nscales=5, warps=5, epsilon=0.01,
            innnerIterations=30, outerIterations=10, scaleStep=0.8, gamma=0.0,
            medianFiltering=5, useInitialFlow=False)
# Farneback as in OpenCV's samples and tutorials.
FARNEBACK = dict(pyr_scale=0.5, levels=3, winsize=15, iterations=3, poly_n=5, poly_sigma=1.2,
                 flags=0)


class OpenCVFlow:
    name = "opencv"
    gpu = False

    def __init__(self, algo: str):
        import cv2
        self.algo = algo
        self._cv2 = cv2
        if algo == "tvl1":
            if not hasattr(cv2, "optflow"):
                raise UserError("cv2.optflow is missing (TV-L1 needs opencv-contrib-python-"
                                "headless); run `datatools doctor` for the fix")
            self._tvl1 = cv2.optflow.DualTVL1OpticalFlow_create(**TVL1)

    def compute(self, prev: np.ndarray, nxt: np.ndarray) -> np.ndarray:
        if self.algo == "tvl1":
            return self._tvl1.calc(prev, nxt, None)
        return self._cv2.calcOpticalFlowFarneback(prev, nxt, None, **FARNEBACK)
