"""The per-pixel steps of the torch TV-L1 (tvl1_solver.py runs them), written so that
torch.compile fuses each into one kernel: one inner iteration, and the 5x5 median.

Each is a plain function of (B, H, W) float32 tensors, with nothing that depends on which
pairs share the batch: every pixel's arithmetic is the same whatever B is, and the stopping
sum is exact (integers), so a pair's flow is bitwise the same alone or in any batch.
`compiled()` hands out the fused versions (one compilation per process: the batch and image
sizes are dynamic, so neither a smaller batch after compaction nor another pyramid level
recompiles); `eager()` the same functions uncompiled.
"""

from __future__ import annotations

import functools
import os

import numpy as np

FLT_EPSILON = float(np.finfo(np.float32).eps)  # OpenCV's guard before dividing by |grad I1|^2
# The stopping sum in fixed point: each pixel's squared update (float32) times 2^24, rounded
# to the nearest integer (truncating would bias the sum low and stop pairs early), summed as
# int64. Integer addition has no order, so the sum is the same however the device splits the
# reduction (a float sum's value depends on the batch's shape on CUDA). 2^-24 px^2 per pixel
# is 1/1700 of epsilon^2; an update is under ~15 px (|d| <= lambda*theta*255 plus theta * 4),
# so a 4K frame's sum stays far inside int64.
FIXED_POINT = float(2 ** 24)
COMPILE_ENV = "DATATOOLS_TORCH_COMPILE"  # 0: run the steps uncompiled (debugging, or no C compiler)


def inner_step(u1, u2, p11, p12, p21, p22, i1wx, i1wy, grad, rho_c, active, count, threshold,
               lt: float, theta: float, taut: float):
    """One inner iteration of OpenCV's DualTVL1 for every pair whose `active` is set (the
    others keep their values): thresholding step, divergence of the duals, primal update,
    forward gradients, dual projection. Returns the new state, each pair's `active` after
    this iteration (its fixed-point squared update still above `threshold`) and `count`
    (iterations each pair computed) advanced."""
    import torch
    m = active[:, None, None]
    rho = rho_c + i1wx * u1 + i1wy * u2
    thr = lt * grad
    safe = grad > FLT_EPSILON
    fi = torch.where(safe, -rho / torch.where(safe, grad, 1.0), 0.0)
    d1 = torch.where(rho < -thr, lt * i1wx, torch.where(rho > thr, -lt * i1wx, fi * i1wx))
    d2 = torch.where(rho < -thr, lt * i1wy, torch.where(rho > thr, -lt * i1wy, fi * i1wy))
    new_u1 = (u1 + d1) + theta * divergence(p11, p12)
    new_u2 = (u2 + d2) + theta * divergence(p21, p22)
    change = (new_u1 - u1) ** 2 + (new_u2 - u2) ** 2
    error = torch.round(change * FIXED_POINT).to(torch.int64).sum(dim=(1, 2))
    u1 = torch.where(m, new_u1, u1)
    u2 = torch.where(m, new_u2, u2)
    u1x, u1y = forward_gradient(u1)
    u2x, u2y = forward_gradient(u2)
    ng1 = 1.0 + taut * torch.sqrt(u1x * u1x + u1y * u1y)
    ng2 = 1.0 + taut * torch.sqrt(u2x * u2x + u2y * u2y)
    p11 = torch.where(m, (p11 + taut * u1x) / ng1, p11)
    p12 = torch.where(m, (p12 + taut * u1y) / ng1, p12)
    p21 = torch.where(m, (p21 + taut * u2x) / ng2, p21)
    p22 = torch.where(m, (p22 + taut * u2y) / ng2, p22)
    return u1, u2, p11, p12, p21, p22, active & (error > threshold), count + active.to(count.dtype)


def forward_gradient(u):
    """Forward differences, zero in the last column/row (OpenCV's forwardGradient)."""
    import torch.nn.functional as F
    dx = F.pad(u[..., 1:] - u[..., :-1], (0, 1))
    dy = F.pad(u[..., 1:, :] - u[..., :-1, :], (0, 0, 0, 1))
    return dx, dy


def divergence(v1, v2):
    """Backward differences; the first row and column see zero outside (OpenCV's rule)."""
    import torch.nn.functional as F
    return ((v1 - F.pad(v1[..., :-1], (1, 0))) + v2) - F.pad(v2[..., :-1, :], (0, 0, 1, 0))


def median(u, k: int):
    """cv::medianBlur(u, k) on float: the k x k median with replicated borders, as a pruned
    sorting network of min/max over the k*k shifted images (exact: min and max do not round),
    which fuses into one kernel instead of copying k*k values per pixel."""
    import torch
    import torch.nn.functional as F
    r = k // 2
    h, w = u.shape[-2:]
    padded = F.pad(u[:, None], (r, r, r, r), mode="replicate")[:, 0]
    values = [padded[:, dy:dy + h, dx:dx + w] for dy in range(k) for dx in range(k)]
    for a, b, keep_min, keep_max in median_network(k * k):
        lo, hi = torch.minimum(values[a], values[b]), torch.maximum(values[a], values[b])
        if keep_min:
            values[a] = lo
        if keep_max:
            values[b] = hi
    return values[(k * k) // 2]


def median_network(n: int) -> tuple[tuple[int, int, bool, bool], ...]:
    """The comparators of Batcher's odd-even merge sort on n values that the middle output
    depends on: (a, b, keep_min, keep_max), a receiving the smaller value, b the larger;
    a comparator whose min (or max) output nothing later reads skips computing it."""
    pairs = []
    p = 1
    while p < n:
        k = p
        while k >= 1:
            for j in range(k % p, n - k, 2 * k):
                for i in range(min(k, n - j - k)):
                    if (i + j) // (2 * p) == (i + j + k) // (2 * p):
                        pairs.append((i + j, i + j + k))
            k //= 2
        p *= 2
    needed = {n // 2}
    kept = []
    for a, b in reversed(pairs):
        keep_min, keep_max = a in needed, b in needed
        if keep_min or keep_max:
            kept.append((a, b, keep_min, keep_max))
            needed |= {a, b}
    return tuple(reversed(kept))


@functools.cache
def compiled():
    """(inner_step, median) fused by torch.compile, or uncompiled where DATATOOLS_TORCH_COMPILE=0."""
    if os.environ.get(COMPILE_ENV, "1") == "0":
        return eager()
    import torch
    # Batch and image sizes vary (compaction, pyramid levels): dynamic shapes, so one graph
    # serves them all (plus one for a batch of one pair: dynamo specialises a size of 1;
    # marking the batch dimension unbacked avoids that but ran 1.7x slower on the CPU).
    return (torch.compile(inner_step, dynamic=True, fullgraph=True),
            torch.compile(median, dynamic=True, fullgraph=True))


def eager():
    return inner_step, median
