"""Safe archive extraction: zip, tar (.gz/.bz2/.xz), RAR (single, multi-volume, nested).

The kind of an archive is read from its first bytes, never from its name (SSv2's parts carry
no extension; a mirror may rename files). Every member is listed and checked before anything
is written: no absolute path, no `..`, no link leaving the destination, no device or FIFO.
A hostile archive is refused with one line and nothing is extracted. Extraction goes into a
hidden temporary folder beside the destination, which is checked once more (what a tool
actually wrote) and only then moved into place.

RAR has no free writer and three free readers that differ: unar cannot read some RAR5 files,
bsdtar reads RAR5 but not multi-volume sets, 7z reads both. Whichever are installed are tried
in that order of trust (7z, unar, bsdtar) until one succeeds.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import shutil
import stat
import subprocess
import tarfile
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .errors import UserError

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


@dataclass
class Member:
    name: str
    kind: str  # "file", "dir", "symlink", "hardlink" or "special" (device, FIFO, socket)
    target: str | None = None  # link target as stored


def sniff(path: Path) -> str | None:
    """"zip", "rar" or "tar" by the file's first bytes; None if none of them."""
    with open(path, "rb") as f:
        head = f.read(512)
    for offset, magic, kind in MAGIC:
        if head[offset:offset + len(magic)] == magic:
            return kind
    return None


def extract(archive: Path, dest: Path, rar_tools: Iterable[str] | None = None) -> Path:
    """Extract `archive` into the folder `dest` (replaced if it exists), atomically: `dest`
    appears complete or not at all. Returns `dest`."""
    kind = sniff(archive)
    if kind is None:
        raise ArchiveError(f"{archive}: not a zip, tar or RAR archive (first bytes "
                           f"{archive.read_bytes()[:8]!r}); the download may be an error page")
    tmp = dest.with_name(f".{dest.name}.unpacking")
    for leftover in (tmp, dest):  # from a run that was interrupted
        if leftover.exists():
            shutil.rmtree(leftover)
    tmp.mkdir(parents=True)
    try:
        if kind == "zip":
            _extract_zip(archive, tmp)
        elif kind == "tar":
            _extract_tar(archive, tmp)
        else:
            _extract_rar(archive, tmp, rar_tools)
        _check_tree(archive, tmp)
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def check_members(archive: Path, members: Iterable[Member]) -> None:
    """Refuse the archive if any member would be written outside the destination."""
    for m in members:
        reason = _unsafe(m)
        if reason:
            raise UnsafeArchive(f"{archive}: refused, member {m.name!r} {reason}; nothing was "
                                "extracted (the archive is damaged or hostile)")


def _unsafe(m: Member) -> str | None:
    name = m.name.replace("\\", "/")
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        return "has an absolute path"
    if ".." in name.split("/"):
        return "contains '..'"
    if m.kind == "special":
        return "is a device, FIFO or socket"
    if m.kind in ("symlink", "hardlink"):
        target = (m.target or "").replace("\\", "/")
        if not target or target.startswith("/"):
            return f"is a link to the absolute path {m.target!r}"
        # A symlink resolves against its own folder; a hard link names another member.
        base = posixpath.dirname(name) if m.kind == "symlink" else ""
        resolved = posixpath.normpath(posixpath.join(base, target))
        if resolved == ".." or resolved.startswith("../"):
            return f"is a link leaving the destination ({m.target!r})"
    return None


# --- zip ---------------------------------------------------------------------------------

def _zip_members(zf: zipfile.ZipFile) -> list[Member]:
    out = []
    for info in zf.infolist():
        mode = info.external_attr >> 16
        if info.is_dir():
            out.append(Member(info.filename, "dir"))
        elif stat.S_ISLNK(mode):
            out.append(Member(info.filename, "symlink", zf.read(info).decode("utf-8", "replace")))
        elif mode and not stat.S_ISREG(mode) and stat.S_IFMT(mode):
            out.append(Member(info.filename, "special"))
        else:
            out.append(Member(info.filename, "file"))
    return out


def _extract_zip(archive: Path, tmp: Path) -> None:
    with zipfile.ZipFile(archive) as zf:
        members = _zip_members(zf)
        check_members(archive, members)
        for info, m in zip(zf.infolist(), members):
            target = tmp / m.name
            if m.kind == "dir":
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            if m.kind == "symlink":
                os.symlink(m.target, target)
                continue
            with zf.open(info) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)


# --- tar ---------------------------------------------------------------------------------

def _tar_member(t: tarfile.TarInfo) -> Member:
    if t.isdir():
        return Member(t.name, "dir")
    if t.issym():
        return Member(t.name, "symlink", t.linkname)
    if t.islnk():
        return Member(t.name, "hardlink", t.linkname)
    if t.isreg():
        return Member(t.name, "file")
    return Member(t.name, "special")


