"""Safe archive extraction: zip, tar (.gz/.bz2/.xz), RAR (single, multi-volume, nested).

The kind of an archive is read from its first bytes, never from its name (SSv2's parts carry
no extension; a mirror may rename files). Every member is checked by one rule for every kind
(`check_members`, see there) before anything reaches the destination, and so is the space the
members declare against the disk's free space. A hostile archive is refused with one line and
nothing is extracted. zip members are listed and checked before any is written; a tar is read
once, as a stream, each member checked as it comes and written into the hidden temporary
folder, the whole tree checked at its end before any link is made. zip and tar members are
written here, never through a link; RAR goes through an external reader, and archives with
links are refused. Extraction goes into a hidden temporary folder beside the destination,
which is checked once more (what was actually written) and only then moved into place.

RAR has no free writer and three free readers that differ: unar cannot read some RAR5 files,
bsdtar reads RAR5 but not multi-volume sets, 7z reads both. Whichever are installed are tried
in that order of trust (7z, unar, bsdtar) until one succeeds.
"""

from __future__ import annotations

import errno
import io
import json
import lzma
import os
import re
import shutil
import stat
import subprocess
import tarfile
import unicodedata
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from ..core.errors import UserError
from ..core.fsio import (
    DiskError,
    disk_error,
    failed_for_space,
    free_bytes,
    gib,
    is_disk_error,
    mount_point,
)

RAR_PACKAGES = "unar, libarchive-tools (bsdtar) or p7zip-full (7z)"
MAGIC = [  # (offset, bytes, kind)
    (0, b"PK\x03\x04", "zip"), (0, b"PK\x05\x06", "zip"),
    (0, b"Rar!\x1a\x07", "rar"),
    (0, b"\x1f\x8b", "tar"), (0, b"BZh", "tar"), (0, b"\xfd7zXZ\x00", "tar"),
    (257, b"ustar", "tar"),
]


class ArchiveError(UserError):
    """An archive that cannot be read, or no tool to read it."""


class UnsafeArchive(ArchiveError):
    """An archive with a member that would land outside its destination."""


class ReaderMissing(UserError):
    """No installed tool can read this kind of archive: the archive itself may be fine."""


@dataclass
class Member:
    name: str
    kind: str  # "file", "dir", "symlink", "hardlink" or "special" (device, FIFO, socket)
    target: str | None = None  # link target as stored
    size: int = 0  # bytes the member declares (files)
    ref: object = field(default=None, repr=False, compare=False)  # the reader's own entry


def sniff(path: Path) -> str | None:
    """"zip", "rar" or "tar" by the file's first bytes; None if none of them."""
    with open(path, "rb") as f:
        head = f.read(512)
    for offset, magic, kind in MAGIC:
        if head[offset:offset + len(magic)] == magic:
            return kind
    return None


def extract(archive: Path | Parts, dest: Path, rar_tools: Iterable[str] | None = None,
            keep_links: bool = False) -> Path:
    """Extract `archive` into the folder `dest` (replaced if it exists), atomically: `dest`
    appears complete or not at all. Returns `dest`. An archive in `Parts` is read as one
    stream (a tar); a zip or RAR in parts needs random access, so its parts are joined into
    one file first, removed afterwards.

    Links are refused unless `keep_links`: dataset archives have none, and what the download
    does next (moving a wrapped folder up a level, sorting clips into class folders) would
    carry a link somewhere its target was never checked from. With `keep_links`, zip and tar
    links that stay inside `dest` are kept (RAR: always refused)."""
    first = archive.paths[0] if isinstance(archive, Parts) else archive
    kind = sniff(first)
    if kind is None:
        with open(first, "rb") as f:
            head = f.read(8)
        raise ArchiveError(f"{archive}: not a zip, tar or RAR archive (first bytes "
                           f"{head!r}); the download may be an error page")
    if isinstance(archive, Parts) and kind != "tar":
        joined = dest.with_name(f".{dest.name}.joined")  # ours, beside the destination
        try:
            _join(archive, joined)
            return extract(joined, dest, rar_tools, keep_links)
        except OSError as exc:
            if is_disk_error(exc):
                raise disk_error(exc, dest.parent) from None
            raise ArchiveError(f"{archive}: cannot join its parts into {joined} "
                               f"({exc.strerror or exc})") from None
        finally:
            joined.unlink(missing_ok=True)
    tmp = dest.with_name(f".{dest.name}.unpacking")
    for leftover in (tmp, dest):  # from a run that was interrupted
        if leftover.is_symlink() or leftover.is_file():
            leftover.unlink()
        elif leftover.exists():
            shutil.rmtree(leftover)
    tmp.mkdir(parents=True)
    try:
        if kind == "zip":
            _extract_zip(archive, tmp, keep_links)
        elif kind == "tar":
            _extract_tar(archive, tmp, keep_links)
        else:
            _extract_rar(archive, tmp, rar_tools)
        _check_tree(archive, tmp)
        os.replace(tmp, dest)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if is_disk_error(exc):
            raise disk_error(exc, dest.parent) from None
        raise ArchiveError(f"{archive}: cannot unpack it into {dest.parent} "
                           f"({exc.strerror or exc}: {exc.filename}); nothing was kept") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


