"""Shared test helpers: where the real data lives, and how tests find required tools.

In CI (CI=true) a test that needs a tool fails when the tool is missing; on a developer's
machine without it the test is skipped.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "data"
ANN = SHARED / "annotations"
VIDEOS = SHARED / "videos"
LABEL_MAPS = SHARED / "label_maps" / "mmaction2"


def require(what: str, available: bool) -> None:
    if available:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{what} is required in CI but missing (see .ci/run)")
    pytest.skip(f"{what} not installed")


def require_tool(name: str) -> str:
    path = shutil.which(name)
    require(name, path is not None)
    return path


@pytest.fixture(scope="session")
def shared() -> Path:
    assert SHARED.is_dir(), f"{SHARED} missing: tests read the real data in ../shared/data"
    return SHARED


@pytest.fixture(scope="session")
def native_flow() -> Path:
    """The native extractor, built from native/ if it is missing or older than its sources."""
    from native import build_native
    return build_native()

