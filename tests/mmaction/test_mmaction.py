"""MMAction2 trains from the manifest: datatools' registered datasets, built from config files,
against MMAction2's stock datasets on our text lists; MMAction2's pipelines on real extracted
frames; real CPU training runs (MMEngine's Runner and MMAction2's own tools/train.py)."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import VIDEOS, require_module
from trees import ucf101_style_root

from datatools.extract.options import ExtractOptions
from datatools.extract.run import extract
from datatools.lists.build import build_lists
from datatools.mmaction.compat import drn_is_missing
from datatools.pipeline.demo import make_dataset
from datatools.schedule.client import ClusterOptions
from datatools.validate.run import validate

mmaction = require_module("mmaction")  # the `mmaction` extra
from mmaction.datasets import RawframeDataset, VideoDataset  # noqa: E402
from mmaction.registry import DATASETS  # noqa: E402
from mmengine.config import Config  # noqa: E402
from mmengine.registry import init_default_scope  # noqa: E402

import datatools.mmaction  # noqa: E402,F401  (registers the datasets)

BIN = Path(sys.executable).parent
MIM = Path(mmaction.__file__).parent / ".mim"
TWO = ClusterOptions(workers=2)
init_default_scope("mmaction")  # as MMAction2's runtime config does: transforms by their names


def real_root(base: Path, naming: str) -> Path:
    """Real clips in a UCF101-layout root (one corrupt), validated, extracted, listed."""
    truncated = base / "truncated.mp4"
    base.mkdir(parents=True, exist_ok=True)
    truncated.write_bytes((VIDEOS / "test.mp4").read_bytes()[:60_000])
    files = {"Real/v_Real_g01_c01.avi": str(VIDEOS / "test.avi"),
             "Real/v_Real_g02_c01.mp4": str(VIDEOS / "short_32f.mp4"),
             "Bikes/v_Bikes_g01_c01.mp4": str(VIDEOS / "short_32f.mp4"),
             "Bikes/v_Bikes_g02_c01.mp4": str(truncated)}
    root = ucf101_style_root(base / "root", files)
    validate("ucf101", root, "quick", TWO)
    build_lists("ucf101", root)
    extract(root, ExtractOptions(task="both", algo="farneback", naming=naming), cluster=TWO)
    build_lists("ucf101", root, ["videos", "rawframes", "flow"])
    return root


@pytest.fixture(scope="module", params=["mmaction", "denseflow"])
def extracted(request, tmp_path_factory):
    return request.param, real_root(tmp_path_factory.mktemp(request.param), request.param)


def from_config(tmp_path: Path, text: str) -> Config:
    path = tmp_path / "datasets.py"
    path.write_text("custom_imports = dict(imports=['datatools.mmaction'], "
                    "allow_failed_imports=False)\n" + text)
    return Config.fromfile(str(path))


def test_drn_stand_in_makes_mmaction_models_importable():
    import mmaction.models  # noqa: F401  (fails on the 1.2.0 wheel without the stand-in)
    from mmaction.registry import MODELS
    assert MODELS.get("Recognizer2D") is not None
    if drn_is_missing():
        from mmaction.models.localizers import DRN
        with pytest.raises(ImportError, match="not in the MMAction2 1.2.0 wheel"):
            DRN()


def test_registry_datasets_equal_stock_datasets_reading_our_lists(extracted, tmp_path):
    naming, root = extracted
    start = 1 if naming == "mmaction" else 0
    cfg = from_config(tmp_path, f"""
manifest = {str(root / 'manifest.parquet')!r}
videos = dict(type='ManifestVideoDataset', manifest=manifest, split=1, subset='train', pipeline=[])
rgb = dict(type='ManifestRawframeDataset', manifest=manifest, split=1, subset='train', pipeline=[])
flow = dict(type='ManifestRawframeDataset', manifest=manifest, modality='Flow', split=1,
            subset='train', pipeline=[])
