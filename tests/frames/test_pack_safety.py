"""A pack is input: hostile files at packs' names (tests/hostile_packs.py, built here, one per
rule of the pack and record) run through every reader of packs — `unpack`, `build-lists`,
`extract` (packed and files), `pack --to lmdb` and MMAction2's `datatools_packed` backend — all
planted in one root beside good packs. Each reader names every one of them in a line and
goes on (exit 0 or 1, never 3), within 120 s and 1.5 GB resident, writes nothing outside the
root, and leaves each hostile file as it was (never unpacked, replaced or deleted). Then
`datatools pack` of hostile frame folders, two writers on one root, and where pack, unpack
and the LMDB export may write."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from conftest import VIDEOS, require_module, tmpfs
from hostile_packs import OUTSIDE, variants
from trees import frames_held, ucf101_style_root

from datatools.extract.options import ExtractOptions
from datatools.extract.run import Selection, extract
from datatools.frames.convert import unpack_pack
from datatools.frames.packs import Pack, verify
from datatools.lists.build import build_lists
from datatools.root.manifest import read_manifest
from datatools.schedule.client import ClusterOptions

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
SECONDS, RESIDENT = 120, 1536 << 20  # the bar for each run over the hostile root
NAMES = list(variants({f"img_{i:05d}.jpg": b"x" for i in range(1, 4)}))
GOOD = ["Good/v_Good_g01_c01", "Good/v_Good_g02_c01"]


def hostile_key(i: int) -> str:
    return f"Hostile/v_Hostile_g{i + 1:02d}_c01"


@pytest.fixture(scope="module")
def packed_root(tmp_path_factory) -> Path:
    """Two real clips extracted into packs, and one more video per hostile variant (its pack
    not made: the test puts the hostile file there)."""
    base = tmp_path_factory.mktemp("hostile")
    files = {f"{key}.mp4": str(VIDEOS / "short_32f.mp4") for key in GOOD}
    files.update({f"{hostile_key(i)}.mp4": str(VIDEOS / "short_32f.mp4") for i in range(len(NAMES))})
    root = ucf101_style_root(base / "root", files)
    build_lists("ucf101", root)
    extract(root, ExtractOptions(task="rgb", new_short=64, store="packed"), Selection(limit=2),
            cluster=ClusterOptions(workers=1))
    assert sorted(p.name for p in (root / "rawframes" / "Good").iterdir()) == [
        "v_Good_g01_c01.zip", "v_Good_g02_c01.zip"]
    return root


def planted_root(packed_root: Path, tmp_path: Path) -> tuple[Path, dict[Path, tuple]]:
    """A copy of the root, deep below tmp_path (so that a name leading up out of it would
    still land inside tmp_path, where the test looks), with every hostile file at its pack's
    name; returns the root and what each planted file is now."""
    root = tmp_path / "a" / "b" / "c" / "root"
    shutil.copytree(packed_root, root, symlinks=True)
    with Pack.open(str(root / "rawframes" / f"{GOOD[0]}.zip")) as pack:
        frames = {n: pack.read(n) for n in pack.names() if n.startswith("img_")}
    (root / "rawframes" / "Hostile").mkdir()
    planted = {}
    for i, make in enumerate(variants(frames).values()):
        path = root / "rawframes" / f"{hostile_key(i)}.zip"
        make(path)
        planted[path] = as_it_is(path)
    return root, planted


def as_it_is(path: Path) -> tuple:
    st = path.lstat()
    if stat.S_ISLNK(st.st_mode):
        return ("link", os.readlink(path))
    if not stat.S_ISREG(st.st_mode):
        return ("special", stat.S_IFMT(st.st_mode))
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return ("file", st.st_size, digest.hexdigest())


def outside_of(root: Path, top: Path) -> set[str]:
    return {str(p) for p in top.rglob("*") if root not in p.parents and p != root}


def bounded(*args: str) -> tuple[int, str]:
    """Run a command, its output (stdout and stderr) and exit code, asserting the bar: under
    SECONDS, and no process of it (its workers too) over RESIDENT at its peak."""
    out = Path(os.environ.get("TMPDIR", "/tmp")) / f"datatools-bounded-{os.getpid()}.out"
    peaks: dict[int, int] = {}
    with open(out, "wb") as sink:
        start = time.monotonic()
        proc = subprocess.Popen(list(args), stdout=sink, stderr=subprocess.STDOUT)
        while proc.poll() is None:
            for pid in [proc.pid, *(c.pid for c in _children(proc.pid))]:
                peaks[pid] = max(peaks.get(pid, 0), peak_resident(pid))
            time.sleep(0.05)
        seconds = time.monotonic() - start
    said = out.read_text(errors="replace")
    out.unlink()
    assert seconds < SECONDS, f"{args[1:3]} took {seconds:.0f} s"
    assert max(peaks.values(), default=0) < RESIDENT, \
        f"{args[1:3]} reached {max(peaks.values()) >> 20} MiB resident"
    return proc.returncode, said


def _children(pid: int) -> list:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def peak_resident(pid: int) -> int:
    """The process's peak resident bytes since it started its program (VmHWM; unlike a
    child's ru_maxrss, not carried over from the process that forked it)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def datatools(*args: str) -> tuple[int, str]:
    return bounded(str(BIN / "datatools"), *args)


