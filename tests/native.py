"""Builds native/ (datatools-flow) for the tests, as `make native` does: CMake, Release, against
the system OpenCV (Debian: libopencv-dev + libjpeg-dev; `.ci/run` installs them)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from conftest import REPO, require

BUILD = REPO / "native" / "build"
BINARY = BUILD / "datatools-flow"


def opencv_dev_installed() -> bool:
    return any(Path(p).exists() for p in ("/usr/lib/x86_64-linux-gnu/cmake/opencv4",
                                          "/usr/lib/aarch64-linux-gnu/cmake/opencv4",
                                          "/usr/local/lib/cmake/opencv4"))


def build_native() -> Path:
    require("cmake, a C++ compiler and libopencv-dev + libjpeg-dev",
            bool(shutil.which("cmake") and shutil.which("c++")) and opencv_dev_installed())
    sources = [REPO / "native" / "CMakeLists.txt", *(REPO / "native" / "src").glob("*")]
    if BINARY.exists() and BINARY.stat().st_mtime >= max(p.stat().st_mtime for p in sources):
        return BINARY
    for cmd in (["cmake", "-S", str(REPO / "native"), "-B", str(BUILD), "-DCMAKE_BUILD_TYPE=Release"],
                ["cmake", "--build", str(BUILD), "-j"]):
        proc = subprocess.run(cmd, capture_output=True, text=True)
        assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}"
    return BINARY
