"""Kept by name for SLURM worker jobs submitted before the move to `schedule/`: their job
scripts preload `datatools.gpu_pin`. New jobs preload `datatools.schedule.gpu_pin`. This
shim is deleted in datatools 0.3.0 (jobs outlive one release at most)."""

from .schedule.gpu_pin import dask_setup, device_for  # noqa: F401
