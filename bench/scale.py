"""Benchmark: what a Kinetics-700-sized root costs the driver, and what a re-run costs.

1. build-lists on a root of N placeholder clips (default 650,000, Kinetics-700's size) in the
   Kinetics layout (Kinetics-600's tree: videos_train|val/<class>/, videos_test/). The
   annotation CSVs are made from the real rows in ../shared/data: the train CSV is Kinetics-600
   val rows repeated with their YouTube ids made unique (`<id>-r<k>`), val is the real K600 val
   CSV, test the real K600 test CSV. First run (no manifest) and a second run with nothing
   changed: wall time and peak RSS, against the peak RSS of build-lists on a root of 6 clips
   (the interpreter and its libraries).
2. extract --task rgb on a root of M tiny real clips (default 20,000 hard links to a 16-frame
   64x48 cut of a real clip, made with ffmpeg), then the same command again with nothing to
   do: wall times, and the manifest's bytes per row.
3. those frames packed (`datatools pack`), then build-lists --format rawframes twice: the first
   reads every pack, the second, with nothing changed, must be answered from the manifest as a
   folder root's is. Times net of start-up: the time of build-lists on the 6-clip root with
   nothing changed (the interpreter, its imports, a manifest of 6 rows).

    python bench/scale.py [--clips 650000] [--extracted 20000] [--workers 2] [--out bench/out]
    python bench/scale.py --only packed [--extracted 20000]     # part 3 alone

Every command runs as a separate process, start-up included; RSS is the process's own peak
(getrusage of the child).
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from conftest import ANN, VIDEOS  # noqa: E402
from trees import PLACEHOLDER, ucf101_style_root  # noqa: E402

DATATOOLS = str(Path(sys.executable).parent / "datatools")
HEADER = ["label", "youtube_id", "time_start", "time_end", "split"]


EXTRACT_DRIVER = """
import resource, sys
from pathlib import Path
from datatools.extract.options import ExtractOptions
from datatools.extract.run import extract
from datatools.schedule.client import ClusterOptions
result = extract(Path(sys.argv[1]), ExtractOptions(task="rgb"),
                 cluster=ClusterOptions(workers=int(sys.argv[2]), fork=True))
