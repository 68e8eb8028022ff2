"""validate: every broken-input case gets the right status, metadata equals decord's, strict,
quarantine/restore, an explicit Dask scheduler, and a worker that dies mid-video."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import decord
import pytest
from conftest import VIDEOS, require_tool
from trees import pids_with_open, ucf101_style_root
from typer.testing import CliRunner

from datatools.cli.app import app
from datatools.root.manifest import read_manifest
from datatools.schedule.client import ClusterOptions
from datatools.validate.run import validate

REAL = ["test.avi", "test.mp4", "demo.mp4", "short_32f.mp4", "bikes.mp4", "demo_skeleton.mp4"]
EXPECTED_BAD = {
    "v_Broken_g01_c01": "empty",
    "v_Broken_g02_c01": "corrupt",  # test.mp4 cut in half: moov atom lost
    "v_Broken_g03_c01": "corrupt",  # test.mp4 cut at 90 %
    "v_Broken_g04_c01": "corrupt",  # test.avi truncated
    "v_Broken_g05_c01": "not_video",  # a text file named .avi
    "v_Broken_g06_c01": "no_video_stream",  # audio only
    "v_Broken_g07_c01": "not_video",  # a directory named .mp4
    "v_Broken_g08_c01": "unreadable",  # mode 000
    "v_Broken_g09_c01": "missing",
}


@pytest.fixture(scope="module")
def variants(tmp_path_factory) -> dict[str, Path]:
    """Broken and re-encoded variants of the real videos, made once for the module."""
    ffmpeg = require_tool("ffmpeg")
    d = tmp_path_factory.mktemp("variants")
    mp4, avi = (VIDEOS / "test.mp4").read_bytes(), (VIDEOS / "test.avi").read_bytes()
    (d / "empty.mp4").write_bytes(b"")
    (d / "half.mp4").write_bytes(mp4[: len(mp4) // 2])
    (d / "cut90.mp4").write_bytes(mp4[: len(mp4) * 9 // 10])
    (d / "trunc.avi").write_bytes(avi[: len(avi) * 6 // 10])
    (d / "text.avi").write_text("this is not a video\n")
    subprocess.run([ffmpeg, "-v", "error", "-y", "-i", str(VIDEOS / "test.avi"), "-vn", "-c:a",
                    "copy", str(d / "audio.avi")], check=True)
    subprocess.run([ffmpeg, "-v", "error", "-y", "-i", str(VIDEOS / "short_32f.mp4"), "-c:v",
                    "libvpx-vp9", "-b:v", "300k", str(d / "vp9.webm")], check=True)
    return {p.name: p for p in d.iterdir()}


def make_root(base: Path, variants) -> Path:
    files = {f"Good/v_Good_g{i:02d}_c01{Path(name).suffix}": str(VIDEOS / name)
             for i, name in enumerate(REAL, 1)}
    files["Good/v_Good_g07_c01.webm"] = str(variants["vp9.webm"])
    for i, name in enumerate(["empty.mp4", "half.mp4", "cut90.mp4", "trunc.avi", "text.avi",
                              "audio.avi"], 1):
        files[f"Broken/v_Broken_g{i:02d}_c01{Path(name).suffix}"] = str(variants[name])
    files["Broken/v_Broken_g07_c01.mp4"] = None
    files["Broken/v_Broken_g08_c01.avi"] = str(VIDEOS / "test.avi")
    files["Broken/v_Broken_g09_c01.avi"] = None
    root = ucf101_style_root(base / "root", files, extra=[])
    (root / "videos/Broken/v_Broken_g07_c01.mp4").mkdir()
    os.chmod(root / "videos/Broken/v_Broken_g08_c01.avi", 0)
    extra = root / "videos/Good/v_Good_g99_c01.avi"
    extra.write_bytes((VIDEOS / "test.avi").read_bytes())
    return root


def decord_meta(path: Path):
    vr = decord.VideoReader(str(path), num_threads=1)
    return len(vr), vr.get_avg_fps(), vr[0].shape[1], vr[0].shape[0]


def statuses(root):
    records, _ = read_manifest(root)
    return {r.video_id: r for r in records}


def test_each_broken_input_gets_its_status_and_valid_metadata_equals_decord(tmp_path, variants):
    root = make_root(tmp_path, variants)
    result = validate("ucf101", root, "quick", ClusterOptions(workers=2))
    recs = statuses(root)
    for vid, status in EXPECTED_BAD.items():
        assert recs[vid].status == status, (vid, recs[vid].error)
    assert "moov atom not found" in recs["v_Broken_g02_c01"].error
    assert "declares 164 frames, only 93" in recs["v_Broken_g04_c01"].error
    assert recs["v_Good_g99_c01"].status == "extra"
    for i, name in enumerate(REAL + ["vp9.webm"], 1):
        rec = recs[f"v_Good_g{i:02d}_c01"]
        src = VIDEOS / name if name in REAL else variants[name]
        assert rec.status == "ok", (name, rec.error)
        assert (rec.frame_count, rec.fps, rec.width, rec.height) == decord_meta(src), name
        assert rec.size == src.stat().st_size and rec.decodable is True
    t = recs["v_Good_g01_c01"]
    assert (t.frame_count, t.fps, t.width, t.height, t.codec) == (164, 25.0, 320, 240, "mpeg4")
    assert recs["v_Good_g07_c01"].codec == "vp9"
    assert result.counts["ok"] == 7 and result.counts["corrupt"] == 3


def test_full_level_counts_every_decoded_frame(tmp_path, variants):
    root = make_root(tmp_path, variants)
    validate("ucf101", root, "full", ClusterOptions(workers=2))
    recs = statuses(root)
    for i, name in enumerate(REAL, 1):
        vr = decord.VideoReader(str(VIDEOS / name), num_threads=1)
        decoded = sum(1 for _ in range(len(vr)) if vr.next() is not None)
        assert recs[f"v_Good_g{i:02d}_c01"].frame_count == decoded
        assert recs[f"v_Good_g{i:02d}_c01"].probe_level == "full"
    assert recs["v_Broken_g04_c01"].status == "corrupt"


def test_a_rerun_probes_only_changed_files_and_force_probes_them_all(tmp_path, variants):
    root = make_root(tmp_path, variants)
    one = ClusterOptions(workers=1)
    first = validate("ucf101", root, "quick", one)
    before = {vid: (r.status, r.error) for vid, r in statuses(root).items()}
    again = validate("ucf101", root, "quick", one)
    on_disk = first.probed + first.kept
    assert first.kept == 1  # the 0-byte file: `empty` by the scan's word, no probe needed
    assert again.kept >= 12 and again.kept + again.probed == on_disk
    assert again.probed == sum(r.probe_status == "unreadable" for r in first.records)
    assert {vid: (r.status, r.error) for vid, r in statuses(root).items()} == before
    # a good file replaced by a cut copy is probed again, and its verdict changes
    (root / "videos/Good/v_Good_g02_c01.mp4").write_bytes((VIDEOS / "test.mp4").read_bytes()[:60_000])
    changed = validate("ucf101", root, "quick", one)
    assert changed.probed == again.probed + 1
    assert statuses(root)["v_Good_g02_c01"].status == "corrupt"
    assert validate("ucf101", root, "full", one).kept == 1  # a quick probe is no full one
    forced = validate("ucf101", root, "quick", one, force=True)
    assert forced.kept == 0 and forced.probed == on_disk


def tree_digest(root: Path) -> dict[str, str]:
    out = {}
    for p in sorted((root / "videos").rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_dir():
            out[rel] = "dir"
        else:
            out[rel] = f"{oct(p.stat().st_mode)} {hashlib.sha256(p.read_bytes()).hexdigest()}"
    return out


def test_strict_quarantine_and_restore_round_trip_byte_identically(tmp_path, variants):
    root = make_root(tmp_path, variants)
    before = tree_digest(root)
    runner = CliRunner()
    res = runner.invoke(app, ["ucf101", "validate", "--root", str(root), "--quarantine",
                              "--strict", "--workers", "2"])
    assert res.exit_code == 1, res.output
    assert "--strict" in res.output and "moved to quarantine" in res.output
    moved = {p.name for p in (root / "quarantine").rglob("*") if p.parent.name == "Broken"}
    assert moved == {"v_Broken_g01_c01.mp4", "v_Broken_g02_c01.mp4", "v_Broken_g03_c01.mp4",
                     "v_Broken_g04_c01.avi", "v_Broken_g05_c01.avi", "v_Broken_g06_c01.avi",
                     "v_Broken_g07_c01.mp4", "v_Broken_g08_c01.avi"}
    assert not any((root / "videos/Broken").iterdir())
    recs = statuses(root)
    assert recs["v_Broken_g02_c01"].status == "corrupt" and not recs["v_Broken_g02_c01"].exists
    # The quarantined videos are out of the lists; the good ones in.
    runner.invoke(app, ["ucf101", "build-lists", "--root", str(root)])
    listed = (root / "ucf101_train_split_1_videos.txt").read_text()
    assert "Broken" not in listed and listed.count("Good/") == 7
    res = runner.invoke(app, ["ucf101", "validate", "--root", str(root), "--restore"])
    assert res.exit_code == 0, res.output
    assert "8 file(s) restored" in res.output
    assert tree_digest(root) == before
    assert statuses(root)["v_Broken_g04_c01"].status == "corrupt"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_explicit_scheduler_gives_the_same_results_as_the_local_default(tmp_path, variants):
    port = free_port()
    bindir = Path(sys.executable).parent
    sched = subprocess.Popen([str(bindir / "dask"), "scheduler", "--host", "127.0.0.1", "--port",
                              str(port), "--no-dashboard"], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    worker = subprocess.Popen([str(bindir / "dask"), "worker", f"tcp://127.0.0.1:{port}",
                               "--nworkers", "2", "--nthreads", "1", "--no-dashboard"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        from distributed import Client
        with Client(f"tcp://127.0.0.1:{port}", timeout="30s") as c:
            c.wait_for_workers(2, timeout=60)
        local_root = make_root(tmp_path / "local", variants)
        remote_root = make_root(tmp_path / "remote", variants)
        validate("ucf101", local_root, "quick", ClusterOptions(workers=2))
        res = CliRunner().invoke(app, ["ucf101", "validate", "--root", str(remote_root),
                                       "--scheduler", f"tcp://127.0.0.1:{port}"])
        assert res.exit_code == 0, res.output
        fields = ("status", "frame_count", "fps", "width", "height", "codec", "error", "size")
        local, remote = statuses(local_root), statuses(remote_root)
        assert local.keys() == remote.keys()
        for vid in local:
            assert [getattr(local[vid], f) for f in fields] == \
                [getattr(remote[vid], f) for f in fields], vid
    finally:
        worker.terminate()
        sched.terminate()
        worker.wait(30)
        sched.wait(30)


@pytest.mark.slow
def test_a_worker_dying_mid_video_costs_that_video_only(tmp_path):
    """A real worker death (SIGKILL while it decodes one long video), twice: the video is
    retried once in a fresh worker, then recorded as a decoder crash; the run completes."""
    ffmpeg = require_tool("ffmpeg")
    files = {f"Good/v_Good_g{i:02d}_c01.mp4": str(VIDEOS / n) for i, n in
             enumerate(["test.mp4", "demo.mp4", "short_32f.mp4", "bikes.mp4"], 1)}
    root = ucf101_style_root(tmp_path / "root", files)
    long_video = root / "videos/Good/v_Good_g09_c01.mp4"
    subprocess.run([ffmpeg, "-v", "error", "-stream_loop", "40", "-i",
                    str(VIDEOS / "demo_skeleton.mp4"), "-c", "copy", str(long_video)], check=True)
    (root / "annotations/trainlist01.txt").write_text(
        (root / "annotations/trainlist01.txt").read_text() + "Good/v_Good_g09_c01.mp4 1\r\n")
    kills = []

    def killer():
        deadline = time.time() + 120
        while len(kills) < 2 and time.time() < deadline:
            pids = pids_with_open(long_video)
            if pids:
                os.kill(pids[0], signal.SIGKILL)
                kills.append(pids[0])
                while pids_with_open(long_video) == pids and time.time() < deadline:
                    time.sleep(0.02)
            time.sleep(0.02)

    thread = threading.Thread(target=killer)
    thread.start()
    result = validate("ucf101", root, "full", ClusterOptions(workers=2))
    thread.join()
    assert len(kills) == 2 and kills[0] != kills[1]
    recs = statuses(root)
    assert recs["v_Good_g09_c01"].status == "corrupt"
    assert recs["v_Good_g09_c01"].error.startswith("decoder crashed")
    assert all(recs[f"v_Good_g{i:02d}_c01"].status == "ok" for i in (1, 2, 3, 4))
    assert result.counts == {"ok": 4, "corrupt": 1}


def test_pyav_fallback_counts_what_decord_counts():
    # Where decord has no wheel (non-x86_64), full validation decodes with PyAV.
    from datatools.validate.probe import _pyav_decode_all
    for name in REAL:
        frames, fps, height, width = _pyav_decode_all(str(VIDEOS / name))
        assert (frames, fps, width, height) == decord_meta(VIDEOS / name), name
