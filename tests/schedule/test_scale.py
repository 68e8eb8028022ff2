"""Scale-out against a real Dask cluster started by hand (`dask scheduler`, `dask worker`): the
window of tasks in flight follows the workers as they join; GPU work goes to the workers that
declare a GPU whatever the driver has; cheap probes travel in chunks; a re-run on an unchanged
root sends no work and lists no frame folder."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest
from conftest import VIDEOS, require_module
from daskproc import DaskProcesses
from distributed import Client, get_task_stream
from trees import ucf101_style_root

from datatools.extract.options import ExtractOptions
from datatools.extract.run import extract
from datatools.lists.build import build_lists
from datatools.root.manifest import ManifestRows, read_manifest
from datatools.schedule.client import ClusterOptions
from datatools.schedule.tasks import FLOOR, QUEUED_PER_SLOT
from datatools.validate.run import validate

pytestmark = pytest.mark.slow  # Dask worker processes joining mid-run

# The scheduler these tests start holds no more tasks on a worker than it has threads, as the
# clusters datatools starts itself do (client.WORKER_CONFIG): what a worker is given shows.
SCHEDULER_ENV = {"DASK_DISTRIBUTED__SCHEDULER__WORKER_SATURATION": "1.0"}


def copies_root(base: Path, n: int, clip: str = "short_32f.mp4") -> Path:
    """A UCF101-style root of `n` hard links to one real clip (the content is read all the
    same), with its manifest."""
    rels = [f"Real/v_Real_g{i:04d}_c01{Path(clip).suffix}" for i in range(n)]
    root = ucf101_style_root(base, dict.fromkeys(rels))
    for rel in rels:
        dest = root / "videos" / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.link(VIDEOS / clip, dest)
    build_lists("ucf101", root)
    return root


@pytest.fixture
def dask_procs(tmp_path, monkeypatch):
    for name, value in SCHEDULER_ENV.items():
        monkeypatch.setenv(name, value)
    procs = DaskProcesses(tmp_path / "dask-logs")
    yield procs
    procs.stop()


def test_the_window_grows_with_workers_that_join_mid_run(dask_procs, tmp_path):
    """Start with 2 single-thread workers, add 10 once the first videos are done: the tasks in
    flight follow the slots (QUEUED_PER_SLOT per slot), and while work is left every worker
    has a task."""
    def sample(dask_scheduler):  # on the scheduler (pickled by value: defined in here)
        busy = {ws.name: len(ws.processing) for ws in dask_scheduler.workers.values()}
        held = sum(1 for key in dask_scheduler.tasks if str(key).startswith("extract_video"))
        return busy, held

    root = copies_root(tmp_path / "root", 100)
    dask_procs.add_workers(2, name="first")
    samples = []
    with Client(dask_procs.address, timeout="30s") as observer:
        dask_procs.wait_for(observer, 2)
        result = {}
        # Farneback flow: a second or so per video, so that the run goes on well after the
        # late workers have joined (and videos go one or two per task).
        runner = threading.Thread(target=lambda: result.update(run=extract(
            root, ExtractOptions(task="flow", algo="farneback"),
            cluster=ClusterOptions(scheduler=dask_procs.address))))
        runner.start()
        joined = False
        while runner.is_alive():
            samples.append(observer.run_on_scheduler(sample))
            if not joined and len(list((root / "rawframes/Real").glob("v_*"))) >= 4:
                dask_procs.add_workers(10, name="late")  # after the first videos finished
                joined = True
            time.sleep(0.2)
        runner.join()
    assert result["run"].counts == {"done": 100}, result["run"].failures[:3]
    assert joined
    before = [held for busy, held in samples if len(busy) == 2]
    after = [(busy, held) for busy, held in samples if len(busy) == 12]
    assert before and max(before) <= max(FLOOR, QUEUED_PER_SLOT * 2)
    # Steady state: from when the window has grown to cover the 12 (the driver looks at the
    # workers once a second) until the last tasks drain.
    grown = next((i for i, (_, held) in enumerate(after) if held >= QUEUED_PER_SLOT * 12 - 2), None)
    assert grown is not None, f"the window did not grow: {[held for _, held in after]}"
    steady = []
    for busy, held in after[grown:]:
        if held < 12:
            break
        steady.append((busy, held))
    assert len(steady) >= 10, f"{len(steady)} steady samples: {[held for _, held in after]}"
    all_busy = sum(all(n >= 1 for n in busy.values()) for busy, _ in steady)
    assert all_busy >= 0.9 * len(steady), (all_busy, len(steady))


def test_gpu_work_goes_to_the_worker_declaring_a_gpu_from_a_driver_without_cuda(
        dask_procs, tmp_path, monkeypatch, native_flow):
    """This machine has no GPU: the "GPU" worker declares GPU=4 and runs the torch backend on
    its CPU. The driver sees no CUDA (CUDA_VISIBLE_DEVICES=""); the work goes there all the
    same, none to the CPU workers. The same for the native extractor when its build reports
    CUDA (a wrapper answers --show-build as a CUDA build would); that build is recorded."""
    require_module("torch")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    # Where the work goes is the question here, not the flow: the workers skip compiling the
    # torch steps (tests/test_torch_flow.py runs the compiled ones through extract).
    monkeypatch.setenv("DATATOOLS_TORCH_COMPILE", "0")
    dask_procs.add_workers(2, name="cpu")
    dask_procs.add_workers(1, nthreads=4, resources="GPU=4", name="gpu")
    cuda_build = tmp_path / "datatools-flow-cuda"
    cuda_build.write_text('#!/bin/sh\nif [ "$1" = "--show-build" ]; then echo \'{"cuda": true}\'; '
                          f'exit 0; fi\nexec "{native_flow}" "$@"\n')
    cuda_build.chmod(0o755)
    cluster = ClusterOptions(scheduler=dask_procs.address)
    with Client(dask_procs.address, timeout="30s") as observer:
        dask_procs.wait_for(observer, 3)
        for backend, env in (("torch", {}), ("native", {"DATATOOLS_FLOW": str(cuda_build)})):
            for name, value in env.items():
                monkeypatch.setenv(name, value)
            root = copies_root(tmp_path / backend, 2)
            opts = ExtractOptions(task="flow", backend=backend, new_size=(64, 48))
            with get_task_stream(observer) as stream:
                result = extract(root, opts, cluster=cluster)
            assert result.counts == {"done": 2}, result.failures
            workers = {observer.scheduler_info(n_workers=-1)["workers"][t["worker"]]["name"]
                       for t in stream.data if str(t["key"]).startswith("extract_video")}
            assert workers == {"gpu"}, (backend, workers)
        record = json.loads((root / "rawframes/Real/v_Real_g0000_c01/.datatools-done.json").read_text())
        assert record["parts"]["flow"]["params"]["build"] == "cuda"


def test_quick_probes_go_in_chunks_and_a_rerun_sends_no_work(dask_procs, tmp_path):
    """600 quick probes of real clips take far fewer tasks than videos; a second validate and a
    second extract on the unchanged root submit nothing and list no frame folder."""
    root = copies_root(tmp_path / "root", 600, "test.avi")
    dask_procs.add_workers(2, name="cpu")
    cluster = ClusterOptions(scheduler=dask_procs.address)
    with Client(dask_procs.address, timeout="30s") as observer:
        dask_procs.wait_for(observer, 2)
        with get_task_stream(observer) as stream:
            result = validate("ucf101", root, cluster=cluster)
        assert result.counts == {"ok": 600} and result.probed == 600
        tasks = [t for t in stream.data if str(t["key"]).startswith("probe_task")]
        assert len(tasks) <= 600 / 5, f"{len(tasks)} tasks for 600 probes"
        extract(root, ExtractOptions(task="rgb"), cluster=cluster)
        again = validate("ucf101", root, cluster=cluster)  # the first scan since the frames
        assert again.probed == 0 and again.kept == 600
        records, _ = read_manifest(root)
        assert all(r.frame_mtime_ns and r.made_with for r in records)
        build_lists("ucf101", root, ["videos", "rawframes"])
        manifest = (root / "manifest.parquet").stat()
        with get_task_stream(observer) as stream:
            skipped = extract(root, ExtractOptions(task="rgb"), cluster=cluster)
            rebuilt = build_lists("ucf101", root, ["videos", "rawframes"])
        assert skipped.counts == {"skipped": 600}
        assert not stream.data  # nothing was sent to a worker
    # Nothing changed, nothing written: the root was as the last scan saw it, and the lists
    # come out as before, answered from the manifest.
    assert (root / "manifest.parquet").stat().st_mtime_ns == manifest.st_mtime_ns
    assert [(lf.name, lf.lines) for lf in rebuilt.lists if lf.subset == "train" and lf.split == 1] == [
        ("ucf101_train_split_1_videos.txt", 600), ("ucf101_train_split_1_rawframes.txt", 600)]
    assert isinstance(rebuilt.records, ManifestRows) and len(rebuilt.records) == 600


def test_where_an_extractor_computes_follows_its_build_and_its_algorithm(tmp_path):
    """A CUDA build computes TV-L1 on the GPU (GPU work, recorded as build=cuda) and Farneback
    on the CPU (CPU work, recorded as any build's); a denseflow, which does not report its
    build, is GPU work recorded as it always was."""
    from datatools.extract.backends.external import DenseflowFlow, NativeFlow
    from datatools.schedule.resources import CPU_ONLY, CUDA_ONLY
    cuda, silent = tmp_path / "cuda-build", tmp_path / "denseflow"
    cuda.write_text('#!/bin/sh\n[ "$1" = "--show-build" ] && echo \'{"cuda": true}\'\n')
    silent.write_text("#!/bin/sh\nexit 1\n")
    for tool in (cuda, silent):
        tool.chmod(0o755)
    tvl1, farneback = NativeFlow("tvl1", str(cuda)), NativeFlow("farneback", str(cuda))
    assert (tvl1.runs_on, tvl1.build_params()) == (CUDA_ONLY, {"build": "cuda"})
    assert (farneback.runs_on, farneback.build_params()) == (CPU_ONLY, {})
    dense = DenseflowFlow("tvl1", str(silent))
    assert (dense.runs_on, dense.build_params()) == (CUDA_ONLY, {})
