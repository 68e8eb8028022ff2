"""`datatools pack` and `datatools unpack`: frame folders into packs (packs.py) and back.

Any frame folder converts: ours (with its completion record, which goes into the pack as
a member like the frames), MMAction2's build_rawframes.py output, denseflow's. Both ways the
result is written under a temporary name of its own, checked byte for byte against the
source, renamed into place, and only then is the source deleted; a run killed anywhere leaves
the source, or the result with the source (the next run checks the pair again and deletes the
source), never a half result at a final name. Folders (packs) convert in parallel, one per
thread: the work is file reads and writes, which release the GIL.

Both ways read input others may have made, by the rules of frames/folder.py and packs.py: a
folder packs only if it holds nothing but regular files named as frames (and the record), and
a pack unpacks only if it keeps the pack rule. Anything else is that item's failure, counted
in the summary; the item is left as it is.
"""

from __future__ import annotations

import os
import shutil
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

from ..core.errors import UserError
from ..core.fsio import fsync_dir, is_disk_error, rename_into_place
from ..schedule.threads import map_threads
from .folder import DONE, PART_PREFIXES, NotAFrame, frame_files, prefixes_of, read_frame_file
from .packs import (
    SUFFIX,
    Pack,
    PackError,
    PackWriter,
    is_leftover,
    pack_path,
    remove_leftover,
    temporary_path,
    verify,
)

FRAME_PREFIXES = prefixes_of(PART_PREFIXES)

# How deep below the frames folder frame folders are looked for: a dataset's are one or two
# levels down (flat, or in class folders); a tree deeper than this is not a dataset's.
MAX_DEPTH = 8


@dataclass
class ConvertResult:
    converted: list[str] = field(default_factory=list)
    already: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, why)


@dataclass
class FramesTree:
    """What lies below a frames folder: frame folders, packs, and what was not looked into."""

    folders: list[Path] = field(default_factory=list)  # folders holding frame files directly
    packs: list[Path] = field(default_factory=list)  # files named <name>.zip
    passed: list[tuple[str, str]] = field(default_factory=list)  # (path, why not looked into)


def walk_frames(top: Path) -> FramesTree:
    """The frames tree below `top`, without following a link (a linked folder or file is
    named in `passed`) and at most MAX_DEPTH levels deep. Hidden names are passed over; a
    leftover of a writer killed before it finished (packs.is_leftover) is removed: this runs
    under the root's lock, so no writer of it is alive."""
    tree = FramesTree()
    stack = [(top, 0)]
    while stack:
        folder, depth = stack.pop()
        subfolders, links, holds_frames = [], [], False
        with os.scandir(folder) as entries:
            for entry in sorted(entries, key=lambda e: e.name):
                # a frame's name, whatever it names (pack_folder refuses what is not a frame)
                holds_frames = holds_frames or entry.name.startswith(FRAME_PREFIXES) \
                    or entry.name == DONE
                if entry.name.startswith("."):
                    if is_leftover(entry.name):
                        remove_leftover(entry)
                elif entry.name.endswith(SUFFIX) and not entry.is_dir(follow_symlinks=False):
                    tree.packs.append(Path(entry.path))  # whatever it is: Pack.open says
                elif entry.is_symlink():
                    links.append((entry.path, "is a symbolic link; links are not followed"))
                elif entry.is_dir(follow_symlinks=False):
                    subfolders.append(Path(entry.path))
        if holds_frames and folder != top:
            tree.folders.append(Path(folder))  # links or folders in it: pack_folder says so
            continue
        tree.passed.extend(links)
        if depth >= MAX_DEPTH and subfolders:
            tree.passed.append((str(folder), f"holds folders more than {MAX_DEPTH} levels below "
                                             "the frames folder; not looked into"))
        else:
            stack.extend((sub, depth + 1) for sub in reversed(subfolders))
    tree.folders.sort()
    tree.packs.sort()
    return tree


def frames_top(root: Path, frames_dir: str) -> Path:
    """ROOT/frames_dir, a folder inside the root (what pack, unpack and the LMDB export
    convert and delete is the root's, never another folder's)."""
    parts = Path(frames_dir).parts
    top = root / frames_dir
    if Path(frames_dir).is_absolute() or ".." in parts or not parts or \
            not top.resolve().is_relative_to(root.resolve()):
        raise UserError(f"--frames-dir {frames_dir}: must name a folder inside the root {root} "
                        "(e.g. rawframes), not a path leading out of it")
    if not top.is_dir():
        raise UserError(f"{top} does not exist: nothing to convert (extract frames first, or "
                        "name the folder with --frames-dir)")
    return top


