"""Archive extraction: the real RAR files in ../shared/data/archives through each installed
reader, and hostile zip/tar archives built here (they must be refused before anything is
written, and nothing may appear outside the destination)."""

from __future__ import annotations

import io
import os
import shutil
import stat
import subprocess
import tarfile
import zipfile
from pathlib import Path

import pytest
from conftest import SHARED, require_tool, tmpfs

from datatools.acquire import archives
from datatools.acquire.archives import ArchiveError, ReaderMissing, UnsafeArchive

RARS = SHARED / "archives"
SUBDIR_FILES = {"sub/dir1/file1.txt": 6, "sub/dir2/file2.txt": 6, "sub/with space/long fn.txt": 8,
                "sub/üȵĩöḋè/file.txt": 5}
VOLUME_FILES = {"vols/bigfile.txt": 205000, "vols/smallfile.txt": 2050}


def files_in(folder: Path) -> dict[str, int]:
    return {p.relative_to(folder).as_posix(): p.stat().st_size for p in folder.rglob("*") if p.is_file()}


def everything_under(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*")}


@pytest.mark.parametrize("tool", ["7z", "unar", "bsdtar"])
@pytest.mark.parametrize("name, expected", [("rar3-subdirs.rar", SUBDIR_FILES),
                                            ("rar5-subdirs.rar", SUBDIR_FILES),
                                            ("rar3-vols.part1.rar", VOLUME_FILES)])
def test_each_rar_reader_extracts_what_it_can_and_says_so_where_it_cannot(tmp_path, tool, name, expected):
    require_tool(tool)
    dest = tmp_path / "out"
    if (tool, name) == ("unar", "rar5-subdirs.rar"):  # unar cannot parse this RAR5 file
        with pytest.raises(ArchiveError, match="no RAR reader could extract it .*unar: "):
            archives.extract(RARS / name, dest, rar_tools=[tool])
    elif (tool, name) == ("bsdtar", "rar3-vols.part1.rar"):  # bsdtar reads one volume only
        with pytest.raises(ReaderMissing, match="multi-volume RAR needs 7z or unar"):
            archives.extract(RARS / name, dest, rar_tools=[tool])
    else:
        archives.extract(RARS / name, dest, rar_tools=[tool])
        assert files_in(dest) == expected
        if "subdirs" in name:
            assert (dest / "sub/dir1/file1.txt").read_bytes() == b"file1\n"
        return
    assert not dest.exists() and everything_under(tmp_path) == set()


def test_a_failing_reader_falls_back_to_the_next_one(tmp_path):
    for tool in ("unar", "bsdtar"):
        require_tool(tool)
    archives.extract(RARS / "rar5-subdirs.rar", tmp_path / "out", rar_tools=["unar", "bsdtar"])
    assert files_in(tmp_path / "out") == SUBDIR_FILES


def test_no_rar_reader_names_the_debian_packages(tmp_path):
    with pytest.raises(ReaderMissing, match=r"no RAR reader installed; install one of unar, "
                                           r"libarchive-tools \(bsdtar\) or p7zip-full \(7z\)"):
        archives.extract(RARS / "rar3-subdirs.rar", tmp_path / "out", rar_tools=[])


def test_kind_comes_from_the_first_bytes_not_the_name(tmp_path):
    disguised = tmp_path / "archive.rar"
    with zipfile.ZipFile(disguised, "w") as zf:
        zf.writestr("inner/a.txt", b"zip content")
    plain = tmp_path / "labels.zip"
    shutil.copy(RARS / "rar3-subdirs.rar", plain)
    noext = tmp_path / "part-00"
    with tarfile.open(noext, "w:bz2") as tf:
        info = tarfile.TarInfo("b.txt")
        info.size = 3
        tf.addfile(info, io.BytesIO(b"bz2"))
    assert [archives.sniff(p) for p in (disguised, plain, noext)] == ["zip", "rar", "tar"]
    archives.extract(disguised, tmp_path / "a")
    archives.extract(noext, tmp_path / "c")
    assert (tmp_path / "a/inner/a.txt").read_bytes() == b"zip content"
    assert (tmp_path / "c/b.txt").read_bytes() == b"bz2"
    html = tmp_path / "error.tar.gz"
    html.write_text("<html>Access denied</html>")
    with pytest.raises(ArchiveError, match="not a zip, tar or RAR archive .* may be an error page"):
        archives.extract(html, tmp_path / "d")


def _hostile_zip(path: Path, member: str, kind: str) -> None:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("good/first.txt", b"written first if nothing checked")
        info = zipfile.ZipInfo(member)
        if kind == "symlink":
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, b"../../outside")
        else:
            zf.writestr(info, b"escaped")


