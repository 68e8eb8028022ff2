"""Another commit's datatools, for a benchmark that times it beside this code: a git worktree
under bench/out, and a module imported from it into this process."""

from __future__ import annotations

import importlib
import subprocess
import sys
import types
from pathlib import Path

HERE = Path(__file__).resolve().parent


def worktree(rev: str) -> Path:
    """A git worktree of commit `rev` under bench/out (made once)."""
    tree = HERE / "out" / f"worktree-{rev}"
    if not tree.exists():
        subprocess.run(["git", "-C", str(HERE.parent), "worktree", "add", "--detach", str(tree), rev],
                       check=True, capture_output=True)
    return tree


def import_at(rev: str, name: str, hollow: tuple[str, ...] = ()):
    """Module `name` as commit `rev` has it. This process's own datatools modules are set
    aside meanwhile and put back after (the old ones stay loaded as `old.<name>`). `hollow`:
    packages whose __init__ is not run (one that registers what this process registered)."""
    tree = worktree(rev)
    saved = {k: v for k, v in sys.modules.items() if k == "datatools" or k.startswith("datatools.")}
    for k in saved:
        del sys.modules[k]
    sys.path.insert(0, str(tree))
    try:
        for package in hollow:
            importlib.import_module(package.rsplit(".", 1)[0])
            module = types.ModuleType(package)
            module.__path__ = [str(tree / package.replace(".", "/"))]
            sys.modules[package] = module
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(tree))
        for k in [k for k in sys.modules if k == "datatools" or k.startswith("datatools.")]:
            sys.modules[f"old.{k}"] = sys.modules.pop(k)
        sys.modules.update(saved)
