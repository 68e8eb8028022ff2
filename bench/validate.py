"""Benchmark: `datatools validate` vs ffprobe (quick) and vs a bare decord decode loop (full).

Files: N copies (hard links where the file system allows; the content is read all the same) of
the six real videos in ../shared/data/videos, laid out as a UCF101-style root.
  - quick: `datatools ucf101 validate --level quick --workers P` vs `ffprobe -show_streams
    -show_format` once per file, P at a time (xargs -P);
  - full: `datatools ucf101 validate --level full --workers P` vs P processes each running a
    plain `decord.VideoReader` + `next()` loop over its share of the files.
Worker memory (RSS, all worker processes summed) is sampled during the validate runs; the
table reports the peak in the first and the last fifth of each run.

    python bench/validate.py [--files 2000] [--full-files 480] [--workers 2] [--repeat 3]

The fixed cost of a run (interpreter, imports, starting the local cluster, writing the
manifest) is measured on a 6-file root and reported separately.

With `--against REV` (a git revision of this repository, e.g. the commit before a change), a
third table: quick validate of `--tiny-files` hard links to a tiny real clip (16 frames,
64x48, cut from bikes.mp4 with ffmpeg), this checkout against REV's code (a git worktree run
with the same interpreter), alternating, same root.

    python bench/validate.py --against 98bebaa --tiny-files 20000 --only tiny
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from multiprocessing import Pool
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from conftest import VIDEOS  # noqa: E402
from trees import ucf101_style_root  # noqa: E402

REAL = ["test.avi", "test.mp4", "demo.mp4", "short_32f.mp4", "bikes.mp4", "demo_skeleton.mp4"]


def make_root(base: Path, n: int) -> tuple[Path, list[Path]]:
    files = {}
    for i in range(n):
        name = REAL[i % len(REAL)]
        files[f"C{i % 10}/v_C{i % 10}_g{i:05d}_c01{Path(name).suffix}"] = None
    root = ucf101_style_root(base, files)
    paths = []
    for i, rel in enumerate(files):
        dest = root / "videos" / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        src = VIDEOS / REAL[i % len(REAL)]
        try:
            os.link(src, dest)
        except OSError:
            shutil.copy(src, dest)
        paths.append(dest)
    return root, paths


class RssSampler:
    """Sums the RSS of every descendant process every 0.2 s."""

    def __init__(self):
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for p in me.children(recursive=True):
                try:
                    total += p.memory_info().rss
                except psutil.Error:
                    pass
            self.samples.append((time.perf_counter(), total))
            time.sleep(0.2)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def first_last_peak(self) -> tuple[int, int]:
        if len(self.samples) < 5:
            return 0, 0
        t0, t1 = self.samples[0][0], self.samples[-1][0]
        span = (t1 - t0) / 5
        first = max(r for t, r in self.samples if t <= t0 + span)
        last = max(r for t, r in self.samples if t >= t1 - span)
        return first, last


def run_validate(root: Path, level: str, workers: int,
                 code: Path | None = None) -> tuple[float, tuple[int, int]]:
    """One validate run from scratch; `code`: run that checkout's datatools instead."""
    (root / "manifest.parquet").unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "datatools", "ucf101", "validate", "--root",
           str(root), "--level", level, "--workers", str(workers), "--strict"]
    env = dict(os.environ, PYTHONPATH=str(code)) if code else None
    with RssSampler() as rss:
        t0 = time.perf_counter()
        # cwd: not this checkout (`-m` puts the cwd first on sys.path)
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=root.parent)
        elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"validate failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return elapsed, rss.first_last_peak()


def run_ffprobe(paths: list[Path], workers: int) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(["xargs", "-0", "-n", "1", "-P", str(workers), "ffprobe", "-v", "error",
                           "-show_streams", "-show_format"],
                          input="\0".join(map(str, paths)).encode(), capture_output=True)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr.decode()[-2000:])
    return time.perf_counter() - t0


def decode_all(paths: list[str]) -> int:
    import decord
    frames = 0
    for p in paths:
        vr = decord.VideoReader(p, num_threads=1)
        for _ in range(len(vr)):
            vr.next()
            frames += 1
        del vr
    return frames


def run_bare_decord(paths: list[Path], workers: int) -> float:
    shares = [[str(p) for p in paths[i::workers]] for i in range(workers)]
    t0 = time.perf_counter()
    with Pool(workers) as pool:
        pool.map(decode_all, shares)
    return time.perf_counter() - t0