# --- the safety rule, one for every kind of archive -----------------------------------------
#
# Before anything is written, the archive's members are laid out as the tree they would make,
# with the links the archive itself creates, and refused if any would reach outside:
# - a name is relative, UTF-8, has no `..`, no NUL, no drive letter, and at most MAX_DEPTH
#   parts (a deeper tree is no dataset's, and walking it recurses);
# - no two names (or the folders above them) differ only in case or Unicode normalisation
#   (`Café` composed and decomposed): the destination may be a disk that makes them one file
#   (macOS, Windows, some NAS), and one of the two would be lost;
# - no member lies below another that is a link or a file ("l -> ..", then "l/x" would be
#   written through the link), compared as the names above are;
# - a name that is a link appears once, and no name is both a folder and something else;
# - every symbolic link's target, resolved against that final tree (following the archive's
#   other links, as the kernel would), stays inside; a hard link names an earlier file;
# - no device, FIFO or socket.
# Members are then written without following any link: links are created after every file
# and folder, and files are opened with O_NOFOLLOW.

MAX_LINK_HOPS = 40  # as the kernel's limit on symbolic links in one path lookup
MAX_DEPTH = 32  # parts of a member's name; datasets' archives have two to four


def _fold(name: str) -> str:
    """A name as a disk that ignores case and Unicode normalisation sees it (Unicode's
    canonical caseless match)."""
    return unicodedata.normalize("NFD", unicodedata.normalize("NFD", name).casefold())


def check_members(archive, members: Iterable[Member], keep_links: bool = False,
                  whole: bool = True) -> list[Member]:
    """The members with normalised names, or UnsafeArchive naming the first unsafe one;
    without `keep_links`, any link is unsafe. `whole=False`: only the rules each member
    meets on its own (a stream checks every member as it comes, the tree at its end)."""
    out: list[Member] = []
    for m in members:
        name = _normalise(m.name)
        reason = _bad_name(m.name, name) or _bad_kind(m)
        if not reason and not keep_links and m.kind in ("symlink", "hardlink"):
            reason = "is a link (dataset archives have none)"
        if reason:
            _refuse(archive, m.name, reason)
        if name:  # "./" names the destination itself
            out.append(Member(name, m.kind, m.target, m.size, m.ref))
    if not whole:
        return out
    spelled: dict[str, str] = {}  # every name and folder above one, folded -> as written
    for m in out:
        parts = m.name.split("/")
        for depth in range(1, len(parts) + 1):
            path = "/".join(parts[:depth])
            seen = spelled.setdefault(_fold(path), path)
            if seen != path:
                _refuse(archive, m.name, f"would be the same file as {seen!r} on a disk that "
                        "ignores case or Unicode normalisation, losing one of them")
    tree: dict[str, Member] = {}
    for m in out:
        key = _fold(m.name)
        have = tree.get(key)
        if have is not None and (have.kind != m.kind or m.kind in ("symlink", "hardlink")):
            _refuse(archive, m.name, f"appears twice (as {_a(have.kind)} {have.name!r} and as "
                    f"{_a(m.kind)})")
        if m.kind == "hardlink":
            target = _normalise(m.target or "")
            linked = tree.get(_fold(target))
            if linked is None or linked.kind != "file" or linked.name != target:
                _refuse(archive, m.name, f"is a hard link to {m.target!r}, which is not a file "
                        "earlier in the archive")
        tree[key] = m
    for m in out:
        parts = m.name.split("/")
        for depth in range(1, len(parts)):
            above = tree.get(_fold("/".join(parts[:depth])))
            if above is not None and above.kind != "dir":
                how = "through the link" if above.kind in ("symlink", "hardlink") else "inside the file"
                _refuse(archive, m.name, f"would be written {how} {above.name!r}")
        if m.kind == "symlink":
            where = _resolve(tree, parts[:-1], m.target or "")
            if where is None:
                _refuse(archive, m.name, f"is a link leaving the destination ({m.target!r})")
            if where is LOOP:
                _refuse(archive, m.name, f"is a link that loops ({m.target!r})")
    return out