def assert_each_named_and_left_alone(said: str, planted: dict[Path, tuple]) -> None:
    lines = said.splitlines()
    for path, was in planted.items():
        named = [ln for ln in lines if str(path) in ln and "not a datatools pack" in ln]
        assert named, f"no line names {path}:\n{said[-3000:]}"
        assert as_it_is(path) == was, f"{path} changed"
        assert not os.path.lexists(str(path)[: -len(".zip")]), f"{path} became a folder"
    assert not os.path.lexists(OUTSIDE)


def test_unpack_of_a_root_with_hostile_packs_unpacks_the_good_and_names_each_other(packed_root, tmp_path):
    root, planted = planted_root(packed_root, tmp_path)
    before = outside_of(root, tmp_path)
    code, said = datatools("unpack", "--root", str(root))
    assert code == 1, said
    assert_each_named_and_left_alone(said, planted)
    assert f"{len(planted)} failed" in said
    for key in GOOD:
        assert (root / "rawframes" / key / "img_00032.jpg").is_file()
        assert not (root / "rawframes" / f"{key}.zip").exists()
    assert outside_of(root, tmp_path) == before


def test_build_lists_lists_the_good_and_marks_each_hostile_pack_unusable(packed_root, tmp_path):
    root, planted = planted_root(packed_root, tmp_path)
    code, said = datatools("ucf101", "build-lists", "--root", str(root), "--format", "rawframes")
    assert code == 0, said
    assert f"{len(planted)} files at packs' names are not datatools packs" in said
    rows = {r.key: r for r in read_manifest(root)[0]}
    for i, path in enumerate(planted):
        row = rows[hostile_key(i)]
        assert row.extract_status == "unusable", (NAMES[i], row.extract_status)
        assert row.extract_error.startswith(f"{path}: not a datatools pack: ")
        assert as_it_is(path) == planted[path]
    listed = (root / "ucf101_train_split_1_rawframes.txt").read_text().split()
    assert [w for w in listed if w.startswith(("Good", "Hostile"))] == GOOD


@pytest.mark.parametrize("store", ["packed", "files"])
def test_extract_fails_each_hostile_pack_and_skips_the_good(packed_root, tmp_path, store):
    root, planted = planted_root(packed_root, tmp_path)
    before = outside_of(root, tmp_path)
    code, said = datatools("extract", "--root", str(root), "--task", "rgb", "--new-short", "64",
                           "--store", store, "--workers", "2")
    assert code == 1, said
    assert_each_named_and_left_alone(said, planted)
    for i in range(len(planted)):
        assert f"failed: videos/{hostile_key(i)}" in said
    for key in GOOD:
        assert verify(str(root / "rawframes" / f"{key}.zip")) is None
    assert outside_of(root, tmp_path) == before


