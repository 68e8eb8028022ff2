"""The `torch` flow backend: OpenCV's Dual TV-L1, batched, on CUDA (or the CPU without one).

The same model, parameters (extract/tvl1.py) and discretisation as OpenCV's
`DualTVL1OpticalFlow` (opencv_contrib optflow/src/tvl1flow.cpp; a median filter of the flow
before each outer iteration):
  - pyramid: bilinear resize by 0.8 with OpenCV's sizes (rounded) and sample positions;
    the flow goes up with a bilinear resize to the finer size, times 1/0.8;
  - per warp: I1 and its centred gradient warped with bicubic interpolation (a = -0.75,
    zero outside, as cv::remap INTER_CUBIC with its default border);
  - thresholding step, divergence of the duals (backward differences), primal update,
    forward differences, dual projection, with OpenCV's border rules;
  - stopping: each pair stops on its own when the squared update sum falls below
    epsilon^2 * area, so a pair's flow does not depend on the batch it is in.
Pairs of the same size are stacked into a batch (B, H, W): one kernel launch per step for
all of them, which is what keeps a GPU busy.
"""

from __future__ import annotations

import numpy as np

from ...errors import UserError
from ...schedule.resources import CPU_THREADS, EITHER
from ..tvl1 import TVL1, TVL1Params

FLT_EPSILON = float(np.finfo(np.float32).eps)  # OpenCV's guard before dividing by |grad I1|^2
CPU_BATCH = 32  # pairs computed together on the CPU
SYNC_EVERY = 5  # inner iterations between the host's looks at which pairs still iterate
MAX_BATCH = 256
# An estimate, never measured on a GPU (none has run this code yet): 48 float32 values alive
# per pixel of a pair, pyramid included. bench/torch_flow.py reports the real peak on CUDA.
BYTES_PER_PIXEL = 4 * 48


def _torch():
    try:
        import torch
    except ImportError:
        raise UserError("--backend torch needs PyTorch: pip install 'datatools[gpu]' "
                        "(or torch==2.13.0)") from None
    return torch


