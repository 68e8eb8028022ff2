"""extract: flow accuracy on Middlebury, denseflow's quantization, frame counts and sizes on
the real videos, MMAction2 reading the output, failures, parameters, and resume after a kill."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import decord
import numpy as np
import pytest
from conftest import VIDEOS, kill_group, require_tool
from hypothesis import given, settings
from hypothesis import strategies as st
from middlebury import RUBBER, epe, read_flo
from PIL import Image
from trees import tree_bytes, ucf101_style_root
from typer.testing import CliRunner

from datatools.cli.app import app
from datatools.extract.options import ExtractOptions, output_size
from datatools.extract.quantize import dequantize_flow, quantize_flow
from datatools.extract.run import extract
from datatools.lists.build import build_lists
from datatools.root.manifest import read_manifest
from datatools.schedule.client import ClusterOptions

REAL = ["test.avi", "test.mp4", "demo.mp4", "short_32f.mp4", "bikes.mp4", "demo_skeleton.mp4"]
TWO = ClusterOptions(workers=2)


# --- quantization -------------------------------------------------------------------------

def denseflow_cast(v: float, bound: float) -> int:
    """denseflow's CAST(v, L, H): 0 / 255 outside, else cvRound(255*(v-L)/(H-L)) in double;
    cvRound rounds half to even, as Python's round does."""
    lo, hi = -bound, bound
    if v > hi:
        return 255
    if v < lo:
        return 0
    return round(255 * (v - lo) / (hi - lo))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.floats(-60, 60, width=32), min_size=1, max_size=64),
       st.sampled_from([20.0, 15.0, 1.0, 0.5]))
def test_quantization_equals_denseflow_for_every_value(values, bound):
    arr = np.array(values, dtype=np.float32)
    ours = quantize_flow(arr, bound)
    assert ours.tolist() == [denseflow_cast(float(v), bound) for v in arr]


def test_quantization_fixed_points_and_not_mmcv_or_truncation():
    v = np.array([0.0, 20.0, -20.0, 25.0, -1e9, 0.0784313725490196], dtype=np.float32)
    assert quantize_flow(v, 20).tolist() == [128, 255, 0, 255, 0, 128]
    # With bound 127.5 every integer v lands exactly on x.5: half to even, like cvRound
    # (half up would give 128, 129, 130, 131).
    assert quantize_flow(np.array([0, 1, 2, 3], np.float32), 127.5).tolist() == [128, 128, 130, 130]
    from mmcv.video import quantize_flow as mmcv_quantize
    mmcv_q, _ = mmcv_quantize(np.zeros((2, 2, 2)), max_val=20, norm=False)
    assert int(mmcv_q[0, 0]) == 127 and int(quantize_flow(np.zeros(1), 20)[0]) == 128
    back = dequantize_flow(quantize_flow(np.linspace(-20, 20, 1001), 20), 20)
    assert np.abs(back - np.linspace(-20, 20, 1001)).max() <= 20 / 255 + 1e-4  # half a level


# --- accuracy on Middlebury RubberWhale ---------------------------------------------------

@pytest.fixture(scope="module")
def rubberwhale_root(tmp_path_factory):
    """RubberWhale frame10 -> frame11 as a lossless 2-frame FFV1 video in a UCF101-style root."""
    ffmpeg = require_tool("ffmpeg")
    base = tmp_path_factory.mktemp("rw")
    video = base / "rw.mkv"
    subprocess.run([ffmpeg, "-v", "error", "-y", "-framerate", "1", "-i",
                    str(RUBBER / "frame1%d.png"), "-c:v", "ffv1", "-pix_fmt", "bgr0", str(video)],
                   check=True)
    return ucf101_style_root(base / "root", {"Middlebury/v_RubberWhale_g01_c01.mkv": str(video)})


@pytest.mark.parametrize("backend,algo,limit", [("opencv", "tvl1", 0.185), ("opencv", "farneback", 0.40),
                                                ("native", "tvl1", 0.185)])
