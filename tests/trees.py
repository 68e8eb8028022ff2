"""Data roots built at test time from the real annotation files in ../shared/data.

Placeholder files stand in for videos where only lists are under test: a few bytes each,
since a 0-byte file is never listed (it cannot be a video). Never probed, they are listed as
`unchecked`, as MMAction2's tool lists every file it finds.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
from pathlib import Path

from conftest import ANN, VIDEOS

from datatools.frames.packs import SUFFIX, Pack

PLACEHOLDER = b"placeholder\n"


def touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(PLACEHOLDER)


def ucf101_root(base: Path, with_videos: bool = True, level: int = 2) -> Path:
    root = base / "data" / "ucf101"
    (root / "annotations").mkdir(parents=True)
    for f in (ANN / "ucf101").iterdir():
        shutil.copy(f, root / "annotations" / f.name)
    if with_videos:
        for name in ("trainlist01.txt", "testlist01.txt"):
            for line in (ANN / "ucf101" / name).read_text().splitlines():
                rel = line.split()[0]
                touch(root / "videos" / (rel if level == 2 else rel.split("/")[1]))
    return root


def hmdb51_root(base: Path) -> Path:
    root = base / "data" / "hmdb51"
    ann = root / "annotations"
    ann.mkdir(parents=True)
    for f in (ANN / "hmdb51" / "testTrainMulti_7030_splits").iterdir():
        shutil.copy(f, ann / f.name)
        if f.name.endswith("_split1.txt"):
            cls = f.name[: -len("_test_split1.txt")]
            for line in f.read_text().splitlines():
                if line.strip():
                    touch(root / "videos" / cls / line.split()[0])
    return root


def kinetics_rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def write_csv(path: Path, rows: list[dict], header: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=header, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


def video_id(row: dict) -> str:
    return f"{row['youtube_id']}_{int(float(row['time_start'])):06d}_{int(float(row['time_end'])):06d}"


def kinetics_root(base: Path, dataset: str, val_csv: Path, test_csv: Path | None = None,
                  videos: bool = True) -> Path:
    """A Kinetics root the MMAction2 way. The real train CSVs are not available here, so the
    train CSV is the val rows relabelled `train` (same label set, hence the same class index),
    their YouTube ids prefixed with `train-` so that no video is in two subsets."""
    root = base / "data" / dataset
    ann = root / "annotations"
    val = kinetics_rows(val_csv)
    header = ["label", "youtube_id", "time_start", "time_end", "split"]
    train = [dict(r, split="train", youtube_id="train-" + r["youtube_id"]) for r in val]
    write_csv(ann / "kinetics_train.csv", train, header)
    shutil.copy(val_csv, ann / "kinetics_val.csv")
    if test_csv is not None:
        shutil.copy(test_csv, ann / "kinetics_test.csv")
    else:
        write_csv(ann / "kinetics_test.csv", [], header)
    if videos:
        for r in val:
            touch(root / "videos_val" / r["label"].replace(" ", "_") / f"{video_id(r)}.mp4")
    return root


def sthv2_root(base: Path, videos: bool = True) -> Path:
    """An SSv2 root. The real train JSON is not available here, so the train JSON is the val
    entries with their ids prefixed `train-` (no video in two subsets)."""
    root = base / "data" / "sthv2"
    ann = root / "annotations"
    ann.mkdir(parents=True)
    src = ANN / "sthv2"
    for name in ("labels", "validation", "test"):
        shutil.copy(src / f"something-something-v2-{name}.json", ann)
    val = json.loads((src / "something-something-v2-validation.json").read_text())
    (ann / "something-something-v2-train.json").write_text(
        json.dumps([dict(item, id="train-" + item["id"]) for item in val]))
    if videos:
        for item in json.loads((src / "something-something-v2-validation.json").read_text()):
            touch(root / "videos" / f"{item['id']}.webm")
    return root


def real_clips_root(root: Path, clips=("test.avi", "short_32f.mp4", "bikes.mp4"), cls: str = "Real",
                    build: bool = True) -> Path:
    """Real clips (file names in ../shared/data/videos; one may repeat) as the videos
    `<cls>/v_<cls>_g<NN>_c01<ext>` (NN from 01) of a UCF101-layout root's split 1 train set,
    with its lists built (`build`)."""
    from datatools.lists.build import build_lists
    files = {f"{cls}/v_{cls}_g{i:02d}_c01{Path(n).suffix}": str(VIDEOS / n) for i, n in enumerate(clips, 1)}
    root = ucf101_style_root(root, files)
    if build:
        build_lists("ucf101", root)
    return root


def ucf101_style_root(root: Path, files: dict[str, str | None], extra: list[str] = ()) -> Path:
    """A UCF101-layout root whose split 1 lists `files` (relative paths under videos/, all
    train); values name what to put there: a real file path, or None for nothing."""
    ann = root / "annotations"
    ann.mkdir(parents=True)
    classes = sorted({rel.split("/")[0] for rel in files})
    (ann / "classInd.txt").write_text("".join(f"{i} {c}\r\n" for i, c in enumerate(classes, 1)))
    train = "".join(f"{rel} {classes.index(rel.split('/')[0]) + 1}\r\n" for rel in files)
    for split in (1, 2, 3):
        (ann / f"trainlist{split:02d}.txt").write_text(train)
        (ann / f"testlist{split:02d}.txt").write_text("")
    for rel, src in list(files.items()) + [(rel, None) for rel in extra]:
        if src is not None:
            dest = root / "videos" / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, dest)
    return root


def tree_bytes(folder: Path) -> dict[str, str]:
    """sha256 of every file below `folder` by relative path (completion records aside: they
    hold inode numbers and times)."""
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.name != ".datatools-done.json":
            out[str(p.relative_to(folder))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def pids_with_open(path: Path) -> list[int]:
    """Processes (other than this one) that have `path` open: the worker busy with a video."""
    target = str(path)
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                    found.append(int(pid))
                    break
        except OSError:
            continue
    return found



def every_byte(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def frames_held(top: Path) -> dict[str, bytes]:
    """Every frame (and record) as the root holds it now, in folders or in complete packs."""
    held = {}
    for pack in top.rglob(f"*{SUFFIX}"):
        if not pack.name.startswith("."):
            rel = pack.relative_to(top).as_posix()[: -len(SUFFIX)]
            with Pack.open(str(pack)) as p:
                held.update({f"{rel}/{n}": p.read(n) for n in p.names()})
    for path, data in every_byte(top).items():
        if not path.endswith(SUFFIX) and ".tmp" not in path:
            held[path] = data
    return held