def _refuse(archive: Path, name: str, reason: str):
    raise UnsafeArchive(f"{archive}: refused, member {name!r} {reason}; nothing was extracted "
                        "(the archive is damaged or hostile)")


def _a(kind: str) -> str:
    return {"dir": "a folder", "file": "a file", "symlink": "a link", "hardlink": "a hard link",
            "special": "a device"}.get(kind, kind)


def _normalise(name: str) -> str:
    parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]
    return "/".join(parts)


def _absolute(text: str) -> bool:
    text = text.replace("\\", "/")
    return text.startswith("/") or bool(re.match(r"^[A-Za-z]:", text))


def _bad_name(raw: str, name: str) -> str | None:
    if "\0" in raw:
        return "has a NUL character in its name"
    try:
        raw.encode("utf-8")
    except UnicodeEncodeError:
        return "has a name that is not UTF-8"
    if name.count("/") >= MAX_DEPTH:
        return f"is nested {name.count('/') + 1} levels deep (at most {MAX_DEPTH})"
    if _absolute(raw):
        return "has an absolute path"
    if ".." in name.split("/"):
        return "contains '..'"
    if any(len(part.encode("utf-8", "surrogateescape")) > 255 for part in name.split("/")):
        return "has a name longer than 255 bytes"
    return None


def _bad_kind(m: Member) -> str | None:
    if m.kind == "special":
        return "is a device, FIFO or socket"
    if m.kind in ("symlink", "hardlink"):
        target = (m.target or "").replace("\\", "/")
        if not target or _absolute(target) or "\0" in target:
            return f"is a link to the absolute path {m.target!r}"
        if m.kind == "hardlink" and ".." in target.split("/"):
            return f"is a link leaving the destination ({m.target!r})"
    return None


LOOP: list[str] = []  # _resolve's answer for links that never end


def _resolve(tree: dict[str, Member], folder: list[str], target: str) -> list[str] | None:
    """Where `target`, read in `folder`, ends up once the archive's own links are followed;
    None if it leaves the destination, LOOP if it never ends."""
    parts = list(folder)
    todo = _normalise(target).split("/")
    hops = 0
    while todo:
        part = todo.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            if not parts:
                return None
            parts.pop()
            continue
        parts.append(part)
        entry = tree.get(_fold("/".join(parts)))
        if entry is not None and entry.kind == "symlink":
            hops += 1
            if hops > MAX_LINK_HOPS:
                return LOOP
            parts.pop()
            todo = (entry.target or "").replace("\\", "/").split("/") + todo
    return parts


def check_space(archive: Path, members: list[Member], dest: Path) -> None:
    """Refuse before extraction when the members declare more bytes than the disk has free."""
    needed = sum(m.size for m in members if m.kind == "file")
    free = free_bytes(dest)
    if needed > free:
        raise _no_space(archive, gib(needed), free, dest)


def _no_space(archive, needed: str, free: int, dest: Path) -> DiskError:
    return DiskError(f"{archive}: unpacking needs {needed}, {gib(free)} free on "
                     f"{mount_point(dest)}; free some space (or move the root), then re-run")


def _write_tree(tmp: Path, members: list[Member], open_member) -> None:
    """Write checked members: folders, files and hard links in archive order, then the
    symbolic links. Nothing is opened through a link (there are none until the end, and
    O_NOFOLLOW says so)."""
    links = []
    for m in members:
        if m.kind == "symlink":
            links.append(m)
        else:
            _write_member(tmp, m, open_member)
    for m in links:
        target = tmp / m.name
        target.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(m.target, target)


def _write_member(tmp: Path, m: Member, open_member) -> None:
    """A folder, a file (its content from `open_member(m)`) or a hard link."""
    target = tmp / m.name
    if m.kind == "dir":
        target.mkdir(parents=True, exist_ok=True)
    elif m.kind == "file":
        target.parent.mkdir(parents=True, exist_ok=True)
        mode = 0o777 if _executable(m) else 0o666
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
        with os.fdopen(fd, "wb") as dst, open_member(m) as src:
            shutil.copyfileobj(src, dst, 1 << 20)
    elif m.kind == "hardlink":
        target.parent.mkdir(parents=True, exist_ok=True)
        os.link(tmp / _normalise(m.target), target, follow_symlinks=False)


