"""build-lists where MMAction2's tool is wrong: nothing is dropped silently, nothing corrupt is
written, test lists exist, --level 1 works, and odd class names survive."""

from __future__ import annotations

import shutil

import pyarrow.parquet as pq
import pytest
from conftest import ANN, VIDEOS
from mmtools import build_file_list
from trees import kinetics_root, sthv2_root, touch, ucf101_root, write_csv
from typer.testing import CliRunner

from datatools.cli.app import app
from datatools.lists.build import build_lists
from datatools.root.manifest import read_manifest

runner = CliRunner()


def run_cli(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_missing_video_is_reported_recorded_and_fails_strict(tmp_path):
    root = ucf101_root(tmp_path)
    gone = root / "videos/ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi"
    gone.unlink()
    res = run_cli("ucf101", "build-lists", "--root", root)
    assert res.exit_code == 0, res.output
    assert "1 videos in a split but missing" in res.output
    assert "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01" in res.output
    records, _ = read_manifest(root)
    rec = next(r for r in records if r.video_id == "v_ApplyEyeMakeup_g08_c01")
    assert (rec.status, rec.video_path, rec.subset_1) == ("missing", None, "train")
    train1 = (root / "ucf101_train_split_1_videos.txt").read_text()
    assert "v_ApplyEyeMakeup_g08_c01" not in train1 and len(train1.splitlines()) == 9536
    strict = run_cli("ucf101", "build-lists", "--root", root, "--strict")
    assert strict.exit_code == 1
    assert "--strict" in strict.output


def test_file_in_no_split_is_reported_as_extra(tmp_path):
    root = ucf101_root(tmp_path)
    touch(root / "videos/ApplyEyeMakeup/v_ApplyEyeMakeup_g99_c01.avi")
    result = build_lists("ucf101", root)
    assert [r.video_path for r in result.extra] == \
        ["videos/ApplyEyeMakeup/v_ApplyEyeMakeup_g99_c01.avi"]
    assert all("g99" not in (root / lf.name).read_text() for lf in result.lists)


def test_frame_folder_without_images_never_gives_a_corrupt_line(tmp_path):
    root = ucf101_root(tmp_path)
    (root / "rawframes/ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01").mkdir(parents=True)
    for i in (1, 2):
        touch(root / f"rawframes/ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c02/img_{i:05d}.jpg")
    # MMAction2 writes '<full path> <label>' for the empty folder: a line RawframeDataset
    # then reads as total_frames=<label>.
    build_file_list(tmp_path, "ucf101", "data/ucf101/rawframes/", "--format", "rawframes",
                    keep=tmp_path / "mm")
    theirs = (tmp_path / "mm/ucf101_train_split_1_rawframes.txt").read_text().splitlines()
    assert "data/ucf101/rawframes/ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01 0" in theirs
    result = build_lists("ucf101", root, ["rawframes", "flow"])
    ours = (root / "ucf101_train_split_1_rawframes.txt").read_text().splitlines()
    assert ours == ["ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c02 2 0"]
    assert [r.key for r in result.no_frames] == ["ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01"]
    assert (root / "ucf101_train_split_1_flow.txt").read_text() == ""


def test_half_written_flow_pairs_are_not_listed(tmp_path):
    root = ucf101_root(tmp_path)
    d = root / "rawframes/ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01"
    for i in (1, 2, 3):
        touch(d / f"img_{i:05d}.jpg")
    for name in ("flow_x_00001.jpg", "flow_y_00001.jpg", "flow_x_00002.jpg"):
        touch(d / name)
    result = build_lists("ucf101", root, ["rawframes", "flow"])
    assert [r.key for r in result.flow_mismatch] == ["ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01"]
    assert (root / "ucf101_train_split_1_flow.txt").read_text() == ""
    assert (root / "ucf101_train_split_1_rawframes.txt").read_text() == \
        "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01 3 0\n"


def test_kinetics_test_list_is_written_unlabelled_and_mmaction_reads_it(tmp_path):
    root = kinetics_root(tmp_path, "kinetics400",
                         ANN / "kinetics400/activitynet_2017/kinetics-400_val.csv",
                         ANN / "kinetics400/activitynet_2017/kinetics-400_test.csv")
    test_rows = (ANN / "kinetics400/activitynet_2017/kinetics-400_test.csv").read_text().splitlines()[1:]
    for line in test_rows[:50]:
        ytid, start, end, _ = line.split(",")
        touch(root / "videos_test" / f"{ytid}_{int(start):06d}_{int(end):06d}.mp4")
    # MMAction2's tool cannot write it (IndexError on --subset test, or a crash on the
    # label-less test CSV); ours writes one filename per line.
    proc = build_file_list(tmp_path, "kinetics400", "data/kinetics400/videos_test/", "--level",
                           "1", "--format", "videos", "--num-split", "1", "--subset", "test")
    assert proc.returncode != 0
    result = build_lists("kinetics400", root)
    lines = (root / "kinetics400_test_list_videos.txt").read_text().splitlines()
    assert len(lines) == 50 and lines[0] == "--6bJUbfpnQ_000017_000027.mp4"
    assert sum(r.subset_1 == "test" for r in result.missing) == 38685 - 50
    from mmaction.datasets import VideoDataset
    ds = VideoDataset(str(root / "kinetics400_test_list_videos.txt"), pipeline=[],
                      data_prefix=dict(video=str(root / "videos_test")), test_mode=True)
    assert len(ds) == 50 and ds[0]["label"] == -1
    assert ds[0]["filename"].endswith("videos_test/--6bJUbfpnQ_000017_000027.mp4")


def test_sthv2_test_list_is_written_and_rawframes_dataset_reads_it(tmp_path):
    root = sthv2_root(tmp_path)
    for vid in ("1420", "166429"):
        touch(root / "videos" / f"{vid}.webm")
        for i in (1, 2, 3, 4):
            touch(root / "rawframes" / vid / f"img_{i:05d}.jpg")
    build_lists("sthv2", root, ["videos", "rawframes"], level=1)
    assert (root / "sthv2_test_list_videos.txt").read_text() == "1420.webm\n166429.webm\n"
    assert (root / "sthv2_test_list_rawframes.txt").read_text() == "1420 4\n166429 4\n"
    from mmaction.datasets import RawframeDataset
    ds = RawframeDataset(str(root / "sthv2_test_list_rawframes.txt"), pipeline=[],
                         data_prefix=dict(img=str(root / "rawframes")), test_mode=True)
    infos = [ds.get_data_info(i) for i in range(len(ds))]
    assert [(d["total_frames"], d["label"]) for d in infos] == [(4, -1), (4, -1)]


def test_ucf101_level_1_flat_layout(tmp_path):
    root = ucf101_root(tmp_path, level=1)
    # MMAction2 fails on UCF101 --level 1 (it uses the path as the label).
    proc = build_file_list(tmp_path, "ucf101", "data/ucf101/videos/", "--level", "1",
                           "--format", "videos")
    assert proc.returncode != 0
    result = build_lists("ucf101", root, level=1)
    lines = (root / "ucf101_train_split_1_videos.txt").read_text().splitlines()
    assert lines[0] == "v_ApplyEyeMakeup_g08_c01.avi 0" and len(lines) == 9537
    assert not result.missing and not result.extra


def test_class_names_with_spaces_quotes_and_parentheses_survive(tmp_path, shared):
    # Real K600/K700 class names; each video is a real clip so MMAction2 can decode it.
    classes = ["passing American football (not in game)", "massaging person's head",
               "passing american football (in game)"]
    header = ["label", "youtube_id", "time_start", "time_end", "split"]
    rows = [dict(label=c, youtube_id=f"-x{i}", time_start=i, time_end=i + 10, split="train")
            for i, c in enumerate(classes)]
    root = tmp_path / "k"
    write_csv(root / "annotations/kinetics_train.csv", rows, header)
    write_csv(root / "annotations/kinetics_val.csv",
              [dict(r, youtube_id="v" + r["youtube_id"], split="val") for r in rows], header)
    for r in rows:
        folder = root / "videos_train" / r["label"].replace(" ", "_")
        folder.mkdir(parents=True)
        shutil.copy(VIDEOS / "short_32f.mp4",
                    folder / f"{r['youtube_id']}_{r['time_start']:06d}_{r['time_end']:06d}.mp4")
    res = run_cli("kinetics700", "build-lists", "--root", root)
    assert res.exit_code == 0, res.output
    lines = (root / "kinetics700_train_list_videos.txt").read_text().splitlines()
    assert lines == ["passing_American_football_(not_in_game)/-x0_000000_000010.mp4 1",
                     "massaging_person's_head/-x1_000001_000011.mp4 0",
                     "passing_american_football_(in_game)/-x2_000002_000012.mp4 2"]
    from mmaction.datasets import VideoDataset
    from mmaction.datasets.transforms import DecordDecode, DecordInit, SampleFrames
    ds = VideoDataset(str(root / "kinetics700_train_list_videos.txt"),
                      pipeline=[DecordInit(), SampleFrames(clip_len=4, frame_interval=2,
                                                           num_clips=1), DecordDecode()],
                      data_prefix=dict(video=str(root / "videos_train")))
    sample = ds[0]
    assert sample["label"] == 1 and len(sample["imgs"]) == 4 and sample["total_frames"] == 32
    records, meta = read_manifest(root)
    assert meta.label_map == sorted(classes, key=lambda c: c.replace(" ", "_"))
    assert {r.class_name for r in records if r.status == "unchecked"} == set(classes)


def test_manifest_is_plain_parquet_with_provenance(tmp_path):
    root = ucf101_root(tmp_path)
    build_lists("ucf101", root)
    table = pq.read_table(root / "manifest.parquet")
    assert table.num_rows == 13320
    import json
    meta = json.loads(table.schema.metadata[b"datatools"])
    assert meta["schema_version"] == 4 and meta["dataset"] == "ucf101"
    assert len(meta["label_map"]) == 101 and meta["steps"]["build-lists"]["level"] == 2
    df = pq.read_table(root / "manifest.parquet", columns=["key", "class_index", "subset_1",
                                                         "status"]).to_pandas()
    row = df[df.key == "YoYo/v_YoYo_g01_c01"].iloc[0]
    assert (row.class_index, row.subset_1, row.status) == (100, "val", "unchecked")
    assert not list(root.glob(".manifest.*"))


def test_rerun_keeps_probe_results_of_unchanged_files(tmp_path):
    root = ucf101_root(tmp_path)
    build_lists("ucf101", root)
    from datatools.root.manifest import write_manifest
    records, meta = read_manifest(root)
    for r in records[:2]:
        r.status, r.probe_status, r.probe_level, r.frame_count = "corrupt", "corrupt", "quick", 7
    write_manifest(root, records, meta)
    build_lists("ucf101", root)
    again, _ = read_manifest(root)
    assert [(r.status, r.frame_count) for r in again[:3]] == \
        [("corrupt", 7), ("corrupt", 7), ("unchecked", None)]
    lines = (root / "ucf101_train_split_1_videos.txt").read_text()
    assert records[0].video_path.split("/", 1)[1] not in lines


@pytest.mark.parametrize("mutate,expect", [
    (lambda a: a.joinpath("trainlist02.txt").write_text(
        "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\r\nNoSuchClass/v_x.avi 3\r\n"),
     "trainlist02.txt:2: 'NoSuchClass/v_x.avi 3': class 'NoSuchClass' is not in classInd.txt"),
    (lambda a: a.joinpath("testlist03.txt").unlink(),
     "testlist03.txt: annotation file not found; run `datatools ucf101 download"),
    (lambda a: a.joinpath("classInd.txt").write_text("1 ApplyEyeMakeup\nBoxing\n"),
     "classInd.txt:2: 'Boxing': expected '<id> <ClassName>'"),
])
def test_bad_ucf101_annotations_give_one_line_and_write_nothing(tmp_path, mutate, expect):
    root = ucf101_root(tmp_path)
    mutate(root / "annotations")
    res = run_cli("ucf101", "build-lists", "--root", root)
    assert res.exit_code == 2
    assert expect in res.output and len(res.output.strip().splitlines()) == 1
    assert "Traceback" not in res.output
    assert not (root / "manifest.parquet").exists() and not list(root.glob("*.txt"))


def test_malformed_kinetics_row_names_file_line_and_text(tmp_path):
    root = kinetics_root(tmp_path, "kinetics600", ANN / "kinetics600/kinetics-600_val.csv",
                         videos=False)
    lines = (root / "annotations/kinetics_val.csv").read_text().splitlines()
    lines[41] = 'abseiling,"unterminated,3,13,val'
    (root / "annotations/kinetics_val.csv").write_text("\n".join(lines) + "\n")
    res = run_cli("kinetics600", "build-lists", "--root", root)
    assert res.exit_code == 2
    assert "kinetics_val.csv:42: 'abseiling,\"unterminated,3,13,val': unterminated quote" in res.output


def test_unknown_sthv2_template_is_named(tmp_path):
    root = sthv2_root(tmp_path, videos=False)
    path = root / "annotations/something-something-v2-validation.json"
    path.write_text(path.read_text().replace('"template":"Spinning [something] that quickly',
                                             '"template":"Twirling [something] that quickly', 1))
    res = run_cli("sthv2", "build-lists", "--root", root)
    assert res.exit_code == 2
    assert "template 'Twirling something that quickly stops spinning' is not in the labels JSON" \
        in res.output and "entry 0" in res.output


def test_kinetics_row_with_missing_field_is_named(tmp_path):
    root = kinetics_root(tmp_path, "kinetics400",
                         ANN / "kinetics400/activitynet_2017/kinetics-400_val.csv", videos=False)
    path = root / "annotations/kinetics_val.csv"
    lines = path.read_text().splitlines()
    lines[9] = "abseiling,-x9F2kDqt1o,17"
    path.write_text("\n".join(lines) + "\n")
    res = run_cli("kinetics400", "build-lists", "--root", root)
    assert res.exit_code == 2
    assert "kinetics_val.csv:10: 'abseiling,-x9F2kDqt1o,17': expected 6 fields" in res.output


def test_a_rerun_on_an_unchanged_root_is_answered_from_the_manifest_and_any_change_rescans(tmp_path):
    """With nothing changed, a second build-lists reports what the first did (the same lists,
    the same missing and extra videos) from the manifest's columns and writes nothing; a file
    rewritten in place, a file added, or an annotation file touched makes it scan again."""
    import os
    import time

    from datatools.root.manifest import ManifestRows
    root = ucf101_root(tmp_path)
    (root / "videos/ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi").unlink()
    touch(root / "videos/ApplyEyeMakeup/v_ApplyEyeMakeup_g99_c99.avi")  # in no split
    time.sleep(0.01)
    first = build_lists("ucf101", root, ["videos"])
    manifest = (root / "manifest.parquet").stat().st_mtime_ns

    def summary(r):
        return ([r.video_id for r in r.missing], [r.video_path for r in r.extra], r.unchecked,
                [(lf.name, lf.lines, lf.expected) for lf in r.lists])

    again = build_lists("ucf101", root, ["videos"])
    assert isinstance(again.records, ManifestRows) and not isinstance(first.records, ManifestRows)
    assert summary(again) == summary(first) and len(again.records) == len(first.records)
    assert (root / "manifest.parquet").stat().st_mtime_ns == manifest
    video = root / "videos/YoYo/v_YoYo_g01_c01.avi"
    changes = [lambda: os.utime(video, ns=(time.time_ns(), time.time_ns())),  # same size, new mtime
               lambda: touch(root / "videos/YoYo/v_YoYo_g77_c01.avi"),
               lambda: os.utime(root / "annotations/classInd.txt")]
    for change in changes:
        change()
        rescanned = build_lists("ucf101", root, ["videos"])
        assert not isinstance(rescanned.records, ManifestRows)
        assert isinstance(build_lists("ucf101", root, ["videos"]).records, ManifestRows)
    assert len(rescanned.extra) == 2
    (root / "annotations/notes.txt").symlink_to(tmp_path / "gone")  # a dangling link: rescans
    assert not isinstance(build_lists("ucf101", root, ["videos"]).records, ManifestRows)
    assert not isinstance(build_lists("ucf101", root, ["videos"]).records, ManifestRows)
