"""Where work runs: `client` (the Dask client and the map over videos, the only place that
schedules), `resources` (threads per task, GPU resource), `slurm` (workers as SLURM jobs),
`sbatch` (a driver batch script), `gpu_pin` (one GPU per worker process of a job)."""
