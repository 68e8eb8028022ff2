"""Shared test helpers: where the real data lives, and how tests find required tools.

In CI (CI=true) a test that needs a tool or an optional package (an extra) fails when it is
missing; on a developer's machine without it the test is skipped.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "data"
ANN = SHARED / "annotations"
VIDEOS = SHARED / "videos"
LABEL_MAPS = SHARED / "label_maps" / "mmaction2"
BIN = Path(sys.executable).parent  # the venv's: the `datatools` console command is here


def datatools(*args, env: dict | None = None, **kw) -> subprocess.CompletedProcess:
    """The console command as a user (or a batch job) runs it: a process of its own, its
    output captured as text; `env` adds to this process's environment."""
    return subprocess.run([str(BIN / "datatools"), *map(str, args)], capture_output=True,
                          text=True, env={**os.environ, **env} if env else None, **kw)


@pytest.fixture
def clips_root(tmp_path):
    """Makes a root of real clips with its lists built (trees.real_clips_root): call it with
    the clips' file names in ../shared/data/videos, optionally a class and a folder name."""
    from trees import real_clips_root

    def make(clips=("test.avi", "short_32f.mp4", "bikes.mp4"), cls: str = "Real", name: str = "root"):
        return real_clips_root(tmp_path / name, clips, cls)
    return make


def require(what: str, available: bool) -> None:
    if available:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{what} is required in CI but missing (see .ci/run)")
    pytest.skip(f"{what} not installed")


def require_module(name: str):
    """The module of an extra, imported (`make test` installs every extra). Called at a test
    module's top, a skip skips the whole module."""
    if importlib.util.find_spec(name) is None:
        if os.environ.get("CI"):
            pytest.fail(f"the Python package {name} is required in CI but missing (see `make install`)")
        pytest.skip(f"{name} not installed", allow_module_level=True)
    return importlib.import_module(name)


def require_tool(name: str) -> str:
    path = shutil.which(name)
    require(name, path is not None)
    return path


@contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A small filesystem of its own at `path` for the block (tmpfs; mounting needs root)."""
    require("root (to mount a small tmpfs)", os.geteuid() == 0)
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


def kill_group(proc) -> None:
    """SIGKILL a command started with start_new_session=True, driver and workers alike, and
    wait until every process of its group is gone: a worker still exiting holds the root's
    lock (forked workers share the driver's lock file), as it should while it may write."""
    import signal
    import time
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    raise AssertionError(f"process group {proc.pid} still alive 15 s after SIGKILL")


@pytest.fixture(scope="session")
def shared() -> Path:
    assert SHARED.is_dir(), f"{SHARED} missing: tests read the real data in ../shared/data"
    return SHARED


@pytest.fixture(scope="session")
def native_flow() -> Path:
    """The native extractor, built from native/ if it is missing or older than its sources."""
    from native import build_native
    return build_native()



@pytest.fixture(scope="session")
def zoo_root(tmp_path_factory) -> Path:
    """The demo's dataset (2 videos a class), its RGB frames extracted, packed (one zip a
    video) and listed: the root MMAction2's zoo configs are adapted to and trained from
    (tests/mmaction), frames read from packs through the datatools_packed backend."""
    from datatools.extract.options import ExtractOptions
    from datatools.extract.run import extract
    from datatools.lists.build import build_lists
    from datatools.pipeline.demo import make_dataset
    from datatools.schedule.client import ClusterOptions
    root = make_dataset(tmp_path_factory.mktemp("zoo") / "demo", 2)
    build_lists("ucf101", root)
    extract(root, ExtractOptions(task="rgb"), cluster=ClusterOptions(workers=2))
    packed = datatools("pack", "--root", root)
    assert packed.returncode == 0, packed.stdout + packed.stderr
    build_lists("ucf101", root, ["videos", "rawframes"])
    assert not any((root / "rawframes").glob("*/*/img_00001.jpg"))  # all in packs
    return root
