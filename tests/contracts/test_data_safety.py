"""Nothing finished is lost, nothing wrong is counted: additive tasks, one writer per root,
probe results that stay with their files, unchecked and changed files, bugs that are not
data errors, impossible option values, durable and readable manifests, full and read-only
disks, and the permissions of what the tool writes. Real clips from ../shared/data, real
processes where the behaviour is between processes."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import VIDEOS, datatools, tmpfs
from trees import real_clips_root, ucf101_style_root
from typer.testing import CliRunner

from datatools.cli.app import app
from datatools.extract.options import ExtractOptions
from datatools.extract.run import extract
from datatools.extract.video import VideoJob, extract_video
from datatools.frames.folder import DONE
from datatools.lists.build import build_lists
from datatools.root.lock import root_lock
from datatools.root.manifest import read_manifest
from datatools.root.status import BAD
from datatools.schedule.client import ClusterOptions
from datatools.validate.run import validate

BIN = Path(sys.executable).parent
ONE = ClusterOptions(workers=1)


def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("error:")]


def records_by_id(root: Path) -> dict:
    return {r.video_id: r for r in read_manifest(root)[0]}


def folder_files(folder: Path) -> dict[str, int]:
    """name -> inode of the frame files (a kept file keeps its inode)."""
    return {p.name: p.stat().st_ino for p in folder.iterdir() if not p.name.startswith(".")}


# --- 4. tasks are additive ------------------------------------------------------------------

def test_flow_after_rgb_keeps_the_rgb_and_rgb_after_flow_keeps_the_flow(tmp_path):
    root = real_clips_root(tmp_path / "root", ["short_32f.mp4"] * 2)
    one, two = (root / f"rawframes/Real/v_Real_g0{i}_c01" for i in (1, 2))
    runner = CliRunner()
    base = ["extract", "--root", str(root), "--workers", "1", "--algo", "farneback"]
    assert runner.invoke(app, base + ["--task", "rgb", "--limit", "1"]).exit_code == 0
    rgb_before = folder_files(one)
    assert len(rgb_before) == 32
    res = runner.invoke(app, base + ["--task", "flow"])
    assert res.exit_code == 0, res.output
    after = folder_files(one)
    assert {n: i for n, i in after.items() if n.startswith("img_")} == rgb_before  # same files
    assert sum(n.startswith("flow_x_") for n in after) == 31
    record = json.loads((one / DONE).read_text())
    assert {p: v["count"] for p, v in record["parts"].items()} == {"rgb": 32, "flow": 31}
    # The other way round: flow first, then RGB, keeps the flow.
    flow_before = folder_files(two)
    assert sum(n.startswith("img_") for n in flow_before) == 0 and len(flow_before) == 62
    assert runner.invoke(app, base + ["--task", "rgb"]).exit_code == 0
    both = folder_files(two)
    assert {n: i for n, i in both.items() if n.startswith("flow_")} == flow_before
    assert sum(n.startswith("img_") for n in both) == 32
    res = runner.invoke(app, ["ucf101", "build-lists", "--root", str(root), "--format", "rawframes,flow"])
    assert res.exit_code == 0, res.output
    assert (root / "ucf101_train_split_1_rawframes.txt").read_text() == \
        "Real/v_Real_g01_c01 32 0\nReal/v_Real_g02_c01 32 0\n"
    assert (root / "ucf101_train_split_1_flow.txt").read_text() == \
        "Real/v_Real_g01_c01 31 0\nReal/v_Real_g02_c01 31 0\n"
    rec = records_by_id(root)["v_Real_g01_c01"]
    assert (rec.rgb_template, rec.flow_template, rec.flow_algo) == \
        ("img_{:05d}.jpg", "flow_{}_{:05d}.jpg", "farneback")


def test_conflicting_parameters_are_refused_naming_what_force_would_delete(tmp_path):
    root = real_clips_root(tmp_path / "root", ["short_32f.mp4"])
    folder = root / "rawframes/Real/v_Real_g01_c01"
    runner = CliRunner()
    base = ["extract", "--root", str(root), "--workers", "1"]
    assert runner.invoke(app, base + ["--task", "both", "--algo", "farneback"]).exit_code == 0
    before = folder_files(folder)
    # Another flow bound: the flow conflicts, the RGB is kept by --force.
    res = runner.invoke(app, base + ["--task", "flow", "--algo", "farneback", "--bound", "10"])
    assert res.exit_code == 1
    assert "31 flow pair(s) made with bound: 20.0 -> 10.0" in " ".join(res.output.split())
    assert "--force redoes flow and keeps the rgb" in " ".join(res.output.split())
    assert folder_files(folder) == before
    assert runner.invoke(app, base + ["--task", "flow", "--algo", "farneback", "--bound", "10",
                                      "--force"]).exit_code == 0
    forced = folder_files(folder)
    assert {n: i for n, i in forced.items() if n.startswith("img_")} == \
        {n: i for n, i in before.items() if n.startswith("img_")}
    assert {n: i for n, i in forced.items() if n.startswith("flow_")}.keys() == \
        {n: i for n, i in before.items() if n.startswith("flow_")}.keys()
    assert json.loads((folder / DONE).read_text())["parts"]["flow"]["params"]["bound"] == 10.0
    # Another size: the whole folder conflicts; --force would delete both parts.
    res = runner.invoke(app, base + ["--task", "rgb", "--new-short", "64"])
    assert res.exit_code == 1
    text = " ".join(res.output.split())
    assert "holds 32 RGB image(s) and 31 flow pair(s) made with other parameters" in text
    assert "new_short: None -> 64" in text and "--force deletes them" in text
    assert folder_files(folder) == forced


# --- 5. one writer per root; a record is trusted only with its files -----------------------

@pytest.mark.slow
def test_two_extracts_on_one_root_one_exits_with_the_lock_message(tmp_path):
    files = {f"Real/v_Real_g{i:02d}_c01.avi": str(VIDEOS / "test.avi") for i in range(1, 31)}
    root = ucf101_style_root(tmp_path / "root", files)
    build_lists("ucf101", root)
    args = [str(BIN / "datatools"), "extract", "--root", str(root), "--task", "rgb", "--workers", "1"]
    first = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (root / ".datatools.lock").exists() or "extract" not in (root / ".datatools.lock").read_text():
        assert time.monotonic() < deadline and first.poll() is None
        time.sleep(0.05)
    second = subprocess.run(args, capture_output=True, text=True)
    assert first.poll() is None, "the first command ended before the second tried"
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert second.returncode == 75, second.stderr
    (line,) = error_lines(second.stderr)
    assert f"in use by `datatools extract --root {root} --task rgb --workers 1` (PID {first.pid} on " in line
    assert ", since 20" in line
    for done in (root / "rawframes").rglob(DONE):
        record = json.loads(done.read_text())
        assert record["parts"]["rgb"]["count"] == 164
        assert sum(p.name.startswith("img_") for p in done.parent.iterdir()) == 164
    # Read-only commands do not lock: config reads the manifest while another command holds
    # the lock (and fails only for want of val samples in this train-only root).
    with root_lock(root, "test"):
        res = datatools("mmaction", "config", "--root", root, "--out", tmp_path / "c.py",
                  "--input", "rawframes", "--no-pretrained")
        assert res.returncode == 2 and "split 1 val has no rawframes samples" in res.stderr
        assert "in use by" not in res.stderr
        busy = datatools("ucf101", "build-lists", "--root", root)
        assert busy.returncode == 75 and f"(PID {os.getpid()} on " in busy.stderr


def test_a_folder_with_fewer_files_than_its_record_is_not_listed_and_is_redone(tmp_path):
    root = real_clips_root(tmp_path / "root", ["short_32f.mp4"])
    extract(root, ExtractOptions(task="rgb"), cluster=ONE)
    folder = root / "rawframes/Real/v_Real_g01_c01"
    for n in range(20, 33):  # what another process deleting its temporary folder leaves
        (folder / f"img_{n:05d}.jpg").unlink()
    built = build_lists("ucf101", root, ["rawframes"])
    assert (root / "ucf101_train_split_1_rawframes.txt").read_text() == ""
    assert [r.video_id for r in built.incomplete] == ["v_Real_g01_c01"]
    rec = records_by_id(root)["v_Real_g01_c01"]
    assert rec.extract_status == "incomplete" and "holds 19 img" in rec.extract_error
    again = extract(root, ExtractOptions(task="rgb"), cluster=ONE)
    assert again.counts["done"] == 1  # not skipped on the record's word
    assert sum(p.name.startswith("img_") for p in folder.iterdir()) == 32
    build_lists("ucf101", root, ["rawframes"])
    assert (root / "ucf101_train_split_1_rawframes.txt").read_text() == "Real/v_Real_g01_c01 32 0\n"


def test_a_part_whose_files_went_missing_is_left_out_when_another_is_added(tmp_path):
    root = real_clips_root(tmp_path / "root", ["short_32f.mp4"])
    extract(root, ExtractOptions(task="rgb"), cluster=ONE)
    folder = root / "rawframes/Real/v_Real_g01_c01"
    (folder / "img_00032.jpg").unlink()
    res = extract(root, ExtractOptions(task="flow", algo="farneback"), cluster=ONE)
    assert res.counts["done"] == 1
    record = json.loads((folder / DONE).read_text())
    assert list(record["parts"]) == ["flow"] and record["parts"]["flow"]["count"] == 31
    assert not list(folder.glob("img_*"))  # the broken RGB is not carried into the new folder
    build_lists("ucf101", root, ["rawframes", "flow"])
    assert (root / "ucf101_train_split_1_rawframes.txt").read_text() == ""
    assert (root / "ucf101_train_split_1_flow.txt").read_text() == "Real/v_Real_g01_c01 31 0\n"


# --- 6, 7, 8. probe results stay with their files; unchecked and changed files ----------------

def test_a_validate_verdict_survives_a_wrong_level_and_a_rebuild(tmp_path):
    half = tmp_path / "half.mp4"
    half.write_bytes((VIDEOS / "test.mp4").read_bytes()[:200_000])
    root = ucf101_style_root(tmp_path / "root", {"Real/v_Real_g01_c01.avi": str(VIDEOS / "test.avi"),
                                                 "Real/v_Real_g02_c01.mp4": str(half)})
    validate("ucf101", root, "quick", ONE)
    runner = CliRunner()
    assert runner.invoke(app, ["ucf101", "build-lists", "--root", str(root), "--level", "1"]).exit_code == 0
    lost = records_by_id(root)
    assert (lost["v_Real_g01_c01"].status, lost["v_Real_g02_c01"].status) == ("missing", "missing")
    assert (lost["v_Real_g01_c01"].probe_status, lost["v_Real_g01_c01"].frame_count) == ("ok", 164)
    assert runner.invoke(app, ["ucf101", "build-lists", "--root", str(root)]).exit_code == 0
    back = records_by_id(root)
    assert (back["v_Real_g01_c01"].status, back["v_Real_g01_c01"].frame_count) == ("ok", 164)
    assert back["v_Real_g02_c01"].status == "corrupt"
    assert (root / "ucf101_train_split_1_videos.txt").read_text() == "Real/v_Real_g01_c01.avi 0\n"


def test_unchecked_files_are_listed_and_counted_and_zero_byte_files_never(tmp_path):
    root = ucf101_style_root(tmp_path / "root", {"Real/v_Real_g01_c01.avi": str(VIDEOS / "test.avi"),
                                                 "Real/v_Real_g02_c01.avi": None,
                                                 "Real/v_Real_g03_c01.avi": None})
    (root / "videos/Real/v_Real_g02_c01.avi").write_bytes(b"")
    (root / "videos/Real/v_Real_g03_c01.avi").write_bytes(random.Random(7).randbytes(1024))
    res = CliRunner().invoke(app, ["ucf101", "build-lists", "--root", str(root)])
    assert res.exit_code == 0, res.output
    assert (root / "ucf101_train_split_1_videos.txt").read_text() == \
        "Real/v_Real_g01_c01.avi 0\nReal/v_Real_g03_c01.avi 0\n"
    text = " ".join(res.output.split())
    assert "2 listed video(s) were never checked (status unchecked)" in text
    assert f"datatools ucf101 validate --root {root}` checks them" in text
    assert [r.status for r in records_by_id(root).values()] == ["unchecked", "empty", "unchecked"]
    validate("ucf101", root, "quick", ONE)
    build_lists("ucf101", root)
    assert (root / "ucf101_train_split_1_videos.txt").read_text() == "Real/v_Real_g01_c01.avi 0\n"


def test_a_file_changed_after_validate_is_probed_again_before_it_is_used(tmp_path):
    files = {"Real/v_Real_g01_c01.avi": str(VIDEOS / "test.avi"),
             "Real/v_Real_g02_c01.avi": str(VIDEOS / "test.avi")}
    root = ucf101_style_root(tmp_path / "root", files)
    validate("ucf101", root, "quick", ONE)
    assert {r.frame_count for r in records_by_id(root).values()} == {164}
    # One clip replaced by a truncated copy (another size), one by garbage of the same size.
    data = (VIDEOS / "test.avi").read_bytes()
    (root / "videos/Real/v_Real_g01_c01.avi").write_bytes(data[: len(data) * 45 // 100])
    garbage = root / "videos/Real/v_Real_g02_c01.avi"
    garbage.write_bytes(data[:12] + random.Random(1).randbytes(len(data) - 12))
    built = build_lists("ucf101", root)
    assert built.unchecked == 2
    assert [(r.status, r.frame_count) for r in records_by_id(root).values()] == [("unchecked", None)] * 2
    res = extract(root, ExtractOptions(task="rgb"), cluster=ONE)
    assert res.counts == {"failed": 2}
    recs = records_by_id(root)
    assert recs["v_Real_g01_c01"].status == "corrupt"
    assert "truncated: the container declares 164 frames" in recs["v_Real_g01_c01"].error
    assert recs["v_Real_g02_c01"].status in BAD and recs["v_Real_g02_c01"].frame_count is None
    assert not (root / "rawframes/Real/v_Real_g01_c01").exists()
    build_lists("ucf101", root)
    assert (root / "ucf101_train_split_1_videos.txt").read_text() == ""


def test_a_decoder_that_stops_early_is_a_failure_not_a_shorter_success(tmp_path):
    """The probe said 164 frames; the file now decodes to fewer (changed behind the manifest's
    back, size and mtime kept): the extraction fails with the reason, and writes nothing."""
    data = (VIDEOS / "test.avi").read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[: len(data) // 2])
    job = VideoJob("v", str(cut), str(tmp_path / "frames"), frames=164)
    out = extract_video(job, ExtractOptions(task="rgb"))
    assert out.status == "failed"
    assert "decoding stopped after" in out.error and "of the 164 frames the file holds" in out.error
    assert not (tmp_path / "frames").exists() and not list(tmp_path.glob(".frames*"))


# --- 9. code errors are not data errors ---------------------------------------------------------

BUG = '''
import datatools.validate.probe as probe

def _broken(path, level):
    raise TypeError("simulated API change: decode() got an unexpected keyword argument")

probe._decode_check = _broken
'''


def test_a_bug_in_the_probe_stops_validate_and_quarantines_nothing(tmp_path):
    """A library API change, injected into every process of the real command through a
    sitecustomize on PYTHONPATH: the code under test (driver, workers, manifest, quarantine)
    is the real one."""
    files = {f"Real/v_Real_g{i:02d}_c01.mp4": str(VIDEOS / n)
             for i, n in enumerate(["short_32f.mp4", "test.mp4", "demo.mp4", "bikes.mp4", "test.avi"], 1)}
    root = ucf101_style_root(tmp_path / "root", files)
    build_lists("ucf101", root)
    inject = tmp_path / "inject"
    inject.mkdir()
    (inject / "sitecustomize.py").write_text(BUG)
    env = dict(os.environ, PYTHONPATH=str(inject))
    res = subprocess.run([str(BIN / "datatools"), "ucf101", "validate", "--root", str(root),
                          "--quarantine", "--workers", "1"], capture_output=True, text=True, env=env)
    assert res.returncode == 3, res.stderr
    (line,) = error_lines(res.stderr)
    assert "internal error in datatools validate (TypeError: simulated API change" in line
    assert "on 3 video(s)" in line and "the step stopped" in line
    assert "Traceback" not in res.stderr and "Compute Failed" not in res.stderr
    log = Path(line.split("the traceback is in ")[1])
    assert log.is_file() and log.is_relative_to(root) and "TypeError" in log.read_text()
    assert "Traceback" in log.read_text()
    assert not (root / "quarantine").exists()
    assert sorted(p.name for p in (root / "videos/Real").iterdir()) == sorted(Path(f).name for f in files)
    assert {r.status for r in records_by_id(root).values()} == {"unchecked"}


# --- 10. numbers that are not numbers ------------------------------------------------------------

@pytest.mark.parametrize("args", [
    ["extract", "--bound", "nan"], ["extract", "--bound", "inf"], ["extract", "--bound", "-1"],
    ["extract", "--workers", "0"], ["extract", "--workers", "-1"], ["extract", "--limit", "-1"],
    ["extract", "--limit", "0"], ["extract", "--split", "0"], ["extract", "--jpeg-quality", "0"],
    ["extract", "--new-short", "1"], ["ucf101", "validate", "--workers", "0"],
    ["ucf101", "build-lists", "--level", "3"], ["ucf101", "download", "--jobs", "0"],
    ["ucf101", "download", "--timeout", "nan"], ["ucf101", "download", "--retries", "-1"],
    ["fetch", "http://127.0.0.1:9/x", "--timeout", "-inf"],
    ["mmaction", "config", "--out", "c.py", "--lr", "nan"],
    ["mmaction", "config", "--out", "c.py", "--epochs", "0"],
])
def test_impossible_numbers_are_refused_before_any_work(tmp_path, args):
    root = real_clips_root(tmp_path / "root", ["short_32f.mp4"])
    before = (root / "manifest.parquet").read_bytes()
    res = CliRunner().invoke(app, [*args, "--root", str(root)] if args[0] != "fetch" else args)
    assert res.exit_code == 2, res.output
    assert "Invalid value" in res.output or "must be" in res.output
    assert (root / "manifest.parquet").read_bytes() == before
    assert not (root / "rawframes").exists() and not (root / "downloads").exists()


def test_every_numeric_option_of_every_command_rejects_impossible_values():
    """The rule for options to come: each float option goes through the finite check, each
    integer option declares its range (a seed may be any integer)."""
    from datatools.cli.options import finite, positive
    unbounded = {"seed"}
    seen = 0

    def walk(cmd, path):
        nonlocal seen
        for sub_name, sub in getattr(cmd, "commands", {}).items():
            walk(sub, path + [sub_name])
        for p in getattr(cmd, "params", []):
            kind = p.type_descriptor.annotation  # Typer's own parameters: the declared type
            where = f"{' '.join(path)} --{p.name}"
            if kind is float:
                seen += 1
                assert p.callback is not None and p.callback.__name__ in (
                    finite.__name__, positive.__name__), where
            elif kind is int and p.name not in unbounded:
                seen += 1
                assert p.min is not None, f"{where} declares no range"

    import typer.main
    walk(typer.main.get_command(app), ["datatools"])
    assert seen > 30


# --- 11. durability and unreadable manifests --------------------------------------------------

WRITER = '''
import sys
from datatools.root.manifest import ManifestMeta, VideoRecord, write_manifest
root = sys.argv[1]
records = [VideoRecord(dataset="ucf101", video_id=f"v{i}", key=f"C/v{i}") for i in range(3000)]
print("ready", flush=True)
i = int(sys.argv[2])
while True:
    i += 1
    for r in records:
        r.frame_count = i
    write_manifest(root, records, ManifestMeta("ucf101", ["C"], steps={"version": i}))
'''


@pytest.mark.slow
def test_a_manifest_killed_between_write_and_rename_is_the_old_or_the_new_one(tmp_path):
    """SIGKILL at 50 random moments of a process that rewrites the manifest in a loop: each
    time it reads back whole, every row of one version, the one its metadata names."""
    from datatools.root.manifest import ManifestMeta, VideoRecord, write_manifest
    root = tmp_path / "root"
    root.mkdir()
    write_manifest(root, [VideoRecord(dataset="ucf101", video_id=f"v{i}", key=f"C/v{i}", frame_count=0)
                          for i in range(3000)], ManifestMeta("ucf101", ["C"], steps={"version": 0}))
    rng = random.Random(16)
    last = 0
    versions = set()
    for _ in range(50):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(root), str(last)],
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline() == "ready\n"
        time.sleep(rng.uniform(0, 0.25))
        proc.kill()
        proc.wait()
        records, meta = read_manifest(root)
        version = meta.steps["version"]
        assert len(records) == 3000 and {r.frame_count for r in records} == {version}
        assert version >= last
        last = version
        versions.add(version)
        proc.stdout.close()
    assert len(versions) > 10  # the kills landed at different points of the loop
    leftovers = [p for p in root.iterdir() if p.name != "manifest.parquet"]
    assert all(p.name.startswith(".manifest.parquet.") and p.name.endswith(".tmp") for p in leftovers)


@pytest.mark.parametrize("damage", ["cut", "empty", "random"])
def test_an_unreadable_manifest_is_one_line_and_build_lists_rebuilds_it(tmp_path, damage):
    root = real_clips_root(tmp_path / "root", ["short_32f.mp4"] * 2)
    extract(root, ExtractOptions(task="both", algo="farneback"), cluster=ONE)
    path = root / "manifest.parquet"
    data = path.read_bytes()
    broken = {"cut": data[: len(data) // 2], "empty": b"",
              "random": random.Random(3).randbytes(5000)}[damage]
    path.write_bytes(broken)
    runner = CliRunner()
    for args in (["extract", "--root", str(root)], ["ucf101", "validate", "--root", str(root)]):
        res = runner.invoke(app, args)
        assert res.exit_code == 2
        (line,) = error_lines(res.output)
        assert line.startswith(f"error: {path}: unreadable (") and "build-lists" in line
    res = runner.invoke(app, ["ucf101", "build-lists", "--root", str(root), "--format", "rawframes,flow"])
    assert res.exit_code == 0, res.output
    (aside,) = root.glob("manifest.parquet.unreadable-*")
    assert aside.read_bytes() == broken
    assert "kept aside as" in res.output
    recs = records_by_id(root)
    for rec in recs.values():  # what the completion records say, back in the manifest
        assert (rec.extract_status, rec.rgb_count, rec.flow_count, rec.flow_algo) == \
            ("done", 32, 31, "farneback")
    assert (root / "ucf101_train_split_1_flow.txt").read_text().count(" 31 0\n") == 2


# --- 13. full and read-only disks -------------------------------------------------------------

@pytest.fixture
def small_disk(tmp_path):
    """A 48 MiB filesystem of its own."""
    with tmpfs(tmp_path / "disk", "48m") as mount:
        yield mount


def test_a_full_disk_stops_extract_at_once_and_keeps_the_lists(small_disk):
    files = {f"Real/v_Real_g{i:02d}_c01.avi": str(VIDEOS / "test.avi") for i in range(1, 7)}
    root = ucf101_style_root(small_disk / "root", files)
    build_lists("ucf101", root, ["videos", "rawframes"])
    lists = {p.name: p.read_bytes() for p in root.glob("*.txt")}
    free = shutil.disk_usage(small_disk).free
    (small_disk / "filler").write_bytes(bytes(free - 8 * 2**20))  # room for about two videos
    res = datatools("extract", "--root", root, "--task", "rgb", "--workers", "1")
    assert res.returncode == 4, res.stdout[-2000:] + res.stderr
    (line,) = error_lines(res.stderr)
    assert f"the filesystem at {small_disk} is full" in line and "re-run the same command to resume" in line
    assert "video(s) not extracted" in line and "Errno" not in res.stdout + res.stderr
    assert {p.name: p.read_bytes() for p in root.glob("*.txt")} == lists
    recs = records_by_id(root)
    assert not [r for r in recs.values() if r.extract_status == "failed"]  # no video blamed
    done = [r for r in recs.values() if r.extract_status == "done"]
    for r in done:
        assert len(list((root / r.frame_dir).glob("img_*"))) == r.rgb_count == 164
    # Freed space: the same command resumes and finishes.
    (small_disk / "filler").unlink()
    assert datatools("extract", "--root", root, "--task", "rgb", "--workers", "1").returncode == 0


def test_a_full_disk_leaves_the_previous_lists_and_manifest(small_disk):
    root = ucf101_style_root(small_disk / "root", {"Real/v_Real_g01_c01.mp4": str(VIDEOS / "short_32f.mp4")})
    build_lists("ucf101", root)
    def files():  # the lock file aside: each command writes its name into it
        return {p.name: p.read_bytes() for p in root.iterdir() if p.is_file() and p.name != ".datatools.lock"}
    before = files()
    (small_disk / "filler").write_bytes(bytes(shutil.disk_usage(small_disk).free))
    res = datatools("ucf101", "build-lists", "--root", root, "--format", "videos,rawframes,flow")
    assert res.returncode == 4, res.stderr
    (line,) = error_lines(res.stderr)
    assert f"the filesystem at {small_disk} is full" in line
    assert files() == before
    assert not list(root.glob(".*.tmp"))


def test_a_read_only_root_is_found_before_any_video_is_probed(small_disk):
    root = ucf101_style_root(small_disk / "root", {"Real/v_Real_g01_c01.mp4": str(VIDEOS / "short_32f.mp4")})
    build_lists("ucf101", root)
    (root / ".datatools.lock").unlink()
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    try:
        for args in (["ucf101", "validate", "--root", root], ["extract", "--root", root],
                     ["ucf101", "build-lists", "--root", root]):
            res = datatools(*args)
            assert res.returncode == 4, res.stderr
            (line,) = error_lines(res.stderr)
            assert f"the filesystem at {small_disk} is read-only" in line
            assert "probing" not in res.stdout and "extracting" not in res.stdout
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(small_disk)], check=True)


# --- 14. permissions ------------------------------------------------------------------------------

def test_files_the_tool_writes_get_the_umask_permissions(tmp_path):
    """A lab's shared root (umask 002): every file is group-writable, as any tool's would be;
    the usual umask 022 gives 0644. Nothing is created 0600."""
    for umask, mode in ((0o002, 0o664), (0o022, 0o644)):
        old = os.umask(umask)
        try:
            root = real_clips_root(tmp_path / f"root-{umask:o}", ["short_32f.mp4"])
            (root / "videos/Real/v_Real_g02_c01.mp4").write_bytes(b"not a video at all")
            extract(root, ExtractOptions(task="rgb"), cluster=ONE)
            build_lists("ucf101", root, ["videos", "rawframes"])
            validate("ucf101", root, "quick", ONE, move_bad=True)
        finally:
            os.umask(old)
        written = [root / "manifest.parquet", *root.glob("*.txt"), root / ".datatools.lock",
                   root / "rawframes/Real/v_Real_g01_c01" / DONE,
                   root / "rawframes/Real/v_Real_g01_c01/img_00001.jpg",
                   root / "quarantine/records.jsonl"]
        assert len(written) > 6 and all(p.is_file() for p in written)
        for path in written:
            assert oct(path.stat().st_mode & 0o777) == oct(mode), path


def test_frames_made_from_an_earlier_version_of_the_video_are_not_listed(tmp_path):
    root = real_clips_root(tmp_path / "root", ["short_32f.mp4"])
    extract(root, ExtractOptions(task="rgb"), cluster=ONE)
    shutil.copy(VIDEOS / "test.avi", root / "videos/Real/v_Real_g01_c01.mp4")  # another clip, same name
    built = build_lists("ucf101", root, ["rawframes"])
    assert (root / "ucf101_train_split_1_rawframes.txt").read_text() == ""
    assert [(r.extract_status, r.status) for r in built.incomplete] == [("stale", "unchecked")]
    again = extract(root, ExtractOptions(task="rgb"), cluster=ONE)
    assert again.counts["done"] == 1
    build_lists("ucf101", root, ["rawframes"])
    assert (root / "ucf101_train_split_1_rawframes.txt").read_text() == "Real/v_Real_g01_c01 164 0\n"


@pytest.mark.slow
def test_a_kill_between_the_two_renames_of_a_folder_loses_nothing(tmp_path):
    """The state a kill leaves between moving the old folder aside and the new one into place:
    the next run puts the finished folder back instead of redoing it or losing the kept part."""
    root = real_clips_root(tmp_path / "root", ["short_32f.mp4"])
    extract(root, ExtractOptions(task="rgb"), cluster=ONE)
    folder = root / "rawframes/Real/v_Real_g01_c01"
    rgb = folder_files(folder)
    folder.rename(folder.with_name(f".{folder.name}.tmp"))  # the finished new folder, not yet renamed
    res = extract(root, ExtractOptions(task="rgb"), cluster=ONE)
    assert res.counts["skipped"] == 1 and folder_files(folder) == rgb


def test_names_that_are_not_utf8_are_left_out_and_named_not_a_crash(tmp_path):
    """A video or frame folder whose name is not UTF-8 fits no manifest cell or list: the scan
    leaves it out and build-lists names it (escaped), exit 0; the rest is listed as before."""
    root = ucf101_style_root(tmp_path / "root", {"Real/v_Real_g01_c01.mp4": str(VIDEOS / "short_32f.mp4")})
    odd_video = os.fsdecode(bytes(root / "videos" / "Real") + b"/v_\xff_g02_c01.mp4")
    shutil.copy(VIDEOS / "short_32f.mp4", odd_video)
    os.makedirs(os.fsdecode(bytes(root / "rawframes" / "Real") + b"/v_\xfe_g03_c01"))
    done = datatools("ucf101", "build-lists", "--root", root, "--format", "videos,rawframes")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 file(s) or folder(s) left out: their names are not UTF-8" in done.stdout
    assert "v_\\xff_g02_c01.mp4" in done.stdout and "v_\\xfe_g03_c01" in done.stdout
    assert [r.key for r in read_manifest(root)[0]] == ["Real/v_Real_g01_c01"]
    assert (root / "ucf101_train_split_1_videos.txt").read_text() == "Real/v_Real_g01_c01.mp4 0\n"
    assert os.path.exists(odd_video)
