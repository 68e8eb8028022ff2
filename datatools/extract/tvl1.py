"""The TV-L1 parameters, the one source for every backend: `opencv` hands them to OpenCV's
DualTVL1, `torch` computes with them, `native` receives them on its command line (--tvl1).

The values are OpenCV's DualTVL1 defaults, spelled out so that a change in OpenCV cannot move
them: tau 0.25, lambda 0.15, theta 0.3, 5 scales with step 0.8, 5 warps, epsilon 0.01, 30 inner
and 10 outer iterations, a 5x5 median of the flow before each outer iteration. OpenCV's gamma
(an illumination term) is 0 and no backend of ours implements another value. A CUDA build of
the native extractor hands them to OpenCV's CUDA DualTVL1, which has no median setting and
counts inner times outer iterations as one number.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class TVL1Params:
    tau: float = 0.25
    lambda_: float = 0.15
    theta: float = 0.3
    epsilon: float = 0.01
    scale_step: float = 0.8
    scales: int = 5
    warps: int = 5
    inner: int = 30
    outer: int = 10
    median: int = 5

    def opencv_kwargs(self) -> dict:
        """The keywords of cv2.optflow.DualTVL1OpticalFlow_create."""
        return dict(tau=self.tau, lambda_=self.lambda_, theta=self.theta, nscales=self.scales,
                    warps=self.warps, epsilon=self.epsilon, innnerIterations=self.inner,
                    outerIterations=self.outer, scaleStep=self.scale_step, gamma=0.0,
                    medianFiltering=self.median, useInitialFlow=False)

    def as_dict(self) -> dict:
        """By the names the native extractor uses (`lambda`, not `lambda_`)."""
        return {("lambda" if k == "lambda_" else k): v for k, v in asdict(self).items()}

    def native_arg(self) -> str:
        """The value of the native extractor's --tvl1 option."""
        return ",".join(f"{k}={v!r}" for k, v in self.as_dict().items())


TVL1 = TVL1Params()
