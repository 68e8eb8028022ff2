"""Byte parity with MMAction2 1.2.0's build_file_list.py on the same trees.

Each test builds a data root from the real annotation files, runs MMAction2's own tool and
ours on it, and compares the list files byte for byte.
"""

from __future__ import annotations

import pytest
from conftest import ANN
from mmtools import build_file_list
from trees import hmdb51_root, kinetics_root, sthv2_root, touch, ucf101_root

from datatools.lists.build import build_lists


def assert_same_lists(ours_dir, theirs_dir, names):
    for name in names:
        theirs = (theirs_dir / name).read_bytes()
        ours = (ours_dir / name).read_bytes()
        assert theirs, f"MMAction2 wrote an empty {name}: the tree is wrong"
        assert ours == theirs, f"{name} differs from MMAction2's"


def test_ucf101_videos_lists_all_splits_are_byte_identical(tmp_path):
    root = ucf101_root(tmp_path)
    proc = build_file_list(tmp_path, "ucf101", "data/ucf101/videos/", "--level", "2",
                           "--format", "videos", keep=tmp_path / "mm")
    assert proc.returncode == 0, proc.stderr
    result = build_lists("ucf101", root, ["videos"])
    names = [f"ucf101_{s}_split_{k}_videos.txt" for k in (1, 2, 3) for s in ("train", "val")]
    assert_same_lists(root, tmp_path / "mm", names)
    assert sum(lf.lines for lf in result.lists if lf.split == 1) == 13320
    assert not result.missing and not result.extra


def test_ucf101_shuffled_lists_match_mmaction_with_the_same_seed(tmp_path):
    root = ucf101_root(tmp_path)
    proc = build_file_list(tmp_path, "ucf101", "data/ucf101/videos/", "--format", "videos",
                           "--shuffle", "--seed", "7", keep=tmp_path / "mm")
    assert proc.returncode == 0, proc.stderr
    build_lists("ucf101", root, ["videos"], shuffle=True, seed=7)
    names = [f"ucf101_{s}_split_{k}_videos.txt" for k in (1, 2, 3) for s in ("train", "val")]
    assert_same_lists(root, tmp_path / "mm", names)
    unshuffled = sorted((tmp_path / "mm" / names[0]).read_text().splitlines())
    assert (root / names[0]).read_text().splitlines() != unshuffled


def test_hmdb51_videos_lists_all_splits_are_byte_identical(tmp_path):
    root = hmdb51_root(tmp_path)
    proc = build_file_list(tmp_path, "hmdb51", "data/hmdb51/videos/", "--format", "videos",
                           keep=tmp_path / "mm")
    assert proc.returncode == 0, proc.stderr
    result = build_lists("hmdb51", root, ["videos"])
    names = [f"hmdb51_{s}_split_{k}_videos.txt" for k in (1, 2, 3) for s in ("train", "val")]
    assert_same_lists(root, tmp_path / "mm", names)
    counts = {(lf.split, lf.subset): lf.lines for lf in result.lists}
    assert all(counts[(k, "train")] == 3570 and counts[(k, "val")] == 1530 for k in (1, 2, 3))
    assert len(result.records) == 6766 and not result.extra


@pytest.mark.parametrize("dataset,val_csv,test_csv", [
    ("kinetics400", ANN / "kinetics400/activitynet_2017/kinetics-400_val.csv",
     ANN / "kinetics400/deepmind/test.csv"),
    ("kinetics600", ANN / "kinetics600/kinetics-600_val.csv", None),
])
def test_kinetics_val_videos_list_is_byte_identical(tmp_path, dataset, val_csv, test_csv):
    # MMAction2 reads the test CSV even for --subset val and crashes on one without a label
    # column, so its run gets the labelled DeepMind test CSV (K400) or a header-only one (K600).
    root = kinetics_root(tmp_path, dataset, val_csv, test_csv)
    proc = build_file_list(tmp_path, dataset, f"data/{dataset}/videos_val/", "--level", "2",
                           "--format", "videos", "--num-split", "1", "--subset", "val",
                           keep=tmp_path / "mm")
    assert proc.returncode == 0, proc.stderr
    build_lists(dataset, root, ["videos"])
    assert_same_lists(root, tmp_path / "mm", [f"{dataset}_val_list_videos.txt"])