def test_rubberwhale_end_point_error_after_quantization(rubberwhale_root, backend, algo, limit, tmp_path,
                                                       request):
    import shutil
    if backend == "native":
        request.getfixturevalue("native_flow")
    root = tmp_path / "root"
    shutil.copytree(rubberwhale_root, root)
    build_lists("ucf101", root)
    result = extract(root, ExtractOptions(task="flow", algo=algo, backend=backend),
                     cluster=ClusterOptions(workers=1))
    assert result.counts["done"] == 1
    folder = root / "rawframes/Middlebury/v_RubberWhale_g01_c01"
    fx = np.asarray(Image.open(folder / "flow_x_00001.jpg"))
    fy = np.asarray(Image.open(folder / "flow_y_00001.jpg"))
    flow = np.dstack([dequantize_flow(fx, 20), dequantize_flow(fy, 20)])
    error = epe(flow, read_flo(RUBBER / "flow10.flo"))
    assert error <= limit, f"{backend} {algo} EPE {error:.3f} px"
    assert sorted(p.name for p in folder.iterdir()) == [".datatools-done.json",
                                                       "flow_x_00001.jpg", "flow_y_00001.jpg"]


def test_opencv_tvl1_float_flow_matches_the_reference_figure():
    import cv2
    frames = [np.asarray(Image.open(RUBBER / f"frame1{i}.png").convert("L")) for i in (0, 1)]
    tvl1 = cv2.optflow.DualTVL1OpticalFlow_create()
    error = epe(tvl1.calc(frames[0], frames[1], None), read_flo(RUBBER / "flow10.flo"))
    assert 0.150 <= error <= 0.165  # 0.156-0.157 measured on this pair


# --- counts, sizes, MMAction2 -------------------------------------------------------------

def real_root(base: Path) -> Path:
    files = {f"Real/v_Real_g{i:02d}_c01{Path(n).suffix}": str(VIDEOS / n) for i, n in
             enumerate(REAL, 1)}
    root = ucf101_style_root(base, files)
    build_lists("ucf101", root)
    return root


def decord_count(path: Path) -> int:
    return len(decord.VideoReader(str(path), num_threads=1))


def jpeg_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as im:
        return im.size


def test_every_real_video_gives_decord_frame_count_and_one_pair_less(tmp_path):
    root = real_root(tmp_path / "root")
    # Farneback keeps this test fast; the counts do not depend on the algorithm.
    result = extract(root, ExtractOptions(task="both", algo="farneback", new_short=128), cluster=TWO)
    assert result.counts["done"] == 6 and not result.failures
    for i, name in enumerate(REAL, 1):
        folder = root / f"rawframes/Real/v_Real_g{i:02d}_c01"
        n = decord_count(VIDEOS / name)
        names = {p.name for p in folder.iterdir()}
        assert {f"img_{k:05d}.jpg" for k in range(1, n + 1)} <= names
        assert len([x for x in names if x.startswith("img_")]) == n
        assert len([x for x in names if x.startswith("flow_x_")]) == n - 1
        assert len([x for x in names if x.startswith("flow_y_")]) == n - 1
        assert f"flow_x_{n - 1:05d}.jpg" in names and f"flow_x_{n:05d}.jpg" not in names
    assert decord_count(VIDEOS / "test.avi") == 164
    records = {r.video_id: r for r in read_manifest(root)[0]}
    assert (records["v_Real_g01_c01"].rgb_count, records["v_Real_g01_c01"].flow_count) == (164, 163)
    assert records["v_Real_g01_c01"].start_index == 1
    assert records["v_Real_g01_c01"].flow_template == "flow_{}_{:05d}.jpg"
    # Sizes: short side 128, long side rounded half up; test.avi 320x240 -> 171x128.
    assert jpeg_size(root / "rawframes/Real/v_Real_g06_c01/img_00001.jpg") == (228, 128)
    assert jpeg_size(root / "rawframes/Real/v_Real_g01_c01/flow_x_00001.jpg") == (171, 128)


def test_resize_rules():
    opts = ExtractOptions(new_short=256)
    assert output_size(1920, 1080, opts) == (455, 256)  # 455.11 -> 455
    assert output_size(640, 272, opts) == (602, 256)  # 602.35 -> 602
    assert output_size(320, 240, opts) == (320, 240)  # never upscales
    assert output_size(1080, 1920, opts) == (256, 455)
    assert output_size(341, 257, ExtractOptions(new_short=256)) == (340, 256)  # 339.67 -> 340
    assert output_size(1920, 1080, ExtractOptions(new_size=(340, 256))) == (340, 256)


