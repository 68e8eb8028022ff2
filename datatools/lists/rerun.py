"""A build-lists re-run on a root as the last build-lists left it, answered from the manifest's
columns: no annotation parsed, no folder listed, no row made (the largest dataset has 650,000
of them, docs/scale.md).

It applies when the manifest was last written by build-lists with the same arguments (the
lists it wrote are described in the manifest), the root's fingerprint is as that scan recorded
it and every row's file and frame folder is unchanged (fingerprint.py), and every list file
still holds what was written (size and sha256). A full run would then find the same rows and
write the same files, so nothing is written: the summary's counts come from the columns, by
the rule a full run applies (build.categories), and only the rows it names are read.
"""

from __future__ import annotations

import os

import pyarrow as pa

from ..root.fingerprint import row_unchanged
from ..root.manifest import ManifestRows, read_columns, read_rows
from ..root.state import OpenedRoot, holds
from .result import BuildResult, ListFile, categories

COLUMNS = ("video_path", "exists", "size", "mtime_ns", "frame_dir", "frame_storage", "frame_mtime_ns",
           "status", "rgb_count", "extract_error", "extract_status")


def as_left(opened: OpenedRoot, args: dict):
    """The BuildResult of a build-lists with `args` on a root as the last one left it, or
    None when anything may have changed (then the caller scans `opened`)."""
    meta = opened.meta
    if (not opened.current or not meta.lists or meta.steps.get("build-lists") != args
            or meta.level != args["level"] or (args["shuffle"] and args["seed"] is None)):
        return None  # (a shuffle without a seed is a new shuffle each run)
    try:
        return _answer(opened, args)
    except (pa.ArrowException, OSError, ValueError, TypeError):
        return None  # a damaged manifest: the scan sets it aside and rebuilds


def _answer(opened: OpenedRoot, args: dict):
    root, meta = opened.root, opened.meta
    dataset = meta.dataset
    if not opened.folders_as_recorded():
        return None
    for d in meta.lists:
        if not holds(root / d["name"], d["bytes"], d["sha256"]):
            return None
    frame_lists = any(f != "videos" for f in args["formats"])
    count = 0
    named: dict[str, list[int]] = {}  # summary list -> row numbers
    result = BuildResult(dataset, [], label_source=meta.label_source)
    prefix = f"{root}{os.sep}"
    seen: dict[tuple, list[str]] = {}  # the rule's answer per combination of its columns
    for number, row in enumerate(read_columns(root, COLUMNS)):
        if not row_unchanged(prefix, row):
            return None
        key = (row.status, bool(row.frame_dir), bool(row.rgb_count), row.extract_error,
               row.extract_status)
        where = seen.get(key)
        if where is None:
            where = seen[key] = categories(row, frame_lists)
        for name in result.add(row, where):
            named.setdefault(name, []).append(number)
        count = number + 1
    wanted = sorted({n for numbers in named.values() for n in numbers})
    rows = dict(zip(wanted, read_rows(root, wanted)))
    for where, numbers in named.items():
        getattr(result, where).extend(rows[n] for n in numbers)
    result.records = ManifestRows(root, count)
    result.lists = [ListFile(d["name"], d["split"], d["subset"], d["fmt"], d["lines"], d["expected"])
                    for d in meta.lists]
    return result
