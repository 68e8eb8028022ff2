"""`datatools pack --to lmdb`: every frame of a root in one LMDB, for MMAction2's stock backend.

`ROOT/rawframes.lmdb` maps each frame's path relative to the frames folder
(`<Class>/<name>/img_00001.jpg`, as the lists' frame_dir joined with the file name) to its
JPEG bytes, from folders and packs alike. MMAction2 reads it with no datatools code:

    dict(type='RawFrameDecode', io_backend='lmdb', db_path='ROOT/rawframes.lmdb')
    # and the dataset's data_prefix=dict(img=''), so that frame_dir is the key's prefix

mmengine encodes keys as ASCII, so a frame path that is not ASCII is refused before anything is
written. Folders and packs are read by the rules of frames/folder.py and packs.py; one that
breaks them is a failed video, left out of the database (never half in it: each video is one
write transaction) and named in the summary. The database is written in a new folder of its
own (never through whatever stands at a fixed name) and renamed when complete; a run killed
midway starts again. The frames are left where they
are (this is an export).
"""

from __future__ import annotations

import errno
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from ..core.errors import UserError
from ..core.fsio import DiskError, free_bytes, fsync_dir, gib, mount_point, replace_dir
from .convert import frames_top, walk_frames
from .folder import DONE, NotAFrame, frame_files, read_frame_file
from .packs import SUFFIX, Pack, PackError, is_leftover, remove_leftover, temporary_path

NAME = "rawframes.lmdb"
PAGE = 4096  # LMDB stores a value larger than a page in whole pages of its own


@dataclass
class Video:
    """One folder or pack: its key prefix, its file, and its frames' names and sizes."""

    prefix: str
    path: Path
    packed: bool
    frames: list[tuple[str, int]]


@dataclass
class Export:
    path: Path
    frames: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, why)


def videos_of(top: Path) -> tuple[list[Video], list[tuple[str, str]]]:
    """Every folder and pack below `top` that keeps the rules, and (path, why) for the rest."""
    tree = walk_frames(top)
    videos, failed = [], list(tree.passed)
    for folder in tree.folders:
        try:
            names = [n for n in frame_files(str(folder)) if n != DONE]
            sizes = [os.lstat(folder / n).st_size for n in names]
        except (NotAFrame, OSError) as exc:
            failed.append((str(folder), str(exc)))
            continue
        videos.append(Video(folder.relative_to(top).as_posix(), folder, False, list(zip(names, sizes))))
    for path in tree.packs:
        try:
            with Pack.open(str(path)) as pack:
                frames = [(n, m.length) for n, m in sorted(pack.members.items()) if n != DONE]
        except PackError as exc:
            failed.append((str(path), str(exc)))
            continue
        videos.append(Video(path.relative_to(top).as_posix()[: -len(SUFFIX)], path, True, frames))
    return videos, failed


def export_lmdb(root: Path, frames_dir: str = "rawframes", advance=lambda amount=0: None) -> Export:
    """Write ROOT/rawframes.lmdb from every video that keeps the rules."""
    import lmdb
    top = frames_top(root, frames_dir)
    videos, failed = videos_of(top)
    for video in videos:
        if not video.prefix.isascii():
            raise UserError(f"{top / video.prefix}: LMDB keys are ASCII in mmengine's lmdb backend; "
                            "rename the folder (or keep this root as files or packs)")
    # What LMDB will take: each frame in whole pages, plus its key and node.
    needed = sum((length + 64 + PAGE - 1) // PAGE * PAGE + len(v.prefix) + len(name) + 64
                 for v in videos for name, length in v.frames)
    final = root / NAME
    free = free_bytes(root)
    if needed > free:
        raise DiskError(f"{final}: the export needs about {gib(needed)}, {gib(free)} free on "
                        f"{mount_point(root)}; free some space (or move the root), then re-run")
    for entry in os.scandir(root):  # databases of runs killed before they finished
        if is_leftover(entry.name) and entry.name.startswith(f".{NAME}."):
            remove_leftover(entry)
    tmp = Path(temporary_path(str(final)))
    os.mkdir(tmp)  # this run's own (never a name something else may stand at)
    result = Export(final, failed=failed)
    # No sync per transaction: the database is a temporary file until renamed, synced once.
    env = lmdb.open(str(tmp), map_size=2 * needed + (16 << 20), subdir=True, lock=False, sync=False)
    try:
        for video in videos:
            try:
                result.frames += _put_video(env, video)
            except (PackError, NotAFrame) as exc:
                result.failed.append((str(video.path), str(exc)))
            advance(len(video.frames))
        env.sync(True)
    except lmdb.Error as exc:
        env.close()
        raise _lmdb_error(exc, root, tmp) from None
    except BaseException:
        env.close()
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    env.close()
    fsync_dir(tmp)  # its files' names on disk (their data is, env.sync) before the name points at it
    replace_dir(tmp, final, f"{tmp}.old")  # what stood at the name goes, a link as a link
    return result


def _put_video(env, video: Video) -> int:
    """One video's frames in one transaction: all of them, or (a frame that cannot be read)
    none."""
    with env.begin(write=True) as txn:  # an exception aborts it
        if video.packed:
            with Pack.open(str(video.path)) as pack:
                for name, _ in video.frames:
                    txn.put(f"{video.prefix}/{name}".encode("ascii"), pack.read(name))
        else:
            for name, _ in video.frames:
                txn.put(f"{video.prefix}/{name}".encode("ascii"),
                        read_frame_file(str(video.path / name)))
    return len(video.frames)


def _lmdb_error(exc: Exception, root: Path, tmp: Path) -> Exception:
    """LMDB reports a full disk as an I/O error: told apart by the space left (looked at
    before the temporary database is removed)."""
    full = free_bytes(root) < (64 << 20) or "No space" in str(exc)
    shutil.rmtree(tmp, ignore_errors=True)
    if full:
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(root / NAME))
    return UserError(f"{root / NAME}: LMDB could not write ({exc}); nothing was kept")