def test_1080p_video_with_new_short_256_is_455x256(tmp_path):
    files = {"Real/v_Real_g01_c01.mp4": str(VIDEOS / "demo_skeleton.mp4"),
             "Real/v_Real_g02_c01.avi": str(VIDEOS / "test.avi")}
    root = ucf101_style_root(tmp_path / "root", files)
    build_lists("ucf101", root)
    extract(root, ExtractOptions(task="rgb", new_short=256), cluster=TWO)
    assert jpeg_size(root / "rawframes/Real/v_Real_g01_c01/img_00072.jpg") == (455, 256)
    assert jpeg_size(root / "rawframes/Real/v_Real_g02_c01/img_00164.jpg") == (320, 240)
    root2 = ucf101_style_root(tmp_path / "root2", files)
    build_lists("ucf101", root2)
    extract(root2, ExtractOptions(task="rgb", new_size=(340, 256)), cluster=TWO)
    assert jpeg_size(root2 / "rawframes/Real/v_Real_g02_c01/img_00001.jpg") == (340, 256)


@pytest.mark.parametrize("naming,start", [("mmaction", 1), ("denseflow", 0)])
def test_mmaction2_rawframe_dataset_loads_rgb_and_flow_to_the_last_frame(tmp_path, naming, start):
    files = {"Real/v_Real_g01_c01.avi": str(VIDEOS / "test.avi"),
             "Real/v_Real_g02_c01.mp4": str(VIDEOS / "short_32f.mp4")}
    root = ucf101_style_root(tmp_path / "root", files)
    build_lists("ucf101", root)
    extract(root, ExtractOptions(task="both", algo="farneback", naming=naming), cluster=TWO)
    build_lists("ucf101", root, ["rawframes", "flow"])
    names = sorted(p.name for p in (root / "rawframes/Real/v_Real_g02_c01").glob("img_*"))
    assert names[0] == f"img_{start:05d}.jpg" and names[-1] == f"img_{start + 31:05d}.jpg"
    from mmaction.datasets import RawframeDataset
    from mmaction.datasets.transforms import RawFrameDecode, SampleFrames
    for modality, lst, channels in (("RGB", "rawframes", 3), ("Flow", "flow", 2)):
        tmpl = "img_{:05d}.jpg" if modality == "RGB" else "flow_{}_{:05d}.jpg"
        ds = RawframeDataset(
            str(root / f"ucf101_train_split_1_{lst}.txt"),
            pipeline=[SampleFrames(clip_len=400, frame_interval=1, num_clips=1, test_mode=True,
                                   out_of_bound_opt="repeat_last"), RawFrameDecode()],
            data_prefix=dict(img=str(root / "rawframes")), filename_tmpl=tmpl,
            modality=modality, start_index=start)
        assert len(ds) == 2
        for i, (expect, shape) in enumerate(((164, (240, 320)), (32, (256, 340)))):
            sample = ds[i]
            total = expect if modality == "RGB" else expect - 1
            assert sample["total_frames"] == total
            assert sample["frame_inds"].max() == start + total - 1  # the last file on disk
            assert len(sample["imgs"]) == 400
            assert sample["imgs"][-1].shape == (*shape, channels)


# --- failures, parameters, resume ---------------------------------------------------------