def test_the_lmdb_export_leaves_each_hostile_pack_out_and_names_it(packed_root, tmp_path):
    lmdb = require_module("lmdb")
    root, planted = planted_root(packed_root, tmp_path)
    code, said = datatools("pack", "--root", str(root), "--to", "lmdb")
    assert code == 1, said
    assert_each_named_and_left_alone(said, planted)
    env = lmdb.open(str(root / "rawframes.lmdb"), readonly=True, lock=False)
    with env.begin() as txn:
        keys = sorted(k.decode() for k, _ in txn.cursor())
    env.close()
    assert keys == [f"{key}/img_{i:05d}.jpg" for key in GOOD for i in range(1, 33)]


MMACTION_READER = """
import sys, time
import datatools.mmaction.packed as packed
backend = packed.PackedBackend()
for folder in sys.argv[1:]:
    start = time.monotonic()
    try:
        backend.get(folder + "/img_00001.jpg")
        print("READ", folder)
    except Exception as exc:
        print(type(exc).__name__, str(exc).replace(chr(10), " "), f"{time.monotonic() - start:.1f}")
"""


def test_mmactions_packed_backend_refuses_each_hostile_pack_in_one_line(packed_root, tmp_path):
    require_module("mmengine")
    root, planted = planted_root(packed_root, tmp_path)
    folders = [str(p)[: -len(".zip")] for p in planted]
    code, said = bounded(sys.executable, "-c", MMACTION_READER, *folders,
                         str(root / "rawframes" / GOOD[0]))
    assert code == 0, said
    lines = said.strip().splitlines()
    assert len(lines) == len(folders) + 1, said  # a line for each, none lost to zip() below
    assert lines[-1] == f"READ {root / 'rawframes' / GOOD[0]}"
    for folder, line in zip(folders, lines):
        assert line.startswith(("NotAPack", "DamagedFrame")) and f"{folder}.zip" in line, line
    for path, was in planted.items():
        assert as_it_is(path) == was


# --- pack: what a frame folder may hold --------------------------------------------------

def test_pack_refuses_folders_holding_anything_but_their_frames_and_leaves_them(packed_root, tmp_path):
    """A link (to a secret, to /dev/zero), a FIFO, a 16 GiB sparse file, a name that is not
    UTF-8, the index's name, a sub-folder, a stray file: each refuses its folder with one line,
    the folder left byte for byte; nothing hangs; the good folders are packed."""
    root = tmp_path / "root"
    shutil.copytree(packed_root, root)
    assert subprocess.run([str(BIN / "datatools"), "unpack", "--root", str(root)],
                          capture_output=True).returncode == 0
    source = root / "rawframes" / GOOD[0]
    secret = tmp_path / "secret.txt"
    secret.write_text("not for a world-readable pack\n")
    odd = {
        "link_to_a_secret": lambda f: os.symlink(secret, f / "img_00033.jpg"),
        "link_to_dev_zero": lambda f: os.symlink("/dev/zero", f / "img_00033.jpg"),
        "fifo": lambda f: os.mkfifo(f / "img_00033.jpg"),
        "sparse_16_gib": lambda f: sparse(f / "img_00033.jpg", 16 << 30),
        "name_not_utf8": lambda f: (f / os.fsdecode(b"img_0003\xff.jpg")).write_bytes(b"x"),
        "index_name": lambda f: (f / ".datatools-pack.json").write_text("the user's own file"),
        "subfolder": lambda f: (f / "img_00033.jpg").mkdir(),
        "stray_file": lambda f: (f / "notes.txt").write_text("mine"),
    }
    folders = {}
    for name, make in odd.items():
        folder = root / "rawframes" / "Odd" / f"v_Odd_{name}"
        shutil.copytree(source, folder)
        make(folder)
        folders[folder] = listing(folder)
    code, said = datatools("pack", "--root", str(root), "--threads", "2")
    assert code == 1, said
    assert f"2 folders converted, 0 finished from an interrupted run, {len(odd)} failed" in said
    for folder, was in folders.items():
        assert [ln for ln in said.splitlines() if str(folder) in ln], f"{folder} not named:\n{said}"
        assert listing(folder) == was and not os.path.lexists(f"{folder}.zip")
    assert secret.read_text() == "not for a world-readable pack\n"
    for key in GOOD:
        assert verify(str(root / "rawframes" / f"{key}.zip")) is None


