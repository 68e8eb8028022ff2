"""OpenCV's Dual TV-L1 on a batch of same-sized pairs (B, H, W), with compaction: a pair
that has stopped leaves the batch, so a batch costs the sum of its pairs' iterations rather
than its slowest pair's count times its size.

The model, parameters (extract/tvl1.py) and discretisation are OpenCV's `DualTVL1OpticalFlow`
(opencv_contrib optflow/src/tvl1flow.cpp):
  - pyramid: bilinear resize by 0.8 with OpenCV's sizes (rounded) and sample positions;
    the flow goes up with a bilinear resize to the finer size, times 1/0.8;
  - per warp: I1 and its centred gradient warped with bicubic interpolation (a = -0.75,
    zero outside, as cv::remap INTER_CUBIC with its default border);
  - per outer iteration a 5x5 median of the flow, then up to 30 inner iterations
    (tvl1_kernels.inner_step); a pair stops when its squared update sum falls below
    epsilon^2 * area, and its outer loop goes on only while it has not.

How the batch shrinks. Within a warp every pair starts together. After each inner iteration
the host looks at which pairs still iterate; once at least 1/8 of the working set has stopped
(or all of it), the stopped pairs' state is written back to the full batch and the rest are
gathered into a smaller working set. Stopped pairs that wait for that are frozen by the step's
mask, so they change nothing: a pair's result is bitwise what it computes alone. On CUDA the
host reads that mask `MASK_LAG` iterations late (copied asynchronously), so it never waits
for the device inside the loop; it waits once per outer iteration, where it must know which
pairs go on, and at each compaction. On the CPU there is nothing to wait for (lag 0).
"""

from __future__ import annotations

from collections import Counter, deque

import numpy as np

from ..tvl1 import TVL1, TVL1Params
from . import tvl1_kernels

COMPACT_FRACTION = 8  # compact once 1/8 of the working set has stopped
MASK_LAG = {"cuda": 2, "cpu": 0}  # iterations the host's view of the mask is behind


def tvl1(i0, i1, p: TVL1Params = TVL1, *, steps=None, lag: int | None = None,
         stats: Counter | None = None):
    """Dual TV-L1 flow from i0 to i1 (B, H, W float32, values 0..255); returns (u1, u2).
    `steps`: (inner_step, median), fused by default; `lag`: the host's mask lag (the device's
    default); `stats` gains the iteration counts (see Work)."""
    import torch
    steps = steps or tvl1_kernels.compiled()
    lag = MASK_LAG.get(i0.device.type, 0) if lag is None else lag
    levels0, levels1 = [i0], [i1]
    for _ in range(1, p.scales):
        h, w = levels0[-1].shape[-2:]
        nh, nw = _cv_round(h * p.scale_step), _cv_round(w * p.scale_step)
        if nh < 16 or nw < 16:
            break
        levels0.append(_resize_by(levels0[-1], nh, nw, p.scale_step))
        levels1.append(_resize_by(levels1[-1], nh, nw, p.scale_step))
    full_area = i0.shape[-1] * i0.shape[-2]
    work = Work(stats if stats is not None else Counter())
    u1 = torch.zeros_like(levels0[-1])
    u2 = torch.zeros_like(levels0[-1])
    for s in range(len(levels0) - 1, -1, -1):
        h, w = levels0[s].shape[-2:]
        work.weight = h * w / full_area
        u1, u2 = _one_scale(levels0[s], levels1[s], u1, u2, p, steps, lag, work)
        if s == 0:
            break
        h, w = levels0[s - 1].shape[-2:]
        u1 = _resize_to(u1, h, w) * (1.0 / p.scale_step)
        u2 = _resize_to(u2, h, w) * (1.0 / p.scale_step)
    return u1, u2


class Work:
    """Inner iterations, in full-resolution equivalents (an iteration at a pyramid level
    weighs its area over the full area): `computed` (pair-iterations the steps ran, frozen
    pairs included), `own` (the sum of the pairs' own counts: what each computes alone) and
    `lockstep` (what the batch would run if every pair iterated until its slowest stopped)."""

    def __init__(self, stats: Counter):
        self.stats = stats
        self.weight = 1.0

    def ran(self, pairs: int) -> None:
        self.stats["computed"] += pairs * self.weight

    def warp_done(self, counts) -> None:
        counts = counts.tolist()
        self.stats["own"] += sum(counts) * self.weight
        self.stats["lockstep"] += len(counts) * max(counts) * self.weight


