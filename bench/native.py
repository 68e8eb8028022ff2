"""Benchmark: `--backend native` (datatools-flow, C++) vs the Python `opencv` backend.

    python bench/native.py [--repeat 3] [--work rgb,tvl1] [--no-alone]

Both through `datatools extract --workers 2` on the same files, every run into a new root (a
previous run's output is deleted first, see fresh_output in bench/extract.py):
  rgb    20 x test.avi + 20 x test.mp4 (hard links; 9,280 frames), --task rgb;
  tvl1   4 clips of 11 frames at 340x256 cut from test.mp4 (40 pairs), --task flow.
Where the time goes: the extractor alone on the same files, two processes at a time with one
thread each (what a worker runs), and with its thread pipeline on both cores for one process.
The two backends alternate which goes first, and besides the ratio of the medians the table
gives the median of the per-run ratios: this machine's speed drifts by tens of percent within
minutes, and runs next to each other see the same machine. Needs `make native` first.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE))

from conftest import VIDEOS  # noqa: E402
from extract import BIN, cut_clips, fresh_output, make_root, timed  # noqa: E402

NATIVE = HERE.parent / "native" / "build" / "datatools-flow"


def tool_alone(videos: list[Path], out: Path, algo: str, rgb: bool, processes: int, threads: int) -> float:
    """The extractor on every video, `processes` at a time, no datatools around it."""
    args = ["-a", algo, "-s", "0" if rgb else "1", "--threads", str(threads)]
    if not rgb:
        args.append("--flow-only")

    def one(video: Path) -> None:
        subprocess.run([str(NATIVE), str(video), "-o", str(out / video.stem), *args], check=True,
                       capture_output=True)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(processes) as pool:
        list(pool.map(one, videos))
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--work", default="rgb,tvl1")
    ap.add_argument("--out", type=Path, default=HERE / "out" / "native")
    ap.add_argument("--no-alone", action="store_true", help="skip the extractor-alone columns")
    args = ap.parse_args()
    if not NATIVE.exists():
        sys.exit("run `make native` first")
    fresh_output(args.out)  # earlier runs' output (they kept adding 2-3 GB each)
    out = args.out
    rgb_videos = {f"v_Bench_g{i:02d}_c01{src.suffix}": src for i, src in
                  enumerate([VIDEOS / "test.avi"] * 20 + [VIDEOS / "test.mp4"] * 20, 1)}
    clips = cut_clips(out / "clips", 4)
    work = {"rgb": (rgb_videos, ["--task", "rgb"], 9280, "frames"),
            "tvl1": (clips, ["--task", "flow", "--algo", "tvl1"], 40, "pairs")}
    rows = []
    for name, (videos, task, units, unit) in work.items():
        if name not in args.work.split(","):
            continue
        t = {"opencv": [], "native": [], "alone 2x1": [], "alone 1x2": []}
        for rep in range(args.repeat):
            for backend in ("opencv", "native")[::1 if rep % 2 == 0 else -1]:
                root = make_root(out / f"{name}_{backend}_{rep}", videos)
                t[backend].append(timed([str(BIN / "datatools"), "extract", "--root", str(root), *task,
                                         "--backend", backend, "--workers", "2"]))
            paths = sorted((out / f"{name}_opencv_{rep}" / "videos" / "Bench").iterdir())
            algo = "farn" if name == "rgb" else "tvl1"
            if not args.no_alone:
                for key, procs, threads in (("alone 2x1", 2, 1), ("alone 1x2", 1, 2)):
                    t[key].append(tool_alone(paths, out / f"{name}_{key[-3:]}_{rep}", algo, name == "rgb",
                                             procs, threads))
            print(f"  {name} run {rep + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in t.items() if v),
                  flush=True)
        m = {k: statistics.median(v) if v else float("nan") for k, v in t.items()}
        m["per-run"] = statistics.median(a / b for a, b in zip(t["opencv"], t["native"]))
        rows.append((name, units, unit, m))
    print(f"\nmedians of {args.repeat}, 2 cores")
    print(f"{'work':<6}{'units':>7} {'opencv backend':>16}{'native backend':>16}{'native/opencv':>15}"
          f"{'median per-run ratio':>22}{'tool alone 2x1 thread':>23}{'tool alone 1x2 threads':>24}")
    for name, units, unit, m in rows:
        print(f"{name:<6}{units:>7} {units / m['opencv']:>10.1f} {unit}/s "
              f"{units / m['native']:>9.1f} {unit}/s{m['opencv'] / m['native']:>14.2f}x"
              f"{m['per-run']:>21.2f}x"
              f"{units / m['alone 2x1']:>16.1f} {unit}/s"
              f"{units / m['alone 1x2']:>17.1f} {unit}/s")


if __name__ == "__main__":
    main()
