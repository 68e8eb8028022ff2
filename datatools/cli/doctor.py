"""`datatools doctor`: what is installed, what is missing, and how to fix it, one line each."""

from __future__ import annotations

import importlib
import importlib.metadata as md
import platform
import shutil
import subprocess
import sys
from dataclasses import dataclass

OPENCV_WHEELS = ("opencv-python", "opencv-python-headless", "opencv-contrib-python",
                 "opencv-contrib-python-headless")
OPENCV_FIX = ("pip uninstall -y " + " ".join(OPENCV_WHEELS)
              + " && pip install opencv-contrib-python-headless  (or `make install`)")


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    required: bool = False
    fix: str = ""


def _version(dist: str) -> str | None:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def installed_opencv_wheels() -> list[str]:
    return [name for name in OPENCV_WHEELS if _version(name) is not None]


def opencv_conflict(wheels: list[str]) -> str | None:
    """Why the installed OpenCV wheels are a problem, or None.

    All four wheels install the same `cv2` package; when several are installed the last one
    written wins, and uninstalling any of them deletes files the others need. mmcv-lite and
    mmaction2 pull `opencv-python`, which lacks `cv2.optflow` (TV-L1).
    """
    if len(wheels) > 1:
        return f"{len(wheels)} OpenCV wheels share one cv2 package ({', '.join(wheels)})"
    if wheels and "contrib" not in wheels[0]:
        return f"{wheels[0]} has no cv2.optflow (TV-L1); the contrib wheel is needed"
    return None


def check_opencv() -> list[Check]:
    wheels = installed_opencv_wheels()
    conflict = opencv_conflict(wheels)
    try:
        import cv2
    except Exception as exc:  # a half-overwritten cv2 fails in many ways
        return [Check("opencv (cv2)", False, f"import failed: {exc}", True, OPENCV_FIX)]
    has_optflow = hasattr(cv2, "optflow") and hasattr(cv2.optflow, "DualTVL1OpticalFlow_create")
    detail = f"{cv2.__version__}, optflow (TV-L1): {'yes' if has_optflow else 'NO'}"
    checks = [Check("opencv (cv2)", has_optflow, detail, True, "" if has_optflow else OPENCV_FIX)]
    checks.append(Check("opencv wheels", conflict is None,
                        conflict or (", ".join(wheels) or "none"), True,
                        OPENCV_FIX if conflict else ""))
    return checks


def check_module(name: str, dist: str, required: bool, fix: str, attr: str = "__version__") -> Check:
    try:
        mod = importlib.import_module(name)
        return Check(name, True, str(getattr(mod, attr, None) or _version(dist) or "installed"),
                     required)
    except Exception as exc:
        return Check(name, False, f"not importable: {str(exc).splitlines()[0][:100]}", required, fix)


def check_rar() -> Check:
    """The RAR readers installed, in the order download tries them (acquire/archives.py)."""
    from ..acquire.archives import RAR_PACKAGES, RAR_READERS, rar_tools_available
    found = rar_tools_available()
    detail = (f"{', '.join(found)} (tried in this order"
              + (f"; not installed: {', '.join(t for t in RAR_READERS if t not in found)})"
                 if len(found) < len(RAR_READERS) else ")")) if found else "none"
    return Check("RAR readers", bool(found), detail, False,
                 "" if found else f"install one of {RAR_PACKAGES}; needed for UCF101 and "
                 "HMDB51 archives")


def check_tool(label: str, names: list[str], required: bool, fix: str) -> Check:
    for name in names:
        path = shutil.which(name)
        if path:
            return Check(label, True, f"{name} at {path}", required)
    return Check(label, False, f"none of {', '.join(names)} on PATH", required, fix)


def check_torch() -> Check:
    try:
        import torch
    except Exception:
        return Check("torch", False, "not installed (optional: GPU flow, MMAction2 training)",
                     False, "pip install -e '.[gpu]'")
    cuda = torch.cuda.is_available()
    gpus = torch.cuda.device_count() if cuda else 0
    return Check("torch", True, f"{torch.__version__}, CUDA: {f'{gpus} GPU(s)' if cuda else 'no'}")


def check_mmaction() -> Check:
    """Imported in a subprocess: MMAction2 is slow to import and its failures leave half-
    imported modules behind."""
    code = ("import mmaction, mmengine, mmcv; print(mmaction.__version__, mmengine.__version__, "
            "mmcv.__version__)\n"
            "import os\n"
            "d = os.path.join(os.path.dirname(mmaction.__file__), 'models', 'localizers', 'drn')\n"
            "print('drn' if os.path.isdir(d) else 'nodrn')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["unknown error"])[-1]
        return Check("mmaction2", False, f"not importable: {last[:100]}", False,
                     "pip install -e '.[mmaction]' (optional: training integration)")
    versions, drn = proc.stdout.split("\n")[:2]
    mm, engine, mmcv = versions.split()
    detail = f"{mm} (mmengine {engine}, mmcv {mmcv})"
    if drn == "nodrn":
        detail += ("; wheel lacks mmaction.models.localizers.drn, so `import mmaction.models` "
                   "fails")
    return Check("mmaction2", True, detail)


def collect() -> list[Check]:
    py_ok = sys.version_info >= (3, 10)
    checks = [Check("python", py_ok, f"{platform.python_version()} ({sys.executable})", True,
                    "" if py_ok else "use Python 3.10 or newer")]
    for name, dist in (("typer", "typer"), ("pyarrow", "pyarrow"), ("numpy", "numpy"),
                       ("dask", "dask"), ("distributed", "distributed")):
        checks.append(check_module(name, dist, True, "pip install -e ."))
    checks += check_opencv()
    decord = check_module("decord", "decord", False,
                          "pip install decord (x86_64 wheels only; PyAV is the fallback)")
    av = check_module("av", "av", False, "pip install av")
    checks += [decord, av]
    checks.append(Check("video decoder", decord.ok or av.ok,
                        "decord" if decord.ok else ("PyAV (fallback)" if av.ok else "none"),
                        True, "" if decord.ok or av.ok else "pip install av"))
    checks.append(check_tool("ffmpeg", ["ffmpeg"], False, "apt-get install ffmpeg"))
    checks.append(check_rar())
    checks.append(check_tool("denseflow-compatible binary", ["datatools-flow", "denseflow"], False,
                             "optional: `make native` builds datatools-flow"))
    checks.append(check_torch())
    checks.append(check_mmaction())
    return checks


def run_doctor() -> int:
    """Print one line per component (and its fix); return 1 when something required is missing."""
    checks = collect()
    for c in checks:
        mark = "ok     " if c.ok else ("MISSING" if c.required else "absent ")
        print(f"{mark} {c.name}: {c.detail}")
        if c.fix:
            print(f"        fix: {c.fix}")
    broken = [c for c in checks if c.required and not c.ok]
    if broken:
        print(f"{len(broken)} required component(s) missing: {', '.join(c.name for c in broken)}")
        return 1
    print("everything required is installed")
    return 0
