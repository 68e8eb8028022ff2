"""Frame pairs of several videos in one batch, for a batch backend (`torch`).

A GPU worker runs several videos at once, one per task thread (schedule.resources.VIDEOS_PER_GPU).
Each video thread hands its pairs to the process's one `PairBatcher` and goes on decoding.
The batcher runs the backend's three stages (torch_flow.py) on three threads, so that the
device never waits for the host:
  stage    stacks waiting pairs of one size, from whichever videos they come, and uploads
           them (on CUDA from pinned memory on a side stream), one batch ahead of the device;
  compute  computes each staged batch and starts copying its uint8 flows back;
  finish   waits for those copies and resolves each pair's future.
Meanwhile the video threads decode the next frames and encode and write finished flows
(PyAV, OpenCV and file writes release the GIL), and short videos still fill a batch.

A pair's flow does not depend on its batch (torch_flow.py stops each pair on its own), so a
video's output is the same whichever videos it shared batches with.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import Counter
from concurrent.futures import Future

import numpy as np

from .backends import create

# How long the batcher waits for more pairs when fewer than a batch are waiting. Video threads
# submit far faster than the device computes, so this only matters when the work runs out.
FILL_WAIT_S = 0.005


class PairBatcher:
    def __init__(self, backend, bound: float):
        self.backend = backend
        self.bound = bound
        self.stats: Counter = Counter()  # batches, pairs, mixed_batches (pairs of 2+ videos), splits
        self._waiting: list[tuple[np.ndarray, np.ndarray, object, Future]] = []
        self._cv = threading.Condition()
        self._staged: queue.Queue = queue.Queue(maxsize=1)  # uploaded, waiting for the device
        self._pending: queue.Queue = queue.Queue(maxsize=2)  # computed, on their way back
        for loop in (self._stage_loop, self._compute_loop, self._finish_loop):
            threading.Thread(target=loop, name=f"pair-batcher-{loop.__name__[1:-5]}",
                             daemon=True).start()

    def submit(self, prev: np.ndarray, nxt: np.ndarray, video: object) -> Future:
        """The future uint8 flow (H x W x 2) of one pair; `video` says whose it is."""
        fut: Future = Future()
        with self._cv:
            self._waiting.append((prev, nxt, video, fut))
            self._cv.notify()
        return fut

    def _take(self) -> list[tuple[np.ndarray, np.ndarray, object, Future]]:
        """Up to one batch of waiting pairs, all of the oldest waiting pair's size."""
        with self._cv:
            while not self._waiting:
                self._cv.wait()
            shape = self._waiting[0][0].shape
            limit = self.backend.batch_size(shape[1], shape[0])
            deadline = time.monotonic() + FILL_WAIT_S
            while len(self._waiting) < limit and (left := deadline - time.monotonic()) > 0:
                self._cv.wait(left)
            batch, rest = [], []
            for item in self._waiting:
                if item[0].shape != shape or len(batch) >= limit:
                    rest.append(item)
                elif item[3].set_running_or_notify_cancel():  # False: its video has failed
                    batch.append(item)
            self._waiting = rest
            return batch

    def _stage_loop(self) -> None:
        while True:
            try:
                batch = self._take()
            except Exception as exc:  # noqa: BLE001 - e.g. the device gone while sizing a batch
                self._fail_waiting(exc)  # the videos fail with the reason; none waits forever
                continue
            if not batch:
                continue
            try:
                staged = self.backend.upload([(a, b) for a, b, _, _ in batch])
            except Exception as exc:  # noqa: BLE001 - handed to the videos waiting on the pairs
                self._pending.put((batch, exc))
                continue
            self._staged.put((batch, staged))

    def _compute_loop(self) -> None:
        while True:
            batch, staged = self._staged.get()
            for part in self._start(batch, staged):
                self._pending.put(part)

    def _start(self, batch, staged) -> list[tuple[list, object]]:
        """(pairs, pending flows or the exception) for a staged batch; a batch the device
        cannot hold is halved until it fits (free memory changed since batch_size())."""
        try:
            return [(batch, self.backend.start(staged, self.bound))]
        except Exception as exc:  # noqa: BLE001 - handed to the videos waiting on the pairs
            if not (_out_of_memory(exc) and len(batch) > 1):
                return [(batch, exc)]
        self.stats["splits"] += 1
        half = len(batch) // 2
        return (self._start(batch[:half], staged.part(slice(0, half)))
                + self._start(batch[half:], staged.part(slice(half, None))))

    def _finish_loop(self) -> None:
        while True:
            batch, pending = self._pending.get()
            try:
                if isinstance(pending, Exception):
                    raise pending
                flows = pending.result()
            except Exception as exc:  # noqa: BLE001 - handed to the videos waiting on the pairs
                for *_, fut in batch:
                    fut.set_exception(exc)
                continue
            self.stats["batches"] += 1
            self.stats["pairs"] += len(batch)
            if len({id(video) for _, _, video, _ in batch}) > 1:
                self.stats["mixed_batches"] += 1
            for (*_, fut), flow in zip(batch, flows):
                fut.set_result(flow)

    def _fail_waiting(self, exc: Exception) -> None:
        with self._cv:
            waiting, self._waiting = self._waiting, []
        for *_, fut in waiting:
            if fut.set_running_or_notify_cancel():
                fut.set_exception(exc)


def _out_of_memory(exc: Exception) -> bool:
    return type(exc).__name__ == "OutOfMemoryError" or "out of memory" in str(exc).lower()


_batchers: dict[tuple, PairBatcher] = {}
_lock = threading.Lock()


def batcher_for(backend_name: str, algo: str, bound: float) -> PairBatcher:
    """This process's batcher for a backend and bound (one device per worker process)."""
    key = (backend_name, algo, bound)
    with _lock:
        if key not in _batchers:
            _batchers[key] = PairBatcher(create(backend_name, algo), bound)
        return _batchers[key]


def batch_stats() -> dict:
    """What this process's batchers did (tests and benchmarks ask workers for it)."""
    total: Counter = Counter()
    for b in _batchers.values():
        total.update(b.stats)
        # inner iterations (tvl1_solver.Work); dict.copy, not iteration: the compute thread adds keys
        total.update(dict.copy(getattr(b.backend, "stats", {})))
    return dict(total)
