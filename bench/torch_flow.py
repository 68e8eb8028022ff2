"""Benchmark: the `torch` TV-L1 backend against OpenCV's TV-L1, flow only and end to end.

    python bench/torch_flow.py                      # everything, on CUDA where it exists
    python bench/torch_flow.py --only fusion        # the one-thread CPU comparison

  fusion      one CPU thread, the same --pairs real 340x256 pairs (test.mp4, bikes.mp4,
              demo.mp4): pairs/s of OpenCV's DualTVL1, of the torch backend with its fused
              (torch.compile) steps and with the same steps uncompiled, and with --against REV
              the torch backend of that commit (from a git worktree); medians of --repeat
              runs, the ratio to OpenCV in the same run; and the inner iterations the batch
              computed against the sum of the pairs' own counts and against lockstep.
              A proxy for the GPU: it shows the work per pixel and the work per batch, not
              launch overhead, memory bandwidth or host/device overlap.
  flow only   (--device cuda) pairs/s of compute_batch_quantized on 340x256 pairs, per batch
              size from 32 to the size batch_size() chooses; peak GPU memory (and per pixel
              of a pair); share of the time the GPU runs kernels (torch.profiler).
  end to end  (--device cuda) `datatools extract --task flow --backend torch` on --videos
              copies of --clip, frames/s and pairs/s of the whole command, and its ratio to the
              best flow-only rate (target >= 70 %), on a cluster of one worker per GPU started
              beforehand; then what the workers' batchers did.
  baseline    OpenCV's CPU TV-L1, one process per core, pairs/s.
The whole run stays under 5 minutes on a GPU machine. Prints the device each figure came from.
"""

from __future__ import annotations

import argparse
import os
import statistics
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
from revision import import_at  # noqa: E402
from trees import ucf101_style_root  # noqa: E402

BIN = Path(sys.executable).parent
SIZE = (340, 256)
CLIPS = ("test.mp4", "bikes.mp4", "demo.mp4")