def _hostile_tar(path: Path, member: str, kind: str) -> None:
    with tarfile.open(path, "w") as tf:
        first = tarfile.TarInfo("good/first.txt")
        first.size = 5
        tf.addfile(first, io.BytesIO(b"first"))
        info = tarfile.TarInfo(member)
        if kind == "symlink":
            info.type, info.linkname = tarfile.SYMTYPE, "../../outside"
        elif kind == "abs-symlink":
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        elif kind == "hardlink":
            info.type, info.linkname = tarfile.LNKTYPE, "../outside"
        elif kind == "device":
            info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
        else:
            info.size = 7
        tf.addfile(info, io.BytesIO(b"escaped") if info.isreg() else None)


@pytest.mark.parametrize("fmt, member, kind, reason", [
    ("zip", "../escaped.txt", "file", "contains '..'"),
    ("zip", "good/../../escaped.txt", "file", "contains '..'"),
    ("zip", "/tmp/escaped.txt", "file", "has an absolute path"),
    ("zip", "good/link", "symlink", "is a link leaving the destination"),
    ("tar", "../escaped.txt", "file", "contains '..'"),
    ("tar", "/tmp/escaped.txt", "file", "has an absolute path"),
    ("tar", "good/link", "symlink", "is a link leaving the destination"),
    ("tar", "good/link", "abs-symlink", "is a link to the absolute path '/etc/passwd'"),
    ("tar", "good/hard", "hardlink", "is a link leaving the destination"),
    ("tar", "good/null", "device", "is a device, FIFO or socket"),
])
def test_hostile_archives_are_refused_before_anything_is_written(tmp_path, fmt, member, kind, reason):
    archive = tmp_path / f"hostile.{fmt}"
    (_hostile_zip if fmt == "zip" else _hostile_tar)(archive, member, kind)
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    before = everything_under(tmp_path)
    with pytest.raises(UnsafeArchive, match=f"refused, member {member!r} {reason}"):
        archives.extract(archive, work / "dest", keep_links=True)
    assert everything_under(tmp_path) == before  # not even good/first.txt
    assert not Path("/tmp/escaped.txt").exists()


def test_a_link_that_stays_inside_is_kept(tmp_path):
    archive = tmp_path / "ok.tar"
    with tarfile.open(archive, "w") as tf:
        target = tarfile.TarInfo("data/real.txt")
        target.size = 4
        tf.addfile(target, io.BytesIO(b"real"))
        link = tarfile.TarInfo("data/alias.txt")
        link.type, link.linkname = tarfile.SYMTYPE, "real.txt"
        tf.addfile(link)
    archives.extract(archive, tmp_path / "out", keep_links=True)
    alias = tmp_path / "out/data/alias.txt"
    assert alias.is_symlink() and alias.read_bytes() == b"real"


