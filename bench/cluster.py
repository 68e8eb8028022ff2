"""Benchmark: TV-L1 extraction on 1 and 2 local workers, and on 2 workers started as SLURM jobs.

    python bench/cluster.py [--clips 4] [--repeat 3]
    python bench/cluster.py --bare 12      # only: the bare TV-L1 loop in 1 and in 2 processes

Work: `--clips` copies (hard links) of one clip of 11 frames at 340x256 cut from test.mp4
(10 pairs each; copies, so that every video costs the same: TV-L1 stops early where it
converges, so different clips differ in cost and 4 unequal videos cannot split evenly over
2 workers, which would measure the split rather than the scaling), through
`datatools extract --task flow --algo tvl1` with `--workers 1`, `--workers 2`, and
`--cluster slurm --slurm jobs=2` against a one-node SLURM started here the way the tests
start it (tests/slurm.py: munged, slurmctld, slurmd of slurm-wlm). Every run writes a new
root. The SLURM figure includes submitting the worker jobs and their start-up.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from conftest import VIDEOS  # noqa: E402
from extract import BIN, make_root, timed  # noqa: E402
from slurm import Slurm, available  # noqa: E402


def bare_loop(pairs: int) -> float:
    """OpenCV TV-L1 on the first `pairs` pairs of test.mp4, one thread, no datatools around."""
    import time

    import cv2

    from datatools.extract.frames import iter_frames, to_gray
    from datatools.extract.tvl1 import TVL1
    cv2.setNumThreads(1)
    tvl1 = cv2.optflow.DualTVL1OpticalFlow_create(**TVL1.opencv_kwargs())
    frames = []
    for frame in iter_frames(str(VIDEOS / "test.mp4")):
        frames.append(to_gray(frame))
        if len(frames) > pairs:
            break
    t0 = time.perf_counter()
    for a, b in zip(frames, frames[1:]):
        tvl1.calc(a, b, None)
    return time.perf_counter() - t0


def bare_scaling(pairs: int) -> None:
    """What the machine itself gives: the same loop in one process, then in two at once."""
    from multiprocessing import Pool
    with Pool(1) as pool:
        one = pool.map(bare_loop, [pairs])[0]
    with Pool(2) as pool:
        two = pool.map(bare_loop, [pairs, pairs])
    print(f"bare TV-L1, {pairs} pairs per process: 1 process {one:.1f} s; 2 at once "
          f"{two[0]:.1f} s, {two[1]:.1f} s; scaling {2 * one / max(two):.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", type=Path, default=HERE / "out" / "cluster")
    ap.add_argument("--bare", type=int, default=0, help="only run the bare loop scaling, N pairs")
    args = ap.parse_args()
    if args.bare:
        bare_scaling(args.bare)
        return
    if not available():
        sys.exit("slurm-wlm and munge are needed (apt-get install slurm-wlm munge)")
    args.out.mkdir(parents=True, exist_ok=True)
    out = Path(tempfile.mkdtemp(dir=args.out))
    clip = out / "clips" / "clip.mp4"
    clip.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(VIDEOS / "test.mp4"), "-frames:v", "11",
                    "-c:v", "libx264", "-crf", "18", "-an", str(clip)], check=True)
    videos = {f"v_Bench_g{k + 1:02d}_c01.mp4": clip for k in range(args.clips)}
    pairs = 10 * args.clips
    slurm = Slurm(out / "slurm")
    try:
        env = dict(os.environ, SLURM_CONF=str(slurm.conf))
        cases = {"local, 1 worker": ["--workers", "1"], "local, 2 workers": ["--workers", "2"],
                 "SLURM, 2 worker jobs": ["--cluster", "slurm", "--slurm", "jobs=2",
                                          "--slurm", "memory=1GB"]}
        times: dict[str, list[float]] = {name: [] for name in cases}
        for rep in range(args.repeat):
            for n, (name, extra) in enumerate(cases.items()):
                root = make_root(out / f"run{rep}_{n}", videos)
                times[name].append(timed([str(BIN / "datatools"), "extract", "--root", str(root),
                                          "--task", "flow", "--algo", "tvl1", *extra], env=env))
                print(f"  run {rep + 1}, {name}: {times[name][-1]:.1f} s", flush=True)
        workers = [j for j in slurm.finished_jobs() if j.get("Name") == "datatools-worker"]
    finally:
        slurm.stop()
    m = {name: statistics.median(t) for name, t in times.items()}
    one, two, sl = m["local, 1 worker"], m["local, 2 workers"], m["SLURM, 2 worker jobs"]
    print(f"\nTV-L1, {pairs} pairs at 340x256, medians of {args.repeat}; "
          f"{len(workers)} SLURM worker jobs ran")
    print(f"{'case':<24}{'seconds':>9}{'pairs/s':>9}")
    for name, t in m.items():
        print(f"{name:<24}{t:>9.1f}{pairs / t:>9.2f}")
    print(f"2 workers / 1 worker (local): {one / two:.2f}x")
    print(f"SLURM-started vs local workers (2 each): {100 * (sl / two - 1):+.1f} % time "
          f"({sl - two:+.1f} s)")


if __name__ == "__main__":
    main()
