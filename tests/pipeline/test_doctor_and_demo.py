"""`datatools doctor` and `datatools demo`, run as a user runs them (the installed console
script in a subprocess)."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import decord
import numpy as np
import pytest
from conftest import datatools

from datatools.cli.doctor import installed_opencv_wheels, opencv_conflict
from datatools.root.manifest import read_manifest

BIN = Path(sys.executable).parent


def test_doctor_reports_each_component_on_one_line_and_passes_here():
    proc = datatools("doctor")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert any(line.startswith("ok      opencv (cv2):") and "optflow (TV-L1): yes" in line
               for line in lines)
    assert any(line.startswith("ok      opencv wheels: opencv-contrib-python-headless")
               for line in lines)
    for name in ("python", "decord", "av", "ffmpeg", "RAR readers", "torch", "mmaction2"):
        assert any(f" {name}:" in line for line in lines), name
    # In the order download tries them (CI installs all three).
    assert "ok      RAR readers: 7z, unar, bsdtar (tried in this order)" in lines
    mm = next(line for line in lines if " mmaction2:" in line)
    assert "mmaction.models.localizers.drn" in mm


def test_doctor_fails_and_says_how_when_a_required_component_is_missing(tmp_path):
    # A real broken environment: a `cv2` module shadowing OpenCV without optflow, the state
    # left behind when opencv-python overwrites the contrib wheel's files.
    (tmp_path / "cv2").mkdir()
    (tmp_path / "cv2" / "__init__.py").write_text("__version__ = '4.10.0'\n")
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    proc = datatools("doctor", env=env)
    assert proc.returncode == 1
    assert "MISSING opencv (cv2): 4.10.0, optflow (TV-L1): NO" in proc.stdout
    assert "fix: pip uninstall -y opencv-python" in proc.stdout
    assert "1 required component(s) missing: opencv (cv2)" in proc.stdout


def test_opencv_conflict_is_explained():
    assert installed_opencv_wheels() == ["opencv-contrib-python-headless"]
    assert opencv_conflict(["opencv-contrib-python-headless"]) is None
    both = opencv_conflict(["opencv-python", "opencv-contrib-python-headless"])
    assert "2 OpenCV wheels share one cv2 package" in both
    assert "no cv2.optflow" in opencv_conflict(["opencv-python"])


@pytest.mark.slow
def test_demo_builds_a_ucf101_layout_root_with_real_videos(tmp_path):
    root = tmp_path / "demo"
    proc = datatools("demo", "--root", root, "--videos-per-class", "3")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (root / "annotations/classInd.txt").read_bytes().startswith(b"1 DriftRight\r\n")
    train = (root / "ucf101_train_split_1_videos.txt").read_text().splitlines()
    assert train[0] == "DriftRight/v_DriftRight_g02_c01.avi 0" and len(train) == 8
    records, meta = read_manifest(root)
    assert meta.label_map == ["DriftRight", "DriftDown", "DriftDiagonal", "DriftLeft"]
    assert all(r.status == "ok" for r in records) and len(records) == 12
    vr = decord.VideoReader(str(root / "videos/DriftRight/v_DriftRight_g01_c01.avi"))
    assert len(vr) == 24 and vr[0].shape == (120, 160, 3)
    first, last = vr[0].asnumpy().astype(int), vr[23].asnumpy().astype(int)
    assert abs(first - last).mean() > 10  # the content moves
    # Extraction: 24 RGB frames and 23 TV-L1 pairs per video, listed with their counts.
    assert (root / "ucf101_train_split_1_rawframes.txt").read_text().splitlines()[0] == \
        "DriftRight/v_DriftRight_g02_c01 24 0"
    assert (root / "ucf101_val_split_1_flow.txt").read_text().splitlines()[0] == \
        "DriftRight/v_DriftRight_g01_c01 23 0"
    assert all((r.rgb_count, r.flow_count, r.flow_algo) == (24, 23, "tvl1") for r in records)
    # The shape moves right by 3 px a frame: the mean flow_x inside it is about +3 px.
    import cv2

    from datatools.extract.quantize import dequantize_flow
    fx = dequantize_flow(cv2.imread(str(root / "rawframes/DriftRight/v_DriftRight_g01_c01/"
                                                "flow_x_00005.jpg"), cv2.IMREAD_GRAYSCALE), 20)
    assert fx.max() > 2.0 and abs(float(np.median(fx))) < 1.0
    # Training: TSN on the flow tells the directions apart (the demo fails below 0.75).
    flow = re.search(r"TV-L1 flow\W+([0-9.]+)\W+0\.25", proc.stdout)
    rgb = re.search(r"RGB frames\W+([0-9.]+)\W+0\.25", proc.stdout)
    assert flow and rgb and float(flow.group(1)) >= 0.75, proc.stdout[-2000:]
    assert (root / "tsn_demo_flow.py").is_file() and (root / "tsn_demo_rgb.py").is_file()
