"""What one worker runs at once, decided here for every kind of cluster (local, SLURM, an
existing scheduler) and for the libraries a task uses.

A CPU worker runs one task (one video) at a time on one core, and every library in it keeps to
one thread: one worker per core already fills the machine. A GPU worker runs VIDEOS_PER_GPU
videos at once, each in a thread of its own, and declares as many of the Dask resource GPU;
a GPU task asks for one.
"""

from __future__ import annotations

import os
import shutil
import subprocess

# Where a flow backend computes (its `device`); extract routes its tasks by it.
CPU_ONLY = "cpu"  # CPU workers only
EITHER = "any"  # GPU workers where the cluster has them, else CPU workers (torch)
CUDA_ONLY = "cuda"  # GPU workers only (a CUDA build of an extractor)

CPU_THREADS = 1  # task threads of a CPU worker (and threads of each library inside a task)
GPU = "GPU"  # the Dask worker resource a GPU task asks one of


def gpu_units(worker: dict) -> float:
    """How much of the GPU resource a worker declares (its entry in the scheduler's info;
    0 for a CPU worker): the one reading of it."""
    return (worker.get("resources") or {}).get(GPU, 0)
# Videos a GPU worker runs at once, each in a thread of its own: their frame pairs share the
# device's batches (extract/batcher.py), and while the device computes, the other threads
# decode, encode and write. One video at a time leaves the device idle during all CPU work.
VIDEOS_PER_GPU = 4

# Set in each worker process before it starts (Dask's nanny "pre-spawn" environment; for
# forked local workers see client.py, LOCAL_START).
# Threads: keep libraries from starting a thread per core on top of one worker per core.
# Memory: Dask's default MALLOC_TRIM_THRESHOLD_=65536 also switches off glibc's adaptive mmap
# threshold, so every decoded frame (> 128 KiB) is mmap'ed, page-faulted in and unmapped
# again: on frame extraction that tripled system time. Frames are allocated from the heap
# below 32 MiB instead; the heap is still trimmed above 64 MiB of free memory.
WORKER_ENV = {"OMP_NUM_THREADS": CPU_THREADS, "OPENBLAS_NUM_THREADS": CPU_THREADS,
              "MKL_NUM_THREADS": CPU_THREADS, "OPENCV_FOR_THREADS_NUM": CPU_THREADS,
              "MALLOC_MMAP_THRESHOLD_": 32 * 2**20, "MALLOC_TRIM_THRESHOLD_": 64 * 2**20}


def worker_threads(gpu: bool) -> int:
    """Task threads of one worker process."""
    return VIDEOS_PER_GPU if gpu else CPU_THREADS


def default_workers() -> int:
    """Local CPU workers when --workers is not given: one per core this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def visible_gpus() -> list[str]:
    """GPU ids on this machine, as `nvidia-smi -L` lists them (none without a driver)."""
    if not shutil.which("nvidia-smi"):
        return []
    out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True)
    return [str(i) for i, line in enumerate(out.stdout.splitlines()) if line.startswith("GPU ")]
