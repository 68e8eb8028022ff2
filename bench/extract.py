"""Benchmark: `datatools extract` against ffmpeg, MMAction2's build_rawframes.py and bare loops.

    python bench/extract.py [--part rss,rgb,flow] [--repeat 5] [--flow-repeat 3]

rgb   20 x test.avi + 20 x test.mp4 (hard links; 9,280 decoded frames), 2 workers / 2 at a time:
      `datatools extract --task rgb`, `ffmpeg -threads 1 -i V -q:v 2 img_%05d.jpg` (xargs -P 2),
      MMAction2's `build_rawframes.py --task rgb --use-opencv --num-worker 2 --mixed-ext`, and
      2 processes decoding only (OpenCV) and encoding only (the same frames, from memory).
      Every run writes into a new folder; a previous run's output is deleted before the first
      measurement and the benchmark then waits until file creation is fast again (fresh_output).
flow  TV-L1 on 6 clips of 11 frames at 340x256 cut from test.mp4 at test time (60 pairs);
      Farneback, 55 pairs/s, on whole videos: --farneback-videos links of test.mp4 (340x256,
      299 pairs each, the length of a UCF101 clip). Through `datatools extract --task flow`
      with 1 and 2 workers, against a bare single-thread loop (OpenCV decode, gray, calc).
rss   peak RSS of each worker on demo_skeleton.mp4 (1920x1080, 72 frames) and on the same clip
      looped 4 times (288 frames), `--task both --algo farneback` at full resolution.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from multiprocessing import Pool
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from conftest import VIDEOS  # noqa: E402
from mmtools import mim_dir  # noqa: E402
from trees import ucf101_style_root  # noqa: E402

BIN = Path(sys.executable).parent


def link_or_copy(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dest)
    except OSError:
        shutil.copy(src, dest)


# ext4 without a journal (this machine's disk) avoids reusing recently freed inodes: every file
# created meanwhile scans past all such inodes of its block group. After deleting a run's
# 10,000s of images, creating 5,000 files took 0.5-2.9 s of system time instead of 0.15 s, for
# up to 8 minutes (sync did not shorten it here), and which runs paid depended on the block
# groups their folders landed in, not on the tool measured. So after deleting, the benchmark
# waits until creating files costs what it costs on a quiet disk.
PROBE_FILES, QUIET_US, PROBE_EVERY_S, PROBE_GIVE_UP_S = 400, 80, 20, 900


def file_creation_us(folder: Path) -> float:
    """Microseconds to create and write one 20 kB file, the worst of 4 new folders (each may
    land in another block group)."""
    worst = 0.0
    for _ in range(4):
        probe = folder / f"probe{time.monotonic_ns()}"
        probe.mkdir(parents=True)
        t0 = time.perf_counter()
        for i in range(PROBE_FILES // 4):
            fd = os.open(probe / f"f{i}", os.O_WRONLY | os.O_CREAT, 0o644)
            os.write(fd, bytes(20000))
            os.close(fd)
        worst = max(worst, (time.perf_counter() - t0) / (PROBE_FILES // 4) * 1e6)
    return worst


def fresh_output(folder: Path) -> None:
    """An empty `folder` for this run: a previous run's output is deleted, and the benchmark
    waits until file creation is back to its quiet-disk cost (see above)."""
    if folder.exists():
        shutil.rmtree(folder)
        start = time.monotonic()
        # The probes' files stay in the output (deleting them would start the wait again).
        while (us := file_creation_us(folder / "probes")) > QUIET_US:
            if time.monotonic() - start > PROBE_GIVE_UP_S:
                print(f"warning: creating a file still costs {us:.0f} us; measuring anyway", flush=True)
                break
            print(f"deleted the previous output in {folder}; creating a file costs {us:.0f} us "
                  f"(quiet: < {QUIET_US} us), waiting {PROBE_EVERY_S} s", flush=True)
            time.sleep(PROBE_EVERY_S)
    folder.mkdir(parents=True, exist_ok=True)


def make_root(base: Path, videos: dict[str, Path]) -> Path:
    """A UCF101-style root (class Bench) holding `videos` (name -> source), lists built."""
    root = ucf101_style_root(base, {f"Bench/{name}": None for name in videos})
    for name, src in videos.items():
        link_or_copy(src, root / "videos/Bench" / name)
    subprocess.run([str(BIN / "datatools"), "ucf101", "build-lists", "--root", str(root)],
                   check=True, capture_output=True)
    return root


def timed(cmd, **kw) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[:3]} failed:\n{proc.stdout[-1500:]}{proc.stderr[-1500:]}")
    return time.perf_counter() - t0


def count_jpegs(folder: Path) -> int:
    return sum(1 for _ in folder.rglob("*.jpg"))


def timed_phases(cmd, folder: Path, **kw) -> tuple[float, tuple[float, float, float]]:
    """Seconds of a run that writes JPEGs under `folder`, and where they went: start to the
    first image written, first to last image, last image to exit (file modification times)."""
    start = time.time()
    seconds = timed(cmd, **kw)
    end = time.time()
    stamps = sorted(p.stat().st_mtime for p in folder.rglob("*.jpg"))
    return seconds, (stamps[0] - start, stamps[-1] - stamps[0], end - stamps[-1])


# --- rgb -----------------------------------------------------------------------------------

def decode_only(paths: list[str]) -> int:
    import cv2
    cv2.setNumThreads(1)
    n = 0
    for p in paths:
        cap = cv2.VideoCapture(p, cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, 1])
        while cap.read()[0]:
            n += 1
    return n


def encode_only(args) -> float:
    """Decode (untimed), then time JPEG encoding (and, with write=True, writing) of the frames."""
    paths, out, write = args
    import cv2
    cv2.setNumThreads(1)
    frames = []
    for p in paths:
        cap = cv2.VideoCapture(p, cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, 1])
        while True:
            ok, f = cap.read()
            if not ok:
                break
            frames.append(f)
    os.makedirs(out, exist_ok=True)
    params = [cv2.IMWRITE_JPEG_QUALITY, 95]
    t0 = time.perf_counter()
    for i, f in enumerate(frames):
        buf = cv2.imencode(".jpg", f, params)[1]
        if write:
            fd = os.open(f"{out}/img_{i:05d}.jpg", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.write(fd, buf.data)
            os.close(fd)
    return time.perf_counter() - t0


def bench_rgb(out: Path, repeat: int) -> list[str]:
    videos = {}
    for i in range(1, 21):
        videos[f"v_Bench_g{i:02d}_c01.avi"] = VIDEOS / "test.avi"
        videos[f"v_Bench_g{i:02d}_c02.mp4"] = VIDEOS / "test.mp4"
    src = out / "src"
    for name, s in videos.items():
        link_or_copy(s, src / "Bench" / name)
    paths = sorted(str(p) for p in (src / "Bench").iterdir())
    mim = mim_dir()
    times = {k: [] for k in ("datatools", "ffmpeg", "mmaction2", "decode", "encode", "encode+write")}
    frames = {}
    phases = {"datatools": [], "mmaction2": [], "ffmpeg": []}

    def run(key, cmd, folder, **kw):
        seconds, split = timed_phases(cmd, folder, **kw)
        times[key].append(seconds)
        phases[key].append(split)
        frames[key] = count_jpegs(folder)

    for rep in range(repeat):
        root = make_root(out / f"ours{rep}", videos)
        run("datatools", [str(BIN / "datatools"), "extract", "--root", str(root), "--task", "rgb",
                          "--workers", "2"], root / "rawframes")
        ff = out / f"ffmpeg{rep}"
        # $0 = the video, $1 = the output root (arguments, not pasted into the string)
        script = ('mkdir -p "$1/$(basename "$0")" && exec ffmpeg -v error -threads 1 -i "$0" '
                  '-q:v 2 "$1/$(basename "$0")/img_%05d.jpg"')
        run("ffmpeg", ["xargs", "-0", "-P", "2", "-I", "{}", "sh", "-c", script, "{}", str(ff)],
            ff, input="\0".join(paths))
        mm = out / f"mm{rep}"
        run("mmaction2", [sys.executable, str(mim / "tools/data/build_rawframes.py"), str(src),
                          str(mm), "--task", "rgb", "--level", "2", "--use-opencv",
                          "--num-worker", "2", "--mixed-ext"],
            mm, env=dict(os.environ, PYTHONPATH=str(mim)), cwd=out)  # it writes build_report.txt in cwd
        # Each process gets 10 of each kind (sorted names alternate .avi/.mp4, so every other
        # path would give one process all the H.264 clips and time only that one).
        avi, mp4 = ([p for p in paths if p.endswith(ext)] for ext in (".avi", ".mp4"))
        halves = [avi[0::2] + mp4[0::2], avi[1::2] + mp4[1::2]]
        t0 = time.perf_counter()
        with Pool(2) as pool:
            frames["decode"] = sum(pool.map(decode_only, halves))
        times["decode"].append(time.perf_counter() - t0)
        for key, write in (("encode", False), ("encode+write", True)):
            with Pool(2) as pool:
                per = pool.map(encode_only, [(h, str(out / f"enc{rep}_{key}_{k}"), write)
                                             for k, h in enumerate(halves)])
            times[key].append(max(per))
    n = frames["decode"]
    med = {k: statistics.median(v) for k, v in times.items()}
    lines = [f"RGB: 20 x test.avi + 20 x test.mp4 ({n:,} decoded frames), 2 workers, medians of {repeat}", "",
             "| run | seconds | frames written | frames/s | datatools speed-up |",
             "|---|---:|---:|---:|---:|"]
    for key in ("datatools", "mmaction2", "ffmpeg"):
        lines.append(f"| {key} | {med[key]:.2f} | {frames[key]:,} | {n / med[key]:.0f} | "
                     f"{med[key] / med['datatools']:.2f}x |")
    for key in ("decode", "encode", "encode+write"):
        lines.append(f"| {key} only (2 processes, same frames) | {med[key]:.2f} | - | "
                     f"{n / med[key]:.0f} | - |")
    ratios = {k: statistics.median(a / b for a, b in zip(times[k], times["datatools"]))
              for k in ("mmaction2", "ffmpeg")}
    lines += ["", "Median of the per-run ratios (runs alternate): " + ", ".join(
        f"{k} / datatools {r:.2f}x" for k, r in ratios.items()), "",
        "Where the time goes (medians, s; from the images' modification times):", "",
        "| run | start to first image | first to last image | last image to exit |",
        "|---|---:|---:|---:|"]
    for key, split in phases.items():
        lines.append(f"| {key} | " + " | ".join(f"{statistics.median(x[i] for x in split):.2f}"
                                               for i in range(3)) + " |")
    lines.append("")
    lines.append("all runs (s): " + "; ".join(f"{k} " + ", ".join(f"{x:.2f}" for x in v)
                                             for k, v in times.items()))
    return lines


# --- flow ----------------------------------------------------------------------------------

def bare_flow(args) -> int:
    paths, algo, tuned = args
    import cv2
    cv2.setNumThreads(1)
    sys.path.insert(0, str(HERE.parent))
    from datatools.extract.backends.opencv_flow import FARNEBACK
    from datatools.extract.tvl1 import TVL1
    if tuned:  # the allocator settings our workers run with, so that only our work differs
        from datatools.schedule.client import set_worker_malloc
        set_worker_malloc()
    tvl1 = cv2.optflow.DualTVL1OpticalFlow_create(**TVL1.opencv_kwargs())
    pairs = 0
    for p in paths:
        cap = cv2.VideoCapture(p)
        prev = None
        while True:
            ok, f = cap.read()
            if not ok:
                break
            g = cv2.cvtColor(f, cv2.COLOR_BGR2GRAY)
            if prev is not None:
                if algo == "tvl1":
                    tvl1.calc(prev, g, None)
                else:
                    cv2.calcOpticalFlowFarneback(prev, g, None, **FARNEBACK)
                pairs += 1
            prev = g
    return pairs


def cut_clips(folder: Path, count: int) -> dict[str, Path]:
    """`count` clips of 11 frames (10 pairs) at 340x256, cut from test.mp4 1.5 s apart."""
    clips = {}
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(count):
        clip = folder / f"v_Bench_g{k + 1:02d}_c01.mp4"
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-ss", str(k * 1.5), "-i", str(VIDEOS / "test.mp4"),
                        "-frames:v", "11", "-c:v", "libx264", "-crf", "18", "-an", str(clip)], check=True)
        clips[clip.name] = clip
    return clips


def bench_flow(out: Path, repeat: int, algos: list[str], farneback_videos: int) -> list[str]:
    """TV-L1 on short clips; Farneback, 100 times faster, on whole videos, so that its run is
    not mostly start-up and per-video bookkeeping (a first version ran it on 120 links of the
    11-frame clips: 10 pairs, 0.2 s of work per task)."""
    clips = cut_clips(out / "clips", 6)
    lines = [f"Flow at 340x256 (TV-L1: 11-frame clips; Farneback: whole test.mp4 links), "
             f"medians of {repeat}", "",
             "| algorithm | bare loop, 1 process (pairs/s) | bare loop, workers' allocator "
             "| datatools 1 worker (pairs/s) | per-core overhead (vs bare / vs workers' allocator) "
             "| datatools 2 workers (pairs/s) | 2 workers / 1 worker |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    runs = []
    for algo in algos:
        if algo == "farneback":
            videos = {f"v_Bench_g{k + 1:02d}_c01.mp4": VIDEOS / "test.mp4" for k in range(farneback_videos)}
        else:
            videos = {f"v_Bench_g{k + 1:02d}_c01.mp4": src for k, src in enumerate(clips.values())}
        for name, src in videos.items():
            link_or_copy(src, out / f"links_{algo}" / name)
        paths = [str(out / f"links_{algo}" / name) for name in videos]
        t = {"bare": [], "bare_tuned": [], "one": [], "two": []}
        for rep in range(repeat):
            for key, tuned in (("bare", False), ("bare_tuned", True)):
                t0 = time.perf_counter()
                with Pool(1) as pool:
                    pairs = pool.map(bare_flow, [(paths, algo, tuned)])[0]
                t[key].append(time.perf_counter() - t0)
            for key, workers in (("one", 1), ("two", 2)):
                root = make_root(out / f"flow_{algo}_{key}{rep}", videos)
                t[key].append(timed([str(BIN / "datatools"), "extract", "--root", str(root), "--task",
                                     "flow", "--algo", algo, "--workers", str(workers)]))
        m = {k: statistics.median(v) for k, v in t.items()}
        lines.append(f"| {algo} ({pairs} pairs) | {pairs / m['bare']:.2f} | {pairs / m['bare_tuned']:.2f} | "
                     f"{pairs / m['one']:.2f} | {100 * (m['one'] / m['bare'] - 1):+.1f} % / "
                     f"{100 * (m['one'] / m['bare_tuned'] - 1):+.1f} % | {pairs / m['two']:.2f} | "
                     f"{m['one'] / m['two']:.2f}x |")
        runs.append(f"{algo} runs (s): " + "; ".join(f"{k} " + ", ".join(f"{x:.2f}" for x in v)
                                                    for k, v in t.items()))
    return lines + [""] + runs


# --- rss -----------------------------------------------------------------------------------

def peak_worker_rss(cmd) -> tuple[float, list[int]]:
    peaks: dict[int, int] = {}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0 = time.perf_counter()
    parent = psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            for child in parent.children(recursive=True):
                try:
                    if "worker" in " ".join(child.cmdline()) or child.name().startswith("python"):
                        peaks[child.pid] = max(peaks.get(child.pid, 0), child.memory_info().rss)
                except psutil.Error:
                    pass
        except psutil.Error:
            pass
        time.sleep(0.1)
    return time.perf_counter() - t0, sorted(peaks.values(), reverse=True)


def bench_rss(out: Path) -> list[str]:
    out.mkdir(parents=True, exist_ok=True)
    looped = out / "looped.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-stream_loop", "3", "-i",
                    str(VIDEOS / "demo_skeleton.mp4"),
                    "-c", "copy", str(looped)], check=True)
    lines = ["Peak RSS per worker process, `--task both --algo farneback`, 1920x1080, 1 worker", "",
             "| video | frames | seconds | peak RSS of the worker (MiB) |", "|---|---:|---:|---:|"]
    for name, src, frames in (("demo_skeleton.mp4", VIDEOS / "demo_skeleton.mp4", 72),
                              ("demo_skeleton.mp4 looped x4", looped, 288)):
        root = make_root(out / f"rss_{frames}", {f"v_Bench_g01_c01{src.suffix}": src})
        secs, peaks = peak_worker_rss([str(BIN / "datatools"), "extract", "--root", str(root), "--task",
                                       "both", "--algo", "farneback", "--workers", "1"])
        lines.append(f"| {name} | {frames} | {secs:.1f} | {peaks[0] / 2**20:.0f} |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--part", default="rss,rgb,flow")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--flow-repeat", type=int, default=3)
    ap.add_argument("--algos", default="tvl1,farneback")
    ap.add_argument("--farneback-videos", type=int, default=8)
    ap.add_argument("--out", type=Path, default=HERE / "out" / "extract")
    args = ap.parse_args()
    args.out = args.out.resolve()  # MMAction2's tool runs with the output folder as cwd
    fresh_output(args.out)
    parts = {"rss": lambda: bench_rss(args.out / "rss"),
             "rgb": lambda: bench_rgb(args.out / "rgb", args.repeat),
             "flow": lambda: bench_flow(args.out / "flow", args.flow_repeat, args.algos.split(","),
                                        args.farneback_videos)}
    for name in args.part.split(","):
        print("\n".join(parts[name]() + [""]), flush=True)  # each table as soon as it is done


if __name__ == "__main__":
    main()
