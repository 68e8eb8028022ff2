"""The one place that knows how work is scheduled: a Dask client and a map over videos.

Default: a local Dask cluster with one single-threaded worker process per core. With
`scheduler="tcp://host:8786"` an existing cluster is used instead. Work units are whole
videos; results come back to the driver, which alone writes the manifest.

A worker that dies mid-task (a native decoder abort, the OOM killer, a node lost) costs the
video it was working on, not the run: the local cluster's scheduler gives up on a task after
its first worker death (allowed-failures = 0), `map_tasks` submits it once more, to whichever
fresh worker takes it, and after a second death reports it as a `WorkerCrash`.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import dask
from distributed import Client, KilledWorker, LocalCluster, as_completed

# Set in each worker process before it starts (Dask's nanny "pre-spawn" environment).
# One task at a time on one core: keep libraries from starting a thread per core as well.
# Memory: Dask's default MALLOC_TRIM_THRESHOLD_=65536 also switches off glibc's adaptive mmap
# threshold, so every decoded frame (> 128 KiB) is mmap'ed, page-faulted in and unmapped
# again: on frame extraction that tripled system time. Frames are allocated from the heap
# below 32 MiB instead; the heap is still trimmed above 64 MiB of free memory.
WORKER_ENV = {"OMP_NUM_THREADS": 1, "OPENBLAS_NUM_THREADS": 1, "MKL_NUM_THREADS": 1,
              "OPENCV_FOR_THREADS_NUM": 1, "MALLOC_MMAP_THRESHOLD_": 32 * 2**20,
              "MALLOC_TRIM_THRESHOLD_": 64 * 2**20}


@dataclass
class ClusterOptions:
    workers: int | None = None  # local cluster size; default: one per core
    scheduler: str | None = None  # address of a running cluster
    memory_limit: str = "auto"  # per local worker; the nanny restarts a worker above it


@dataclass
class WorkerCrash:
    """A task whose worker process died twice while running it."""

    reason: str


@dataclass
class TaskError:
    """A task that raised: the exception's type and message."""

    reason: str


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@contextmanager
def dask_client(options: ClusterOptions | None = None) -> Iterator[Client]:
    options = options or ClusterOptions()
    if options.scheduler:
        with Client(options.scheduler, timeout="20s") as client:
            yield client
        return
    n = options.workers or default_workers()
    config = {"distributed.scheduler.allowed-failures": 0,
              "distributed.worker.daemon": False,
              "distributed.admin.system-monitor.gil.enabled": False,
              "distributed.nanny.pre-spawn-environ": WORKER_ENV}
    with dask.config.set(config):
        cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                               memory_limit=options.memory_limit, dashboard_address=None,
                               silence_logs=logging.ERROR)
        try:
            with Client(cluster) as client:
                yield client
        finally:
            cluster.close()


def map_tasks(client: Client, fn: Callable, items: Iterable, *, retries: int = 1,
              window: int | None = None, on_result: Callable[[Any, Any], None] | None = None
              ) -> Iterator[tuple[Any, Any]]:
    """Run `fn(item)` for every item on the cluster; yield (item, result) as they finish.

    A failed task yields a `TaskError`; one whose worker died `retries + 1` times a
    `WorkerCrash`. At most `window` tasks are in flight, so millions of videos do not all sit
    in the scheduler at once.
    """
    items = list(items)
    window = window or max(64, 16 * max(1, len(client.scheduler_info().get("workers", {}))))
    run = uuid.uuid4().hex[:8]
    name = getattr(fn, "__name__", None) or getattr(getattr(fn, "func", None), "__name__", "task")
    pending = iter(enumerate(items))
    owner: dict[str, tuple[int, int]] = {}  # future key -> (item index, attempt)
    done = as_completed()

    def submit(index: int, attempt: int) -> None:
        fut = client.submit(fn, items[index], key=f"{name}-{run}-{index}-{attempt}",
                            pure=False)
        owner[fut.key] = (index, attempt)
        done.add(fut)

    for index, _ in zip(range(window), pending):
        submit(index, 0)
    for fut in done:
        index, attempt = owner.pop(fut.key)
        if fut.status == "finished":
            result = fut.result()
        else:
            exc = fut.exception()
            if isinstance(exc, KilledWorker):
                if attempt < retries:
                    submit(index, attempt + 1)
                    fut.release()
                    continue
                result = WorkerCrash("worker process died while running it")
            else:
                result = TaskError(f"{type(exc).__name__}: {exc}")
        fut.release()
        nxt = next(pending, None)
        if nxt is not None:
            submit(nxt[0], 0)
        yield items[index], result