def pack_all(folders: list[Path], threads: int | None = None,
             advance=lambda amount=0: None) -> ConvertResult:
    return _convert(folders, pack_folder, threads, advance)


def unpack_all(packs: list[Path], threads: int | None = None,
               advance=lambda amount=0: None) -> ConvertResult:
    return _convert(packs, unpack_pack, threads, advance)


def _convert(items, one, threads, advance) -> ConvertResult:
    result = ConvertResult()
    order = {str(path): n for n, path in enumerate(items)}
    with closing(map_threads(_safely(one), items, threads or os.cpu_count() or 1)) as done:
        for path, outcome, exc in done:
            if exc is not None:
                raise exc
            if outcome is None:
                result.converted.append(str(path))
            elif outcome == "already":
                result.already.append(str(path))
            else:
                result.failed.append((str(path), outcome))
            advance(1)
    for listed in (result.converted, result.already, result.failed):  # in the walk's order
        listed.sort(key=lambda item: order[item if isinstance(item, str) else item[0]])
    return result


def _safely(one):
    """One item's failure as its line; a full or read-only disk stops the step."""
    def run(path):
        try:
            return one(Path(path))
        except (PackError, NotAFrame, MismatchError) as exc:
            return str(exc)
        except OSError as exc:
            if is_disk_error(exc):
                raise
            return f"{exc.filename or path}: {exc.strerror or exc}"
    return run


class MismatchError(Exception):
    pass


def pack_folder(folder: Path) -> str | None:
    """Pack one folder; None when packed now, "already" when its pack was complete."""
    final = pack_path(str(folder))
    names = frame_files(str(folder))  # a linked folder too: refused
    if os.path.lexists(final):
        # Packed by a run killed before (or while) it deleted the folder: what is left of the
        # folder must be in the pack, unchanged. Anything else there is not ours to replace.
        problem = verify(final)
        if problem:
            raise PackError(f"{problem}; the folder {folder} is kept")
        _same_as_folder(final, folder, names, partial=True)
        _remove_folder(folder, names)
        return "already"
    writer = PackWriter(final)
    try:
        for name in names:
            writer.add(name, read_frame_file(str(folder / name)))
        writer.finish()
    except BaseException:
        writer.abort()
        raise
    _same_as_folder(final, folder, names)
    _remove_folder(folder, names)
    return None


def _remove_folder(folder: Path, names: list[str]) -> None:
    """The files checked into the pack, then the folder (a file that appeared meanwhile
    keeps it, and the step says so)."""
    for name in names:
        os.unlink(folder / name)
    os.rmdir(folder)
    fsync_dir(folder.parent)


def _same_as_folder(final: str, folder: Path, names: list[str], partial: bool = False) -> None:
    """The pack holds exactly `names` of the folder (with `partial`, at least), byte for byte
    (each member's CRC-32 checked as it is read)."""
    with Pack.open(final) as pack:
        if not (set(names) <= set(pack.members) if partial else pack.names() == names):
            raise MismatchError(f"{final} does not hold the files of {folder}; the folder is kept")
        for name in names:
            if read_frame_file(str(folder / name)) != pack.read(name):
                raise MismatchError(f"{final}: {name} differs from {folder / name}; "
                                    "the folder is kept")


def unpack_pack(path: Path) -> str | None:
    """Unpack one pack into its folder; None when unpacked now, "already" when the folder
    was complete (a run killed before deleting the pack)."""
    final = str(path)[: -len(SUFFIX)]
    if os.path.lexists(final):
        if os.path.islink(final) or not os.path.isdir(final):
            raise MismatchError(f"{final} is there and is not a frame folder; {path} is kept")
        _same_as_folder(str(path), Path(final), frame_files(final))
        os.unlink(path)
        return "already"
    tmp = temporary_path(final)
    try:
        with Pack.open(str(path)) as pack:  # the pack rule, before anything is written
            os.mkdir(tmp)  # this run's own: a name no other writer uses
            for name in pack.names():  # plain frame names (the pack rule): inside tmp; CRCs checked
                _write_new(os.path.join(tmp, name), pack.read(name))
        fsync_dir(Path(tmp))
        _same_as_folder(str(path), Path(tmp), frame_files(tmp))
        rename_into_place(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    os.unlink(path)
    return None


def _write_new(path: str, data: bytes) -> None:
    """A new file (never through a link, never over one), as the umask allows (0o666 &
    ~umask, as every file datatools writes), fsynced."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
