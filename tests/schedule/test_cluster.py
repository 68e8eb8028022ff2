"""Cluster scale: a real one-node SLURM (tests/slurm.py) running the driver as a batch job and
the workers as dask-jobqueue jobs; a worker process killed mid-extraction; GPU placement with
declared resources on CPU workers; `prepare` end to end from the loopback HTTP server."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import served
from conftest import datatools, kill_group, require, require_tool
from nginx import Nginx
from slurm import Slurm, available
from trees import pids_with_open, real_clips_root, tree_bytes

from datatools.core.errors import UserError
from datatools.extract.options import ExtractOptions
from datatools.extract.run import extract
from datatools.pipeline.demo import make_dataset
from datatools.root.manifest import read_manifest
from datatools.schedule.client import (
    ClusterOptions,
    dask_client,
    gpu_work,
    load_config_file,
    map_tasks,
)
from datatools.schedule.gpu_pin import device_for
from datatools.schedule.resources import CUDA_ONLY, EITHER, VIDEOS_PER_GPU, WORKER_ENV
from datatools.schedule.slurm import make_cluster, parse_slurm_options

pytestmark = pytest.mark.slow  # SLURM, Dask clusters and killed workers

BIN = Path(sys.executable).parent
FARNEBACK = ExtractOptions(task="both", algo="farneback")


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    require("slurm-wlm and munge", available())
    cluster = Slurm(tmp_path_factory.mktemp("slurm"))
    yield cluster
    cluster.stop()


def test_extract_through_slurm_jobs_equals_a_local_run(slurm, tmp_path):
    """The driver runs as a batch job from `datatools cluster sbatch` (checked with
    --test-only first); it starts its worker as a SLURM job through dask-jobqueue."""
    local = real_clips_root(tmp_path / "local")
    extract(local, FARNEBACK, cluster=ClusterOptions(workers=1))
    root = real_clips_root(tmp_path / "slurm")
    job = tmp_path / "job.sh"
    r = datatools("cluster", "sbatch", "--out", job, "--job-name", "dt-driver", "--time", "00:15:00",
            "--mem", "1G", "--", "extract", "--root", root, "--task", "both", "--algo", "farneback",
            "--cluster", "slurm", "--slurm", "jobs=1", "--slurm", "memory=1GB",
            "--slurm", "walltime=00:15:00", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    check = slurm.run("sbatch", "--test-only", str(job))
    assert check.returncode == 0 and "to start at" in check.stderr, check.stderr
    submitted = slurm.run("sbatch", "--parsable", str(job))
    assert submitted.returncode == 0, submitted.stderr
    driver = submitted.stdout.strip()
    seen_workers = set()
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        queue = slurm.run("squeue", "-h", "-o", "%i %j %T").stdout.split("\n")
        seen_workers |= {q.split()[0] for q in queue if "datatools-worker" in q and "RUNNING" in q}
        if not any(q.startswith(driver + " ") for q in queue):
            break
        time.sleep(0.5)
    log = (tmp_path / f"dt-driver-{driver}.log").read_text()
    jobs = {j["JobId"]: j for j in slurm.finished_jobs()}
    assert jobs[driver]["JobState"] == "COMPLETED", log[-3000:]
    workers = [j for j in jobs.values() if j["Name"] == "datatools-worker"]
    assert seen_workers and {w["JobId"] for w in workers} >= seen_workers
    assert tree_bytes(root / "rawframes") == tree_bytes(local / "rawframes")
    records, _ = read_manifest(root)
    assert {r.extract_status for r in records} == {"done"}


def test_slurm_workers_that_join_after_the_run_started_do_the_work(slurm, tmp_path):
    """Another job holds the node when the run starts, so the worker job waits in the queue
    while the driver waits for workers; once the node is free the job starts the number of
    worker processes a lab's config file sets (jobqueue.slurm.processes: 2), they join the
    running driver and do every video."""
    root = real_clips_root(tmp_path / "root", ("short_32f.mp4", "test.avi", "bikes.mp4", "demo.mp4"))
    cpus = int(slurm.run("sinfo", "-h", "-o", "%c").stdout.split()[0])
    filler = slurm.run("sbatch", "--parsable", "-c", str(cpus), "--wrap", "sleep 600")
    assert filler.returncode == 0, filler.stderr
    logs = tmp_path / "worker-logs"
    conf = tmp_path / "lab.yaml"
    conf.write_text(f"jobqueue:\n  slurm:\n    processes: 2\n    cores: {cpus}\n"
                    f"    memory: 2GB\n    log-directory: {logs}\n")
    driver = subprocess.Popen([str(BIN / "datatools"), "extract", "--root", str(root), "--task",
                               "rgb", "--cluster", "slurm", "--cluster-config", str(conf),
                               "--slurm", "walltime=00:10:00"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env=slurm.env, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 60
        while "datatools-worker PENDING" not in slurm.run("squeue", "-h", "-o", "%j %T").stdout:
            assert driver.poll() is None and time.monotonic() < deadline, "no worker job queued"
            time.sleep(0.2)
        time.sleep(2)  # the run has started: the driver waits for workers
        assert driver.poll() is None
        slurm.run("scancel", filler.stdout.strip())
        out, _ = driver.communicate(timeout=240)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == 0, out[-3000:]
    records, _ = read_manifest(root)
    assert {r.extract_status for r in records} == {"done"}
    started = sum(p.read_text().count("Start worker at") for p in logs.glob("*.err"))
    assert started == 2, [p.read_text()[-2000:] for p in logs.glob("*.err")]


def test_a_killed_worker_costs_only_its_video_and_the_output_is_unchanged(tmp_path):
    names = ("test.mp4", "demo.mp4", "short_32f.mp4", "bikes.mp4", "test.avi")
    reference = real_clips_root(tmp_path / "reference", names)
    extract(reference, FARNEBACK, cluster=ClusterOptions(workers=2))
    root = real_clips_root(tmp_path / "killed", names)
    target = root / "videos/Real/v_Real_g01_c01.mp4"  # test.mp4: the longest, done first
    killed = []

    def killer():
        deadline = time.time() + 120
        while not killed and time.time() < deadline:
            pids = pids_with_open(target)
            if pids:
                time.sleep(0.5)  # mid-video: frames are being written
                os.kill(pids[0], signal.SIGKILL)
                killed.append(pids[0])
            time.sleep(0.02)

    thread = threading.Thread(target=killer)
    thread.start()
    result = extract(root, FARNEBACK, cluster=ClusterOptions(workers=2))
    thread.join()
    assert killed
    assert sorted(rec.video_id for rec, _ in result.outcomes) == sorted(
        f"v_Real_g{i:02d}_c01" for i in range(1, 6))  # each once, none missing
    assert not result.failures and result.counts == {"done": 5}
    assert tree_bytes(root / "rawframes") == tree_bytes(reference / "rawframes")
    assert not [p for p in (root / "rawframes").rglob("*") if p.name.endswith(".tmp")]


def test_a_library_caller_that_ran_opencv_threads_still_extracts(tmp_path):
    """Library callers get spawned workers: a worker forked after OpenCV ran a parallel loop in
    the caller hangs in its first cv2.setNumThreads (schedule/client.py, LOCAL_START); the console
    command's own process, which runs none before its cluster starts, forks (the tests that run
    `datatools` as a subprocess exercise that)."""
    import cv2
    import numpy as np
    cv2.setNumThreads(2)
    big = cv2.resize(np.zeros((64, 64), np.uint8), (1920, 1080), interpolation=cv2.INTER_CUBIC)
    cv2.GaussianBlur(big, (3, 3), 0)  # OpenCV's thread pool is running in this process now
    root = real_clips_root(tmp_path / "root", ("short_32f.mp4",))
    result = extract(root, FARNEBACK, cluster=ClusterOptions(workers=1))
    assert result.counts == {"done": 1}, result.failures


def _where(item):
    """A task that reports where it ran and when (for the placement test)."""
    from distributed import get_worker
    start = time.monotonic()
    time.sleep(0.3)
    return get_worker().name, os.environ.get("CUDA_VISIBLE_DEVICES"), start, time.monotonic()


def test_gpu_tasks_run_only_on_gpu_workers_a_few_per_gpu_each_on_its_device():
    """Two local workers declare a GPU (device ids 0 and 1; no CUDA involved), one does not.
    Each GPU worker runs up to VIDEOS_PER_GPU tasks at once, never more."""
    tasks = 3 * VIDEOS_PER_GPU
    with dask_client(ClusterOptions(workers=1, gpus=["0", "1"])) as client:
        placed = [res for _, res in map_tasks(client, _where, range(tasks), gpu=True)]
    names = {name for name, *_ in placed}
    assert names == {"gpu-0", "gpu-1"}  # never the CPU worker, both GPUs used
    for name, device, _, _ in placed:
        assert device == name.split("-")[1]  # pinned: gpu-1 sees only device 1
    for name in names:
        spans = [(s, e) for n, _, s, e in placed if n == name]
        most = max(sum(s <= t < e for s, e in spans) for t, _ in spans)
        assert 2 <= most <= VIDEOS_PER_GPU, (name, most)
    with dask_client(ClusterOptions(workers=1)) as client:
        assert not gpu_work(EITHER, client, ClusterOptions(workers=1))  # torch: CPU workers then
        with pytest.raises(UserError, match="computes on a GPU .* no worker of the cluster has one"):
            gpu_work(CUDA_ONLY, client, ClusterOptions(workers=1))
    assert gpu_work(EITHER, None, ClusterOptions(kind="slurm", slurm=parse_slurm_options(
        ["gpus_per_job=1"])))  # before any job has joined


def test_each_worker_of_a_multi_gpu_job_keeps_its_own_device():
    assert [device_for(f"SLURMCluster-3-{k}", "4,5") for k in (0, 1)] == ["4", "5"]
    assert device_for("gpu-0", "") is None


@pytest.fixture
def dask_config():
    """Dask's global config as it was before the test loaded a lab's file into it."""
    import copy

    import dask
    import dask_jobqueue  # noqa: F401  (adds its defaults to the config when first imported)
    saved = copy.deepcopy(dask.config.config)
    yield
    dask.config.config.clear()
    dask.config.config.update(saved)


def test_slurm_settings_come_from_a_config_file_and_the_command_line(tmp_path, dask_config):
    require_tool("sbatch")
    conf = tmp_path / "lab.yaml"
    conf.write_text("jobqueue:\n  slurm:\n    queue: gpu-long\n    account: lab42\n"
                    "    memory: 64GB\n    job-extra-directives: ['--constraint=a100']\n")
    load_config_file(conf)
    settings = parse_slurm_options(["gpus_per_job=2", "memory=32GB", "walltime=01:00:00",
                                    "extra=--qos=high", f"log_directory={tmp_path / 'logs'}"])
    cluster = make_cluster(settings)
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    for line in ("#SBATCH -p gpu-long", "#SBATCH -A lab42", "#SBATCH --constraint=a100",
                 "#SBATCH --gres=gpu:2", "#SBATCH --qos=high", "#SBATCH -t 01:00:00",
                 f"#SBATCH -o {tmp_path / 'logs'}/"):
        assert line in script, script
    assert "--mem=30G" in script or "--mem=32G" in script  # the command line wins over the file
    for arg in ("--nworkers 2", f"--nthreads {VIDEOS_PER_GPU}", f"--resources GPU={VIDEOS_PER_GPU}",
                "--preload datatools.schedule.gpu_pin",
                "--lifetime 3300s", "--lifetime-stagger 4m"):
        assert arg in script, script
    with pytest.raises(UserError, match="expected key=value with key one of"):
        parse_slurm_options(["colour=blue"])


def test_a_labs_processes_setting_and_the_worker_environment_reach_the_job_script(tmp_path,
                                                                                dask_config):
    """jobqueue.slurm.processes and cores from a config file are what a CPU job runs (a flag
    overrides them), and the job's shell sets what local workers get (resources.WORKER_ENV)."""
    require_tool("sbatch")
    conf = tmp_path / "lab.yaml"
    conf.write_text("jobqueue:\n  slurm:\n    processes: 3\n    cores: 6\n"
                    "    job-script-prologue: ['module load ffmpeg']\n")
    load_config_file(conf)
    for flags, workers in (([], 3), (["processes=2"], 2)):
        cluster = make_cluster(parse_slurm_options(flags))
        try:
            script = cluster.job_script()
        finally:
            cluster.close()
        assert f"--nworkers {workers}" in script and "--cpus-per-task=6" in script, script
        assert "module load ffmpeg\n" in script
        for name, value in WORKER_ENV.items():
            assert f"export {name}={value}\n" in script