def sparse(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        f.truncate(size)


def listing(folder: Path) -> dict[str, tuple]:
    """Each entry of a folder as it is (a sparse file by its size, not its bytes)."""
    out = {}
    for entry in os.scandir(folder):
        st = entry.stat(follow_symlinks=False)
        if stat.S_ISREG(st.st_mode) and st.st_size > (1 << 20):
            out[entry.name] = ("sparse", st.st_size)
        elif stat.S_ISREG(st.st_mode):
            out[entry.name] = ("file", Path(entry.path).read_bytes())
        elif stat.S_ISLNK(st.st_mode):
            out[entry.name] = ("link", os.readlink(entry.path))
        else:
            out[entry.name] = ("other", stat.S_IFMT(st.st_mode))
    return out


# --- writers: one per root, inside it, files as the umask says ---------------------------

def test_two_packs_on_one_root_one_exits_75_and_nothing_is_lost(packed_root, tmp_path):
    """Started together: the one that takes the root's lock first packs everything, the other
    exits 75 at once naming it; every frame is then in exactly one complete pack."""
    root = tmp_path / "root"
    shutil.copytree(packed_root, root)
    subprocess.run([str(BIN / "datatools"), "unpack", "--root", str(root)], check=True, capture_output=True)
    source = root / "rawframes" / GOOD[0]
    for i in range(120):
        shutil.copytree(source, root / "rawframes" / "Copies" / f"v_Copies_g{i:03d}_c01")
    before = frames_held(root / "rawframes")
    runs = [subprocess.Popen([str(BIN / "datatools"), "pack", "--root", str(root), "--threads", "1"],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    said = [run.communicate(timeout=120)[0] for run in runs]
    assert sorted(run.returncode for run in runs) == [0, 75], said
    busy = said[[run.returncode for run in runs].index(75)]
    # the holder's name, or (taken a moment before) "another datatools command": lock.py
    assert "in use by " in busy and "122 folders converted" in "".join(said)
    assert frames_held(root / "rawframes") == before
    for pack in (root / "rawframes").rglob("*.zip"):
        assert verify(str(pack)) is None
    assert not [p for p in (root / "rawframes").rglob(".*") if p.name.endswith(".tmp")]


@pytest.mark.parametrize("frames_dir", ["../elsewhere", "{outside}", "rawframes/../../elsewhere"])
def test_frames_dir_must_be_a_folder_inside_the_root(packed_root, tmp_path, frames_dir):
    """pack, unpack and the LMDB export convert (and delete) only what is inside the root."""
    root = tmp_path / "root"
    shutil.copytree(packed_root, root)
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(root / "rawframes", elsewhere)
    unpack_pack(elsewhere / f"{GOOD[0]}.zip")  # a folder and a pack, for pack and unpack
    was = listing(elsewhere / "Good")
    for command in (["pack"], ["unpack"], ["pack", "--to", "lmdb"]):
        done = subprocess.run([str(BIN / "datatools"), *command, "--root", str(root), "--frames-dir",
                               frames_dir.format(outside=elsewhere)], capture_output=True, text=True)
        assert done.returncode == 2, done.stdout + done.stderr
        assert "must name a folder inside the root" in done.stderr
        assert listing(elsewhere / "Good") == was
    assert not list(tmp_path.glob("*.lmdb"))


def test_unpacked_frames_and_packs_get_the_umask_permissions_and_the_manifest_follows(packed_root, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(packed_root, root)
    for umask, mode in ((0o002, 0o664), (0o022, 0o644)):
        for command, storage in (("unpack", "files"), ("pack", "packed")):
            done = subprocess.run([str(BIN / "datatools"), command, "--root", str(root)], capture_output=True,
                                  text=True, preexec_fn=lambda umask=umask: os.umask(umask))
            assert done.returncode == 0, done.stdout + done.stderr
            assert "the manifest says so for 2 video(s)" in done.stdout
            rows = [r for r in read_manifest(root)[0] if r.key in GOOD]
            assert {r.frame_storage for r in rows} == {storage}
            made = root / "rawframes" / GOOD[0]
            made = made / "img_00001.jpg" if command == "unpack" else made.with_suffix(".zip")
            assert stat.S_IMODE(made.stat().st_mode) == mode, (command, oct(umask))


@pytest.fixture
def small_root(packed_root, tmp_path):
    with tmpfs(tmp_path / "small", "16m") as mount:
        root = mount / "root"
        shutil.copytree(packed_root, root)
        yield root


def test_a_full_disk_stops_unpack_and_the_lmdb_export_naming_the_roots_mount(small_root):
    require_module("lmdb")
    filler = small_root.parent / "filler"
    free = shutil.disk_usage(small_root).free
    filler.write_bytes(b"\0" * max(0, free - (48 << 10)))
    for command in (["unpack"], ["pack", "--to", "lmdb"]):
        done = subprocess.run([str(BIN / "datatools"), *command, "--root", str(small_root)],
                              capture_output=True, text=True, cwd="/")
        assert done.returncode == 4, done.stdout + done.stderr
        line = done.stderr.strip().splitlines()[0]
        assert f"the filesystem at {small_root.parent} is full" in line or \
            f"free on {small_root.parent}" in line, line
        for key in GOOD:  # nothing lost: the packs are whole, no half folder is there
            assert verify(str(small_root / "rawframes" / f"{key}.zip")) is None
            assert not (small_root / "rawframes" / key).exists()
        assert not (small_root / "rawframes.lmdb").exists()


def test_a_root_copied_with_its_timestamps_keeps_its_probes_and_frame_records(packed_root, tmp_path):
    """`cp -a` to another disk (new inodes, same sizes and mtimes): nothing is probed again and
    the packs stay done (completion.FileStamp: size and mtime, not the inode)."""
    from datatools.validate.run import validate
    root = tmp_path / "root"
    shutil.copytree(packed_root, root)
    first = validate("ucf101", root, "quick", ClusterOptions(workers=1))
    assert first.probed + first.kept == len(NAMES) + 2
    copy = tmp_path / "node-local" / "root"
    copy.parent.mkdir()
    subprocess.run(["cp", "-a", str(root), str(copy)], check=True)
    video = Path("videos") / f"{GOOD[0]}.mp4"
    assert (copy / video).stat().st_ino != (root / video).stat().st_ino
    again = validate("ucf101", copy, "quick", ClusterOptions(workers=1))
    assert again.probed == 0 and again.kept == len(NAMES) + 2
    rows = {r.key: r for r in build_lists("ucf101", copy, ["rawframes"]).records}
    assert {rows[key].extract_status for key in GOOD} == {"done"}


def test_a_pack_past_2_gib_is_read_through_its_zip64_records(tmp_path):
    """A long video's pack: members past 2 GiB carry their offsets in zip64 fields (Python's
    zipfile writes them there); the rule reads them, and Python's zipfile agrees."""
    import zipfile

    from datatools.frames.packs import PackWriter
    path = tmp_path / "long.zip"
    writer = PackWriter(str(path))
    frame = os.urandom(1 << 20) * 60
    for i in range(1, 38):  # 37 members of ~60 MiB: the last ones start past 2 GiB
        writer.add(f"img_{i:05d}.jpg", frame[: len(frame) - i])
    writer.add("flow_x_00001.jpg", b"the last member")
    writer.finish()
    with Pack.open(str(path)) as pack, zipfile.ZipFile(path) as zf:
        assert zf.getinfo("flow_x_00001.jpg").header_offset > 2 << 30
        assert pack.read("flow_x_00001.jpg") == zf.read("flow_x_00001.jpg") == b"the last member"
        assert pack.read("img_00037.jpg") == frame[: len(frame) - 37]


def test_a_folder_beside_a_pack_is_deleted_only_when_the_pack_holds_its_files(packed_root, tmp_path):
    """A pack and a folder at one video's names: what a killed `pack` leaves (the folder's
    files all in the pack, byte for byte: the folder goes), or not (both stay, the video
    fails naming them); a folder that is a link, or whose kept part holds a folder named like
    a frame, fails its video too: nothing of the user's is deleted, never exit 3."""
    root = tmp_path / "root"
    shutil.copytree(packed_root, root)
    with Pack.open(str(root / "rawframes" / f"{GOOD[0]}.zip")) as pack:
        frames = {n: pack.read(n) for n in pack.names() if n.startswith("img_")}
    leftover = root / "rawframes" / GOOD[0]  # what a killed pack left: the same bytes
    leftover.mkdir()
    (leftover / "img_00001.jpg").write_bytes(frames["img_00001.jpg"])
    users = root / "rawframes" / GOOD[1]  # the user's own frames: other bytes
    users.mkdir()
    (users / "img_00001.jpg").write_bytes(b"the user's own frame")
    code, said = datatools("extract", "--root", str(root), "--task", "rgb", "--new-short", "64",
                           "--store", "packed", "--force", "--limit", "2", "--workers", "1")
    assert code == 1, said
    assert not leftover.exists()
    assert (users / "img_00001.jpg").read_bytes() == b"the user's own frame"
    assert [ln for ln in said.splitlines() if f"failed: videos/{GOOD[1]}" in ln and "differs" in ln], said
    assert verify(str(root / "rawframes" / f"{GOOD[1]}.zip")) is None

    # folders: a kept flow part holding a folder named like a frame; a frame folder that is a link
    files = tmp_path / "files"
    shutil.copytree(packed_root, files)
    subprocess.run([str(BIN / "datatools"), "unpack", "--root", str(files)], check=True, capture_output=True)
    odd = files / "rawframes" / GOOD[0]
    record = json.loads((odd / ".datatools-done.json").read_text())
    record["parts"]["flow"] = {"count": 1, "params": {"algo": "farneback", "backend": "opencv",
                                                       "bound": 20.0, "jpeg_quality": 95}}
    (odd / ".datatools-done.json").write_text(json.dumps(record))
    (odd / "flow_x_00001.jpg").mkdir()
    (odd / "flow_y_00001.jpg").mkdir()
    elsewhere = tmp_path / "elsewhere"
    shutil.move(str(files / "rawframes" / GOOD[1]), elsewhere)
    os.symlink(elsewhere, files / "rawframes" / GOOD[1])
    was = listing(elsewhere)
    code, said = datatools("extract", "--root", str(files), "--task", "rgb", "--new-short", "64",
                           "--force", "--limit", "2", "--workers", "1")  # RGB again, flow kept
    assert code == 1, said
    assert f"{odd}/flow_x_00001.jpg is not a regular file" in said
    assert f"{files / 'rawframes' / GOOD[1]} is a symbolic link" in said
    assert (odd / "flow_x_00001.jpg").is_dir() and listing(elsewhere) == was
