"""The dataset registry. A dataset is one module: a `Dataset` subclass with a `name` (its
annotations, label rule, on-disk layout and how its archives unpack), and its catalog entry
(`<name>.json`, data). The registry finds

- every module of this package (`datatools/datasets/<module>.py`), and
- every module or class another installed package names in the entry-point group
  `datatools.datasets` (`[project.entry-points."datatools.datasets"] mine = "mypkg.mine"`),
  so a lab adds its own dataset without forking.

The command line builds its per-dataset commands from it, and `make <dataset>` its targets.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from functools import lru_cache
from importlib.metadata import entry_points

from ..core.errors import UserError
from .base import AnnotatedVideo, Annotations, Dataset

ENTRY_POINT_GROUP = "datatools.datasets"


def _defined_in(module) -> list[type[Dataset]]:
    """The named Dataset classes a module defines (not the ones it imports)."""
    return [obj for obj in vars(module).values()
            if isinstance(obj, type) and issubclass(obj, Dataset) and obj.name
            and obj.__module__ == module.__name__]


def _add(found: dict, cls: type[Dataset], where: str) -> None:
    have = found.get(cls.name)
    if have is not None and have is not cls:
        raise UserError(f"two datasets are named {cls.name!r}: {have.__module__}.{have.__qualname__} "
                        f"and {cls.__module__}.{cls.__qualname__} ({where}); rename one")
    found[cls.name] = cls


@lru_cache(maxsize=None)
def registry() -> dict[str, type[Dataset]]:
    """Dataset name -> class: this package's modules in name order, then the plugins."""
    found: dict[str, type[Dataset]] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_") or info.name == "base":
            continue
        for cls in _defined_in(importlib.import_module(f"{__name__}.{info.name}")):
            _add(found, cls, "datatools/datasets")
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        try:
            obj = ep.load()
        except Exception as exc:  # one broken plugin must not take every command with it
            print(f"warning: dataset plugin {ep.name!r} ({ep.value}) cannot be loaded, skipped: "
                  f"{type(exc).__name__}: {exc}", file=sys.stderr)
            continue
        classes = [obj] if isinstance(obj, type) else _defined_in(obj)
        for cls in classes:
            if not (isinstance(cls, type) and issubclass(cls, Dataset) and cls.name):
                print(f"warning: dataset plugin {ep.name!r} ({ep.value}) is not a named Dataset "
                      "subclass or a module defining one, skipped", file=sys.stderr)
                continue
            _add(found, cls, f"entry point {ep.name!r}")
    return found


def names() -> list[str]:
    return list(registry())


def get(name: str) -> Dataset:
    cls = registry().get(name)
    if cls is None:
        raise UserError(f"unknown dataset {name!r}; known: {', '.join(registry())}")
    return cls()


__all__ = ["AnnotatedVideo", "Annotations", "Dataset", "ENTRY_POINT_GROUP", "get", "names",
           "registry"]
