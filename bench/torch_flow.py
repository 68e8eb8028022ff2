"""Benchmark: the `torch` TV-L1 backend, flow only and end to end, against OpenCV's CPU TV-L1.

    python bench/torch_flow.py [--device cuda|cpu] [--batches 8,32,128,256] [--videos 32]

  flow only   pairs/s of TorchFlow.compute_batch on 340x256 gray pairs from test.mp4, per batch
              size, after a warm-up; peak GPU memory per batch size (CUDA);
  end to end  `datatools extract --task flow --backend torch` on --videos copies of --clip
              (test.mp4: 300 frames, 299 pairs each), pairs/s of the whole command, and its ratio to the
              best flow-only rate (target >= 70 %); with CUDA on a cluster of one worker per GPU
              (what `--gpus all` starts), started beforehand and passed as --scheduler, so the
              figure holds the command's own start-up but not the cluster's; then what the
              workers' batchers did (batches, pairs per batch, batches mixing videos);
  baseline    OpenCV's CPU TV-L1, one process per core, on the same pairs (pairs/s).
Prints the device it ran on. Without CUDA it runs on the CPU (slow; for checking the script).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from multiprocessing import Pool
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE.parent))

from conftest import VIDEOS  # noqa: E402
from trees import ucf101_style_root  # noqa: E402

BIN = Path(sys.executable).parent


def gray_frames(count: int):
    from datatools.extract.frames import iter_frames, to_gray
    frames = []
    for frame in iter_frames(str(VIDEOS / "test.mp4")):
        frames.append(to_gray(frame))
        if len(frames) >= count:
            break
    return frames


def opencv_worker(args) -> int:
    import cv2

    from datatools.extract.tvl1 import TVL1
    cv2.setNumThreads(1)
    tvl1 = cv2.optflow.DualTVL1OpticalFlow_create(**TVL1.opencv_kwargs())
    frames = gray_frames(args + 1)
    for a, b in zip(frames, frames[1:]):
        tvl1.calc(a, b, None)
    return args


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default=None)
    ap.add_argument("--batches", default="8,32,128,256")
    ap.add_argument("--videos", type=int, default=32)
    ap.add_argument("--clip", default="test.mp4", help="video in ../shared/data/videos for end to end")
    ap.add_argument("--opencv-pairs", type=int, default=8, help="pairs per CPU core for the baseline")
    args = ap.parse_args()
    import torch

    from datatools.extract.backends.torch_flow import TorchFlow
    backend = TorchFlow("tvl1", device=args.device)
    device = backend.device
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device: {device} ({name}); torch {torch.__version__}", flush=True)
    frames = gray_frames(257)
    pairs = list(zip(frames, frames[1:]))
    rows = []
    for batch in [int(b) for b in args.batches.split(",")]:
        work = (pairs * ((batch // len(pairs)) + 1))[:batch]
        backend.compute_batch(work[: min(batch, 4)])  # warm-up (kernels, allocator)
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats(device)
        t0 = time.perf_counter()
        backend.compute_batch(work)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
        peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
        rows.append((batch, batch / seconds, peak))
        print(f"  batch {batch}: {batch / seconds:.1f} pairs/s, peak {peak:.2f} GiB", flush=True)
    best = max(r[1] for r in rows)

    out = Path(tempfile.mkdtemp(dir=HERE / "out" if (HERE / "out").exists() else None))
    from datatools.extract.backends.external import count_frames
    pairs_per_video = count_frames(str(VIDEOS / args.clip)) - 1
    files = {f"Bench/v_Bench_g{i:02d}_c01{Path(args.clip).suffix}": str(VIDEOS / args.clip)
             for i in range(1, args.videos + 1)}
    root = ucf101_style_root(out / "root", files)
    subprocess.run([str(BIN / "datatools"), "ucf101", "build-lists", "--root", str(root)], check=True,
                   capture_output=True)
    from datatools.extract.batcher import batch_stats
    from datatools.schedule.client import ClusterOptions, dask_client
    from datatools.schedule.resources import visible_gpus
    gpus = visible_gpus() if device.type == "cuda" else []
    with dask_client(ClusterOptions(workers=1 if gpus else None, gpus=gpus)) as client:
        cmd = [str(BIN / "datatools"), "extract", "--root", str(root), "--task", "flow", "--backend",
               "torch", "--scheduler", client.scheduler_info()["address"]]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        end_to_end = pairs_per_video * args.videos / (time.perf_counter() - t0)
        stats = Counter()
        for worker_stats in client.run(batch_stats).values():
            stats.update(worker_stats)

    cores = len(os.sched_getaffinity(0))
    t0 = time.perf_counter()
    with Pool(cores) as pool:
        done = sum(pool.map(opencv_worker, [args.opencv_pairs] * cores))
    opencv_rate = done / (time.perf_counter() - t0)

    print(f"\nTV-L1 at 340x256 on {device} ({name})")
    print(f"{'batch':>6}{'pairs/s':>10}{'peak GiB':>10}")
    for batch, rate, peak in rows:
        print(f"{batch:>6}{rate:>10.1f}{peak:>10.2f}")
    print(f"end to end (extract --backend torch, {args.videos} x {pairs_per_video} pairs): "
          f"{end_to_end:.1f} pairs/s "
          f"= {100 * end_to_end / best:.0f} % of the best flow-only rate")
    print(f"batchers: {stats['batches']} batches, {stats['pairs'] / max(1, stats['batches']):.1f} pairs "
          f"per batch, {stats['mixed_batches']} holding pairs of several videos, "
          f"{stats['splits']} halved for memory")
    print(f"OpenCV CPU TV-L1, {cores} processes: {opencv_rate:.2f} pairs/s; "
          f"torch best / OpenCV: {best / opencv_rate:.1f}x")


if __name__ == "__main__":
    main()