def test_an_interrupted_extraction_leaves_nothing_half_written(tmp_path):
    broken = tmp_path / "cut.tar.gz"
    whole = tmp_path / "whole.tar.gz"
    with tarfile.open(whole, "w:gz") as tf:
        for n in range(3):
            data = os.urandom(200_000)
            info = tarfile.TarInfo(f"clip{n}.mp4")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    broken.write_bytes(whole.read_bytes()[:300_000])  # a download cut short
    with pytest.raises(ArchiveError, match="cannot read the tar archive"):
        archives.extract(broken, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.tar.gz", "whole.tar.gz"]


# --- links the archive creates itself: chains, folders, overwrites, case, trailing slash ---

def _zip_entries(path: Path, entries: list[tuple[str, str, str | bytes]]) -> None:
    """entries: (kind, name, content or link target); kind file, dir or link."""
    with zipfile.ZipFile(path, "w") as zf:
        for kind, name, data in entries:
            info = zipfile.ZipInfo(name + ("/" if kind == "dir" and not name.endswith("/") else ""))
            if kind == "link":
                info.external_attr = (stat.S_IFLNK | 0o777) << 16
            elif kind == "dir":
                info.external_attr = (stat.S_IFDIR | 0o755) << 16
            zf.writestr(info, data if kind != "dir" else b"")


def _tar_entries(path: Path, entries: list[tuple[str, str, str | bytes]]) -> None:
    with tarfile.open(path, "w") as tf:
        for kind, name, data in entries:
            info = tarfile.TarInfo(name)
            if kind == "link":
                info.type, info.linkname = tarfile.SYMTYPE, data
                tf.addfile(info)
            elif kind == "hardlink":
                info.type, info.linkname = tarfile.LNKTYPE, data
                tf.addfile(info)
            elif kind == "dir":
                info.type = tarfile.DIRTYPE
                tf.addfile(info)
            else:
                payload = data.encode() if isinstance(data, str) else data
                info.size = len(payload)
                tf.addfile(info, io.BytesIO(payload))


def chain(depth: int) -> list[tuple[str, str, str]]:
    """l0 -> ., l1 -> l0/.., ..., then a file below the last link: each link's own text stays
    inside, but followed in turn they climb `depth` folders up."""
    links = [("link", "l0", ".")] + [("link", f"l{i}", f"l{i - 1}/..") for i in range(1, depth + 1)]
    return links + [("file", f"l{depth}/tmp/x/pwned.txt", "pwned")]


def through_folders(depth: int) -> list[tuple[str, str, str]]:
    """The same climb with each link in a folder of its own: d1/d2/.../l0 -> .., and each next
    link one folder up points through the previous one."""
    folders = "/".join(f"d{i}" for i in range(1, depth + 1))
    out = [("dir", folders, ""), ("link", f"{folders}/l0", "..")]
    path = folders
    for i in range(1, depth + 1):
        parent = path.rsplit("/", 1)[0] if "/" in path else ""
        here = f"{parent}/l{i}" if parent else f"l{i}"
        rel = path.rsplit("/", 1)[-1]
        out.append(("link", here, f"{rel}/l{i - 1}/.."))
        path = parent
    return out + [("file", f"l{depth}/pwned.txt", "pwned")]


HOSTILE_TREES = {
    "chain-2": chain(2),
    "chain-through-folders-3": through_folders(3),
    "chain-through-folders-5": through_folders(5),
    "chain-through-folders-12": through_folders(12),
    "link-then-file-below-it": [("link", "a", "."), ("file", "a/b/pwned.txt", "pwned")],
    "link-overwritten-by-a-later-link": [("link", "l", "."), ("link", "l", "../.."),
                                         ("file", "keep.txt", "x")],
    "folder-overwritten-by-a-link": [("dir", "l", ""), ("file", "l/ok.txt", "ok"),
                                     ("link", "l", "../..")],
    "link-then-same-name-folder": [("link", "l", ".."), ("dir", "l/", ""),
                                   ("file", "l/pwned.txt", "pwned")],
    "names-differing-by-case": [("link", "Up", "."), ("dir", "up", ""),
                                ("file", "UP/pwned.txt", "pwned")],
    "link-to-a-link-that-leaves": [("link", "a", "b"), ("link", "b", "c/../.."),
                                   ("dir", "c", "")],
    "link-loop": [("link", "a", "b"), ("link", "b", "a")],
}


@pytest.mark.parametrize("fmt", ["zip", "tar"])
@pytest.mark.parametrize("case", sorted(HOSTILE_TREES))
def test_links_the_archive_creates_are_followed_before_anything_is_written(tmp_path, fmt, case):
    archive = tmp_path / f"hostile.{fmt}"
    (_zip_entries if fmt == "zip" else _tar_entries)(archive, HOSTILE_TREES[case])
    work = tmp_path / "a" / "b" / "c" / "d" / "e"
    work.mkdir(parents=True)
    before = everything_under(tmp_path)
    with pytest.raises(UnsafeArchive) as caught:
        archives.extract(archive, work / "dest", keep_links=True)
    message = str(caught.value)
    assert message.startswith(f"{archive}: refused, member ") and "nothing was extracted" in message
    assert "\n" not in message
    assert everything_under(tmp_path) == before  # nothing written anywhere below tmp_path
    out = subprocess.run(["find", str(tmp_path.parent), "-name", "pwned.txt"],
                         capture_output=True, text=True).stdout
    assert out == "" and not Path("/tmp/x/pwned.txt").exists()


@pytest.mark.parametrize("fmt", ["zip", "tar"])
def test_links_that_stay_inside_are_kept_in_both_kinds(tmp_path, fmt):
    entries = [("dir", "data", ""), ("file", "data/real.txt", "real"),
               ("link", "data/alias.txt", "real.txt"), ("link", "top", "data"),
               ("link", "data/up", "../data/real.txt"), ("file", "Data2/other.txt", "o")]
    archive = tmp_path / f"ok.{fmt}"
    (_zip_entries if fmt == "zip" else _tar_entries)(archive, entries)
    with pytest.raises(UnsafeArchive, match="member 'data/alias.txt' is a link .dataset archives have none."):
        archives.extract(archive, tmp_path / "out")  # what download uses: no links at all
    assert not (tmp_path / "out").exists()
    out = archives.extract(archive, tmp_path / "out", keep_links=True)
    assert (out / "top").is_symlink() and (out / "top/alias.txt").read_text() == "real"
    assert (out / "data/up").read_text() == "real" and (out / "Data2/other.txt").read_text() == "o"


def test_an_archive_declaring_more_than_the_free_space_is_refused_before_writing(tmp_path):
    """A 300 KB zip of 300 MiB of zeros on a 64 MiB filesystem: one line, nothing written."""
    with tmpfs(tmp_path / "small", "64m") as small:
        bomb = tmp_path / "zeros.zip"
        with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
            with zf.open("zeros.bin", "w", force_zip64=True) as f:
                chunk = bytes(1 << 20)
                for _ in range(300):
                    f.write(chunk)
        assert bomb.stat().st_size < 1_000_000
        with pytest.raises(archives.DiskError, match=r"unpacking needs 300.0 MiB, \d+\.\d MiB free on "):
            archives.extract(bomb, small / "dest")
        assert list(small.iterdir()) == []


def test_a_truncated_zip_is_one_line_not_a_traceback(tmp_path):
    whole = tmp_path / "whole.zip"
    with zipfile.ZipFile(whole, "w") as zf:
        zf.writestr("annotations/a.txt", os.urandom(200_000))
    cut = tmp_path / "cut.zip"
    cut.write_bytes(whole.read_bytes()[:100_000])
    with pytest.raises(ArchiveError, match="cannot read the zip archive .*download again"):
        archives.extract(cut, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("entries, reason", [
    ([("file", "a", "x"), ("hardlink", "h", "A")], "is a hard link to 'A', which is not a file earlier"),
    ([("link", "l", "."), ("hardlink", "h", "l")], "is a hard link to 'l', which is not a file earlier"),
    ([("file", "a", "x"), ("link", "d", "."), ("hardlink", "d/h", "a")],
     "would be written through the link 'd'"),
    ([("hardlink", "h", "later"), ("file", "later", "x")], "is a hard link to 'later', which is not a file"),
])
def test_hard_links_name_an_earlier_file_of_the_archive_exactly(tmp_path, entries, reason):
    archive = tmp_path / "hard.tar"
    _tar_entries(archive, entries)
    before = everything_under(tmp_path)
    with pytest.raises(UnsafeArchive, match=reason):
        archives.extract(archive, tmp_path / "out", keep_links=True)
    assert everything_under(tmp_path) == before


def test_moving_unpacked_files_never_follows_a_link_at_the_destination(tmp_path):
    """What the download does after unpacking (the wrapping folder moved up, merged into
    annotations/): a link already there is replaced, never written through."""
    dest = tmp_path / "root" / "annotations"
    dest.mkdir(parents=True)
    (dest / "up").symlink_to("..")
    src = tmp_path / "staged"
    (src / "up").mkdir(parents=True)
    (src / "up" / "PWNED").write_text("x")
    archives.move_into(src, dest)
    assert not (dest / "up").is_symlink() and (dest / "up" / "PWNED").is_file()
    assert not (tmp_path / "root" / "PWNED").exists()


def test_a_damaged_xz_tar_is_one_line(tmp_path):
    whole = tmp_path / "a.tar.xz"
    with tarfile.open(whole, "w:xz") as tf:
        data = os.urandom(300_000)
        info = tarfile.TarInfo("clip.mp4")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    raw = bytearray(whole.read_bytes())
    raw[len(raw) // 2: len(raw) // 2 + 64] = bytes(64)
    bad = tmp_path / "bad.tar.xz"
    bad.write_bytes(bytes(raw))
    with pytest.raises(ArchiveError, match="cannot read the tar archive"):
        archives.extract(bad, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def _clips_tar_gz(path: Path) -> dict[str, bytes]:
    """A gzipped tar of the real clips (video data barely compresses: the archive is about
    as large as what it unpacks to)."""
    members = {f"20bn/{p.name}": p.read_bytes() for p in sorted((SHARED / "videos").iterdir())}
    with tarfile.open(path, "w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return members


def _bytes_read() -> int:
    """What this process has read through read(2) so far (the kernel's count)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no rchar in /proc/self/io")


def test_a_compressed_tar_is_read_once(tmp_path):
    """Listing and extracting happen in one pass: the archive's bytes are read once (a
    listing first read and decompressed it twice)."""
    archive = tmp_path / "clips.tar.gz"
    members = _clips_tar_gz(archive)
    before = _bytes_read()
    out = archives.extract(archive, tmp_path / "out")
    read = _bytes_read() - before
    assert {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()} == members
    size = archive.stat().st_size
    assert size <= read < 1.3 * size, (read, size)


def test_an_archive_in_parts_unpacks_without_a_joined_copy(tmp_path):
    """SSv2 ships one tar.gz cut into numbered parts. They are read in order as one stream:
    on a filesystem holding the parts and room for what they unpack to, but not for a
    joined copy as well, the parts unpack and nothing else is written."""
    whole = tmp_path / "whole.tar.gz"
    members = _clips_tar_gz(whole)
    data = whole.read_bytes()
    unpacked = sum(len(d) for d in members.values())
    size = f"{(len(data) + unpacked) // 1024 + 1200}k"  # the parts, the clips, some slack
    with tmpfs(tmp_path / "disk", size) as disk:
        cut = [data[i:i + 1_000_000] for i in range(0, len(data), 1_000_000)]
        paths = []
        for i, chunk in enumerate(cut):
            paths.append(disk / f"part-{i:02d}")
            paths[-1].write_bytes(chunk)
        assert len(paths) >= 3 and shutil.disk_usage(disk).free < len(data) + unpacked
        out = archives.extract(archives.Parts(paths, str(disk / "whole.joined")), disk / "out")
        assert {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*")
                if p.is_file()} == members
        assert sorted(p.name for p in disk.iterdir()) == sorted([*(p.name for p in paths), "out"])


# --- names a disk could merge, and trees too deep to be a dataset's -------------------------

CAFE_NFC, CAFE_NFD = "Caf\u00e9", "Cafe\u0301"  # one name to a disk that normalises Unicode


@pytest.mark.parametrize("fmt", ["zip", "tar"])
@pytest.mark.parametrize("names, reason", [
    (["Class/v_a.avi", "class/v_b.avi"], "would be the same file as 'Class'"),
    (["Class/v_A.avi", "Class/v_a.avi"], "would be the same file as 'Class/v_A.avi'"),
    ([f"{CAFE_NFC}/v.avi", f"{CAFE_NFD}/v.avi"], f"would be the same file as '{CAFE_NFC}'"),
    ([f"x/{CAFE_NFD}.avi", f"x/{CAFE_NFC.upper()}.AVI"], "would be the same file as"),
])
def test_names_a_case_insensitive_or_normalising_disk_would_merge_are_refused(tmp_path, fmt, names, reason):
    """Two videos a macOS, Windows or NAS disk would store as one: one of them would be lost."""
    archive = tmp_path / f"merge.{fmt}"
    entries = [("file", name, f"video {i}") for i, name in enumerate(names)]
    (_zip_entries if fmt == "zip" else _tar_entries)(archive, entries)
    before = everything_under(tmp_path)
    with pytest.raises(UnsafeArchive, match=f"refused, member .* {reason}"):
        archives.extract(archive, tmp_path / "out")
    assert everything_under(tmp_path) == before


@pytest.mark.parametrize("fmt, depth", [("tar", 1200), ("zip", 2000), ("tar", archives.MAX_DEPTH + 1)])
def test_a_tree_nested_deeper_than_the_limit_is_refused_in_one_line(tmp_path, fmt, depth):
    """Not a RecursionError, not "damaged": refused, naming the member, nothing written."""
    archive = tmp_path / f"deep.{fmt}"
    deepest = "/".join(["d"] * (depth - 1) + ["clip.mp4"])
    entries = [("file", "top.txt", "x"), ("file", deepest, "y")]
    (_zip_entries if fmt == "zip" else _tar_entries)(archive, entries)
    before = everything_under(tmp_path)
    with pytest.raises(UnsafeArchive, match=f"refused, member '{deepest}' is nested {depth} levels deep "
                                            f"\\(at most {archives.MAX_DEPTH}\\)"):
        archives.extract(archive, tmp_path / "out")
    assert everything_under(tmp_path) == before


def test_a_name_that_is_not_utf8_is_refused(tmp_path):
    archive = tmp_path / "latin1.tar"
    with tarfile.open(archive, "w", format=tarfile.GNU_FORMAT, encoding="latin-1") as tf:
        info = tarfile.TarInfo("Caf\u00e9/v.avi")  # written as the byte 0xe9: not UTF-8
        info.size = 1
        tf.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(UnsafeArchive, match="has a name that is not UTF-8"):
        archives.extract(archive, tmp_path / "out")
    assert everything_under(tmp_path) == {"latin1.tar"}
