"""The `datatools_packed` file backend: MMAction2 reads frames from packs (datatools/packs.py)
with its own pipelines, `RawFrameDecode(io_backend='datatools_packed')`.

RawFrameDecode asks for `<frame_dir>/img_00001.jpg` (or `flow_x_00001.jpg`); the backend
answers from `<frame_dir>.zip` with one `pread` at the member's indexed offset. A folder that
is still a folder is read as a file, so a root half packed trains all the same. Each dataloader
worker process keeps up to CACHE open packs (a video's frames are read together, so a small
cache keeps each pack open while its clip is decoded).
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict

from mmengine.fileio import FileClient, register_backend
from mmengine.fileio.backends import BaseStorageBackend

from ..frames.folder import read_frame_file
from ..frames.packs import SUFFIX, Pack

CACHE = 16
NAME = "datatools_packed"


class PackedBackend(BaseStorageBackend):
    def __init__(self, cache: int = CACHE, **_):
        self.cache = cache
        self._open: OrderedDict[str, Pack] = OrderedDict()
        self._lock = threading.Lock()
        self._pid = os.getpid()

    def get(self, filepath) -> bytes:
        """The frame's bytes, from its pack or its folder, each read by the rules the rest of
        datatools reads them by (packs.Pack, folder.read_frame_file): an error naming
        the file, never a link followed or an unbounded read."""
        folder, name = os.path.split(os.fspath(filepath))
        with self._lock:  # a pack is closed when the cache lets it go: never during a read
            pack = self._pack(folder + SUFFIX)
            if pack is None:
                return read_frame_file(os.fspath(filepath))
            try:
                return pack.read(name)
            except KeyError:
                raise FileNotFoundError(f"{name} is not in {pack.path}") from None

    def get_text(self, filepath, encoding: str = "utf-8") -> str:
        return self.get(filepath).decode(encoding)

    def _pack(self, path: str) -> Pack | None:
        """The open pack at `path` (None: no file there); the caller holds the lock."""
        if self._pid != os.getpid():  # a forked dataloader worker: its own descriptors
            self._open.clear()
            self._pid = os.getpid()
        pack = self._open.get(path)
        if pack is not None:
            self._open.move_to_end(path)
            return pack
        if not os.path.lexists(path):  # anything at a pack's name: Pack.open decides
            return None
        pack = self._open[path] = Pack.open(path)
        while len(self._open) > self.cache:
            self._open.popitem(last=False)[1].close()
        return pack


# RawFrameDecode builds its reader with FileClient(io_backend); mmengine.fileio.get and
# friends (backend_args=dict(backend=...)) look in the newer registry: both know the name.
FileClient.register_backend(NAME, PackedBackend, force=True)
register_backend(NAME, PackedBackend, force=True)