def test_prepare_runs_every_step_and_resumes_after_a_kill(tmp_path):
    require_tool("nginx")
    server = Nginx(tmp_path / "nginx")
    try:
        demo = make_dataset(tmp_path / "demo")
        www = server.www / "ucf101"
        lists = {f"ucfTrainTestlist/{p.name}": p for p in (demo / "annotations").iterdir()}
        served.zip_of(www / "UCF101TrainTestSplits-RecognitionTask.zip", lists)
        served.zip_of(www / "UCF101.rar", {f"UCF101/{p.relative_to(demo / 'videos')}": p
                                           for p in (demo / "videos").rglob("*.avi")})
        args = ["ucf101", "prepare", "--mirror", server.url("ucf101/"), "--algo", "farneback",
                "--workers", "2"]
        whole = tmp_path / "whole"
        r = datatools(*args, "--root", whole)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
        for step in ("1/5 download", "2/5 validate", "3/5 lists", "4/5 extract", "5/5 frame-lists"):
            assert step in r.stdout
        resumed = tmp_path / "resumed"
        proc = subprocess.Popen([str(BIN / "datatools"), *args, "--root", str(resumed)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        deadline = time.monotonic() + 120
        while not list((resumed / "rawframes").glob("*/*/img_*")) + list(
                (resumed / "rawframes").glob("*/.*.tmp/img_*")):
            assert proc.poll() is None and time.monotonic() < deadline, "ended before the kill"
            time.sleep(0.05)
        kill_group(proc)  # the driver and every worker, mid-run
        r = datatools(*args, "--root", resumed)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
        assert tree_bytes(resumed / "rawframes") == tree_bytes(whole / "rawframes")
        for name in ("ucf101_train_split_1_rawframes.txt", "ucf101_val_split_1_flow.txt"):
            assert (resumed / name).read_bytes() == (whole / name).read_bytes()
        assert "already done" in r.stdout  # the download was not repeated
    finally:
        server.stop()
        shutil.rmtree(tmp_path / "nginx", ignore_errors=True)