def test_a_corrupt_video_fails_alone_with_its_reason(tmp_path):
    mp4 = (VIDEOS / "test.mp4").read_bytes()
    (tmp_path / "half.mp4").write_bytes(mp4[: len(mp4) // 2])
    files = {"Real/v_Real_g01_c01.avi": str(VIDEOS / "test.avi"),
             "Real/v_Real_g02_c01.mp4": str(tmp_path / "half.mp4")}
    root = ucf101_style_root(tmp_path / "root", files)
    build_lists("ucf101", root)  # found on disk, not validated: status unchecked
    res = CliRunner().invoke(app, ["extract", "--root", str(root), "--task", "rgb",
                                   "--workers", "2"])
    assert res.exit_code == 1, res.output
    # An unchecked video is probed by the worker before it is extracted; what the probe
    # found goes into the manifest too.
    assert "failed: videos/Real/v_Real_g02_c01.mp4: corrupt: Invalid data" in res.output
    records = {r.video_id: r for r in read_manifest(root)[0]}
    assert records["v_Real_g02_c01"].extract_status == "failed"
    assert records["v_Real_g02_c01"].status == "corrupt"
    assert "moov atom not found" in records["v_Real_g02_c01"].error
    assert (records["v_Real_g01_c01"].status, records["v_Real_g01_c01"].frame_count) == ("ok", 164)
    assert records["v_Real_g01_c01"].rgb_count == 164
    assert not (root / "rawframes/Real/v_Real_g02_c01").exists()


def test_other_parameters_are_refused_unless_forced(tmp_path):
    files = {"Real/v_Real_g01_c01.mp4": str(VIDEOS / "short_32f.mp4")}
    root = ucf101_style_root(tmp_path / "root", files)
    build_lists("ucf101", root)
    runner = CliRunner()
    args = ["extract", "--root", str(root), "--task", "rgb", "--workers", "1"]
    assert runner.invoke(app, args).exit_code == 0
    first = (root / "rawframes/Real/v_Real_g01_c01/img_00001.jpg").read_bytes()
    res = runner.invoke(app, args + ["--jpeg-quality", "50"])
    assert res.exit_code == 1 and "jpeg_quality: 95 -> 50" in res.output and "--force" in res.output
    assert (root / "rawframes/Real/v_Real_g01_c01/img_00001.jpg").read_bytes() == first
    res = runner.invoke(app, args + ["--jpeg-quality", "50", "--force"])
    assert res.exit_code == 0
    assert len((root / "rawframes/Real/v_Real_g01_c01/img_00001.jpg").read_bytes()) < len(first)


def resume_root(base: Path) -> Path:
    files = {}
    for i in range(8):
        name = ["test.avi", "short_32f.mp4", "demo.mp4", "bikes.mp4"][i % 4]
        files[f"Real/v_Real_g{i + 1:02d}_c01{Path(name).suffix}"] = str(VIDEOS / name)
    root = ucf101_style_root(base, files)
    build_lists("ucf101", root)
    return root


@pytest.mark.slow
def test_killed_extraction_resumes_to_the_same_bytes_without_redoing_done_videos(tmp_path):
    args = ["--task", "both", "--algo", "farneback", "--new-short", "128", "--workers", "2"]
    reference = resume_root(tmp_path / "reference")
    assert CliRunner().invoke(app, ["extract", "--root", str(reference), *args]).exit_code == 0

    root = resume_root(tmp_path / "killed")
    cli = [str(Path(sys.executable).parent / "datatools"), "extract", "--root", str(root), *args]
    proc = subprocess.Popen(cli, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    # Records of visible folders: a kill can land after a record is written into its hidden
    # temporary folder and before that folder is renamed into place (the next run puts it
    # in place, extract/video._recover).
    done_marks = lambda: [p for p in (root / "rawframes").rglob(".datatools-done.json")  # noqa: E731
                          if not p.parent.name.startswith(".")]
    deadline = time.time() + 120
    while len(done_marks()) < 2 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    kill_group(proc)  # the driver and every worker, mid-run
    finished = {p.parent.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in done_marks()}
    assert 2 <= len(finished) < 8, "the kill must land mid-run"
    # Nothing half-written is counted: lists built now hold complete folders only.
    build_lists("ucf101", root, ["rawframes"])
    listed = (root / "ucf101_train_split_1_rawframes.txt").read_text().splitlines()
    assert {line.split()[0].split("/")[1] for line in listed} == set(finished)

    res = CliRunner().invoke(app, ["extract", "--root", str(root), *args])
    assert res.exit_code == 0, res.output
    assert tree_bytes(root / "rawframes") == tree_bytes(reference / "rawframes")
    for name, stamp in finished.items():
        mark = root / "rawframes/Real" / name / ".datatools-done.json"
        assert (mark.stat().st_ino, mark.stat().st_mtime_ns) == stamp, f"{name} was redone"
    records = {r.video_id: r for r in read_manifest(root)[0]}
    assert {records[n].extract_status for n in finished} == {"skipped"}
    assert not list((root / "rawframes").rglob(".*.tmp"))
    assert json.loads((root / "rawframes/Real/v_Real_g01_c01/.datatools-done.json").read_text())[
        "parts"]["rgb"]["count"] == 164