""")
    ours = {name: DATASETS.build(cfg[name]) for name in ("videos", "rgb", "flow")}
    stock = {
        "videos": VideoDataset(str(root / "ucf101_train_split_1_videos.txt"), pipeline=[],
                               data_prefix=dict(video=str(root / "videos"))),
        "rgb": RawframeDataset(str(root / "ucf101_train_split_1_rawframes.txt"), pipeline=[],
                               data_prefix=dict(img=str(root / "rawframes")), start_index=start),
        "flow": RawframeDataset(str(root / "ucf101_train_split_1_flow.txt"), pipeline=[],
                                data_prefix=dict(img=str(root / "rawframes")), start_index=start,
                                filename_tmpl="flow_{}_{:05d}.jpg", modality="Flow"),
    }
    for name in ours:
        assert len(ours[name]) == len(stock[name]) == 3, name  # the truncated clip is out
        assert ours[name].selection.left_out == {"status corrupt": 1}
        for i in range(3):
            a, b = ours[name].get_data_info(i), stock[name].get_data_info(i)
            for key in ("filename", "frame_dir"):
                if key in b:
                    a[key], b[key] = os.path.normpath(a[key]), os.path.normpath(b[key])
            if "filename_tmpl" in b:  # 'img_{:05}.jpg' (stock default) names what 'img_{:05d}.jpg' does
                last = b["start_index"] + b["total_frames"] - 1
                args = ("x",) if name == "flow" else ()
                names = [(d.pop("filename_tmpl")).format(*args, last) for d in (a, b)]
                assert names[0] == names[1] and Path(a["frame_dir"], names[0]).is_file()
            assert a == b, (name, i)
    assert [ours["rgb"].get_data_info(i)["total_frames"] for i in range(3)] == [164, 32, 32]
    assert [ours["flow"].get_data_info(i)["total_frames"] for i in range(3)] == [163, 31, 31]
    assert ours["rgb"].start_index == start and ours["flow"].filename_tmpl == "flow_{}_{:05d}.jpg"


def test_full_mmaction_pipelines_read_every_frame_to_the_last(extracted, tmp_path):
    naming, root = extracted
    start = 1 if naming == "mmaction" else 0
    sample = ("dict(type='SampleFrames', clip_len=400, frame_interval=1, num_clips=1, "
              "test_mode=True, out_of_bound_opt='repeat_last')")
    cfg = from_config(tmp_path, f"""
manifest = {str(root / 'manifest.parquet')!r}
tail = [dict(type='Resize', scale=(-1, 128)), dict(type='CenterCrop', crop_size=112),
        dict(type='FormatShape', input_format='NCHW'),
        dict(type='PackActionInputs', meta_keys=('frame_inds', 'img_shape'))]
videos = dict(type='ManifestVideoDataset', manifest=manifest, split=1, subset='train',
              pipeline=[dict(type='DecordInit'), {sample}, dict(type='DecordDecode')] + tail)
rgb = dict(type='ManifestRawframeDataset', manifest=manifest, split=1, subset='train',
           pipeline=[{sample}, dict(type='RawFrameDecode')] + tail)
flow = dict(type='ManifestRawframeDataset', manifest=manifest, modality='Flow', split=1,
            subset='train', pipeline=[{sample}, dict(type='RawFrameDecode')] + tail)
""")
    # FormatShape NCHW: RGB gives one 3-channel image per frame; Flow stacks each clip's x/y
    # pairs into channels (MMAction2's TSN flow input).
    for name, first, shape in (("videos", 0, (400, 3)), ("rgb", start, (400, 3)), ("flow", start, (1, 800))):
        ds = DATASETS.build(cfg[name])
        for i in range(len(ds)):
            info = ds.get_data_info(i)
            packed = ds[i]
            frames = info["total_frames"] if name != "videos" else [164, 32, 32][i]
            # The last frame index the pipeline read is the last file on disk (or video frame).
            assert packed["data_samples"].metainfo["frame_inds"].max() == first + frames - 1
            assert tuple(packed["inputs"].shape) == (*shape, 112, 112)


def _demo_root(base: Path) -> Path:
    root = make_dataset(base / "demo")
    validate("ucf101", root, "quick", TWO)
    build_lists("ucf101", root)
    extract(root, ExtractOptions(task="both", algo="tvl1"), cluster=TWO)
    build_lists("ucf101", root, ["videos", "rawframes", "flow"])
    return root


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory):
    return _demo_root(tmp_path_factory.mktemp("train"))


def small_config(root: Path, out: Path, *extra: str) -> Path:
    r = subprocess.run([str(BIN / "datatools"), "mmaction", "config", "--root", str(root), "--out",
                        str(out), "--model", "tsn", "--depth", "18", "--no-pretrained", "--crop", "64",
                        "--epochs", "2", "--batch-size", "4", "--workers", "0", *extra],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return out


def finite_losses(work_dir: Path) -> list[float]:
    scalars = next(work_dir.glob("*/vis_data/scalars.json"))
    losses = [e["loss"] for e in map(json.loads, scalars.read_text().splitlines()) if "loss" in e]
    assert losses and all(math.isfinite(v) for v in losses)
    return losses


@pytest.mark.slow
def test_stock_tools_train_and_test_run_a_generated_rgb_video_config(demo_root, tmp_path):
    config = small_config(demo_root, tmp_path / "tsn_rgb.py")
    text = config.read_text()
    assert "_base_ = ['mmaction::_base_/models/tsn_r50.py'" in text and "num_classes = 4" in text
    assert len(text.splitlines()) < 60  # short and readable
    work = tmp_path / "work"
    train = subprocess.run([sys.executable, str(MIM / "tools" / "train.py"), str(config),
                            "--work-dir", str(work)], capture_output=True, text=True, cwd=tmp_path)
    assert train.returncode == 0, train.stderr[-3000:]
    assert (work / "epoch_2.pth").is_file()
    assert len(finite_losses(work)) == 2  # one logged step per epoch (2 batches of 4)
    test = subprocess.run([sys.executable, str(MIM / "tools" / "test.py"), str(config),
                           str(work / "epoch_2.pth"), "--work-dir", str(tmp_path / "test")],
                          capture_output=True, text=True, cwd=tmp_path)
    assert test.returncode == 0, test.stderr[-3000:]
    assert "Epoch(test)" in test.stdout + test.stderr and "acc/top1:" in test.stdout + test.stderr
    assert "ManifestVideoDataset: ucf101 split 1 val (videos): 4 samples" in test.stdout + test.stderr


@pytest.mark.slow
def test_runner_trains_a_generated_flow_config_from_the_manifest(demo_root, tmp_path):
    config = small_config(demo_root, tmp_path / "tsn_flow.py", "--modality", "flow")
    assert "type='ManifestRawframeDataset', manifest=manifest, modality='Flow'" in config.read_text()
    r = subprocess.run([str(BIN / "datatools"), "mmaction", "train", str(config), "--work-dir",
                        str(tmp_path / "work")], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (tmp_path / "work" / "epoch_2.pth").is_file()
    finite_losses(tmp_path / "work")
    summary = [ln for ln in r.stdout.splitlines() if ln.startswith("test: ")]
    top1 = float(summary[-1].split("acc/top1 ")[1].split(",")[0])
    assert 0.0 <= top1 <= 1.0


@pytest.mark.slow
def test_stock_train_runs_two_epochs_from_a_packed_root(demo_root, tmp_path):
    """The demo root's frames packed (`datatools pack`): the config the writer makes reads them
    through io_backend='datatools_packed', and MMAction2's own tools/train.py trains 2 epochs."""
    import shutil
    root = tmp_path / "packed"
    shutil.copytree(demo_root, root)
    for args in (["pack", "--root", str(root)], ["ucf101", "build-lists", "--root", str(root),
                                                 "--format", "videos,rawframes,flow"]):
        subprocess.run([str(BIN / "datatools"), *args], check=True, capture_output=True)
    assert not [p for p in (root / "rawframes").rglob("img_*.jpg")]  # only packs are left
    config = small_config(root, tmp_path / "tsn_packed.py", "--input", "rawframes")
    assert "dict(type='RawFrameDecode', io_backend='datatools_packed')" in config.read_text()
    work = tmp_path / "work"
    train = subprocess.run([sys.executable, str(MIM / "tools" / "train.py"), str(config),
                            "--work-dir", str(work)], capture_output=True, text=True, cwd=tmp_path)
    assert train.returncode == 0, train.stderr[-3000:]
    assert (work / "epoch_2.pth").is_file() and len(finite_losses(work)) == 2


