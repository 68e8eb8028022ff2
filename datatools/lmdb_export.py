"""`datatools pack --to lmdb`: every frame of a root in one LMDB, for MMAction2's stock backend.

`ROOT/rawframes.lmdb` maps each frame's path relative to the frames folder
(`<Class>/<name>/img_00001.jpg`, as the lists' frame_dir joined with the file name) to its
JPEG bytes, from folders and packs alike. MMAction2 reads it with no datatools code:

    dict(type='RawFrameDecode', io_backend='lmdb', db_path='ROOT/rawframes.lmdb')
    # and the dataset's data_prefix=dict(img=''), so that frame_dir is the key's prefix

mmengine encodes keys as ASCII, so a frame path that is not ASCII is refused before anything is
written. The database is written under a temporary name and renamed when complete; a run
killed midway starts again. The frames are left where they are (this is an export).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from .errors import UserError
from .packing import frame_folders, frames_top, packs_under
from .packs import SUFFIX, Pack

NAME = "rawframes.lmdb"
BATCH = 2048  # frames per write transaction


def frames_of(top: Path) -> list[tuple[str, int, str, str | None]]:
    """(key, size, file, member) for every frame below `top`: member None for a frame that is
    a file, else the member of the pack `file`."""
    frames = []
    for folder in frame_folders(top):
        rel = folder.relative_to(top).as_posix()
        for name in sorted(os.listdir(folder)):
            if not name.startswith("."):
                path = folder / name
                frames.append((f"{rel}/{name}", path.stat().st_size, str(path), None))
    for path in packs_under(top):
        rel = path.relative_to(top).as_posix()[: -len(SUFFIX)]
        with Pack.open(str(path)) as pack:
            members = {n: length for n, (_, length) in pack.members.items() if not n.startswith(".")}
        frames.extend((f"{rel}/{name}", length, str(path), name) for name, length in sorted(members.items()))
    return frames


class _Reader:
    """Frame bytes from files and packs; the pack read last stays open (its members come one
    after another)."""

    def __init__(self):
        self.pack: Pack | None = None

    def read(self, path: str, member: str | None) -> bytes:
        if member is None:
            with open(path, "rb") as f:
                return f.read()
        if self.pack is None or self.pack.path != path:
            self.close()
            self.pack = Pack.open(path)
        return self.pack.read(member)

    def close(self) -> None:
        if self.pack is not None:
            self.pack.close()
            self.pack = None


def export_lmdb(root: Path, frames_dir: str = "rawframes", advance=lambda amount=0: None) -> tuple[Path, int]:
    """Write ROOT/rawframes.lmdb; returns its path and the number of frames."""
    import lmdb
    top = frames_top(root, frames_dir)
    frames = frames_of(top)
    for key, *_ in frames:
        if not key.isascii():
            raise UserError(f"{top / key}: LMDB keys are ASCII in mmengine's lmdb backend; rename "
                            "the folder (or keep this root as files or packs)")
    size = sum(length for _, length, *_ in frames)
    final, tmp = root / NAME, root / f".{NAME}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    env = lmdb.open(str(tmp), map_size=max(2 * size, 1 << 24), subdir=True, lock=False)
    reader = _Reader()
    try:
        for start in range(0, len(frames), BATCH):
            with env.begin(write=True) as txn:
                for key, _, path, member in frames[start:start + BATCH]:
                    txn.put(key.encode("ascii"), reader.read(path, member))
            advance(min(BATCH, len(frames) - start))
        env.sync(True)
    finally:
        env.close()
        reader.close()
    shutil.rmtree(final, ignore_errors=True)
    os.rename(tmp, final)
    return final, len(frames)

