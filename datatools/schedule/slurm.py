"""Dask workers as SLURM jobs, through dask-jobqueue's SLURMCluster.

Settings come, lowest priority first, from Dask's config (`jobqueue.slurm.*` in
~/.config/dask/jobqueue.yaml, $DASK_CONFIG, or `--cluster-config FILE`: a lab writes its
partition, account and memory once), then from `--slurm key=value` on the command line.
Keys (SlurmOptions): partition, account, cores, processes, memory, walltime, jobs, max_jobs,
gpus_per_job, extra (one more `#SBATCH` line; repeatable), lifetime, stagger.

Walltime: each worker is told to retire (`--lifetime`) a few minutes before its job's walltime,
staggered so that not all retire at once; the cluster is adaptive between `jobs` and
`max_jobs`, so a retired job is replaced by a fresh one and tasks move to the workers that
remain (dask-jobqueue #122 / #611). A job killed without warning costs only the videos in
flight, which `client.map_tasks` resubmits.

GPUs: with gpus_per_job=N a job asks `--gres=gpu:N`, runs N worker processes, each declaring
the resource GPU=VIDEOS_PER_GPU (as many task threads) and pinned to its own device by the
`datatools.schedule.gpu_pin` preload.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field, fields

from ..core.errors import UserError
from .resources import GPU, WORKER_ENV, worker_threads

# Where worker jobs write their output when neither --slurm log_directory nor Dask's
# jobqueue.slurm.log-directory says: not the current folder, where sbatch would put one
# slurm-<id>.out per worker job.
LOGS = "datatools-slurm-logs"


@dataclass
class SlurmOptions:
    partition: str | None = None  # None: Dask config, else SLURM's default partition
    account: str | None = None
    cores: int | None = None  # CPUs per job (default: processes)
    processes: int | None = None  # per job (default: gpus_per_job, else jobqueue.slurm.processes, else 1)
    memory: str | None = None  # per job, e.g. "16GB" (default: 2GB per process)
    walltime: str | None = None  # HH:MM:SS
    jobs: int = 1  # jobs kept running (adaptive minimum)
    max_jobs: int | None = None  # adaptive maximum (default: jobs)
    gpus_per_job: int = 0
    extra: list[str] = field(default_factory=list)  # more #SBATCH directives
    lifetime: str | None = None  # default: walltime minus 5 minutes
    stagger: str = "4m"
    log_directory: str | None = None  # the worker jobs' output files (default: LOGS)


def parse_slurm_options(pairs: list[str]) -> SlurmOptions:
    """`--slurm key=value` pairs, checked and typed."""
    types = {f.name: f.type for f in fields(SlurmOptions)}
    out: dict = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in types:
            raise UserError(f"--slurm {pair!r}: expected key=value with key one of "
                            f"{', '.join(types)}")
        if key == "extra":
            out.setdefault("extra", []).append(value)
        elif "int" in str(types[key]):
            try:
                out[key] = int(value)
            except ValueError:
                raise UserError(f"--slurm {pair!r}: {key} must be a whole number") from None
            least = 0 if key == "gpus_per_job" else 1
            if out[key] < least:
                raise UserError(f"--slurm {pair!r}: {key} must be at least {least}")
        else:
            out[key] = value
    return SlurmOptions(**out)


def seconds(walltime: str) -> int:
    """SLURM time `[D-]HH:MM:SS`, `HH:MM` or minutes, in seconds."""
    m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", walltime.strip())
    if not m:
        raise UserError(f"walltime {walltime!r}: expected [D-]HH:MM:SS")
    days, a, b, c = (int(x) if x else 0 for x in m.groups())
    if m[3] is None:  # minutes only
        return days * 86400 + a * 60
    if m[4] is None:  # HH:MM
        return days * 86400 + a * 3600 + b * 60
    return days * 86400 + a * 3600 + b * 60 + c


def slurm_cluster(opts: SlurmOptions):
    """A started SLURMCluster, adaptive between jobs and max_jobs."""
    cluster = make_cluster(opts)
    cluster.adapt(minimum_jobs=opts.jobs, maximum_jobs=opts.max_jobs or opts.jobs)
    return cluster


def make_cluster(opts: SlurmOptions):
    """The SLURMCluster for these settings, before any job is submitted."""
    import dask
    from dask_jobqueue import SLURMCluster

    conf = dask.config.get("jobqueue.slurm", {})
    processes = opts.processes or opts.gpus_per_job or conf.get("processes") or 1
    cores = opts.cores or conf.get("cores") or processes
    memory = opts.memory or conf.get("memory") or f"{2 * processes}GB"
    walltime = opts.walltime or conf.get("walltime")
    threads = worker_threads(gpu=bool(opts.gpus_per_job))
    worker_args = ["--nthreads", str(threads)]
    lifetime = opts.lifetime
    if lifetime is None and walltime:
        lifetime = f"{max(60, seconds(walltime) - 300)}s"
    if lifetime:
        worker_args += ["--lifetime", lifetime, "--lifetime-stagger", opts.stagger]
    directives = list(opts.extra)
    if opts.gpus_per_job:
        directives.append(f"--gres=gpu:{opts.gpus_per_job}")
        worker_args += ["--resources", f"{GPU}={threads}", "--preload", "datatools.schedule.gpu_pin"]
    logs = opts.log_directory or conf.get("log-directory") or LOGS
    # The job's shell sets what a local nanny sets before it starts a worker (resources.py).
    prologue = list(conf.get("job-script-prologue") or [])
    prologue += [f"export {name}={value}" for name, value in WORKER_ENV.items()]
    kwargs = dict(cores=cores, processes=processes, memory=memory, python=sys.executable,
                  log_directory=logs, job_script_prologue=prologue,
                  job_name="datatools-worker", worker_extra_args=worker_args,
                  job_extra_directives=list(conf.get("job-extra-directives", [])) + directives,
                  scheduler_options={"dashboard_address": None})
    for key, value in (("queue", opts.partition), ("account", opts.account),
                       ("walltime", walltime)):
        if value:
            kwargs[key] = value
    try:
        return SLURMCluster(**kwargs)
    except (ValueError, OSError) as exc:
        raise UserError(f"cannot start SLURM workers: {exc}") from None