def _one_scale(i0, i1, u1, u2, p: TVL1Params, steps, lag: int, work: Work):
    import torch
    inner_step, median = steps
    b, h, w = i0.shape
    threshold = torch.tensor(int(p.epsilon * p.epsilon * h * w * tvl1_kernels.FIXED_POINT),
                             dtype=torch.int64, device=i0.device)
    i1x, i1y = _centered_gradient(i1)
    # u1, u2, p11, p12, p21, p22 (distinct tensors: the compiled step is traced for unaliased inputs)
    state = [u1, u2] + [torch.zeros_like(i0) for _ in range(4)]
    ys, xs = torch.meshgrid(torch.arange(h, device=i0.device, dtype=i0.dtype),
                            torch.arange(w, device=i0.device, dtype=i0.dtype), indexing="ij")
    lt = p.lambda_ * p.theta
    taut = p.tau / p.theta
    for _ in range(p.warps):
        u1, u2 = state[0], state[1]
        x, y = xs + u1, ys + u2
        i1w = _sample(i1, x, y, "bicubic", "zeros")
        i1wx = _sample(i1x, x, y, "bicubic", "zeros")
        i1wy = _sample(i1y, x, y, "bicubic", "zeros")
        grad = i1wx * i1wx + i1wy * i1wy
        rho_c = i1w - i1wx * u1 - i1wy * u2 - i0
        batch = _Batch(state, [i1wx, i1wy, grad, rho_c])
        for _ in range(p.outer):
            if p.median > 1:
                batch.state[0] = median(batch.state[0], p.median)
                batch.state[1] = median(batch.state[1], p.median)
            active = torch.ones(batch.size, dtype=torch.bool, device=i0.device)
            seen: deque = deque()  # the host's copies of `active`, oldest first
            for _ in range(p.inner):
                out = inner_step(*batch.state, *batch.invariants, active, batch.count,
                                 threshold, lt, p.theta, taut)
                batch.state, active, batch.count = list(out[:6]), out[6], out[7]
                work.ran(batch.size)
                seen.append(_to_host(active))
                if len(seen) <= lag:
                    continue
                view = _read(seen.popleft())
                stopped = int(batch.size - view.sum())
                if stopped == batch.size:
                    break
                if stopped and stopped * COMPACT_FRACTION >= batch.size:
                    active = active[batch.keep(np.flatnonzero(view))]
                    seen.clear()  # those copies index the batch before compaction
            # Which pairs go on to the next outer iteration: the host must know, so it waits.
            going_on = np.flatnonzero(active.cpu().numpy())
            batch.keep(going_on)
            if not len(going_on):
                break
        state = batch.finish(work)
    return state[0], state[1]


class _Batch:
    """The working set of one warp: the state and invariants of the pairs still iterating
    (gathered), their positions in the full batch, and the full batch's state, where a pair's
    values are written back when it leaves."""

    def __init__(self, state, invariants):
        import torch
        self.full = [t.clone() for t in state]
        self.state = list(state)
        self.invariants = invariants
        device = state[0].device
        self.ids = torch.arange(state[0].shape[0], device=device)
        self.count = torch.zeros(state[0].shape[0], dtype=torch.int32, device=device)
        self.full_count = self.count.clone()

    @property
    def size(self) -> int:
        return int(self.ids.shape[0])

    def keep(self, keep: np.ndarray):
        """Keep the working pairs at these positions and write the others back; returns the
        positions kept, on the device."""
        leave = np.setdiff1d(np.arange(self.size), keep)
        # One copy to the device for both index lists, from pinned memory without waiting
        # for the device (a copy from pageable memory would wait for all queued work).
        both = _to_device(np.concatenate([keep, leave]), self.ids.device)
        keep_t, leave_t = both[:len(keep)], both[len(keep):]
        if not len(leave):
            return keep_t
        self._write_back(leave_t)
        self.ids = self.ids[keep_t]
        self.state = [t[keep_t] for t in self.state]
        self.invariants = [t[keep_t] for t in self.invariants]
        self.count = self.count[keep_t]
        return keep_t

    def finish(self, work: Work) -> list:
        import torch
        self._write_back(torch.arange(self.size, device=self.ids.device))
        work.warp_done(self.full_count)
        return self.full

    def _write_back(self, rows) -> None:
        ids = self.ids[rows]
        for full, t in zip(self.full, self.state):
            full.index_copy_(0, ids, t[rows])
        self.full_count.index_copy_(0, ids, self.count[rows])


def _to_device(index: np.ndarray, device):
    import torch
    index = torch.from_numpy(index.astype(np.int64))
    if device.type != "cuda":
        return index
    return index.pin_memory().to(device, non_blocking=True)


def _to_host(active):
    """An asynchronous copy of the mask (CUDA: into pinned memory, with an event to wait on)."""
    import torch
    if active.device.type != "cuda":
        return active.clone(), None
    host = active.to("cpu", non_blocking=True)
    event = torch.cuda.Event()
    event.record(torch.cuda.current_stream(active.device))
    return host, event


def _read(copy) -> np.ndarray:
    host, event = copy
    if event is not None:
        event.synchronize()
    return host.numpy()


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
