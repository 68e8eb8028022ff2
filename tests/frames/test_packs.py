"""Packed frame storage (datatools/packs.py, packing.py, mmaction/packed.py, lmdb_export.py):
`datatools pack` and `unpack` on real extracted frames, byte for byte both ways, through a
SIGKILL; packs read by standard tools; MMAction2's own RawframeDataset (and our
ManifestRawframeDataset) + SampleFrames + RawFrameDecode through the `datatools_packed` backend
give the arrays the folders give, RGB and Flow; `extract --store packed` against files; the
LMDB export through MMAction2's stock lmdb backend."""

from __future__ import annotations

import functools
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
from conftest import VIDEOS, datatools, require_module
from trees import every_byte, frames_held, ucf101_style_root

from datatools.extract.options import ExtractOptions
from datatools.extract.run import extract
from datatools.frames import packs
from datatools.frames.packs import INDEX, Pack, verify
from datatools.lists.build import build_lists
from datatools.root.manifest import read_manifest
from datatools.schedule.client import ClusterOptions

BIN = Path(sys.executable).parent
succeeds = functools.partial(datatools, check=True)  # the command, which must exit 0


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


def test_pack_and_unpack_are_byte_identical_and_packs_are_plain_stored_zips(extracted, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(extracted, root)
    before = every_byte(root / "rawframes")
    done = succeeds("pack", "--root", str(root))
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
    again = succeeds("pack", "--root", str(root))
    assert "0 folders converted" in again.stdout
    succeeds("unpack", "--root", str(root))
    assert every_byte(root / "rawframes") == before


# What this process opens or lists, while `_reads` is a list (sys.addaudithook: real opens
# and listings, seen as the interpreter makes them; a hook cannot be removed, so it stays idle).
_reads: list[str] | None = None


def _audit(event: str, args: tuple) -> None:
    if _reads is not None and event in ("open", "os.listdir", "os.scandir") and args:
        _reads.append(os.fsdecode(args[0]) if isinstance(args[0], (str, bytes, os.PathLike)) else "")


sys.addaudithook(_audit)


def test_a_packed_roots_unchanged_rerun_is_answered_from_the_manifest_reading_no_pack(extracted, tmp_path):
    """As a folder root's: the second build-lists opens no pack and lists no class or frame
    folder (its rows' packs are stat'ed, not opened); a pack rewritten makes it scan again."""
    global _reads
    from datatools.root.manifest import ManifestRows
    root = tmp_path / "root"
    shutil.copytree(extracted, root)
    succeeds("pack", "--root", str(root))
    formats = ["videos", "rawframes", "flow"]
    first = build_lists("ucf101", root, formats)
    assert not isinstance(first.records, ManifestRows)
    assert {r.frame_storage for r in first.records} == {"packed"}
    _reads = []
    try:
        again = build_lists("ucf101", root, formats)
        seen, _reads = _reads, None
    finally:
        _reads = None
    assert isinstance(again.records, ManifestRows)
    # (the fingerprint lists rawframes/ itself: its class folders' mtimes)
    frames = str(root / "rawframes") + os.sep
    assert not [path for path in seen if path.startswith(frames)], seen
    assert str(root / "rawframes") in seen  # the hook saw this run's reads
    assert [(lf.name, lf.lines) for lf in again.lists] == [(lf.name, lf.lines) for lf in first.lists]
    assert sum(lf.lines for lf in again.lists if lf.fmt != "videos") > 0
    pack = next((root / "rawframes").rglob("*.zip"))
    os.utime(pack, ns=(time.time_ns(), time.time_ns()))
    assert not isinstance(build_lists("ucf101", root, formats).records, ManifestRows)
    assert isinstance(build_lists("ucf101", root, formats).records, ManifestRows)


def du(path: Path) -> int:
    return int(subprocess.run(["du", "-sk", str(path)], capture_output=True, text=True,
                              check=True).stdout.split()[0])


@pytest.mark.slow
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
    succeeds("pack", "--root", str(root))
    assert not list((root / "rawframes").rglob(".*.tmp"))
    assert frames_held(root / "rawframes") == before


def count_packs(root: Path) -> int:
    """Complete packs now (os.walk, unlike rglob, passes over folders deleted while it looks)."""
    return sum(1 for _, _, files in os.walk(root / "rawframes") for f in files
               if f.endswith(".zip") and not f.startswith("."))


def test_mmaction_reads_packs_through_its_own_pipelines_as_it_reads_folders(extracted, tmp_path):
    require_module("mmaction")
    from mmaction.datasets import RawframeDataset
    from mmengine.registry import init_default_scope

    import datatools.mmaction  # noqa: F401  (registers the datatools_packed backend)
    init_default_scope("mmaction")
    packed = tmp_path / "root"
    shutil.copytree(extracted, packed)
    succeeds("pack", "--root", str(packed))

    def dataset(root: Path, modality: str, backend: str):
        kind = "rawframes" if modality == "RGB" else "flow"
        sample = dict(type="SampleFrames", clip_len=2, frame_interval=3, num_clips=4, test_mode=True)
        return RawframeDataset(
            str(root / f"ucf101_train_split_1_{kind}.txt"), data_prefix=dict(img=str(root / "rawframes")),
            modality=modality, filename_tmpl="img_{:05d}.jpg" if modality == "RGB" else "flow_{}_{:05d}.jpg",
            pipeline=[sample, dict(type="RawFrameDecode", io_backend=backend)])

    from datatools.mmaction.datasets import ManifestRawframeDataset
    succeeds("ucf101", "build-lists", "--root", str(packed), "--format", "rawframes,flow")
    for modality in ("RGB", "Flow"):
        folders = dataset(extracted, modality, "disk")
        packs = dataset(packed, modality, "datatools_packed")
        sample = dict(type="SampleFrames", clip_len=2, frame_interval=3, num_clips=4, test_mode=True)
        manifest = ManifestRawframeDataset(
            str(packed / "manifest.parquet"), modality=modality,
            pipeline=[sample, dict(type="RawFrameDecode", io_backend="datatools_packed")])
        assert len(folders) == len(packs) == len(manifest) >= 2
        by_video = {Path(manifest[i]["frame_dir"]).name: manifest[i]["imgs"] for i in range(len(manifest))}
        for i in range(len(folders)):
            a, b = folders[i], packs[i]
            c = by_video[Path(a["frame_dir"]).name]
            assert len(a["imgs"]) == len(b["imgs"]) == len(c) >= 8
            assert all(np.array_equal(x, y) for x, y in zip(a["imgs"], b["imgs"])), (modality, i)
            assert all(np.array_equal(x, y) for x, y in zip(a["imgs"], c)), (modality, i)


CLIPS = {"Real/v_Real_g01_c01.avi": "test.avi", "Real/v_Real_g02_c01.mp4": "short_32f.mp4",
         "Bikes/v_Bikes_g01_c01.mp4": "short_32f.mp4"}


def clips_root(base: Path, copies: int = 0) -> Path:
    """The CLIPS (plus `copies` more of short_32f.mp4) in a UCF101-layout root's split 1 train
    set, and one more short clip as its test set (configs need a val set)."""
    files = {rel: str(VIDEOS / name) for rel, name in CLIPS.items()}
    files.update({f"Copies/v_Copies_g{i:02d}_c01.mp4": str(VIDEOS / "short_32f.mp4") for i in range(copies)})
    root = ucf101_style_root(base, files)
    shutil.copy(VIDEOS / "short_32f.mp4", root / "videos" / "Real" / "v_Real_g09_c01.mp4")
    (root / "annotations" / "testlist01.txt").write_text("Real/v_Real_g09_c01.mp4\r\n")
    succeeds("ucf101", "build-lists", "--root", str(root))
    return root


def frames_in(top: Path) -> dict[str, bytes]:
    """Frame files by relative path, from folders and packs alike (records and indexes aside:
    records hold times)."""
    return {k: v for k, v in frames_held(top).items()
            if not k.endswith((".datatools-done.json", INDEX))}


def test_extract_store_packed_writes_what_files_writes_and_resumes_skips_and_adds_parts(tmp_path):
    common = ["--task", "rgb", "--new-short", "96", "--workers", "2"]
    files, packed = clips_root(tmp_path / "files"), clips_root(tmp_path / "packed")
    succeeds("extract", "--root", str(files), *common)
    succeeds("extract", "--root", str(packed), *common, "--store", "packed")
    assert count_packs(packed) == 4 and not [p for p in (packed / "rawframes").rglob("*") if p.is_dir()
                                             and p.parent.name != "rawframes"]
    assert frames_in(packed / "rawframes") == frames_in(files / "rawframes")
    stamps = {p: p.stat().st_mtime_ns for p in (packed / "rawframes").rglob("*.zip")}
    again = succeeds("extract", "--root", str(packed), *common, "--store", "packed")
    assert "skipped" in again.stdout and {p: p.stat().st_mtime_ns for p in stamps} == stamps

    # flow added later to packs holding RGB: the pack then holds both, as the folder does
    flow = ["--task", "flow", "--algo", "farneback", "--new-short", "96", "--workers", "2"]
    succeeds("extract", "--root", str(files), *flow)
    succeeds("extract", "--root", str(packed), *flow, "--store", "packed")
    held = frames_in(packed / "rawframes")
    assert held == frames_in(files / "rawframes") and any("/flow_y_" in k for k in held)

    # lists as for folders; the manifest says where the frames are; the config reads packs
    for root in (files, packed):
        succeeds("ucf101", "build-lists", "--root", str(root), "--format", "rawframes,flow")
    for name in ("ucf101_train_split_1_rawframes.txt", "ucf101_train_split_1_flow.txt"):
        assert (packed / name).read_text() == (files / name).read_text() != ""
    records, _ = read_manifest(packed)
    assert {r.frame_storage for r in records} == {"packed"}
    config = tmp_path / "tsn.py"
    succeeds("mmaction", "config", "--root", str(packed), "--input", "rawframes", "--out", str(config))
    assert "io_backend='datatools_packed'" in config.read_text()
    # a config written for folders reads them through the same backend: it still trains
    # once the root is packed (the 2-epoch training from a packed root: test_mmaction)
    succeeds("mmaction", "config", "--root", str(files), "--input", "rawframes", "--out", str(config))
    assert "io_backend='datatools_packed'" in config.read_text()


@pytest.mark.slow
def test_extract_store_packed_killed_resumes_to_the_same_bytes(tmp_path):
    """SIGKILL `extract --store packed` once some packs are complete: the re-run leaves every
    video packed with the bytes an unkilled files run writes; no pack is half written."""
    args = ["--task", "both", "--algo", "farneback", "--new-short", "64", "--workers", "2"]
    files, packed = clips_root(tmp_path / "files", copies=9), clips_root(tmp_path / "packed", copies=9)
    succeeds("extract", "--root", str(files), *args)
    proc = subprocess.Popen([str(BIN / "datatools"), "extract", "--root", str(packed), *args,
                             "--store", "packed"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + 120
    while count_packs(packed) < 3 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and its workers
    proc.wait()
    assert 3 <= count_packs(packed) < 13, "killed too late: the run had finished"
    for pack in (packed / "rawframes").rglob("*.zip"):
        if not pack.name.startswith("."):
            assert verify(str(pack)) is None, pack
    succeeds("extract", "--root", str(packed), *args, "--store", "packed")
    assert count_packs(packed) == 13
    assert frames_in(packed / "rawframes") == frames_in(files / "rawframes")


def test_a_file_at_a_packs_name_that_is_not_a_pack_fails_its_video_and_is_left_as_it_is(tmp_path):
    """A truncated pack or a file that is no zip at all is not trusted, not replaced and not
    deleted: its video fails naming it (exit 1), the other videos are skipped as done; moved
    away, the video is extracted again. --force redoes a good pack."""
    common = ["--task", "rgb", "--new-short", "96", "--workers", "1"]
    files, packed = clips_root(tmp_path / "files"), clips_root(tmp_path / "packed")
    succeeds("extract", "--root", str(files), *common)
    succeeds("extract", "--root", str(packed), *common, "--store", "packed")
    pack_files = sorted(p for p in (packed / "rawframes").rglob("*.zip") if not p.name.startswith("."))
    truncated, foreign, good = pack_files[0], pack_files[1], pack_files[2]
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    foreign.write_bytes(b"not a zip at all\n")
    kept = {p: p.read_bytes() for p in (truncated, foreign)}
    stamp = good.stat().st_mtime_ns
    for store in ("packed", "files"):
        again = datatools("extract", "--root", str(packed), *common, "--store", store)
        said = again.stdout + again.stderr
        assert again.returncode == 1, said
        for path in (truncated, foreign):
            assert f"{path}: not a datatools pack" in said and path.read_bytes() == kept[path]
            assert not path.with_suffix("").exists()
        assert good.stat().st_mtime_ns == stamp  # a good pack is skipped

    for path in (truncated, foreign):
        path.rename(tmp_path / path.name)  # moved away by the user: extracted again
    assert succeeds("extract", "--root", str(packed), *common, "--store", "packed").returncode == 0
    assert frames_in(packed / "rawframes") == frames_in(files / "rawframes")
    forced = succeeds("extract", "--root", str(packed), *common, "--store", "packed", "--force")
    assert good.stat().st_mtime_ns != stamp and "written now: 0 RGB" not in forced.stdout
    assert {r.extract_status for r in read_manifest(packed)[0] if r.subset_1 == "train"} == {"done"}
    assert frames_in(packed / "rawframes") == frames_in(files / "rawframes")


def test_a_damaged_frame_in_a_kept_part_is_redone_and_another_versions_pack_is_left_alone(tmp_path,
                                                                                          monkeypatch):
    """Adding flow to packs holding RGB: an RGB frame whose bytes fail their CRC is not copied
    into the new pack (with a fresh CRC) but redone; a pack of another index version is a
    failed video naming the fix, and is left as it is."""
    rgb = ["--task", "rgb", "--new-short", "96", "--workers", "1"]
    both = ["--task", "both", "--algo", "farneback", "--new-short", "96", "--workers", "1"]
    files, packed = clips_root(tmp_path / "files"), clips_root(tmp_path / "packed")
    succeeds("extract", "--root", str(files), *both)
    succeeds("extract", "--root", str(packed), *rgb, "--store", "packed")
    pack_files = sorted(p for p in (packed / "rawframes").rglob("*.zip") if not p.name.startswith("."))
    rotten, newer = pack_files[0], pack_files[1]
    with Pack.open(str(rotten)) as p:
        offset, length, _, _ = p.members["img_00003.jpg"]
    with open(rotten, "r+b") as f:  # one bit flipped inside a frame's bytes
        f.seek(offset + length // 2)
        byte = f.read(1)[0]
        f.seek(offset + length // 2)
        f.write(bytes([byte ^ 0x10]))
    assert verify(str(rotten)) is not None
    with Pack.open(str(newer)) as p:  # the same frames, as a later version would write them
        members = {n: p.read(n) for n in p.names()}
    with monkeypatch.context() as later:
        later.setattr(packs, "INDEX_VERSION", 9)
        writer = packs.PackWriter(str(newer))
        for name, data in members.items():
            writer.add(name, data)
        writer.finish()
    kept = newer.read_bytes()

    res = datatools("extract", "--root", str(packed), *both, "--store", "packed")
    said = res.stdout + res.stderr
    assert res.returncode == 1, said
    assert f"failed: videos/{newer.parent.name}/{newer.stem}" in said
    assert "pack index version 9" in said and "upgrade datatools" in said
    assert newer.read_bytes() == kept
    assert verify(str(rotten)) is None
    newer.rename(tmp_path / newer.name)  # out of the comparison: this datatools cannot read it
    other = f"{newer.parent.name}/{newer.stem}/"
    assert frames_in(packed / "rawframes") == {k: v for k, v in frames_in(files / "rawframes").items()
                                               if not k.startswith(other)}


def test_the_lmdb_export_is_read_by_mmactions_stock_lmdb_backend(extracted, tmp_path):
    """`pack --to lmdb` from a root half packed, half folders: MMAction2's RawframeDataset +
    RawFrameDecode(io_backend='lmdb') give the arrays the folders give, RGB and Flow; a frame
    path that is not ASCII is refused in one line, with nothing written."""
    require_module("mmaction")
    require_module("lmdb")
    from mmaction.datasets import RawframeDataset
    from mmengine.registry import init_default_scope
    init_default_scope("mmaction")
    root = tmp_path / "root"
    shutil.copytree(extracted, root)
    from datatools.frames.convert import pack_folder
    pack_folder(root / "rawframes" / "Real" / "v_Real_g02_c01")  # one packed, the others folders
    done = succeeds("pack", "--root", str(root), "--to", "lmdb")
    db = root / "rawframes.lmdb"
    assert "frames in" in done.stdout and db.is_dir()

    def dataset(modality: str, decode: dict, prefix: str):
        kind = "rawframes" if modality == "RGB" else "flow"
        sample = dict(type="SampleFrames", clip_len=2, frame_interval=3, num_clips=3, test_mode=True)
        return RawframeDataset(
            str(root / f"ucf101_train_split_1_{kind}.txt"), data_prefix=dict(img=prefix), modality=modality,
            filename_tmpl="img_{:05d}.jpg" if modality == "RGB" else "flow_{}_{:05d}.jpg",
            pipeline=[sample, decode])

    for modality in ("RGB", "Flow"):
        folders = dataset(modality, dict(type="RawFrameDecode"), str(extracted / "rawframes"))
        stock = dataset(modality, dict(type="RawFrameDecode", io_backend="lmdb", db_path=str(db)), "")
        assert len(folders) == len(stock) >= 2
        for i in range(len(folders)):
            a, b = folders[i]["imgs"], stock[i]["imgs"]
            assert len(a) == len(b) >= 6 and all(np.array_equal(x, y) for x, y in zip(a, b))

    odd = tmp_path / "odd"
    shutil.copytree(extracted, odd)
    (odd / "rawframes" / "Real" / "v_Real_g01_c01").rename(odd / "rawframes" / "Real" / "v_Réal_g01_c01")
    refused = datatools("pack", "--root", str(odd), "--to", "lmdb")
    assert refused.returncode == 2 and "ASCII" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    assert not (odd / "rawframes.lmdb").exists() and not list(odd.glob(".rawframes.lmdb*"))
