"""`datatools pack` and `datatools unpack`: frame folders into packs (packs.py) and back.

Any frame folder converts: ours (with its completion record, which goes into the pack as
a member like the frames), MMAction2's build_rawframes.py output, denseflow's. Both ways the
result is written under a temporary name, checked byte for byte against the source, renamed
into place, and only then is the source deleted; a run killed anywhere leaves the source, or
the result with the source (the next run checks the pair again and deletes the source), never
a half result at a final name. Folders (packs) convert in parallel, one per thread: the work
is file reads and writes, which release the GIL.
"""

from __future__ import annotations

import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from .errors import UserError
from .frame_folder import PART_PREFIXES, prefixes_of
from .fsio import fsync_dir
from .packs import INDEX, SUFFIX, Pack, PackError, PackWriter, pack_path, temporary_path, verify

FRAME_PREFIXES = prefixes_of(PART_PREFIXES)


@dataclass
class ConvertResult:
    converted: list[str] = field(default_factory=list)
    already: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, why)


def frame_folders(top: Path) -> list[Path]:
    """Folders below `top` that hold frame files directly (any depth; hidden names skipped)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        if any(f.startswith(FRAME_PREFIXES) for f in filenames):
            found.append(Path(dirpath))
            dirnames[:] = []
    return found


def packs_under(top: Path) -> list[Path]:
    return sorted(p for p in top.rglob(f"*{SUFFIX}") if not p.name.startswith("."))


def to_pack(root: Path, frames_dir: str = "rawframes") -> list[Path]:
    """The frame folders `datatools pack` converts."""
    return frame_folders(frames_top(root, frames_dir))


def to_unpack(root: Path, frames_dir: str = "rawframes") -> list[Path]:
    """The packs `datatools unpack` converts."""
    return packs_under(frames_top(root, frames_dir))


def pack_all(folders: list[Path], threads: int | None = None,
             advance=lambda amount=0: None) -> ConvertResult:
    return _convert(folders, pack_folder, threads, advance)


def unpack_all(packs: list[Path], threads: int | None = None,
               advance=lambda amount=0: None) -> ConvertResult:
    return _convert(packs, unpack_pack, threads, advance)


def frames_top(root: Path, frames_dir: str) -> Path:
    top = root / frames_dir
    if not top.is_dir():
        raise UserError(f"{top} does not exist: nothing to convert (extract frames first, or "
                        "name the folder with --frames-dir)")
    return top


def _convert(items, one, threads, advance) -> ConvertResult:
    result = ConvertResult()
    with ThreadPoolExecutor(max_workers=threads or os.cpu_count() or 1) as pool:
        for path, outcome in zip(items, pool.map(_safely(one), items)):
            if outcome is None:
                result.converted.append(str(path))
            elif outcome == "already":
                result.already.append(str(path))
            else:
                result.failed.append((str(path), outcome))
            advance(1)
    return result


def _safely(one):
    def run(path):
        try:
            return one(Path(path))
        except (PackError, MismatchError) as exc:
            return str(exc)
    return run


class MismatchError(Exception):
    pass


def pack_folder(folder: Path) -> str | None:
    """Pack one folder; None when packed now, "already" when its pack was complete."""
    final = pack_path(str(folder))
    entries = list(os.scandir(folder))
    if any(e.is_dir() for e in entries):
        raise MismatchError(f"{folder} holds folders as well as frames; not packed (move them out)")
    names = sorted(e.name for e in entries if e.name != INDEX)
    if os.path.exists(final):
        # Packed by a run killed before (or while) it deleted the folder: what is left of the
        # folder must be in the pack, unchanged.
        _same_as_folder(final, folder, names, partial=True)
        shutil.rmtree(folder)
        return "already"
    writer = PackWriter(final)
    try:
        for name in names:
            with open(folder / name, "rb") as f:
                writer.add(name, f.read())
        writer.finish()
    except BaseException:
        writer.abort()
        raise
    _same_as_folder(final, folder, names)
    shutil.rmtree(folder)
    fsync_dir(folder.parent)
    return None


def _same_as_folder(final: str, folder: Path, names: list[str], partial: bool = False,
                    verified: bool = False) -> None:
    """The pack holds exactly `names` of the folder (with `partial`, at least), byte for byte;
    its CRCs and index are checked first unless the caller has (`verified`)."""
    problem = None if verified else verify(final)
    if problem:
        raise PackError(f"{problem}; the folder {folder} is kept")
    with Pack.open(final) as pack:
        if not (set(names) <= set(pack.members) if partial else pack.names() == names):
            raise MismatchError(f"{final} does not hold the files of {folder}; the folder is kept")
        for name in names:
            with open(folder / name, "rb") as f:
                if f.read() != pack.read(name):
                    raise MismatchError(f"{final}: {name} differs from {folder / name}; "
                                        "the folder is kept")


def unpack_pack(path: Path) -> str | None:
    """Unpack one pack into its folder; None when unpacked now, "already" when the folder
    was complete (a run killed before deleting the pack)."""
    final = str(path)[: -len(SUFFIX)]
    problem = verify(str(path))
    if problem:
        raise PackError(f"{problem}; nothing unpacked")
    if os.path.isdir(final):
        names = sorted(e.name for e in os.scandir(final) if e.is_file())
        _same_as_folder(str(path), Path(final), names, verified=True)
        os.unlink(path)
        return "already"
    tmp = temporary_path(final)
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    try:
        with Pack.open(str(path)) as pack:
            for name in pack.names():
                fd = os.open(os.path.join(tmp, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                try:
                    view = memoryview(pack.read(name))
                    while view:
                        view = view[os.write(fd, view):]
                    os.fsync(fd)
                finally:
                    os.close(fd)
        fsync_dir(Path(tmp))
        _same_as_folder(str(path), Path(tmp), sorted(os.listdir(tmp)), verified=True)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_dir(path.parent)
    os.unlink(path)
    return None
