"""Dataset downloads as their servers publish them, built at test time from ../shared/data.

Each builder writes a dataset's files in its real archive layout under a www folder (the
catalog's file names, the archives' inner folders) from the real annotation files, cut down
to a few real entries, with copies of the real clips as videos. No free tool writes RAR, so
the archives the real servers publish as RAR are written as zip or tar under the RAR name:
`download` tells archive kinds by their first bytes. Reading real RAR files is tested on the
RAR files in ../shared/data/archives (test_archives.py).
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import tarfile
import zipfile
from pathlib import Path

from conftest import ANN, VIDEOS
from trees import kinetics_rows, video_id, write_csv

CLIP = VIDEOS / "test.avi"  # a real UCF101/HMDB51-like clip
SHORT = VIDEOS / "short_32f.mp4"  # a real, short Kinetics-like clip


def zip_of(path: Path, files: dict[str, Path | bytes], compression=zipfile.ZIP_STORED) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression) as zf:
        for name, src in files.items():
            if isinstance(src, bytes):
                zf.writestr(name, src)
            else:
                zf.write(src, name)
    return path


def tar_of(path: Path, files: dict[str, Path | bytes], mode: str = "w:gz") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, mode) as tf:
        for name, src in files.items():
            data = src if isinstance(src, bytes) else src.read_bytes()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 1_600_000_000
            tf.addfile(info, io.BytesIO(data))
    return path


# --- UCF101 ------------------------------------------------------------------------------

def ucf101(www: Path, classes=("ApplyEyeMakeup", "Archery"),
           quota=(("trainlist01.txt", 2), ("testlist01.txt", 1))) -> set[str]:
    """UCF101.rar (UCF101/<Class>/*.avi) and the splits zip (ucfTrainTestlist/*.txt): the
    real classInd and split files kept to a few clips of each of `classes` (`quota` per
    split-1 file; their lines as published, CRLF). Returns the clips (Class/name.avi)."""
    src = ANN / "ucf101"
    clips = []
    for name, n in quota:
        for cls in classes:
            lines = src.joinpath(name).read_text().splitlines()
            clips += [ln.split()[0] for ln in lines if ln.startswith(cls + "/")][:n]
    keep = set(clips)
    lists = {}
    for f in sorted(src.iterdir()):
        data = f.read_bytes()
        if f.name != "classInd.txt":
            lines = data.split(b"\n")
            data = b"\n".join(ln for ln in lines if ln.split(b" ")[0].strip() in
                              {c.encode() for c in keep}) + b"\n"
        lists[f"ucfTrainTestlist/{f.name}"] = data
    zip_of(www / "UCF101TrainTestSplits-RecognitionTask.zip", lists, zipfile.ZIP_DEFLATED)
    zip_of(www / "UCF101.rar", {f"UCF101/{rel}": CLIP for rel in clips})
    return keep


# --- HMDB51 ------------------------------------------------------------------------------

def hmdb51(www: Path, classes=("brush_hair", "cartwheel"), per_class: int = 3) -> set[str]:
    """hmdb51_org.rar: one archive per class (<class>.rar holding <class>/*.avi), and
    test_train_splits.rar (testTrainMulti_7030_splits/*.txt): the real split files of
    `classes`, kept to `per_class` clips, as published. Returns the clips (class/name.avi)."""
    src = ANN / "hmdb51" / "testTrainMulti_7030_splits"
    splits, inner, clips = {}, {}, set()
    for cls in classes:
        first = src.joinpath(f"{cls}_test_split1.txt").read_text().splitlines()
        names = {ln.split()[0] for ln in first if ln.strip()}
        names = set(sorted(names)[:per_class])
        for split in (1, 2, 3):
            f = src / f"{cls}_test_split{split}.txt"
            lines = f.read_bytes().split(b"\n")
            splits[f"testTrainMulti_7030_splits/{f.name}"] = b"\n".join(
                ln for ln in lines if ln.split(b" ")[0].decode() in names) + b"\n"
        buf = www / f".{cls}.rar"
        zip_of(buf, {f"{cls}/{n}": CLIP for n in sorted(names)})
        inner[f"{cls}.rar"] = buf.read_bytes()
        buf.unlink()
        clips |= {f"{cls}/{n}" for n in names}
    zip_of(www / "test_train_splits.rar", splits)
    tar_of(www / "hmdb51_org.rar", inner, mode="w")
    return clips


# --- Kinetics ----------------------------------------------------------------------------

CATALOG_BASE = {"kinetics400": "https://s3.amazonaws.com/kinetics/400/",
                "kinetics600": "https://s3.amazonaws.com/kinetics/600/"}


def kinetics(www: Path, dataset: str, val_csv: Path, test_csv: Path, classes: list[str],
             per_class: int = 2, tarball_of=None, leave_out: int = 0) -> dict:
    """Annotation CSVs (real val rows of `classes`; train = those rows relabelled, ids
    prefixed `train-`; two real test rows), per subset a URL list in the catalog's real
    form (full URLs under the catalog's base), and the tarballs it names, each holding flat
    `<ytid>_<start>_<end>.mp4` clips. `tarball_of(subset, i, row)` names the tarball of a
    subset's i-th clip;
    the last `leave_out` val clips are in no tarball. Returns rows per subset and what was
    left out."""
    header = ["label", "youtube_id", "time_start", "time_end", "split"]
    val = []
    for cls in classes:
        val += [r for r in kinetics_rows(val_csv) if r["label"] == cls][:per_class]
    train = [dict(r, split="train", youtube_id="train-" + r["youtube_id"]) for r in val]
    test = kinetics_rows(test_csv)[:2]
    rows = {"train": train, "val": val, "test": test}
    ann = www / "annotations"
    ann.mkdir(parents=True, exist_ok=True)
    write_csv(ann / "train.csv", train, header)
    write_csv(ann / "val.csv", val, header)
    write_csv(ann / "test.csv", test, list(test[0]))
    left_out = [video_id(r) for r in val[len(val) - leave_out:]] if leave_out else []
    tarball_of = tarball_of or (lambda subset, i, row: "part_0.tar.gz")
    short = {"kinetics400": "k400", "kinetics600": "k600"}[dataset]
    for subset, subset_rows in rows.items():
        tarballs: dict[str, dict[str, Path]] = {}
        for i, row in enumerate(subset_rows):
            if video_id(row) in left_out:
                continue
            tarballs.setdefault(tarball_of(subset, i, row), {})[f"{video_id(row)}.mp4"] = SHORT
        for name, files in tarballs.items():
            tar_of(www / subset / name, files)
        (www / subset / f"{short}_{subset}_path.txt").write_text(
            "".join(f"{CATALOG_BASE[dataset]}{subset}/{name}\n" for name in tarballs))
    return {"rows": rows, "left_out": left_out}


# --- Something-Something V2 --------------------------------------------------------------

def sthv2(folder: Path, n_val: int = 3, parts: int = 20) -> list[str]:
    """What a user has after the manual download: the numbered parts of one gzip-tar of
    20bn-something-something-v2/<id>.webm (real WebM, transcoded from a real clip), and the
    labels zip with labels/{labels,train,validation,test}.json (real entries). Returns ids."""
    src = ANN / "sthv2"
    val = json.loads((src / "something-something-v2-validation.json").read_text())[:n_val]
    test = json.loads((src / "something-something-v2-test.json").read_text())[:2]
    train = [dict(item, id="train-" + item["id"]) for item in val]
    ids = [item["id"] for item in val + train + test]
    webm = folder / ".clip.webm"
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(SHORT), "-t", "0.5", "-c:v", "libvpx",
                    "-deadline", "realtime", "-an", str(webm)], check=True)
    zip_of(folder / "20bn-something-something-download-package-labels.zip", {
        "labels/labels.json": (src / "something-something-v2-labels.json").read_bytes(),
        "labels/train.json": json.dumps(train).encode(),
        "labels/validation.json": json.dumps(val).encode(),
        "labels/test.json": json.dumps(test).encode(),
    })
    whole = tar_of(folder / ".whole.tgz", {f"20bn-something-something-v2/{i}.webm": webm
                                           for i in ids})
    data = whole.read_bytes()
    step = -(-len(data) // parts)
    for n in range(parts):
        (folder / f"20bn-something-something-v2-{n:02d}").write_bytes(data[n * step:(n + 1) * step])
    whole.unlink()
    webm.unlink()
    return ids


def copy_tree(src: Path, dest: Path) -> None:
    shutil.copytree(src, dest, dirs_exist_ok=True)