def _executable(m: Member) -> bool:
    mode = getattr(m.ref, "mode", None)
    if mode is None and isinstance(m.ref, zipfile.ZipInfo):
        mode = m.ref.external_attr >> 16
    return bool(mode and mode & 0o100)


# --- zip ---------------------------------------------------------------------------------

# What zipfile raises for a damaged, truncated or encrypted archive (RuntimeError: a password).
ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, lzma.LZMAError, EOFError, NotImplementedError,
              RuntimeError)


def _zip_members(zf: zipfile.ZipFile) -> list[Member]:
    out = []
    for info in zf.infolist():
        mode = info.external_attr >> 16
        if info.is_dir():
            out.append(Member(info.filename, "dir", ref=info))
        elif stat.S_ISLNK(mode):
            out.append(Member(info.filename, "symlink", zf.read(info).decode("utf-8", "replace"),
                              ref=info))
        elif mode and not stat.S_ISREG(mode) and stat.S_IFMT(mode):
            out.append(Member(info.filename, "special", ref=info))
        else:
            out.append(Member(info.filename, "file", size=info.file_size, ref=info))
    return out


def _extract_zip(archive: Path, tmp: Path, keep_links: bool) -> None:
    try:
        with zipfile.ZipFile(archive) as zf:
            members = check_members(archive, _zip_members(zf), keep_links)
            check_space(archive, members, tmp)
            _write_tree(tmp, members, lambda m: zf.open(m.ref))
    except ZIP_ERRORS as exc:
        raise ArchiveError(f"{archive}: cannot read the zip archive ({exc}); it may be truncated "
                           "or damaged, delete it and download again") from None


# --- tar ---------------------------------------------------------------------------------

def _tar_member(t: tarfile.TarInfo) -> Member:
    if t.isdir():
        return Member(t.name, "dir", ref=t)
    if t.issym():
        return Member(t.name, "symlink", t.linkname, ref=t)
    if t.islnk():
        return Member(t.name, "hardlink", t.linkname, ref=t)
    if t.isreg():
        return Member(t.name, "file", size=t.size, ref=t)
    return Member(t.name, "special", ref=t)


def _extract_tar(archive, tmp: Path, keep_links: bool) -> None:
    """One pass over the (compressed) stream, parts read in order where the archive is in
    parts: each member is checked by the rules that need only itself and written into the
    hidden temporary folder as it comes; the links wait. Then the whole tree is checked
    (check_members) before any link is made and before anything leaves that folder, so a
    refused archive still leaves nothing behind, and the archive is decompressed once (a
    listing first would decompress it twice)."""
    free = free_bytes(tmp)
    declared = 0
    seen: list[Member] = []
    deferred: list[Member] = []  # links, made after the whole tree is checked
    try:
        with _stream(archive) as raw, tarfile.open(fileobj=raw, mode="r|*") as tf:
            for info in tf:
                m = _tar_member(info)
                checked = check_members(archive, [m], keep_links, whole=False)
                if not checked:
                    continue  # "./": the destination itself
                m = checked[0]
                seen.append(m)
                if m.kind == "file":
                    declared += m.size
                    if declared > free:
                        raise _no_space(archive, f"more than {gib(declared)}", free, tmp)
                if m.kind in ("symlink", "hardlink"):
                    deferred.append(m)
                    continue
                try:
                    _write_member(tmp, m, lambda m: tf.extractfile(m.ref))
                except OSError as exc:
                    if exc.errno in (errno.EEXIST, errno.ENOTDIR, errno.EISDIR, errno.ELOOP):
                        check_members(archive, seen, keep_links)  # says which member, and why
                    raise
        check_members(archive, seen, keep_links)
        _write_tree(tmp, deferred, None)
    except (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError, OSError) as exc:
        if isinstance(exc, OSError) and exc.errno is not None:
            raise  # the disk, not the archive (a decompressor sets no errno)
        raise ArchiveError(f"{archive}: cannot read the tar archive ({exc}); it may be "
                           "truncated, delete it and download again") from None


