"""Benchmark: packed frame storage (`extract --store packed`) against a folder of JPEGs per video.

    python bench/packs.py [--clips 100] [--clip short_32f.mp4] [--repeat 3] [--workers 2]
                          [--extract-only | --loading-only] [--against REV]

On a root of --clips copies (hard links) of one real clip, in the same run, alternating:
  extract     `datatools extract --task rgb`, then `--task flow --algo farneback`, with
              `--store files` and `--store packed`, each on a fresh root: the command's seconds
              and its extraction phase's frames/s (what it reports: without the interpreter's
              and the cluster's start), medians of --repeat runs, and the packed/files ratios
              (targets: >= 1.1x for rgb, not slower for flow); with --against REV also
              `--store packed` as the code of commit REV runs it (a git worktree under
              bench/out), and the ratio of this code's packed rates to it; --extract-only
              stops there;
  footprint   on a second root of --clips copies of --footprint-clip (test.avi, 164 frames:
              longer clips, more files per video) with RGB and Farneback flow as files, and
              the same frames packed by `datatools pack`: files and `du -sk` of rawframes/
              (targets: >= 300x fewer files, <= 0.9x the disk use);
  copy        (that root) `cp -a` of rawframes/ to a fresh folder on the same disk, median
              of --repeat;
  loading     (that root) MMAction2's TSN training pipeline (SampleFrames 8 segments x 1 frame,
              RawFrameDecode, Resize, RandomResizedCrop, Flip, FormatShape, PackActionInputs)
              through RawframeDataset on the folders and on the packs (datatools_packed), and
              VideoDataset with DecordInit/DecordDecode on the videos: samples/s, one process,
              page cache warm (each read once before timing), and cold where the machine lets
              this process drop the page cache (it says when it cannot); with --against REV
              also the packs through that commit's backend.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE))

from conftest import VIDEOS  # noqa: E402
from revision import import_at, worktree  # noqa: E402
from scale import copies_root  # noqa: E402

BIN = Path(sys.executable).parent


def datatools(*args: str) -> float:
    return timed(*args)[0]


def timed(*args: str, tree: Path | None = None) -> tuple[float, str]:
    """The command's wall seconds and its standard output; with `tree`, the datatools of that
    source tree (another commit's worktree) runs it."""
    t0 = time.perf_counter()
    command = [sys.executable, "-m", "datatools"] if tree else [str(BIN / "datatools")]
    env = {**os.environ, "PYTHONPATH": str(tree)} if tree else None
    # from the tree itself: `python -m` puts the working directory first on sys.path
    done = subprocess.run([*command, *args], check=True, capture_output=True, text=True, env=env,
                          cwd=tree)
    return time.perf_counter() - t0, done.stdout


def extraction_rate(stdout: str) -> float:
    """Frames/s of the extraction phase, from the command's last progress line ("extract:
    100/100 videos, 1,232 frames/s"): from the first task to the last video recorded, without
    the interpreter's start, the scan and the local cluster's start."""
    line = [ln for ln in stdout.splitlines() if ln.startswith("extract: ") and "frames/s" in ln][-1]
    return float(line.rsplit(", ", 1)[1].split()[0].replace(",", ""))


def fresh_root(out: Path, name: str, clip: Path, n: int) -> Path:
    shutil.rmtree(out / name, ignore_errors=True)
    root = copies_root(out / name, clip, n)
    datatools("ucf101", "build-lists", "--root", str(root))
    return root


def count_files(top: Path) -> int:
    return sum(len(files) for _, _, files in os.walk(top))


def du_kib(top: Path) -> int:
    return int(subprocess.run(["du", "-sk", str(top)], capture_output=True, text=True,
                              check=True).stdout.split()[0])


def copy_seconds(top: Path, dest: Path) -> float:
    shutil.rmtree(dest, ignore_errors=True)
    subprocess.run(["sync"], check=True)
    t0 = time.perf_counter()
    subprocess.run(["cp", "-a", str(top), str(dest)], check=True)
    seconds = time.perf_counter() - t0
    shutil.rmtree(dest)
    return seconds


def drop_caches() -> bool:
    subprocess.run(["sync"], check=True)
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def tsn_pipeline(decode: list[dict], init: tuple[dict, ...] = ()) -> list[dict]:
    return [*init, dict(type="SampleFrames", clip_len=1, frame_interval=1, num_clips=8), *decode,
            dict(type="Resize", scale=(-1, 256)), dict(type="RandomResizedCrop"),
            dict(type="Resize", scale=(224, 224), keep_ratio=False), dict(type="Flip", flip_ratio=0.5),
            dict(type="FormatShape", input_format="NCHW"), dict(type="PackActionInputs")]


def old_packed_backend(rev: str) -> str:
    """The datatools_packed backend of commit `rev` (without its package's __init__, which
    would register the datasets this process has registered already), registered under a name
    of its own, which is returned."""
    from mmengine.fileio import FileClient, register_backend

    import datatools.mmaction.packed as now
    backend = import_at(rev, "datatools.mmaction.packed", hollow=("datatools.mmaction",)).PackedBackend
    # importing it registered the old class under the current name: this code's back
    FileClient.register_backend(now.NAME, now.PackedBackend, force=True)
    register_backend(now.NAME, now.PackedBackend, force=True)
    name = f"datatools_packed_at_{rev}"
    FileClient.register_backend(name, backend, force=True)
    return name


def datasets(files: Path, packed: Path, against: str | None = None) -> dict:
    from mmaction.datasets import RawframeDataset, VideoDataset
    from mmengine.registry import init_default_scope

    import datatools.mmaction  # noqa: F401  (registers the datatools_packed backend)
    init_default_scope("mmaction")

    def frames(root: Path, backend: str):
        return RawframeDataset(str(root / "ucf101_train_split_1_rawframes.txt"),
                               data_prefix=dict(img=str(root / "rawframes")),
                               pipeline=tsn_pipeline([dict(type="RawFrameDecode", io_backend=backend)]))
    videos = VideoDataset(str(files / "ucf101_train_split_1_videos.txt"),
                          data_prefix=dict(video=str(files / "videos")),
                          pipeline=tsn_pipeline([dict(type="DecordDecode")], (dict(type="DecordInit"),)))
    sets = {"folders": frames(files, "disk"), "packs": frames(packed, "datatools_packed"),
            "videos (decord)": videos}
    if against:
        sets[f"packs at {against}"] = frames(packed, old_packed_backend(against))
    return sets


def read_all(top: Path) -> None:
    """Every file below `top` read once: the page cache holds the root."""
    for dirpath, _, names in os.walk(top):
        for name in names:
            with open(os.path.join(dirpath, name), "rb") as f:
                while f.read(1 << 20):
                    pass


def samples_per_second(dataset) -> float:
    t0 = time.perf_counter()
    for i in range(len(dataset)):
        dataset[i]
    return len(dataset) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=100)
    ap.add_argument("--clip", default="short_32f.mp4")
    ap.add_argument("--footprint-clip", default="test.avi",
                    help="the clip of the footprint, copy and loading root")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", type=Path, default=HERE / "out" / "packs")
    ap.add_argument("--extract-only", action="store_true", help="only the extraction figures")
    ap.add_argument("--loading-only", action="store_true",
                    help="only the loading figures, on the roots a full run left in --out")
    ap.add_argument("--against", metavar="REV", help="also extract packed with the code of this commit")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.loading_only:
        loading(args.out / "files-long", args.out / "packed-long", args.repeat, args.against)
        return
    clip = args.out / args.clip  # a local copy: the copies are hard links to it
    shutil.copy(VIDEOS / args.clip, clip)
    common = ["--workers", str(args.workers)]
    tasks = {"rgb": ["--task", "rgb"], "flow": ["--task", "flow", "--algo", "farneback"]}
    times: dict[tuple[str, str], list[float]] = {}
    rates: dict[tuple[str, str], list[float]] = {}
    variants = {"files": None, "packed": None}  # name -> the source tree that runs it (None: this)
    if args.against:
        variants[f"packed at {args.against}"] = worktree(args.against)
    for r in range(args.repeat):
        order = list(variants) if r % 2 == 0 else list(reversed(variants))
        for name in order:
            root = fresh_root(args.out, name.replace(" ", "-"), clip, args.clips)
            store = name.split()[0]
            for task, task_args in tasks.items():
                seconds, out = timed("extract", "--root", str(root), *task_args, *common, "--store", store,
                                     tree=variants[name])
                times.setdefault((task, name), []).append(seconds)
                rates.setdefault((task, name), []).append(extraction_rate(out))
        print(f"  run {r + 1}: " + ", ".join(f"{t} {s} {v[-1]:.1f} s ({rates[(t, s)][-1]:,.0f} frames/s)"
                                             for (t, s), v in times.items()), flush=True)
    print(f"\nPacked frame storage, {args.clips} copies of {args.clip}, {args.workers} workers, "
          f"medians of {args.repeat} runs")
    print(f"{'extract':<8}{'files s':>9}{'packed s':>10}{'ratio':>7}"
          f"{'files frames/s':>16}{'packed frames/s':>17}{'ratio':>7}")
    for task in tasks:
        a, b = statistics.median(times[(task, "files")]), statistics.median(times[(task, "packed")])
        fa, fb = statistics.median(rates[(task, "files")]), statistics.median(rates[(task, "packed")])
        print(f"{task:<8}{a:>9.1f}{b:>10.1f}{a / b:>6.2f}x{fa:>16,.0f}{fb:>17,.0f}{fb / fa:>6.2f}x")
    print("(seconds: the whole command; frames/s: its extraction phase, as it reports it)", flush=True)
    if args.against:
        other = f"packed at {args.against}"
        print(f"\n{'extract':<8}{other + ' s':>24}{'packed s':>10}{'ratio':>7}{other + ' frames/s':>31}"
              f"{'packed frames/s':>17}{'ratio':>7}")
        for task in tasks:
            a, b = statistics.median(times[(task, other)]), statistics.median(times[(task, "packed")])
            fa, fb = statistics.median(rates[(task, other)]), statistics.median(rates[(task, "packed")])
            print(f"{task:<8}{a:>24.1f}{b:>10.1f}{a / b:>6.2f}x{fa:>31,.0f}{fb:>17,.0f}{fb / fa:>6.2f}x")
        print("(ratios above 1: this code is faster)", flush=True)
    if args.extract_only:
        return
    # Footprint, copies and loading on a root of longer clips (--footprint-clip): files per
    # video grow with its frames, what a pack replaces with one file.
    long_clip = args.out / args.footprint_clip
    shutil.copy(VIDEOS / args.footprint_clip, long_clip)
    files = fresh_root(args.out, "files-long", long_clip, args.clips)
    datatools("extract", "--root", str(files), "--task", "both", "--algo", "farneback", *common)
    packed = args.out / "packed-long"
    shutil.rmtree(packed, ignore_errors=True)
    shutil.copytree(files, packed, copy_function=os.link)  # the same frames, then packed
    datatools("pack", "--root", str(packed))
    for root in (files, packed):
        datatools("ucf101", "build-lists", "--root", str(root), "--format", "videos,rawframes,flow")

    print(f"\non {args.clips} copies of {args.footprint_clip}, RGB and Farneback flow:")
    nf, np_ = count_files(files / "rawframes"), count_files(packed / "rawframes")
    df, dp = du_kib(files / "rawframes"), du_kib(packed / "rawframes")
    print(f"files in rawframes/: {nf:,} vs {np_:,} ({nf / np_:.0f}x fewer); du: {df:,} KiB vs "
          f"{dp:,} KiB ({dp / df:.2f}x)")
    copies = {name: statistics.median(copy_seconds(root / "rawframes", args.out / "copy")
                                      for _ in range(args.repeat))
              for name, root in (("files", files), ("packed", packed))}
    print(f"cp -a rawframes/: files {copies['files']:.2f} s, packed {copies['packed']:.2f} s "
          f"({copies['files'] / copies['packed']:.1f}x faster packed)")

    loading(files, packed, args.repeat, args.against)


def loading(files: Path, packed: Path, repeat: int, against: str | None = None) -> None:
    sets = datasets(files, packed, against)
    data = {"folders": files / "rawframes", "packs": packed / "rawframes",
            "videos (decord)": files / "videos", f"packs at {against}": packed / "rawframes"}
    print(f"\nMMAction2 TSN pipeline (8 segments), {len(sets['folders'])} samples, one process:")
    for name, dataset in sets.items():
        read_all(data[name])  # the page cache holds every frame (SampleFrames picks at random)
        samples_per_second(dataset)  # decord, the allocator, open packs
        warm = statistics.median(samples_per_second(dataset) for _ in range(repeat))
        cold = "n/a (cannot drop the page cache here)"
        if drop_caches():
            cold = f"{samples_per_second(dataset):.1f}"
        print(f"  {name:<18} warm {warm:8.1f} samples/s   cold {cold}", flush=True)


if __name__ == "__main__":
    main()
