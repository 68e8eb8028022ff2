"""Running a function over many items on a Dask cluster: `map_tasks`.

Three rules make it scale from two local workers to hundreds of SLURM workers that join late:

- The window follows the cluster. The tasks in flight are kept at QUEUED_PER_SLOT per slot
  of the workers connected now (task threads, or units of the GPU resource for GPU work),
  re-read at most every REFRESH_SECONDS, also while nothing finishes: workers that join (a
  SLURM job starting, dask-jobqueue adapting) get work at once, workers that retire stop
  counting. Before any worker has joined, FLOOR tasks wait in the scheduler.
- Cheap items go in chunks (`chunked=True`): one task runs several items, as many as make it
  last about `slots / MAX_TASKS_PER_SECOND` seconds (at least CHUNK_SECONDS) at the time per
  item measured so far, so the scheduler handles a bounded number of tasks per second however
  many items and workers there are.
- A worker that dies costs only the item it was running. A chunk whose worker died is split:
  its items run again one per task. A single item is submitted `retries` more times, to
  whichever worker takes it, and after that reported as a `WorkerCrash` (the local cluster's
  scheduler gives up on a task at its first worker death, client.WORKER_CONFIG).
"""

from __future__ import annotations

import queue
import time
import traceback
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from distributed import Client, KilledWorker

from ..core.errors import UserError
from .resources import GPU, gpu_units

QUEUED_PER_SLOT = 2  # one task running and one ready behind it, so no slot idles between tasks
FLOOR = 4  # tasks submitted while no worker (or no GPU worker, for GPU work) is connected
REFRESH_SECONDS = 1.0  # how often the driver asks the scheduler which workers there are
MAX_TASKS_PER_SECOND = 200  # chunked work: what the scheduler is asked to handle at most
CHUNK_SECONDS = 0.5  # chunked work: the least a task should last
MAX_CHUNK = 2048  # items per task at most (a chunk's results travel back in one message)


@dataclass
class WorkerCrash:
    """A task whose worker process died twice while running it."""

    reason: str


@dataclass
class TaskError:
    """A task that raised: the exception's type and message, the exception itself (as the
    worker raised it, errno included) and its traceback."""

    reason: str
    exc: BaseException | None = None
    traceback: str = ""

    @classmethod
    def of(cls, exc: BaseException, tb) -> TaskError:
        return cls(f"{type(exc).__name__}: {exc}", exc,
                   "".join(traceback.format_exception(type(exc), exc, tb)))


class Capacity:
    """The slots of the workers connected now: task threads, or GPU units for GPU work."""

    def __init__(self, client: Client, gpu: bool):
        self.client, self.gpu = client, gpu
        self._slots, self._read_at = 0, float("-inf")

    @property
    def slots(self) -> int:
        if time.monotonic() - self._read_at >= REFRESH_SECONDS:
            workers = self.client.scheduler_info(n_workers=-1).get("workers", {}).values()
            if self.gpu:
                self._slots = int(sum(map(gpu_units, workers)))
            else:
                self._slots = sum(int(w.get("nthreads", 1)) for w in workers)
            self._read_at = time.monotonic()
        return self._slots

    @property
    def window(self) -> int:
        return max(FLOOR, QUEUED_PER_SLOT * self.slots)


class ChunkSizer:
    """Items per task for cheap work, from the running mean of the measured time per item."""

    def __init__(self):
        self.items, self.seconds = 0, 0.0

    def observe(self, items: int, seconds: float) -> None:
        self.items += items
        self.seconds += seconds

    def size(self, slots: int) -> int:
        if not self.items:
            return 1  # nothing measured yet: the first tasks measure
        per_item = max(self.seconds / self.items, 1e-6)
        target = max(CHUNK_SECONDS, slots / MAX_TASKS_PER_SECOND)
        return max(1, min(MAX_CHUNK, round(target / per_item)))


def run_chunk(fn: Callable, items: list) -> tuple[list, float]:
    """Worker side: fn(item) for each item, an exception kept as that item's result (a
    TaskError: the rest of the chunk goes on); with the seconds it took (the driver sizes
    later chunks from it)."""
    start = time.perf_counter()
    out = []
    for item in items:
        try:
            out.append(fn(item))
        except Exception as exc:
            out.append(TaskError.of(exc, exc.__traceback__))
    return out, time.perf_counter() - start


def map_tasks(client: Client, fn: Callable, items: Iterable, *, retries: int = 1,
              gpu: bool = False, chunked: bool = False) -> Iterator[tuple[Any, Any]]:
    """Run `fn(item)` for every item on the cluster; yield (item, result) as they finish.

    A failed item yields a `TaskError`; one whose worker died `retries + 1` times a
    `WorkerCrash`. `gpu=True` runs tasks only on workers declaring the GPU resource, one unit
    per task. `chunked=True` groups cheap items (see the module's docstring). No items: no
    task, and `client` may be None (client.cluster_for).
    """
    items = list(items)
    resources = {GPU: 1} if gpu else None
    capacity, sizer = Capacity(client, gpu), ChunkSizer()
    run = uuid.uuid4().hex[:8]
    name = getattr(fn, "__name__", None) or getattr(getattr(fn, "func", None), "__name__", "task")
    fresh = deque(range(len(items)))  # item indices never submitted
    again: deque[int] = deque()  # items of a split chunk, or retried: one per task, first
    attempts: dict[int, int] = {}  # worker deaths so far, per item run alone
    in_flight: dict[str, tuple[list[int], Any]] = {}  # key -> (item indices, future)
    finished: queue.SimpleQueue = queue.SimpleQueue()
    serial = 0

    def submit(indices: list[int]) -> None:
        nonlocal serial
        serial += 1
        key = f"{name}-{run}-{serial}"
        fut = client.submit(run_chunk, fn, [items[i] for i in indices], key=key, pure=False,
                            resources=resources)
        in_flight[key] = (indices, fut)
        fut.add_done_callback(finished.put)

    def top_up() -> None:
        window = capacity.window
        while (again or fresh) and len(in_flight) < window:
            if again:
                submit([again.popleft()])
                continue
            n = sizer.size(capacity.slots) if chunked else 1
            submit([fresh.popleft() for _ in range(min(n, len(fresh)))])

    try:
        while fresh or again or in_flight:
            top_up()
            try:
                fut = finished.get(timeout=REFRESH_SECONDS)
            except queue.Empty:
                continue  # nothing finished: look again at which workers there are
            indices, _ = in_flight.pop(fut.key)
            if fut.status == "finished":
                results, seconds = fut.result()
                fut.release()
                sizer.observe(len(indices), seconds)
                for index, res in zip(indices, results):
                    yield items[index], res
                continue
            if fut.status == "cancelled":  # not by this loop: the scheduler restarted or went away
                raise UserError("the Dask scheduler dropped this run's tasks (restarted, or the "
                                "connection was lost); run the same command again to resume")
            exc, tb = fut.exception(), fut.traceback()
            fut.release()
            if len(indices) > 1:
                again.extend(indices)  # which item it was is not known: each alone
                continue
            index = indices[0]
            if isinstance(exc, KilledWorker):
                attempts[index] = attempts.get(index, 0) + 1
                if attempts[index] <= retries:
                    again.append(index)
                    continue
                yield items[index], WorkerCrash("worker process died while running it")
                continue
            yield items[index], TaskError.of(exc, tb)
    finally:
        for _, fut in in_flight.values():  # an interrupted run leaves nothing queued
            fut.release()
