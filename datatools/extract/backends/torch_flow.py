"""The `torch` flow backend: OpenCV's Dual TV-L1, batched, on CUDA (or the CPU without one).

tvl1_solver.py holds the algorithm (compaction: stopped pairs leave the batch) and
tvl1_kernels.py its fused steps. This module moves pairs to the device and flows back, in
three stages that batcher.py runs on three threads so they overlap:
  upload   uint8 frames stacked into pinned memory, copied on a side stream (the conversion
           to float happens on the device: a quarter of the bytes cross the bus);
  start    the flows computed and quantized on the device, the uint8 result copied back
           asynchronously into pinned memory;
  result   wait for that copy, split it into one (H, W, 2) array per pair.
On the CPU the same stages run with nothing to overlap.
"""

from __future__ import annotations

from collections import Counter
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np

from ...core.errors import UserError
from ...schedule.resources import CPU_THREADS, EITHER
from ..tvl1 import TVL1, TVL1Params

CPU_BATCH = 32  # pairs computed together on the CPU
MAX_BATCH = 256
MEMORY_SHARE = 0.5  # of the memory free to PyTorch that one batch may plan to use
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

    def __init__(self, algo: str, device: str | None = None, params: TVL1Params = TVL1,
                 steps=None):
        if algo != "tvl1":
            raise UserError("--backend torch computes TV-L1 only (--algo tvl1)")
        torch = _torch()
        self.algo = algo
        self.params = params
        self.torch = torch
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.steps = steps  # (inner_step, median); None: the fused ones
        # Inner iterations: computed, own, lockstep (tvl1_solver.Work).
        self.stats: Counter = Counter()
        self._side = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None
        if self.device.type == "cpu":
            torch.set_num_threads(CPU_THREADS)

    def batch_size(self, width: int, height: int) -> int:
        """Pairs per batch: on CUDA as many as MEMORY_SHARE of the memory free to PyTorch
        holds (the device's free memory plus what PyTorch's cache holds unused), up to 256."""
        if self.device.type != "cuda":
            return CPU_BATCH
        cuda = self.torch.cuda
        free, _ = cuda.mem_get_info(self.device)
        free += cuda.memory_reserved(self.device) - cuda.memory_allocated(self.device)
        per_pair = width * height * BYTES_PER_PIXEL
        return int(max(1, min(MAX_BATCH, free * MEMORY_SHARE // per_pair)))

    def compute(self, prev: np.ndarray, nxt: np.ndarray) -> np.ndarray:
        return self.compute_batch([(prev, nxt)])[0]

    def compute_batch(self, pairs: list[tuple[np.ndarray, np.ndarray]]) -> list[np.ndarray]:
        """Flow (H x W x 2, float32) of each (prev, next) gray uint8 pair."""
        return self._each_size(pairs, None)

    def compute_batch_quantized(self, pairs: list[tuple[np.ndarray, np.ndarray]],
                                bound: float) -> list[np.ndarray]:
        """The same flows quantized on the device (quantize.py's rule): only uint8 (H x W x 2)
        comes back to the host, a quarter of the float flow."""
        return self._each_size(pairs, bound)

    def _each_size(self, pairs, bound) -> list[np.ndarray]:
        out: list = [None] * len(pairs)
        by_size: dict[tuple, list[int]] = {}
        for i, (a, _) in enumerate(pairs):
            by_size.setdefault(a.shape, []).append(i)
        for idx in by_size.values():
            flows = self.start(self.upload([pairs[i] for i in idx]), bound).result()
            for i, flow in zip(idx, flows):
                out[i] = flow
        return out

    def upload(self, pairs: list[tuple[np.ndarray, np.ndarray]]) -> Staged:
        """Same-size pairs stacked as uint8 (2, B, H, W) and copied to the device; on CUDA
        from pinned memory on the side stream, so it overlaps the batch being computed."""
        torch = self.torch
        frames = torch.from_numpy(np.stack([np.stack(p) for p in pairs], axis=1))
        if self._side is None:
            return Staged(frames.to(self.device), None)
        frames = frames.pin_memory()
        with torch.cuda.device(self.device), torch.cuda.stream(self._side):
            on_device = frames.to(self.device, non_blocking=True)
            ready = torch.cuda.Event()
            ready.record(self._side)
        return Staged(on_device, ready, keep=frames)

    def start(self, staged: Staged, bound: float | None) -> Pending:
        """Compute a staged batch (quantized to uint8 when `bound` is given, float flow when
        not); on CUDA returns before the device has finished."""
        from .tvl1_solver import tvl1
        torch = self.torch
        on_cuda = self.device.type == "cuda"
        with torch.no_grad(), torch.cuda.device(self.device) if on_cuda else nullcontext():
            if staged.ready is not None:
                stream = torch.cuda.current_stream(self.device)
                stream.wait_event(staged.ready)
                staged.frames.record_stream(stream)  # its memory is this stream's to free
            i0 = staged.frames[0].to(torch.float32)
            i1 = staged.frames[1].to(torch.float32)
            u1, u2 = tvl1(i0, i1, self.params, steps=self.steps, stats=self.stats)
            if bound is not None:
                u1, u2 = quantize(u1, bound), quantize(u2, bound)
            flow = torch.stack([u1, u2], dim=-1)
            if not on_cuda:
                return Pending(flow, None)
            host = flow.to("cpu", non_blocking=True)  # pinned: the copy is asynchronous
            done = torch.cuda.Event(blocking=True)  # the finish thread sleeps, not spins, on it
            done.record()
            return Pending(host, done)


@dataclass
class Staged:
    """A batch's frames on the device (uint8, (2, B, H, W)) and the event of their copy."""
    frames: object
    ready: object
    keep: object = None  # the pinned source (PyTorch's pinned allocator also holds it until copied)

    def __len__(self) -> int:
        return int(self.frames.shape[1])

    def part(self, rows: slice) -> Staged:
        return Staged(self.frames[:, rows], self.ready, self.keep)


@dataclass
class Pending:
    """A batch's flows on their way to the host."""
    host: object
    done: object

    def result(self) -> list[np.ndarray]:
        if self.done is not None:
            self.done.synchronize()
        return list(self.host.numpy())


def quantize(v, bound: float):
    """quantize.quantize_flow on the device: clip to ±bound, 255·(v − L)/(H − L) in double,
    round half to even (torch.round), uint8."""
    import torch
    lo, hi = -float(bound), float(bound)
    clipped = v.double().clamp(lo, hi)
    return torch.round(255.0 * (clipped - lo) / (hi - lo)).to(torch.uint8)
