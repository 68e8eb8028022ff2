"""Packed frame storage (datatools/packs.py, packing.py, mmaction/packed.py): `datatools pack`
and `unpack` on real extracted frames, byte for byte both ways, through a SIGKILL; packs read
by standard tools; MMAction2's own RawframeDataset + SampleFrames + RawFrameDecode through the
`datatools_packed` backend give the arrays the folders give, RGB and Flow."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import VIDEOS
from trees import ucf101_style_root

from datatools.extract.options import ExtractOptions
from datatools.extract.run import extract
from datatools.lists.build import build_lists
from datatools.packs import INDEX, Pack, verify
from datatools.schedule.client import ClusterOptions

BIN = Path(sys.executable).parent


def every_byte(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def extracted(tmp_path_factory) -> Path:
    """Three real clips, RGB and Farneback flow at MMAction2's names, lists written."""
    files = {"Real/v_Real_g01_c01.avi": str(VIDEOS / "test.avi"),
             "Real/v_Real_g02_c01.mp4": str(VIDEOS / "short_32f.mp4"),
             "Bikes/v_Bikes_g01_c01.mp4": str(VIDEOS / "bikes.mp4")}
    root = ucf101_style_root(tmp_path_factory.mktemp("packs") / "root", files)
    build_lists("ucf101", root)
    extract(root, ExtractOptions(task="both", algo="farneback", new_short=128),
            cluster=ClusterOptions(workers=2))
    build_lists("ucf101", root, ["rawframes", "flow"])
    return root


def run_datatools(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "datatools"), *args], capture_output=True, text=True, check=check)


def test_pack_and_unpack_are_byte_identical_and_packs_are_plain_stored_zips(extracted, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(extracted, root)
    before = every_byte(root / "rawframes")
    done = run_datatools("pack", "--root", str(root))
    assert "3 folders converted" in done.stdout, done.stdout
    packs = sorted((root / "rawframes").rglob("*.zip"))
    assert [p.relative_to(root / "rawframes").as_posix() for p in packs] == [
        "Bikes/v_Bikes_g01_c01.zip", "Real/v_Real_g01_c01.zip", "Real/v_Real_g02_c01.zip"]
    assert not [p for p in (root / "rawframes").rglob("*") if p.is_dir() and p.parent.name != "rawframes"]
    folder_bytes = du(extracted / "rawframes")
    assert du(root / "rawframes") <= folder_bytes
    for pack in packs:
        rel = pack.relative_to(root / "rawframes").as_posix()[: -len(".zip")]
        with zipfile.ZipFile(pack) as zf:  # Python's zipfile, stored, CRC-checked
            assert zf.testzip() is None
            assert {i.compress_type for i in zf.infolist()} == {zipfile.ZIP_STORED}
            names = set(zf.namelist()) - {INDEX}
            assert names == {k.split("/")[-1] for k in before if k.startswith(rel + "/")}
            for name in names:
                assert zf.read(name) == before[f"{rel}/{name}"]
        listed = subprocess.run(["unzip", "-l", str(pack)], capture_output=True, text=True, check=True)
        assert "img_00001.jpg" in listed.stdout and "flow_y_00001.jpg" in listed.stdout
        assert subprocess.run(["unzip", "-tq", str(pack)], capture_output=True).returncode == 0
        with Pack.open(str(pack)) as p:  # one pread per member, at the indexed offset
            assert all(p.read(n) == before[f"{rel}/{n}"] for n in names)
    again = run_datatools("pack", "--root", str(root))
    assert "0 folders converted" in again.stdout
    run_datatools("unpack", "--root", str(root))
    assert every_byte(root / "rawframes") == before


def du(path: Path) -> int:
    return int(subprocess.run(["du", "-sk", str(path)], capture_output=True, text=True,
                              check=True).stdout.split()[0])


def test_a_pack_killed_at_any_point_resumes_to_the_same_bytes(extracted, tmp_path):
    """SIGKILL `datatools pack` at three points of a run over 27 folders; whatever it left, no
    pack at a final name is incomplete, no frame is lost, and the re-run ends with every pack
    holding its folder's bytes."""
    root = tmp_path / "root"
    shutil.copytree(extracted, root)
    source = root / "rawframes" / "Real" / "v_Real_g01_c01"
    for i in range(24):
        shutil.copytree(source, root / "rawframes" / "Copies" / f"v_Copies_g{i:02d}_c01")
    before = every_byte(root / "rawframes")
    for packed in (1, 8, 16):  # kill once this many packs are at their final names
        proc = subprocess.Popen([str(BIN / "datatools"), "pack", "--root", str(root), "--threads", "2"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while count_packs(root) < packed and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert count_packs(root) < 27, "the run finished before it was killed"
        for pack in (root / "rawframes").rglob("*.zip"):
            if not pack.name.startswith("."):
                assert verify(str(pack)) is None, pack
        assert frames_held(root / "rawframes") == before
    run_datatools("pack", "--root", str(root))
    assert not list((root / "rawframes").rglob(".*.tmp"))
    assert frames_held(root / "rawframes") == before


def count_packs(root: Path) -> int:
    """Complete packs now (os.walk, unlike rglob, passes over folders deleted while it looks)."""
    return sum(1 for _, _, files in os.walk(root / "rawframes") for f in files
               if f.endswith(".zip") and not f.startswith("."))


def frames_held(top: Path) -> dict[str, bytes]:
    """Every frame (and record) as the root holds it now, in folders or in complete packs."""
    held = {}
    for pack in top.rglob("*.zip"):
        if not pack.name.startswith("."):
            rel = pack.relative_to(top).as_posix()[: -len(".zip")]
            with Pack.open(str(pack)) as p:
                held.update({f"{rel}/{n}": p.read(n) for n in p.names()})
    for path, data in every_byte(top).items():
        if not path.endswith(".zip") and ".tmp" not in path:
            held[path] = data
    return held


def test_mmaction_reads_packs_through_its_own_pipelines_as_it_reads_folders(extracted, tmp_path):
    pytest.importorskip("mmaction")
    from mmaction.datasets import RawframeDataset
    from mmengine.registry import init_default_scope

    import datatools.mmaction  # noqa: F401  (registers the datatools_packed backend)
    init_default_scope("mmaction")
    packed = tmp_path / "root"
    shutil.copytree(extracted, packed)
    run_datatools("pack", "--root", str(packed))

    def dataset(root: Path, modality: str, backend: str):
        kind = "rawframes" if modality == "RGB" else "flow"
        sample = dict(type="SampleFrames", clip_len=2, frame_interval=3, num_clips=4, test_mode=True)
        return RawframeDataset(
            str(root / f"ucf101_train_split_1_{kind}.txt"), data_prefix=dict(img=str(root / "rawframes")),
            modality=modality, filename_tmpl="img_{:05d}.jpg" if modality == "RGB" else "flow_{}_{:05d}.jpg",
            pipeline=[sample, dict(type="RawFrameDecode", io_backend=backend)])

    for modality in ("RGB", "Flow"):
        folders = dataset(extracted, modality, "disk")
        packs = dataset(packed, modality, "datatools_packed")
        assert len(folders) == len(packs) >= 2
        for i in range(len(folders)):
            a, b = folders[i], packs[i]
            assert len(a["imgs"]) == len(b["imgs"]) >= 8
            assert all(np.array_equal(x, y) for x, y in zip(a["imgs"], b["imgs"])), (modality, i)
