"""The one place that knows which cluster work runs on: a Dask client, and whether GPU work
goes to GPU workers (`gpu_work`). The map over items is tasks.py.

Default: a local Dask cluster with one single-threaded worker process per core (plus, with
`gpus`, one worker per GPU). `kind="slurm"` starts the workers as SLURM jobs through
dask-jobqueue (slurm.py); `scheduler="tcp://host:8786"` uses an existing cluster instead.
Work units are whole videos (or chunks of them); results come back to the driver, which alone
writes the manifest. GPU work asks for the worker resource GPU=1: it runs only on workers
that declare a GPU (GPU=VIDEOS_PER_GPU), up to VIDEOS_PER_GPU videos per GPU at a time, each
worker seeing only its own device.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import dask
from distributed import Client, LocalCluster, WorkerPlugin

from ..core import runlog
from ..core.errors import UserError, one_of
from .resources import (
    CPU_ONLY,
    CPU_THREADS,
    CUDA_ONLY,
    GPU,
    VIDEOS_PER_GPU,
    WORKER_ENV,
    default_workers,
    gpu_units,
    visible_gpus,
)
from .slurm import SlurmOptions, slurm_cluster
from .tasks import TaskError, WorkerCrash, map_tasks  # noqa: F401  (the steps' one import)

runlog.adopt_library_logs()  # distributed has just set up its logging: to the run's log


@dataclass
class ClusterOptions:
    workers: int | None = None  # local cluster size; default: one per core
    scheduler: str | None = None  # address of a running cluster
    memory_limit: str = "auto"  # per local worker; the nanny restarts a worker above it
    kind: str = "local"  # "local" or "slurm"
    slurm: SlurmOptions = field(default_factory=SlurmOptions)  # --slurm key=value
    config_file: Path | None = None  # a Dask config YAML (jobqueue.slurm.*, datatools.*)
    gpus: list[str] = field(default_factory=list)  # local GPU workers: one per device id
    # Start local CPU workers by forking this process (LOCAL_START): only for a process that
    # has not run OpenCV, OpenMP or other native thread pools yet, such as the command line's.
    fork: bool = False

    def __post_init__(self):
        if self.workers is not None and self.workers < 1:
            raise UserError(f"--workers {self.workers}: must be at least 1")
        if self.scheduler is not None:
            check_scheduler_address(self.scheduler)
        one_of("--cluster", self.kind, ("local", "slurm"))


# What Dask's comm layer accepts for a scheduler: a protocol it has, a host, a port.
SCHEDULER_ADDRESS = re.compile(r"^((tcp|tls|ws|wss|ucx)://)?(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9_.-]+):(\d{1,5})$")
CONNECT_SECONDS = 10  # a scheduler that has not answered by then is not there


def check_scheduler_address(address: str) -> tuple[str, str, int]:
    """(protocol, host, port) of a scheduler address, or the line saying how to write one."""
    m = SCHEDULER_ADDRESS.match(address)
    if not m or not 0 < int(m[4]) < 65536:
        raise UserError(f"--scheduler {address}: not a Dask scheduler address; write it as "
                        "tcp://HOST:PORT (what `dask scheduler` prints, port 8786 by default)")
    return m[2] or "tcp", m[3].strip("[]"), int(m[4])


@contextmanager
def dask_client(options: ClusterOptions | None = None) -> Iterator[Client]:
    """A client on the cluster the options name: an existing scheduler, SLURM jobs started
    through dask-jobqueue, or (default) local worker processes."""
    options = options or ClusterOptions()
    if options.config_file is not None:
        load_config_file(options.config_file)
    if options.scheduler:
        _reachable(options.scheduler)
        try:
            client = Client(options.scheduler, timeout=f"{CONNECT_SECONDS}s")
        except (OSError, TimeoutError) as exc:
            raise UserError(f"--scheduler {options.scheduler}: no Dask scheduler answered within "
                            f"{CONNECT_SECONDS} s ({type(exc).__name__}); start one there "
                            "(`dask scheduler`) or check the address") from None
        with client:
            yield client
        return
    config = dict(WORKER_CONFIG)
    if options.fork and options.kind == "local" and not options.gpus and sys.platform.startswith("linux"):
        config["distributed.worker.multiprocessing-method"] = "fork"  # see LOCAL_START below
        set_worker_malloc()
    with dask.config.set(config):
        cluster = None
        try:
            if options.kind == "slurm":
                cluster = slurm_cluster(options.slurm)
            else:
                with _ctrl_c_for_the_driver_only():
                    cluster = _local_cluster(options)
            with Client(cluster) as client:
                if options.kind == "local":
                    client.register_plugin(_QuietWorker(runlog.current()), name="datatools-quiet")
                yield client
        finally:
            if cluster is not None:
                cluster.close()


def cluster_for(needed: bool, options: ClusterOptions | None = None):
    """`dask_client(options)` when there is work to send, else nothing (None): a step with
    nothing left starts no cluster."""
    return dask_client(options) if needed else contextlib.nullcontext()


def _reachable(address: str) -> None:
    """A TCP scheduler address that nothing listens on is said at once (Dask's client would
    retry until its timeout)."""
    protocol, host, port = check_scheduler_address(address)
    if protocol != "tcp":
        return
    try:
        socket.create_connection((host, port), timeout=CONNECT_SECONDS).close()
    except OSError as exc:
        raise UserError(f"--scheduler {address}: cannot connect ({exc.strerror or exc}); start a "
                        "Dask scheduler there (`dask scheduler`) or check the address") from None


@contextmanager
def _ctrl_c_for_the_driver_only() -> Iterator[None]:
    """Ctrl-C reaches every process of the terminal's group. While the local cluster starts,
    SIGINT is blocked in this thread: the worker processes and Dask's threads started here
    inherit the block and never see it, so only the driver stops the run. A Ctrl-C pressed
    meanwhile stays pending and is raised here as soon as the cluster is up."""
    try:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    except (ValueError, OSError):
        yield
        return
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


class _QuietWorker(WorkerPlugin):
    """In each local worker process (restarted ones too): the driver handles Ctrl-C and
    SIGTERM, and what the worker or its decoders print (FFmpeg's and OpenCV's warnings,
    Dask's "Compute Failed") goes to the run's log instead of the terminal."""

    def __init__(self, log: runlog.RunLog | None):
        self.log_path = str(log.start()) if log is not None else None

    def setup(self, worker) -> None:
        try:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a forked worker had the driver's
        except ValueError:
            pass
        if self.log_path is not None:
            fd = os.open(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            os.close(fd)


# Worker settings for clusters this module starts: a task whose worker dies is reported at
# once (map_tasks resubmits it itself, once), and a worker holds only the tasks it runs (a
# saturation of 1.0: with Dask's 1.1 a one-thread worker holds a second task, which a decoder
# that kills the process takes down with it, and the innocent video was counted as a crash);
# workers may start processes of their own, and Dask's statistical profiler (a thread sampling
# every worker's stack every 10 ms) is off: it took 2 % of TV-L1 extraction with 2 workers on
# 2 cores (49.5 s vs 50.4 s, bench/cluster.py clips).
WORKER_CONFIG = {"distributed.scheduler.allowed-failures": 0,
                 "distributed.scheduler.worker-saturation": 1.0,
                 "distributed.worker.daemon": False,
                 "distributed.admin.system-monitor.gil.enabled": False,
                 "distributed.worker.profile.enabled": False,
                 "distributed.nanny.pre-spawn-environ": WORKER_ENV}

# LOCAL_START: on Linux, with ClusterOptions.fork (what the console command asks for, see
# cli.cluster_options), local CPU workers are forked from this process instead of spawned.
# Only a process that has not run a native thread pool may fork: a child forked after OpenCV
# ran a parallel loop hangs in its first cv2.setNumThreads (the pool's threads do not exist in
# the child), so library callers, commands run inside another process (the tests' CliRunner),
# the demo (which draws its videos with OpenCV first) and the tests keep spawning.
# A spawned worker starts a fresh interpreter and imports Dask, numpy and our modules again: on
# two cores that took 0.5 s before the first task and 0.9 s of CPU, plus 0.15 s to close, which
# on `extract --task rgb` of 40 short videos was a tenth of the run. A forked worker starts in
# 0.15 s with everything imported. What fork changes: WORKER_ENV reaches only the libraries a
# worker loads after the fork (OpenCV's threads are also set per task); the allocator is this
# process's, so set_worker_malloc gives it WORKER_ENV's MALLOC_* settings first (without them,
# Farneback with one forked worker spent 6.5 s in the kernel instead of 1.0 s, +14 % time);
# and atexit handlers do not run in the worker. Clusters with GPU workers still spawn: a
# process that has touched CUDA cannot hand it to a forked child.


def set_worker_malloc() -> None:
    """WORKER_ENV's MALLOC_* settings, applied to this process's allocator (glibc mallopt),
    which forked workers inherit; the driver only keeps up to 64 MiB of freed memory more."""
    import ctypes
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's <malloc.h>
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc: its defaults stay
        return
    mallopt(M_MMAP_THRESHOLD, WORKER_ENV["MALLOC_MMAP_THRESHOLD_"])
    mallopt(M_TRIM_THRESHOLD, WORKER_ENV["MALLOC_TRIM_THRESHOLD_"])


# A task that raises is logged by its worker at ERROR ("Compute Failed" and the traceback);
# map_tasks hands it to the step, which says it in one line and keeps the traceback in a log
# file (failures.py), so the workers' own copy would only flood the terminal.
WORKER_LOG_LEVEL = logging.CRITICAL


def _local_cluster(options: ClusterOptions):
    """One single-threaded worker process per core; with `gpus`, one more per GPU that runs
    VIDEOS_PER_GPU tasks at once, declares as many of the resource GPU and sees only its own
    device (CUDA_VISIBLE_DEVICES)."""
    n = options.workers or default_workers()
    if not options.gpus:
        return LocalCluster(n_workers=n, threads_per_worker=CPU_THREADS, processes=True,
                            memory_limit=options.memory_limit, dashboard_address=None,
                            silence_logs=WORKER_LOG_LEVEL)
    from distributed import Nanny, Scheduler, SpecCluster
    from distributed.worker_memory import parse_memory_limit

    total = n + len(options.gpus)
    memory = parse_memory_limit(options.memory_limit, 1, total_cores=total,
                                logger=logging.getLogger(__name__))
    base = {"nthreads": CPU_THREADS, "memory_limit": memory, "silence_logs": WORKER_LOG_LEVEL}
    workers = {f"cpu-{i}": {"cls": Nanny, "options": dict(base)} for i in range(n)}
    for device in options.gpus:
        workers[f"gpu-{device}"] = {"cls": Nanny, "options": dict(
            base, nthreads=VIDEOS_PER_GPU, resources={GPU: VIDEOS_PER_GPU},
            env={"CUDA_VISIBLE_DEVICES": device})}
    return SpecCluster(workers=workers, silence_logs=WORKER_LOG_LEVEL,
                       scheduler={"cls": Scheduler, "options": {"dashboard_address": None}})


def gpu_workers(client: Client) -> list[str]:
    """Addresses of the workers that declare a GPU."""
    return [addr for addr, w in client.scheduler_info(n_workers=-1)["workers"].items()
            if gpu_units(w)]


FIRST_WORKER_SECONDS = 120  # a scheduler started elsewhere: how long to wait for a worker


def gpu_work(device: str, client: Client, options: ClusterOptions | None) -> bool:
    """Whether work computed on `device` (resources.CPU_ONLY, EITHER, CUDA_ONLY) goes to GPU
    workers. What decides is the cluster's workers, not this process: a login node without
    CUDA drives GPU workers. GPU workers are there when the cluster is started with them
    (--gpus, --slurm gpus_per_job=N: before its jobs have joined) or, on a scheduler started
    elsewhere, when a connected worker declares the GPU resource."""
    if device == CPU_ONLY:
        return False
    options = options or ClusterOptions()
    if options.scheduler:
        if not client.scheduler_info(n_workers=-1)["workers"]:
            with contextlib.suppress(TimeoutError):
                client.wait_for_workers(1, timeout=FIRST_WORKER_SECONDS)
        offered = bool(gpu_workers(client))
    elif options.kind == "slurm":
        offered = options.slurm.gpus_per_job > 0
    else:
        offered = bool(options.gpus)
    if device == CUDA_ONLY and not offered:
        raise UserError("this backend computes on a GPU (a CUDA build), and no worker of the "
                        "cluster has one: on this machine `nvidia-smi -L` lists "
                        + (", ".join(visible_gpus()) or "none") + "; pass --gpus (local) or "
                        "--slurm gpus_per_job=N, or use a CPU build or backend")
    hidden = os.environ.get("CUDA_VISIBLE_DEVICES") == ""  # the workers inherit it
    if not offered and options.kind == "local" and not options.scheduler and not hidden \
            and visible_gpus():
        # Local CPU workers see this machine's GPUs: each would put its own batches on GPU 0.
        raise UserError(f"this machine has GPUs ({', '.join(visible_gpus())}, `nvidia-smi -L`) "
                        "and no GPU workers were asked for: pass --gpus all (or ids), or hide "
                        "them with CUDA_VISIBLE_DEVICES= to compute on the CPU")
    return offered


def load_config_file(path: Path) -> None:
    """Merge a Dask config YAML into Dask's config (how a lab writes its SLURM settings once;
    Dask also reads ~/.config/dask/*.yaml and $DASK_CONFIG by itself)."""
    import yaml
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise UserError(f"{path}: cannot read the cluster config ({exc})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a YAML mapping such as `jobqueue: {{slurm: {{...}}}}`")
    dask.config.update(dask.config.config, dask.config.expand_environment_variables(data), priority="new")
