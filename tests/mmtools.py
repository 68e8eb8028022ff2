"""Run MMAction2 1.2.0's own data tools, as shipped in its wheel under mmaction/.mim/tools/data.

They only work from a folder holding data/<dataset>/annotations and with that wheel's .mim
folder on PYTHONPATH (they import `tools.data...`), so that is how they are run here.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import require


def mim_dir() -> Path:
    spec = importlib.util.find_spec("mmaction")
    require("mmaction2 (pip install -e .[mmaction])", spec is not None)
    return Path(spec.origin).parent / ".mim"


def build_file_list(workdir: Path, dataset: str, src: str, *args: str,
                    keep: Path | None = None) -> subprocess.CompletedProcess:
    """Run build_file_list.py in `workdir`; with `keep`, move the lists it wrote there."""
    mim = mim_dir()
    env = dict(os.environ, PYTHONPATH=str(mim))
    proc = subprocess.run([sys.executable, str(mim / "tools" / "data" / "build_file_list.py"),
                           dataset, src, *args], cwd=workdir, env=env, capture_output=True,
                          text=True)
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        for f in (workdir / "data" / dataset).glob(f"{dataset}_*.txt"):
            shutil.move(str(f), keep / f.name)
    return proc