class Parts:
    """One archive cut into numbered parts (SSv2's 00…19): read as one stream, part after
    part, never joined into a copy on disk."""

    def __init__(self, paths: list[Path], name: str):
        self.paths = [Path(p) for p in paths]
        self.name = name

    def __str__(self) -> str:
        return f"{self.name} ({len(self.paths)} parts: {self.paths[0]} …)"


class _Joined(io.RawIOBase):
    """The parts' bytes in order, as one readable stream."""

    def __init__(self, paths: list[Path]):
        self._paths = list(paths)
        self._file = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while True:
            if self._file is None:
                if not self._paths:
                    return 0
                self._file = open(self._paths.pop(0), "rb")
            n = self._file.readinto(buffer)
            if n:
                return n
            self._file.close()
            self._file = None

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        super().close()


def _join(parts: Parts, joined: Path) -> None:
    """The parts joined into one file (for the kinds that seek: zip, RAR)."""
    dest = joined.parent
    dest.mkdir(parents=True, exist_ok=True)
    with _stream(parts) as src, open(joined, "wb") as out:
        shutil.copyfileobj(src, out, 8 << 20)


@contextmanager
def _stream(archive) -> Iterator:
    """The archive's bytes from the start, sequentially (a file, or parts in order)."""
    if isinstance(archive, Parts):
        with io.BufferedReader(_Joined(archive.paths), 1 << 20) as f:
            yield f
    else:
        with open(archive, "rb") as f:
            yield f


# --- RAR ---------------------------------------------------------------------------------

RAR_READERS = ("7z", "unar", "bsdtar")  # the order they are tried in (module docstring)


def rar_tools_available() -> list[str]:
    return [t for t in RAR_READERS if shutil.which(t if t != "unar" else "lsar")
            and shutil.which(t)]


def is_multivolume(archive: Path) -> bool:
    return bool(re.search(r"\.part\d+\.rar$", archive.name, re.I)) or \
        archive.with_suffix(".r00").exists()


def _extract_rar(archive: Path, tmp: Path, tools: Iterable[str] | None) -> None:
    tools = list(tools) if tools is not None else rar_tools_available()
    if is_multivolume(archive) and tools and set(tools) <= {"bsdtar"}:
        raise ReaderMissing(f"{archive}: a multi-volume RAR needs 7z or unar (bsdtar reads only "
                            "the first volume); `apt-get install p7zip-full` or `unar`")
    if is_multivolume(archive):
        tools = [t for t in tools if t != "bsdtar"]
    if not tools:
        raise ReaderMissing(f"{archive}: no RAR reader installed; install one of {RAR_PACKAGES}, "
                            "e.g. `apt-get install p7zip-full`")
    failures = []
    for tool in tools:
        try:
            members = LISTERS[tool](archive)
        except subprocess.CalledProcessError as exc:
            failures.append(f"{tool}: {_last_line(exc.stderr) or f'exit status {exc.returncode}'}")
            continue
        # Links always refused: the readers disagree on how they store link targets.
        members = check_members(archive, members, keep_links=False)
        check_space(archive, members, tmp)
        for child in list(tmp.iterdir()):
            shutil.rmtree(child) if child.is_dir() else child.unlink()
        proc = subprocess.run(EXTRACTORS[tool](archive, tmp), capture_output=True, text=True)
        if proc.returncode == 0 and _has_all(tmp, members):
            return
        failures.append(f"{tool}: {_last_line(proc.stderr) or 'listed files missing after extraction'}")
        if failed_for_space(tmp):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp))
    raise ArchiveError(f"{archive}: no RAR reader could extract it ({'; '.join(failures)}); "
                       f"the file may be damaged, or try another of {RAR_PACKAGES}")


def _has_all(tmp: Path, members: list[Member]) -> bool:
    return all((tmp / m.name).exists() for m in members if m.kind == "file")


def _run_list(cmd: list[str]) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, errors="surrogateescape")
    if proc.returncode != 0:
        raise subprocess.CalledProcessError(proc.returncode, cmd, proc.stdout, proc.stderr)
    return proc.stdout


def _list_7z(archive: Path) -> list[Member]:
    out = []
    for block in _run_list(["7z", "l", "-slt", "-ba", "-sccUTF-8", str(archive)]).split("\n\n"):
        fields = dict(line.split(" = ", 1) for line in block.splitlines() if " = " in line)
        if "Path" not in fields:
            continue
        mode = (fields.get("Mode") or fields.get("Attributes", "")).strip().split(" ")[-1]
        out.append(Member(fields["Path"], _kind_from_mode(mode, fields.get("Folder") == "+"),
                          fields.get("Symbolic Link") or fields.get("Hard Link") or None,
                          int(fields.get("Size") or 0)))
    return out