def test_config_errors_are_one_line(demo_root, tmp_path):
    r = subprocess.run([str(BIN / "datatools"), "mmaction", "config", "--root", str(demo_root), "--out",
                        str(tmp_path / "x.py"), "--model", "i3d", "--modality", "flow"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        "error: --modality flow: MMAction2 has a flow recipe for tsn only, not i3d"]
    empty = tmp_path / "empty"
    empty.mkdir()
    r = subprocess.run([str(BIN / "datatools"), "mmaction", "config", "--root", str(empty), "--out",
                        str(tmp_path / "y.py")], capture_output=True, text=True)
    assert r.returncode == 2 and "no manifest; run `datatools <dataset> build-lists" in r.stderr


@pytest.mark.parametrize("config", ["tsn_rgb_videos.py", "tsn_flow.py"])
def test_configs_written_by_the_previous_version_still_build_their_datasets(config, demo_root,
                                                                             tmp_path):
    """The configs in tests/data were written by datatools 0.1.0 before the package layout
    changed; only their manifest line is pointed at this test's root."""
    text = (Path(__file__).parents[1] / "data" / "configs_0.1.0" / config).read_text()
    assert "custom_imports = dict(imports=['datatools.mmaction']" in text
    text = re.sub(r"^manifest = .*$", f"manifest = {str(demo_root / 'manifest.parquet')!r}", text,
                  flags=re.M)
    path = tmp_path / config
    path.write_text(text)
    script = textwrap.dedent(f"""
        from mmengine.config import Config
        from mmengine.registry import init_default_scope
        from mmaction.registry import DATASETS
        cfg = Config.fromfile({str(path)!r})
        init_default_scope('mmaction')
        for name in ('train_dataloader', 'val_dataloader'):
            ds = DATASETS.build(cfg[name].dataset)
            print(name, type(ds).__name__, len(ds), ds.get_data_info(0)['label'])
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = r.stdout.split("\n")
    kind = "ManifestRawframeDataset" if "flow" in config else "ManifestVideoDataset"
    train = next(ln for ln in lines if ln.startswith("train_dataloader")).split()
    val = next(ln for ln in lines if ln.startswith("val_dataloader")).split()
    assert train[1] == val[1] == kind
    assert int(train[2]) == 8 and int(val[2]) == 4  # the demo root: 12 videos, split 1
    assert 0 <= int(train[3]) < 4 and 0 <= int(val[3]) < 4  # labels of the 4 demo classes