def gray_pairs(count: int, clips=CLIPS, every: int = 5):
    """`count` real pairs at 340x256, taken in turn from `clips`, one every `every` frames."""
    from datatools.extract.frames import iter_frames, resize, to_gray
    per_clip = -(-count // len(clips))
    pairs = []
    for name in clips:
        prev, taken = None, 0
        for i, frame in enumerate(iter_frames(str(VIDEOS / name))):
            gray = to_gray(resize(frame, SIZE))
            if prev is not None and (i - 1) % every == 0:
                pairs.append((prev, gray))
                taken += 1
                if taken == per_clip:
                    break
            prev = gray
    return pairs[:count]


def opencv_rate(pairs) -> float:
    import cv2

    from datatools.extract.tvl1 import TVL1
    cv2.setNumThreads(1)
    tvl1 = cv2.optflow.DualTVL1OpticalFlow_create(**TVL1.opencv_kwargs())
    t0 = time.perf_counter()
    for a, b in pairs:
        tvl1.calc(a, b, None)
    return len(pairs) / (time.perf_counter() - t0)


def torch_rate(backend, pairs) -> float:
    t0 = time.perf_counter()
    backend.compute_batch_quantized(pairs, 20.0)
    return len(pairs) / (time.perf_counter() - t0)


def old_backend(rev: str):
    """The torch backend of commit `rev`, imported from a git worktree under bench/out."""
    return import_at(rev, "datatools.extract.backends.torch_flow").TorchFlow("tvl1", device="cpu")


def fusion(args) -> None:
    """One thread: OpenCV vs the torch backend (fused, uncompiled, and an older commit)."""
    import torch

    from datatools.extract.backends import tvl1_kernels
    from datatools.extract.backends.torch_flow import TorchFlow
    torch.set_num_threads(1)
    pairs = gray_pairs(args.pairs)
    backends = {"torch fused": TorchFlow("tvl1", device="cpu"),
                "torch uncompiled": TorchFlow("tvl1", device="cpu", steps=tvl1_kernels.eager())}
    if args.against:
        backends[f"torch at {args.against}"] = old_backend(args.against)
    for backend in backends.values():  # compile, warm the allocator
        backend.compute_batch_quantized(pairs[:2], 20.0)
        backend.compute_batch_quantized(pairs[:1], 20.0)
    rates: dict[str, list[float]] = {"opencv DualTVL1": []}
    rates.update({name: [] for name in backends})
    work = Counter()
    for r in range(args.repeat):
        rates["opencv DualTVL1"].append(opencv_rate(pairs))
        for name, backend in backends.items():
            before = Counter(getattr(backend, "stats", {}))
            rates[name].append(torch_rate(backend, pairs))
            if name == "torch fused" and r == 0:
                work = Counter(backend.stats)
                work.subtract(before)
        print(f"  run {r + 1}: " + ", ".join(f"{k} {v[-1]:.3f}" for k, v in rates.items()), flush=True)
    base = statistics.median(rates["opencv DualTVL1"])
    print(f"\nTV-L1, one CPU thread, {len(pairs)} real pairs at {SIZE[0]}x{SIZE[1]}, "
          f"median of {args.repeat} runs ({cpu_name()})")
    print(f"{'':<24}{'pairs/s':>10}{'s/pair':>10}{'x OpenCV':>10}")
    for name, values in rates.items():
        rate = statistics.median(values)
        print(f"{name:<24}{rate:>10.3f}{1 / rate:>10.2f}{rate / base:>10.2f}")
    if work:
        print(f"inner iterations of the batch (full-resolution equivalents): computed "
              f"{work['computed']:.0f}, pairs' own {work['own']:.0f} "
              f"({work['computed'] / work['own']:.3f}x), lockstep {work['lockstep']:.0f} "
              f"({work['lockstep'] / work['own']:.2f}x)")


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "CPU"


def busy_share(backend, pairs) -> str:
    """Share of one batch's wall time in which the GPU ran kernels (torch.profiler)."""
    import torch
    try:
        from torch.profiler import ProfilerActivity, profile
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            t0 = time.perf_counter()
            backend.compute_batch_quantized(pairs, 20.0)
            torch.cuda.synchronize()
            wall = time.perf_counter() - t0
        kernels = sum(e.device_time_total for e in prof.key_averages()) / 1e6
        return f"{100 * min(1.0, kernels / wall):.0f} %"
    except Exception as exc:  # noqa: BLE001 - a figure we could not take is said, not guessed
        return f"n/a ({type(exc).__name__}: {exc})"


def gpu(args) -> None:
    import torch

    from datatools.extract.backends.torch_flow import TorchFlow
    backend = TorchFlow("tvl1", device=args.device)
    device = backend.device
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    print(f"device: {device} ({name}); torch {torch.__version__}", flush=True)
    chosen = backend.batch_size(*SIZE)
    sizes = sorted({b for b in (32, 64, 128, 256) if b < chosen} | {chosen})
    pairs = gray_pairs(max(sizes), every=1)
    backend.compute_batch_quantized(pairs[:2], 20.0)  # compile, warm the allocator
    backend.compute_batch_quantized(pairs[:1], 20.0)
    rows = []
    for batch in sizes:
        work = pairs[:batch]
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats(device)
        rates = [torch_rate(backend, work) for _ in range(args.repeat)]
        peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else float("nan")
        rows.append((batch, statistics.median(rates), peak))
        print(f"  batch {batch}: {rows[-1][1]:.1f} pairs/s, peak {peak / 2**30:.2f} GiB", flush=True)
    best_batch, best, _ = max(rows, key=lambda r: r[1])
    busy = busy_share(backend, pairs[:best_batch]) if device.type == "cuda" else "n/a (CPU)"

    out = Path(tempfile.mkdtemp(dir=HERE / "out" if (HERE / "out").exists() else None))
    from datatools.extract.backends.external import count_frames
    frames_per_video = count_frames(str(VIDEOS / args.clip))
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
        seconds = time.perf_counter() - t0
        stats = Counter()
        for worker_stats in client.run(batch_stats).values():
            stats.update(worker_stats)
    end_pairs = (frames_per_video - 1) * args.videos / seconds
    end_frames = frames_per_video * args.videos / seconds

    cores = len(os.sched_getaffinity(0))
    cpu_pairs = gray_pairs(cores * args.opencv_pairs)
    t0 = time.perf_counter()
    with Pool(cores) as pool:
        pool.map(opencv_rate, [cpu_pairs[i::cores] for i in range(cores)])
    cpu_rate = len(cpu_pairs) / (time.perf_counter() - t0)

    print(f"\nTV-L1 at {SIZE[0]}x{SIZE[1]} on {device} ({name}); batch_size() chose {chosen}")
    print(f"{'batch':>6}{'pairs/s':>10}{'peak GiB':>10}{'B/pixel':>10}")
    for batch, rate, peak in rows:
        per_pixel = peak / (batch * SIZE[0] * SIZE[1])
        print(f"{batch:>6}{rate:>10.1f}{peak / 2**30:>10.2f}{per_pixel:>10.0f}")
    print(f"GPU busy during a batch of {best_batch}: {busy}")
    print(f"end to end (extract --backend torch, {args.videos} x {args.clip}): {end_frames:.1f} frames/s, "
          f"{end_pairs:.1f} pairs/s = {100 * end_pairs / best:.0f} % of the best flow-only rate")
    print(f"batchers: {stats['batches']} batches, {stats['pairs'] / max(1, stats['batches']):.1f} pairs "
          f"per batch, {stats['mixed_batches']} holding pairs of several videos, "
          f"{stats['splits']} halved for memory; inner iterations computed "
          f"{stats['computed'] / max(1, stats['own']):.3f}x the pairs' own (lockstep "
          f"{stats['lockstep'] / max(1, stats['own']):.2f}x)")
    print(f"OpenCV CPU TV-L1, {cores} processes ({cpu_name()}): {cpu_rate:.2f} pairs/s; "
          f"torch best / OpenCV: {best / cpu_rate:.1f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=["fusion", "gpu"], help="one part (default: both)")
    ap.add_argument("--device", default=None, help="cuda or cpu (default: cuda where it exists)")
    ap.add_argument("--pairs", type=int, default=12, help="pairs of the one-thread comparison")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--against", help="also time the torch backend of this commit (fusion)")
    ap.add_argument("--videos", type=int, default=16)
    ap.add_argument("--clip", default="test.mp4", help="video in ../shared/data/videos for end to end")
    ap.add_argument("--opencv-pairs", type=int, default=4, help="pairs per CPU core for the baseline")
    args = ap.parse_args()
    if args.only != "gpu":
        fusion(args)
    if args.only != "fusion":
        gpu(args)


if __name__ == "__main__":
    main()