assert not result.failures, result.failures[:3]
use = resource.getrusage(resource.RUSAGE_SELF)
print("driver-cpu", use.ru_utime + use.ru_stime, dict(result.counts))
"""


def measured(cmd: list[str]) -> tuple[float, int, str]:
    """(seconds, peak RSS in bytes, output) of one command, run in a fresh helper so that
    RUSAGE_CHILDREN holds this command's peak alone."""
    helper = ("import resource, subprocess, sys, time\n"
              "t = time.perf_counter()\n"
              "p = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
              "t = time.perf_counter() - t\n"
              "print(t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024, p.returncode)\n"
              "sys.stderr.write(p.stdout[-3000:] + p.stderr[-3000:])\n")
    proc = subprocess.run([sys.executable, "-c", helper, *cmd], capture_output=True, text=True)
    seconds, rss, rc = proc.stdout.split()
    if rc != "0":
        raise SystemExit(f"{' '.join(cmd)} exited {rc}:\n{proc.stderr}")
    return float(seconds), int(rss), proc.stderr


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def kinetics_tree(root: Path, clips: int) -> int:
    """A Kinetics-600-layout root of `clips` placeholder videos; returns the number made."""
    ann = root / "annotations"
    ann.mkdir(parents=True)
    val = _rows(ANN / "kinetics600/kinetics-600_val.csv")
    test = _rows(ANN / "kinetics600/kinetics-600_test.csv")
    val, test = val[:max(1, min(len(val), clips // 3))], test[:max(1, min(len(test), clips // 3))]
    n_train = max(1, clips - len(val) - len(test))
    train = [dict(val[i % len(val)], split="train",
                  youtube_id=f"{val[i % len(val)]['youtube_id']}-r{i // len(val)}")
             for i in range(n_train)]
    for name, rows, header in (("kinetics_train.csv", train, HEADER),
                               ("kinetics_val.csv", val, HEADER),
                               ("kinetics_test.csv", test, list(test[0].keys()))):
        with open(ann / name, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=header, extrasaction="ignore")
            w.writeheader()
            w.writerows(rows)
    made = 0
    folders = set()
    for subset, rows in (("train", train), ("val", val), ("test", test)):
        for r in rows:
            name = f"{r['youtube_id']}_{int(float(r['time_start'])):06d}_{int(float(r['time_end'])):06d}.mp4"
            folder = root / f"videos_{subset}" / (r["label"].replace(" ", "_") if subset != "test" else "")
            if folder not in folders:
                folder.mkdir(parents=True, exist_ok=True)
                folders.add(folder)
            (folder / name).write_bytes(PLACEHOLDER)
            made += 1
    return made


def tiny_clip(out: Path) -> Path:
    """A 16-frame 64x48 cut of a real clip (real decoding, tiny work)."""
    clip = out / "tiny.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(VIDEOS / "bikes.mp4"), "-frames:v", "16",
                    "-vf", "scale=64:48", "-an", "-c:v", "libx264", "-pix_fmt", "yuv420p", str(clip)],
                   check=True)
    return clip


def copies_root(base: Path, clip: Path, n: int) -> Path:
    rels = [f"C{i % 100:03d}/v_C{i % 100:03d}_g{i:06d}_c01.mp4" for i in range(n)]
    root = ucf101_style_root(base, dict.fromkeys(rels))
    for rel in rels:
        dest = root / "videos" / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.link(clip, dest)
    return root


def gib(n: float) -> str:
    return f"{n / 2**30:.2f}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clips", type=int, default=650_000)
    ap.add_argument("--extracted", type=int, default=20_000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", type=Path, default=HERE / "out" / "scale")
    ap.add_argument("--only", choices=("all", "packed"), default="all")
    args = ap.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)

    tiny_root = args.out / "tiny-k600"
    kinetics_tree(tiny_root, 6)
    _, base_rss, _ = measured([DATATOOLS, "kinetics600", "build-lists", "--root", str(tiny_root)])
    if args.only == "packed":
        packed_rerun(args, tiny_root)
        return

    t0 = time.perf_counter()
    root = args.out / "k700-sized"
    made = kinetics_tree(root, args.clips)
    print(f"made {made} placeholder clips in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    cmd = [DATATOOLS, "kinetics600", "build-lists", "--root", str(root)]
    first = measured(cmd)
    second = measured(cmd)
    manifest = (root / "manifest.parquet").stat().st_size

    clip = tiny_clip(args.out)
    ext_root = copies_root(args.out / "extracted", clip, args.extracted)
    measured([DATATOOLS, "ucf101", "build-lists", "--root", str(ext_root)])
    # The driver in a process of its own (as the console command: forked local workers), which
    # reports its own CPU time: the driver's and the in-process scheduler's, not the workers'.
    ext = [sys.executable, "-c", EXTRACT_DRIVER, str(ext_root), str(args.workers)]
    ext_first = measured(ext)
    ext_second = measured(ext)
    cpu_first, cpu_second = (float(out.split("driver-cpu ")[1].split()[0])
                             for _, _, out in (ext_first, ext_second))

    print(f"\nscale, {args.workers} workers (this machine: {os.cpu_count()} cores)\n")
    print("| run | videos | first (s) | second, nothing changed (s) | second / first | "
          "peak RSS first / second (GiB) | above the interpreter (GiB) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    print(f"| build-lists | {made} | {first[0]:.1f} | {second[0]:.1f} | {second[0] / first[0]:.0%} | "
          f"{gib(first[1])} / {gib(second[1])} | {gib(max(first[1], second[1]) - base_rss)} |")
    print(f"| extract --task rgb | {args.extracted} | {ext_first[0]:.1f} | {ext_second[0]:.1f} | "
          f"{ext_second[0] / ext_first[0]:.0%} | {gib(ext_first[1])} / {gib(ext_second[1])} | "
          f"{gib(max(ext_first[1], ext_second[1]) - base_rss)} |")
    print(f"\ndriver CPU (driver, client and scheduler threads) of the first extract: "
          f"{cpu_first:.1f} s, {1000 * cpu_first / args.extracted:.2f} ms per video "
          f"({args.extracted / ext_first[0]:.0f} videos/s); of the re-run: {cpu_second:.1f} s")
    print(f"\ninterpreter + libraries (build-lists of 6 clips): {gib(base_rss)} GiB peak RSS")
    print(f"manifest: {manifest / made:.0f} bytes per row ({manifest / 2**20:.0f} MiB for {made} rows)")
    packed_rerun(args, tiny_root, ext_root)


def packed_rerun(args, tiny_root: Path, ext_root: Path | None = None) -> None:
    """Part 3: build-lists of a packed root, then again with nothing changed."""
    if ext_root is None:
        ext_root = copies_root(args.out / "extracted", tiny_clip(args.out), args.extracted)
        measured([DATATOOLS, "ucf101", "build-lists", "--root", str(ext_root)])
        done = measured([sys.executable, "-c", EXTRACT_DRIVER, str(ext_root), str(args.workers)])
        assert "driver-cpu" in done[2], done[2][-2000:]
    pack = measured([DATATOOLS, "pack", "--root", str(ext_root)])
    packs = sum(1 for _ in (ext_root / "rawframes").rglob("*.zip"))
    assert packs == args.extracted, pack[2][-2000:]
    startup = statistics.median(
        measured([DATATOOLS, "kinetics600", "build-lists", "--root", str(tiny_root)])[0] for _ in range(3))
    cmd = [DATATOOLS, "ucf101", "build-lists", "--root", str(ext_root), "--format", "rawframes"]
    first = measured(cmd)
    seconds = sorted(measured(cmd)[0] for _ in range(3))
    second = statistics.median(seconds)
    net_first, net_second = first[0] - startup, max(second - startup, 0.0)
    print(f"\npacked root, {args.extracted} videos (one pack each): build-lists --format rawframes\n")
    print("| run | wall (s) | net of start-up (s) |")
    print("|---|---:|---:|")
    print(f"| start-up (build-lists, 6 rows, median of 3) | {startup:.2f} | |")
    print(f"| first (reads every pack) | {first[0]:.2f} | {net_first:.2f} |")
    print(f"| second, nothing changed (median of 3: {', '.join(f'{t:.2f}' for t in seconds)}) "
          f"| {second:.2f} | {net_second:.2f} |")
    print(f"\nsecond / first, net of start-up: {net_second / net_first:.1%} (bar: at most 25 %)")


if __name__ == "__main__":
    main()
