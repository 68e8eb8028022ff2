"""Dask worker preload: pin each worker process of a multi-GPU SLURM job to its own GPU.

A job with `--gres=gpu:N` runs N worker processes, all seeing the job's N devices in
CUDA_VISIBLE_DEVICES; without pinning every process would use the first one. dask-jobqueue
names the processes of a job `<job name>-0` … `<job name>-(N-1)`; process k keeps only the
k-th device. This runs in the worker process before any task imports CUDA.
"""

from __future__ import annotations

import os


def device_for(worker_name: str, visible: str) -> str | None:
    """The device a worker named `…-k` keeps out of a CUDA_VISIBLE_DEVICES list."""
    devices = [d for d in visible.split(",") if d.strip()]
    suffix = str(worker_name).rsplit("-", 1)[-1]
    if not devices or not suffix.isdigit():
        return None
    return devices[int(suffix) % len(devices)]


def dask_setup(worker) -> None:
    device = device_for(worker.name, os.environ.get("CUDA_VISIBLE_DEVICES", ""))
    if device is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = device