class TorchFlow:
    name = "torch"
    video_tool = False
    # GPU workers where the cluster has them, whatever the driver has (a login node without
    # CUDA drives GPU workers); on CPU workers without (slowly). Each worker picks its device.
    runs_on = EITHER

    def __init__(self, algo: str, device: str | None = None, params: TVL1Params = TVL1):
        if algo != "tvl1":
            raise UserError("--backend torch computes TV-L1 only (--algo tvl1)")
        torch = _torch()
        self.algo = algo
        self.params = params
        self.torch = torch
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if self.device.type == "cpu":
            torch.set_num_threads(CPU_THREADS)

    def batch_size(self, width: int, height: int) -> int:
        """Pairs per batch: on CUDA as many as half the free memory holds (up to 256)."""
        if self.device.type != "cuda":
            return CPU_BATCH
        free, _ = self.torch.cuda.mem_get_info(self.device)
        return int(max(1, min(MAX_BATCH, free // 2 // (width * height * BYTES_PER_PIXEL))))

    def compute(self, prev: np.ndarray, nxt: np.ndarray) -> np.ndarray:
        return self.compute_batch([(prev, nxt)])[0]

    def compute_batch(self, pairs: list[tuple[np.ndarray, np.ndarray]]) -> list[np.ndarray]:
        """Flow (H x W x 2, float32) of each (prev, next) gray uint8 pair; same-size pairs are
        computed together."""
        return self._run(pairs, lambda u1, u2: torch_stack(u1, u2))

    def compute_batch_quantized(self, pairs: list[tuple[np.ndarray, np.ndarray]],
                                bound: float) -> list[np.ndarray]:
        """The same flows quantized on the device (quantize.py's rule): only uint8 (H x W x 2)
        comes back to the host, a quarter of the float flow."""
        return self._run(pairs, lambda u1, u2: torch_stack(quantize(u1, bound), quantize(u2, bound)))

    def _run(self, pairs, finish) -> list[np.ndarray]:
        out: list[np.ndarray | None] = [None] * len(pairs)
        by_size: dict[tuple, list[int]] = {}
        for i, (a, _) in enumerate(pairs):
            by_size.setdefault(a.shape, []).append(i)
        torch = self.torch
        with torch.no_grad():
            for idx in by_size.values():
                i0 = torch.from_numpy(np.stack([pairs[i][0] for i in idx])).to(self.device, torch.float32)
                i1 = torch.from_numpy(np.stack([pairs[i][1] for i in idx])).to(self.device, torch.float32)
                u1, u2 = tvl1(i0, i1, self.params)
                flow = finish(u1, u2).cpu().numpy()
                for k, i in enumerate(idx):
                    out[i] = flow[k]
        return out


def torch_stack(a, b):
    import torch
    return torch.stack([a, b], dim=-1)


def quantize(v, bound: float):
    """quantize.quantize_flow on the device: clip to ±bound, 255·(v − L)/(H − L) in double,
    round half to even (torch.round), uint8."""
    import torch
    lo, hi = -float(bound), float(bound)
    clipped = v.double().clamp(lo, hi)
    return torch.round(255.0 * (clipped - lo) / (hi - lo)).to(torch.uint8)


# --- the algorithm on (B, H, W) float32 tensors ---------------------------------------------

def tvl1(i0, i1, p: TVL1Params = TVL1):
    """Dual TV-L1 flow from i0 to i1 (B, H, W, values 0..255); returns (u1, u2)."""
    import torch
    levels0, levels1 = [i0], [i1]
    for _ in range(1, p.scales):
        h, w = levels0[-1].shape[-2:]
        nh, nw = _cv_round(h * p.scale_step), _cv_round(w * p.scale_step)
        if nh < 16 or nw < 16:
            break
        levels0.append(_resize_by(levels0[-1], nh, nw, p.scale_step))
        levels1.append(_resize_by(levels1[-1], nh, nw, p.scale_step))
    u1 = torch.zeros_like(levels0[-1])
    u2 = torch.zeros_like(levels0[-1])
    for s in range(len(levels0) - 1, -1, -1):
        u1, u2 = _one_scale(levels0[s], levels1[s], u1, u2, p)
        if s == 0:
            break
        h, w = levels0[s - 1].shape[-2:]
        u1 = _resize_to(u1, h, w) * (1.0 / p.scale_step)
        u2 = _resize_to(u2, h, w) * (1.0 / p.scale_step)
    return u1, u2


def _cv_round(x: float) -> int:
    return int(np.rint(x))  # OpenCV's saturate_cast<int>: round half to even


def _sample(img, x, y, mode: str, padding: str):
    """img (B, H, W) sampled at pixel coordinates x, y (B, h, w) with grid_sample."""
    import torch
    h, w = img.shape[-2:]
    grid = torch.stack([(2 * x + 1) / w - 1, (2 * y + 1) / h - 1], dim=-1)
    return torch.nn.functional.grid_sample(img[:, None], grid, mode=mode, padding_mode=padding,
                                           align_corners=False)[:, 0]


def _resize_by(img, nh: int, nw: int, factor: float):
    """cv::resize(INTER_LINEAR) with fx = fy = factor: OpenCV maps with the factor itself
    (not the size ratio) and clamps at the borders."""
    import torch
    b = img.shape[0]
    ys = (torch.arange(nh, device=img.device, dtype=img.dtype) + 0.5) / factor - 0.5
    xs = (torch.arange(nw, device=img.device, dtype=img.dtype) + 0.5) / factor - 0.5
    y, x = torch.meshgrid(ys, xs, indexing="ij")
    return _sample(img, x.expand(b, nh, nw), y.expand(b, nh, nw), "bilinear", "border")


def _resize_to(img, nh: int, nw: int):
    """cv::resize(INTER_LINEAR) to a given size: the scale is the size ratio."""
    import torch
    return torch.nn.functional.interpolate(img[:, None], size=(nh, nw), mode="bilinear",
                                           align_corners=False)[:, 0]


def _centered_gradient(img):
    """OpenCV's centeredGradient: 0.5 * central differences, 0.5 * one-sided at the borders."""
    import torch
    dx = torch.empty_like(img)
    dy = torch.empty_like(img)
    dx[..., 1:-1] = 0.5 * (img[..., 2:] - img[..., :-2])
    dx[..., 0] = 0.5 * (img[..., 1] - img[..., 0])
    dx[..., -1] = 0.5 * (img[..., -1] - img[..., -2])
    dy[..., 1:-1, :] = 0.5 * (img[..., 2:, :] - img[..., :-2, :])
    dy[..., 0, :] = 0.5 * (img[..., 1, :] - img[..., 0, :])
    dy[..., -1, :] = 0.5 * (img[..., -1, :] - img[..., -2, :])
    return dx, dy


def _forward_gradient(u):
    import torch
    dx = torch.zeros_like(u)
    dy = torch.zeros_like(u)
    dx[..., :-1] = u[..., 1:] - u[..., :-1]
    dy[..., :-1, :] = u[..., 1:, :] - u[..., :-1, :]
    return dx, dy


def _divergence(v1, v2):
    """Backward differences; the first row and column see zero outside (OpenCV's rule)."""
    div = v1.clone()
    div[..., 1:] -= v1[..., :-1]
    div += v2
    div[..., 1:, :] -= v2[..., :-1, :]
    return div


def _median(u, k: int):
    """cv::medianBlur(u, k) on float: k x k median, replicated borders."""
    import torch
    r = k // 2
    padded = torch.nn.functional.pad(u[:, None], (r, r, r, r), mode="replicate")
    patches = padded.unfold(2, k, 1).unfold(3, k, 1)  # (B, 1, H, W, k, k)
    return patches.reshape(*patches.shape[:4], k * k).median(dim=-1).values[:, 0]


def _one_scale(i0, i1, u1, u2, p: TVL1Params):
    import torch
    b, h, w = i0.shape
    scaled_eps = p.epsilon * p.epsilon * h * w
    i1x, i1y = _centered_gradient(i1)
    p11 = torch.zeros_like(i0)
    p12 = torch.zeros_like(i0)
    p21 = torch.zeros_like(i0)
    p22 = torch.zeros_like(i0)
    ys, xs = torch.meshgrid(torch.arange(h, device=i0.device, dtype=i0.dtype),
                            torch.arange(w, device=i0.device, dtype=i0.dtype), indexing="ij")
    lt = p.lambda_ * p.theta
    taut = p.tau / p.theta
    for _ in range(p.warps):
        x, y = xs + u1, ys + u2
        i1w = _sample(i1, x, y, "bicubic", "zeros")
        i1wx = _sample(i1x, x, y, "bicubic", "zeros")
        i1wy = _sample(i1y, x, y, "bicubic", "zeros")
        grad = i1wx * i1wx + i1wy * i1wy
        rho_c = i1w - i1wx * u1 - i1wy * u2 - i0
        # Each pair runs its own loops: `active` marks the pairs still iterating.
        outer_active = torch.ones(b, dtype=torch.bool, device=i0.device)
        for _ in range(p.outer):
            if not bool(outer_active.any()):
                break
            if p.median > 1:
                m = outer_active[:, None, None]
                u1 = torch.where(m, _median(u1, p.median), u1)
                u2 = torch.where(m, _median(u2, p.median), u2)
            active = outer_active.clone()
            error = torch.full((b,), float("inf"), dtype=torch.float64, device=i0.device)
            for it in range(p.inner):
                # Asking whether any pair still iterates waits for the device: every 5th
                # iteration only. Finished pairs stay frozen (the masks below), so the extra
                # iterations change nothing but keep the device's queue full.
                if it % SYNC_EVERY == 0 and not bool(active.any()):
                    break
                m = active[:, None, None]
                rho = rho_c + i1wx * u1 + i1wy * u2
                thr = lt * grad
                fi = torch.where(grad > FLT_EPSILON, -rho / torch.where(grad > FLT_EPSILON, grad, 1.0), 0.0)
                d1 = torch.where(rho < -thr, lt * i1wx, torch.where(rho > thr, -lt * i1wx, fi * i1wx))
                d2 = torch.where(rho < -thr, lt * i1wy, torch.where(rho > thr, -lt * i1wy, fi * i1wy))
                v1, v2 = u1 + d1, u2 + d2
                new_u1 = v1 + p.theta * _divergence(p11, p12)
                new_u2 = v2 + p.theta * _divergence(p21, p22)
                step = ((new_u1 - u1) ** 2 + (new_u2 - u2) ** 2).double().sum(dim=(1, 2))
                error = torch.where(active, step, error)
                u1 = torch.where(m, new_u1, u1)
                u2 = torch.where(m, new_u2, u2)
                u1x, u1y = _forward_gradient(u1)
                u2x, u2y = _forward_gradient(u2)
                ng1 = 1.0 + taut * torch.sqrt(u1x * u1x + u1y * u1y)
                ng2 = 1.0 + taut * torch.sqrt(u2x * u2x + u2y * u2y)
                p11 = torch.where(m, (p11 + taut * u1x) / ng1, p11)
                p12 = torch.where(m, (p12 + taut * u1y) / ng1, p12)
                p21 = torch.where(m, (p21 + taut * u2x) / ng2, p21)
                p22 = torch.where(m, (p22 + taut * u2y) / ng2, p22)
                active = active & (error > scaled_eps)
            outer_active = outer_active & (error > scaled_eps)
    return u1, u2
