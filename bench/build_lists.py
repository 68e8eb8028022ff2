"""Benchmark: `datatools <ds> build-lists` vs MMAction2 1.2.0's build_file_list.py, same trees.

Trees are built from the real annotation files (empty placeholder videos):
  - UCF101: all 13,320 clips, 3 splits (both tools write the 6 videos lists);
  - Kinetics-sized: 88,591 placeholder videos from the real K400 val (19,906) + K400 test
    (38,685) and K600 val (30,000) CSVs. MMAction2 writes the K400 and K600 val lists (its tool
    cannot write test lists, and needs a train CSV: the val rows relabelled). Ours writes train,
    val and test lists and the manifest for both datasets, so it does strictly more work.
Both tools run as command-line processes (start-up included), 5 times; medians are reported.

    python bench/build_lists.py [--repeat 5] [--out bench/out]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from conftest import ANN  # noqa: E402
from mmtools import mim_dir  # noqa: E402
from trees import kinetics_root, touch, ucf101_root, write_csv  # noqa: E402


def kinetics_tree(base: Path, for_mmaction: bool) -> None:
    k4 = kinetics_root(base, "kinetics400", ANN / "kinetics400/activitynet_2017/kinetics-400_val.csv",
                       None if for_mmaction else ANN / "kinetics400/activitynet_2017/kinetics-400_test.csv")
    kinetics_root(base, "kinetics600", ANN / "kinetics600/kinetics-600_val.csv", None)
    for line in (ANN / "kinetics400/activitynet_2017/kinetics-400_test.csv").read_text().splitlines()[1:]:
        ytid, start, end, _ = line.split(",")
        touch(k4 / "videos_test" / f"{ytid}_{int(start):06d}_{int(end):06d}.mp4")
    if for_mmaction:  # its parser crashes on a test CSV without labels: give it a header only
        write_csv(k4 / "annotations/kinetics_test.csv", [], ["label", "youtube_id", "time_start",
                                                           "time_end", "split"])


def timed(cmd, cwd, env=None) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, cmd))} failed:\n{proc.stderr[-2000:]}")
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--out", type=Path, default=HERE / "out" / "build_lists")
    args = ap.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    mim = mim_dir()
    import os
    mm_env = dict(os.environ, PYTHONPATH=str(mim))
    mm_tool = [sys.executable, str(mim / "tools/data/build_file_list.py")]
    ours = [str(Path(sys.executable).parent / "datatools")]

    ucf = args.out / "ucf101"
    ucf101_root(ucf)
    kin_mm, kin_ours = args.out / "kinetics_mm", args.out / "kinetics_ours"
    kinetics_tree(kin_mm, for_mmaction=True)
    kinetics_tree(kin_ours, for_mmaction=False)

    cases = {
        "UCF101 (13,320 videos, 3 splits)": (
            [(mm_tool + ["ucf101", "data/ucf101/videos/", "--format", "videos"], ucf, mm_env)],
            [(ours + ["ucf101", "build-lists", "--root", "data/ucf101"], ucf, None)]),
        "Kinetics-sized (88,591 videos)": (
            [(mm_tool + [ds, f"data/{ds}/videos_val/", "--format", "videos", "--num-split", "1",
                         "--subset", "val"], kin_mm, mm_env) for ds in ("kinetics400", "kinetics600")],
            [(ours + [ds, "build-lists", "--root", f"data/{ds}"], kin_ours, None)
             for ds in ("kinetics400", "kinetics600")]),
    }
    rows = []
    for name, (mm_cmds, our_cmds) in cases.items():
        mm_t, our_t = [], []
        for _ in range(args.repeat):
            mm_t.append(sum(timed(c, cwd, env) for c, cwd, env in mm_cmds))
            our_t.append(sum(timed(c, cwd, env) for c, cwd, env in our_cmds))
        rows.append((name, statistics.median(mm_t), statistics.median(our_t)))
    print(f"\nbuild-lists, medians of {args.repeat} (seconds, command-line processes)\n")
    print("| tree | MMAction2 build_file_list.py | datatools build-lists | speed-up |")
    print("|---|---:|---:|---:|")
    for name, mm, our in rows:
        print(f"| {name} | {mm:.2f} | {our:.2f} | {mm / our:.2f}x |")


if __name__ == "__main__":
    main()