def test_sthv2_val_videos_list_is_byte_identical(tmp_path):
    root = sthv2_root(tmp_path)
    proc = build_file_list(tmp_path, "sthv2", "data/sthv2/videos/", "--level", "1",
                           "--format", "videos", "--num-split", "1", "--subset", "val",
                           keep=tmp_path / "mm")
    assert proc.returncode == 0, proc.stderr
    result = build_lists("sthv2", root, ["videos"], level=1)
    assert_same_lists(root, tmp_path / "mm", ["sthv2_val_list_videos.txt"])
    val = next(lf for lf in result.lists if lf.subset == "val")
    assert val.lines == 24777


def _frame_folders(root, classes, with_flow=True):
    """Frame folders for the split-1 videos of `classes`: a few img_ and flow files each."""
    made = 0
    for name in ("trainlist01.txt", "testlist01.txt"):
        for line in (root / "annotations" / name).read_text().splitlines():
            rel = line.split()[0]
            cls, stem = rel.split("/")[0], rel.split("/")[1].rsplit(".", 1)[0]
            if cls not in classes:
                continue
            n = 3 + made % 5
            for i in range(1, n + 1):
                touch(root / "rawframes" / cls / stem / f"img_{i:05d}.jpg")
                if with_flow and i < n:
                    touch(root / "rawframes" / cls / stem / f"flow_x_{i:05d}.jpg")
                    touch(root / "rawframes" / cls / stem / f"flow_y_{i:05d}.jpg")
            made += 1
    return made


def test_ucf101_rawframes_lists_for_a_subset_of_classes_are_byte_identical(tmp_path):
    root = ucf101_root(tmp_path)
    made = _frame_folders(root, {"ApplyEyeMakeup", "HandstandPushups", "YoYo"})
    proc = build_file_list(tmp_path, "ucf101", "data/ucf101/rawframes/", "--format",
                           "rawframes", keep=tmp_path / "mm")
    assert proc.returncode == 0, proc.stderr
    result = build_lists("ucf101", root, ["rawframes", "flow"])
    names = [f"ucf101_{s}_split_{k}_rawframes.txt" for k in (1, 2, 3) for s in ("train", "val")]
    assert_same_lists(root, tmp_path / "mm", names)
    listed = sum(lf.lines for lf in result.lists if lf.split == 1 and lf.fmt == "rawframes")
    assert listed == made
    # MMAction2 never writes flow lists; ours give `dir n_flow label` with n_flow = n_img - 1.
    rgb = (root / "ucf101_train_split_1_rawframes.txt").read_text().splitlines()
    flow = (root / "ucf101_train_split_1_flow.txt").read_text().splitlines()
    assert [(a.split()[0], int(a.split()[1]) - 1, a.split()[2]) for a in rgb] == \
        [(b.split()[0], int(b.split()[1]), b.split()[2]) for b in flow]


def test_hmdb51_rawframes_lists_are_byte_identical(tmp_path):
    root = hmdb51_root(tmp_path)
    for i, video in enumerate(sorted((root / "videos" / "brush_hair").iterdir())
                              + sorted((root / "videos" / "wave").iterdir())):
        for j in range(1, 3 + i % 4):
            touch(root / "rawframes" / video.parent.name / video.stem / f"img_{j:05d}.jpg")
    proc = build_file_list(tmp_path, "hmdb51", "data/hmdb51/rawframes/", "--format",
                           "rawframes", keep=tmp_path / "mm")
    assert proc.returncode == 0, proc.stderr
    build_lists("hmdb51", root, ["rawframes"])
    names = [f"hmdb51_{s}_split_{k}_rawframes.txt" for k in (1, 2, 3) for s in ("train", "val")]
    assert_same_lists(root, tmp_path / "mm", names)