def _extract_tar(archive: Path, tmp: Path) -> None:
    try:
        with tarfile.open(archive, "r:*") as tf:
            infos = tf.getmembers()
            check_members(archive, [_tar_member(t) for t in infos])
            # Python's own "data" filter as a second line of defence where available.
            kwargs = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            tf.extractall(tmp, infos, **kwargs)
    except (tarfile.TarError, EOFError, OSError) as exc:
        if isinstance(exc, UserError):
            raise
        raise ArchiveError(f"{archive}: cannot read the tar archive ({exc}); it may be "
                           "truncated, delete it and download again") from None


# --- RAR ---------------------------------------------------------------------------------

def rar_tools_available() -> list[str]:
    return [t for t in ("7z", "unar", "bsdtar") if shutil.which(t if t != "unar" else "lsar")
            and shutil.which(t)]


def is_multivolume(archive: Path) -> bool:
    return bool(re.search(r"\.part\d+\.rar$", archive.name, re.I)) or \
        archive.with_suffix(".r00").exists()


def _extract_rar(archive: Path, tmp: Path, tools: Iterable[str] | None) -> None:
    tools = list(tools) if tools is not None else rar_tools_available()
    if is_multivolume(archive) and tools and set(tools) <= {"bsdtar"}:
        raise ArchiveError(f"{archive}: a multi-volume RAR needs 7z or unar (bsdtar reads only "
                           "the first volume); `apt-get install p7zip-full` or `unar`")
    if is_multivolume(archive):
        tools = [t for t in tools if t != "bsdtar"]
    if not tools:
        raise ArchiveError(f"{archive}: no RAR reader installed; install one of {RAR_PACKAGES}, "
                           "e.g. `apt-get install p7zip-full`")
    failures = []
    for tool in tools:
        try:
            members = LISTERS[tool](archive)
        except subprocess.CalledProcessError as exc:
            failures.append(f"{tool}: {_last_line(exc.stderr) or f'exit status {exc.returncode}'}")
            continue
        check_members(archive, members)
        links = [m for m in members if m.kind in ("symlink", "hardlink")]
        if links:  # tools disagree on how they store link targets; datasets have none
            raise UnsafeArchive(f"{archive}: refused, member {links[0].name!r} is a link; "
                                "nothing was extracted")
        for child in list(tmp.iterdir()):
            shutil.rmtree(child) if child.is_dir() else child.unlink()
        proc = subprocess.run(EXTRACTORS[tool](archive, tmp), capture_output=True, text=True)
        if proc.returncode == 0 and _has_all(tmp, members):
            return
        failures.append(f"{tool}: {_last_line(proc.stderr) or 'listed files missing after extraction'}")
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
                          fields.get("Symbolic Link") or fields.get("Hard Link") or None))
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
        out.append(Member(e["XADFileName"], kind, e.get("XADLinkDestination")))
    return out


BSDTAR_LINE = re.compile(r"^(\S)\S{9}\s+\d+\s+\S+\s+\S+\s+\d+\s+\w{3}\s+\d+\s+(?:\d{4}|\d\d:\d\d)\s(.*)$")


def _list_bsdtar(archive: Path) -> list[Member]:
    out = []
    for line in _run_list(["bsdtar", "-tvf", str(archive)]).splitlines():
        m = BSDTAR_LINE.match(line)
        if not m:
            raise ArchiveError(f"{archive}: cannot read bsdtar's listing line {line!r}")
        name, target = m[2], None
        for sep in (" -> ", " link to "):
            if sep in name:
                name, target = name.split(sep, 1)
        out.append(Member(name.rstrip("/"), _kind_from_mode(m[1] + "-", m[1] == "d"), target))
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
                                    "FIFO or socket; nothing was extracted")


def move_into(src: Path, dest: Path) -> int:
    """Move the contents of folder `src` into folder `dest`, merging with what is there (a
    re-run after an interruption) and replacing files of the same name. Returns files moved."""
    dest.mkdir(parents=True, exist_ok=True)
    moved = 0
    for child in list(src.iterdir()):
        target = dest / child.name
        if child.is_dir() and not child.is_symlink() and target.is_dir():
            moved += move_into(child, target)
            child.rmdir()
            continue
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        os.replace(child, target)
        moved += 1 if not child.is_dir() else sum(len(f) for _, _, f in os.walk(target))
    return moved


def single_top(folder: Path) -> Path:
    """The one folder an archive wrapped everything in (UCF101/, ucfTrainTestlist/), or the
    folder itself when the archive had several top-level entries."""
    entries = [p for p in folder.iterdir() if not p.name.startswith(".")]
    if len(entries) == 1 and entries[0].is_dir():
        return entries[0]
    return folder