def worktree(rev: str, where: Path) -> Path:
    """A checkout of `rev` of this repository (git worktree), for running its code."""
    repo = HERE.parent
    subprocess.run(["git", "-C", str(repo), "worktree", "add", "--force", "--detach", str(where), rev],
                   check=True, capture_output=True)
    return where


def tiny_table(args) -> None:
    from scale import copies_root, tiny_clip
    base = args.out / "tiny-files"
    base.mkdir(parents=True, exist_ok=True)
    root = copies_root(base / "root", tiny_clip(base), args.tiny_files)
    then = worktree(args.against, args.out / f"rev-{args.against}")
    try:
        ours, theirs = [], []
        for _ in range(args.repeat):
            ours.append(run_validate(root, "quick", args.workers)[0])
            theirs.append(run_validate(root, "quick", args.workers, code=then)[0])
    finally:
        subprocess.run(["git", "-C", str(HERE.parent), "worktree", "remove", "--force", str(then)],
                       capture_output=True)
    mo, mt = statistics.median(ours), statistics.median(theirs)
    n = args.tiny_files
    print(f"\nquick validate of {n} tiny real clips, {args.workers} workers, medians of {args.repeat}\n")
    print("| code | seconds | files/s | ratio |\n|---|---:|---:|---:|")
    print(f"| {args.against} | {mt:.1f} | {n / mt:.0f} | 1.00x |")
    print(f"| this checkout | {mo:.1f} | {n / mo:.0f} | {mt / mo:.2f}x |")


def mib(n: int) -> str:
    return f"{n / 2**20:.0f}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=2000)
    ap.add_argument("--full-files", type=int, default=480)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", type=Path, default=HERE / "out" / "validate")
    ap.add_argument("--against", help="a git revision: also compare with its code (tiny clips)")
    ap.add_argument("--tiny-files", type=int, default=20000)
    ap.add_argument("--only", choices=["tiny"], help="run only that table")
    args = ap.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    if args.against:
        tiny_table(args)
    if args.only:
        return
    quick_root, quick_paths = make_root(args.out / "quick", args.files)
    full_root, full_paths = make_root(args.out / "full", args.full_files)
    tiny_root, _ = make_root(args.out / "tiny", len(REAL))
    fixed = statistics.median(run_validate(tiny_root, "quick", args.workers)[0]
                              for _ in range(args.repeat))

    def measure(root, level, baseline, paths):
        """(our times, baseline times, RSS samples), ours and the baseline alternating."""
        ours, base, rss = [], [], []
        for _ in range(args.repeat):
            t, r = run_validate(root, level, args.workers)
            ours.append(t)
            rss.append(r)
            base.append(baseline(paths, args.workers))
        return ours, base, rss

    q_ours, q_ff, q_rss = measure(quick_root, "quick", run_ffprobe, quick_paths)
    f_ours, f_bare, f_rss = measure(full_root, "full", run_bare_decord, full_paths)
    mq, mf = statistics.median(q_ours), statistics.median(q_ff)
    mo, mb = statistics.median(f_ours), statistics.median(f_bare)
    print(f"\nvalidate, {args.workers} workers, medians of {args.repeat}\n")
    print("| run | files | datatools (s) | files/s | baseline | baseline (s) | files/s | ratio |")
    print("|---|---:|---:|---:|---|---:|---:|---:|")
    print(f"| quick | {args.files} | {mq:.1f} | {args.files / mq:.0f} | ffprobe per file | {mf:.1f} "
          f"| {args.files / mf:.0f} | {mf / mq:.2f}x throughput |")
    print(f"| full | {args.full_files} | {mo:.1f} | {args.full_files / mo:.1f} | bare decord loop "
          f"| {mb:.1f} | {args.full_files / mb:.1f} | {100 * (mo / mb - 1):+.1f} % time |")
    print(f"\nfixed cost of a validate run (6-file root, start-up to exit): {fixed:.2f} s")
    print("\nworker RSS, all workers summed (MiB): peak in the first fifth -> last fifth of each run")
    for name, samples in (("quick", q_rss), ("full", f_rss)):
        print(f"- {name}: " + "; ".join(f"{mib(a)} -> {mib(b)}" for a, b in samples))


if __name__ == "__main__":
    main()