def _list_lsar(archive: Path) -> list[Member]:
    out = []
    for e in json.loads(_run_list(["lsar", "-j", str(archive)]))["lsarContents"]:
        if e.get("XADIsHardLink"):
            kind = "hardlink"
        elif e.get("XADIsLink"):
            kind = "symlink"
        elif e.get("XADIsDirectory"):
            kind = "dir"
        elif e.get("XADIsCharacterDevice") or e.get("XADIsBlockDevice") or e.get("XADIsFIFO"):
            kind = "special"
        else:
            kind = "file"
        out.append(Member(e["XADFileName"], kind, e.get("XADLinkDestination"),
                          int(e.get("XADFileSize") or 0)))
    return out


BSDTAR_LINE = re.compile(r"^(\S)\S{9}\s+\d+\s+\S+\s+\S+\s+(\d+)\s+\w{3}\s+\d+\s+(?:\d{4}|\d\d:\d\d)\s(.*)$")


def _list_bsdtar(archive: Path) -> list[Member]:
    out = []
    for line in _run_list(["bsdtar", "-tvf", str(archive)]).splitlines():
        m = BSDTAR_LINE.match(line)
        if not m:
            raise ArchiveError(f"{archive}: cannot read bsdtar's listing line {line!r}")
        name, target = m[3], None
        for sep in (" -> ", " link to "):
            if sep in name:
                name, target = name.split(sep, 1)
        out.append(Member(name.rstrip("/"), _kind_from_mode(m[1] + "-", m[1] == "d"), target,
                          int(m[2])))
    return out


def _kind_from_mode(mode: str, is_dir: bool) -> str:
    if is_dir or mode.startswith("d"):
        return "dir"
    return {"l": "symlink", "h": "hardlink", "c": "special", "b": "special", "p": "special",
            "s": "special"}.get(mode[:1], "file")


LISTERS = {"7z": _list_7z, "unar": _list_lsar, "bsdtar": _list_bsdtar}
EXTRACTORS = {
    "7z": lambda a, d: ["7z", "x", "-y", "-bd", "-bso0", "-sccUTF-8", f"-o{d}", str(a)],
    "unar": lambda a, d: ["unar", "-q", "-f", "-D", "-o", str(d), str(a)],
    "bsdtar": lambda a, d: ["bsdtar", "-xf", str(a), "-C", str(d)],
}


def _last_line(text: str | None) -> str:
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    return lines[-1] if lines else ""


# --- after extraction ----------------------------------------------------------------------

def _check_tree(archive: Path, tmp: Path) -> None:
    """What the extractor actually wrote: only files, folders and links that stay inside."""
    root = tmp.resolve()
    for dirpath, dirnames, filenames in os.walk(tmp):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode):
                resolved = path.resolve()
                if resolved != root and root not in resolved.parents:
                    raise UnsafeArchive(f"{archive}: refused, {path.relative_to(tmp)} is a link "
                                        "leaving the destination; nothing was extracted")
            elif not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
                raise UnsafeArchive(f"{archive}: refused, {path.relative_to(tmp)} is a device, "
                                    "FIFO or socket; what was unpacked was removed")


def move_into(src: Path, dest: Path) -> int:
    """Move the contents of folder `src` into folder `dest`, merging with what is there (a
    re-run after an interruption) and replacing files of the same name. Returns files moved."""
    dest.mkdir(parents=True, exist_ok=True)
    moved = 0
    for child in list(src.iterdir()):
        target = dest / child.name
        # Never merge into (or through) a link already at the destination: replace it.
        if target.is_symlink():
            target.unlink()
        if child.is_dir() and not child.is_symlink() and target.is_dir():
            moved += move_into(child, target)
            child.rmdir()
            continue
        if target.is_dir():
            shutil.rmtree(target)
        os.replace(child, target)
        moved += 1 if not child.is_dir() else sum(len(f) for _, _, f in os.walk(target))
    return moved


def single_top(folder: Path) -> Path:
    """The one folder an archive wrapped everything in (a dataset's top folder), or the
    folder itself when the archive had several top-level entries."""
    entries = [p for p in folder.iterdir() if not p.name.startswith(".")]
    if len(entries) == 1 and entries[0].is_dir():
        return entries[0]
    return folder
