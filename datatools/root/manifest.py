"""The Parquet manifest: one file per data root, the single source of truth for that root.

The schema is declared once here (`VideoRecord` and `SCHEMA`). Each step reads the manifest,
adds what it learned and rewrites it atomically; only the driver process writes it. The text
lists MMAction2 reads are exports of it (`export_lists`).
"""

from __future__ import annotations

import bisect
import collections
import dataclasses
import itertools
import json
import operator
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .. import __version__
from ..core.errors import UserError, shell_word
from ..core.fsio import atomic_write_many
from . import status

# 2: status `unchecked`; probe_status, mtime_ns and inode (a probe stays attached to its file)
# 3: made_with and frame_mtime_ns (a re-run trusts an unchanged frame folder without listing it)
# 4: frame_storage (files or packed)
SCHEMA_VERSION = 4
MANIFEST_NAME = "manifest.parquet"
ROW_GROUP = 16384  # manifest rows written, read and turned into records at a time
META_KEY = b"datatools"


@dataclass(slots=True)
class VideoRecord:
    """One row of the manifest: a video, what is known about it, and what was made from it.
    Slotted: a driver holds one per video, 650,000 for Kinetics-700 (docs/scale.md)."""

    # identity
    dataset: str
    video_id: str
    key: str  # MMAction2's key: path below the videos dir without extension
    video_path: str | None = None  # relative to the root (posix); None when missing on disk
    class_name: str | None = None
    class_index: int = -1
    subset_1: str | None = None  # train / val / test / unused; single-split datasets use _1 only
    subset_2: str | None = None
    subset_3: str | None = None
    order_1: int = -1  # position in that split's annotation file (list order)
    order_2: int = -1
    order_3: int = -1
    # probe
    # What the video is now: a word of status.VIDEO_STATUSES (status.py says what each means).
    status: str = "missing"
    exists: bool = False
    size: int | None = None  # size and mtime_ns: the file as last seen (and probed; its stamp)
    mtime_ns: int | None = None
    inode: int | None = None  # recorded, not compared (records.FileStamp says why)
    probe_status: str | None = None  # the last probe's verdict on that file; None: never probed
    decodable: bool | None = None
    frame_count: int | None = None
    fps: float | None = None
    width: int | None = None
    height: int | None = None
    duration: float | None = None
    codec: str | None = None
    error: str | None = None
    probe_level: str | None = None
    # extraction
    frame_dir: str | None = None  # relative to the root (posix)
    rgb_count: int | None = None
    flow_count: int | None = None
    rgb_template: str | None = None
    flow_template: str | None = None
    start_index: int | None = None
    flow_algo: str | None = None
    flow_bound: float | None = None
    backend: str | None = None
    extract_status: str | None = None
    extract_error: str | None = None
    made_with: str | None = None  # per part, a digest of its parameters (folder.made_with)
    frame_mtime_ns: int | None = None  # the frame folder's mtime when last counted
    frame_storage: str | None = None  # "files" (a folder) or "packed" (frame_dir + ".zip")

    def subset(self, split: int) -> str | None:
        return getattr(self, f"subset_{split}")

    def order(self, split: int) -> int:
        return getattr(self, f"order_{split}")


_ARROW_TYPES = {"str": pa.string(), "int": pa.int64(), "bool": pa.bool_(), "float": pa.float64()}


def _arrow_type(annotation: str) -> pa.DataType:
    base = annotation.split("|")[0].strip()
    return _ARROW_TYPES[base]


FIELDS = [f.name for f in dataclasses.fields(VideoRecord)]
SCHEMA = pa.schema([pa.field(f.name, _arrow_type(f.type)) for f in dataclasses.fields(VideoRecord)])


@dataclass
class ManifestMeta:
    """Key-value metadata stored in the Parquet footer."""

    dataset: str
    label_map: list[str]
    label_source: str = ""
    level: int = 2
    steps: dict = dataclasses.field(default_factory=dict)  # step name -> its arguments
    disk: dict = dataclasses.field(default_factory=dict)  # what its scan read (root/fingerprint.py)
    lists: list = dataclasses.field(default_factory=list)  # what build-lists wrote with it (rerun.py)
    schema_version: int = SCHEMA_VERSION
    tool_version: str = __version__


def manifest_path(root: Path) -> Path:
    return Path(root) / MANIFEST_NAME


class ManifestUnreadable(UserError):
    """A manifest file that exists but cannot be read (cut short, empty, not Parquet)."""


def write_manifest(root: Path, records: list[VideoRecord], meta: ManifestMeta,
                   lists: dict[Path, bytes] | None = None) -> Path:
    """Write the manifest atomically (fsio.atomic_write), with `lists` (path -> content) as
    part of the same step: nothing is renamed until every file is written. `meta.lists`
    describes lists written with these rows: without `lists`, it is cleared (the rows may no
    longer be what the lists on disk were made from)."""
    path = manifest_path(root)
    if not lists:
        meta = dataclasses.replace(meta, lists=[])
    atomic_write_many({**(lists or {}), path: manifest_bytes(records, meta)})
    return path


def set_frame_storage(root: Path, storage: dict[str, str]) -> int:
    """Rows whose frame folder (`frame_dir`, relative to the root) `pack` or `unpack` just
    converted say where the frames are now (`storage`: frame_dir -> "files" or "packed");
    their folder is read again by the next scan (frame_mtime_ns cleared). Returns how many
    rows changed; a root without a manifest has none."""
    loaded = read_manifest(root) if storage else None
    if loaded is None:
        return 0
    records, meta = loaded
    changed = 0
    for rec in records:
        now = storage.get(rec.frame_dir or "")
        if now is not None and rec.frame_storage != now:
            rec.frame_storage, rec.frame_mtime_ns = now, None
            changed += 1
    if changed:
        write_manifest(root, records, meta)
    return changed


def manifest_bytes(records: list[VideoRecord], meta: ManifestMeta) -> bytes:
    meta.tool_version = __version__
    schema = SCHEMA.with_metadata({META_KEY: json.dumps(dataclasses.asdict(meta)).encode()})
    sink = pa.BufferOutputStream()
    # A row group per ROW_GROUP rows, made and written one at a time: the Arrow copy of a
    # Kinetics-700 manifest never exists whole (docs/scale.md), and a reader streams it.
    with pq.ParquetWriter(sink, schema) as writer:
        for start in range(0, max(len(records), 1), ROW_GROUP):
            rows = records[start:start + ROW_GROUP]
            # Column by column, each read with a mapped attrgetter: far faster than a getattr
            # per cell.
            writer.write_table(pa.Table.from_arrays(
                [_arrow_column(list(map(operator.attrgetter(field.name), rows)), field.type)
                 for field in SCHEMA], schema=schema))
    return sink.getvalue().to_pybytes()


def _arrow_column(values: list, type_: pa.DataType) -> pa.Array:
    """One column as an Arrow array, built from its buffers: pa.array() on Python values
    imports pandas (0.2 s, a tenth of a short command) only to ask whether they are pandas
    objects."""
    n = len(values)
    valid = np.fromiter((v is not None for v in values), dtype=bool, count=n)
    nulls = n - int(valid.sum())
    validity = pa.py_buffer(np.packbits(valid, bitorder="little")) if nulls else None
    if pa.types.is_string(type_):
        encoded = [b"" if v is None else v.encode() for v in values]
        offsets = np.zeros(n + 1, dtype=np.int64)
        np.cumsum([len(b) for b in encoded], out=offsets[1:])
        if offsets[-1] >= 2**31:
            raise ValueError("a manifest column holds over 2 GiB of text")
        return pa.StringArray.from_buffers(n, pa.py_buffer(offsets.astype(np.int32)),
                                           pa.py_buffer(b"".join(encoded)), validity, nulls)
    if pa.types.is_boolean(type_):
        data = np.packbits(np.fromiter((bool(v) for v in values), dtype=bool, count=n),
                           bitorder="little")
    else:
        dtype = np.int64 if pa.types.is_int64(type_) else np.float64
        data = np.fromiter((0 if v is None else v for v in values), dtype=dtype, count=n)
    return pa.Array.from_buffers(type_, n, [validity, pa.py_buffer(data)], null_count=nulls)


def read_manifest(root: Path) -> tuple[list[VideoRecord], ManifestMeta] | None:
    """The records and metadata of `root`'s manifest, or None if it has none yet."""
    opened = open_manifest(root)
    if opened is None:
        return None
    return read_all_rows(root, opened[0]), opened[1]


def open_manifest(root: Path) -> tuple[pq.ParquetFile, ManifestMeta] | None:
    """The manifest's file, its footer read (the metadata), or None if it has none yet; an
    unreadable one is ManifestUnreadable."""
    path = manifest_path(root)
    if not path.exists():
        return None
    try:
        return _open(path)
    except (pa.ArrowException, OSError, ValueError, TypeError) as exc:
        raise _unreadable(root, exc) from None


def read_all_rows(root: Path, parquet: pq.ParquetFile) -> list[VideoRecord]:
    """Every record of an opened manifest (open_manifest)."""
    try:
        return _rows(parquet, range(parquet.metadata.num_rows))
    except (pa.ArrowException, OSError, ValueError, TypeError) as exc:
        raise _unreadable(root, exc) from None


def _unreadable(root: Path, exc: BaseException) -> ManifestUnreadable:
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return ManifestUnreadable(
        f"{manifest_path(root)}: unreadable ({reason}); rebuild it with `datatools <dataset> "
        f"build-lists --root {shell_word(root)}` (it recreates the manifest from the annotations, "
        "the files on disk and the completion records, and keeps this file aside)")


def written_by_this_version(meta: ManifestMeta) -> bool:
    """Rows a re-run may start from: written by this version of datatools (another may list,
    count or scan differently)."""
    return meta.tool_version == __version__ and meta.schema_version == SCHEMA_VERSION


def read_meta(root: Path) -> ManifestMeta | None:
    """The metadata alone (the file's footer), or None without a readable manifest."""
    try:
        return _open(manifest_path(root))[1]
    except (pa.ArrowException, OSError, ValueError, TypeError):
        return None


def _open(path: Path) -> tuple[pq.ParquetFile, ManifestMeta]:
    # ParquetFile rather than read_table: the latter imports pyarrow.dataset, 0.3 s of
    # every command's start-up, for a single file it does not need it to read.
    parquet = pq.ParquetFile(path)
    raw = json.loads((parquet.schema_arrow.metadata or {}).get(META_KEY, b"{}"))
    if not isinstance(raw, dict) or "dataset" not in raw:
        raise ValueError("no datatools metadata in it")
    known = {f.name for f in dataclasses.fields(ManifestMeta)}
    return parquet, ManifestMeta(**{k: v for k, v in raw.items() if k in known})


def _rows(parquet: pq.ParquetFile, wanted: range | list[int]) -> list[VideoRecord]:
    """The records at the row numbers `wanted` (ascending), made one row group at a time."""
    present = [name for name in FIELDS if name in parquet.schema_arrow.names]
    make = VideoRecord if present == FIELDS else (
        lambda *row: VideoRecord(**dict(zip(present, row))))  # an older schema: defaults for the rest
    records: list[VideoRecord] = []
    groups = list(range(parquet.metadata.num_row_groups))
    starts = list(itertools.accumulate((parquet.metadata.row_group(g).num_rows for g in groups),
                                       initial=0))
    if not isinstance(wanted, range):  # only the row groups that hold a wanted row
        groups = sorted({bisect.bisect_right(starts, n) - 1 for n in wanted})
    taken = 0
    for group in groups:
        table = parquet.read_row_group(group, columns=present)
        if not table.num_rows:
            continue
        batch = table.combine_chunks().to_batches()[0]
        start = starts[group]
        end = start + batch.num_rows
        if isinstance(wanted, range):
            part = batch
        else:
            upto = taken
            while upto < len(wanted) and wanted[upto] < end:
                upto += 1
            part = batch.take(pa.array([i - start for i in wanted[taken:upto]], pa.int64()))
            taken = upto
        if part.num_rows:
            columns = [_python_values(part.column(i)) for i in range(part.num_columns)]
            records.extend(itertools.starmap(make, zip(*columns)))
    if "probe_status" not in present:  # schema 1: status held the probe's verdict
        for r in records:
            if r.probe_level is not None and r.status not in (status.MISSING, status.EXTRA):
                r.probe_status = r.status
    return records


def read_rows(root: Path, wanted: list[int]) -> list[VideoRecord]:
    """Some rows of the manifest by row number (ascending), without making the others."""
    return _rows(_open(manifest_path(root))[0], wanted)


def read_columns(root: Path, names: tuple[str, ...]):
    """The rows as named tuples of a few columns, a row group at a time."""
    Row = collections.namedtuple("Row", names)
    for batch in _open(manifest_path(root))[0].iter_batches(batch_size=ROW_GROUP, columns=list(names)):
        yield from map(Row._make, zip(*(batch.column(name).to_pylist() for name in names)))


class ManifestRows(Sequence):
    """Every row of a manifest, read the first time one is asked for."""

    def __init__(self, root: Path, count: int):
        self.root, self.count, self._rows = root, count, None

    def _load(self) -> list[VideoRecord]:
        if self._rows is None:
            self._rows = read_manifest(self.root)[0]
        return self._rows

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index):
        return self._load()[index]

    def __iter__(self):
        return iter(self._load())


def _python_values(column: pa.Array) -> list:
    """A column's Python values; text that repeats (status, class, subset, codec…) as one
    shared string per distinct value instead of one per row."""
    if pa.types.is_string(column.type) and len(column) > 64:
        encoded = column.dictionary_encode()
        values = encoded.dictionary.to_pylist()
        if len(values) * 4 <= len(column):
            values.append(None)
            indices = encoded.indices.fill_null(len(values) - 1).to_numpy(zero_copy_only=False)
            return list(map(values.__getitem__, indices.tolist()))
    return column.to_pylist()


def set_aside(root: Path) -> Path:
    """Move an unreadable manifest out of the way (kept, never overwritten); returns where."""
    path = manifest_path(root)
    aside = path.with_name(f"{path.name}.unreadable-{time.strftime('%Y%m%dT%H%M%S')}")
    n = 1
    while aside.exists():
        aside = aside.with_name(f"{path.name}.unreadable-{time.strftime('%Y%m%dT%H%M%S')}-{n}")
        n += 1
    path.rename(aside)
    return aside


# --- export to MMAction2 text lists -----------------------------------------------------

LIST_FORMATS = ("videos", "rawframes", "flow")
LISTED_STATUSES = status.LISTED  # the video statuses a videos list holds
# Frame folders never listed: fewer files than their record counts, or made from an earlier
# version of the video.
UNLISTED_EXTRACTIONS = status.UNLISTED_EXTRACTIONS  # frame folders no list holds


def split_members(records: list[VideoRecord], split: int, subset: str) -> list[VideoRecord]:
    """The records in `subset` of `split`, in annotation order (the order of the lists)."""
    return sorted((r for r in records if r.subset(split) == subset), key=lambda r: r.order(split))


def listed(record: VideoRecord, fmt: str) -> bool:
    """Whether a `fmt` list holds this record: the one rule for lists and MMAction2 datasets."""
    return list_line(record, fmt, "") is not None


def require_manifest(root: Path) -> tuple[list[VideoRecord], ManifestMeta]:
    """The manifest of `root`, or the one-line error telling how to make it."""
    loaded = read_manifest(root)
    if loaded is None:
        raise no_manifest(root)
    return loaded


def no_manifest(root: Path) -> UserError:
    return UserError(f"{manifest_path(root)}: no manifest; run `datatools <dataset> "
                     f"build-lists --root {shell_word(root)}` (or validate) first")


def list_line(record: VideoRecord, fmt: str, base_dir: str) -> str | None:
    """One MMAction2 list line for `record`, or None when it has nothing to list in `fmt`.

    videos: `<path below base_dir> [label]`; rawframes: `<dir> <n_img> [label]`;
    flow: `<dir> <n_flow> [label]`. Unlabelled (test) videos get no label column, which
    MMAction2's VideoDataset / RawframeDataset read as label -1.
    """
    label = f" {record.class_index}" if record.class_index >= 0 else ""
    if fmt == "videos":
        # `unchecked` files are listed, as MMAction2's own tool lists every file it finds;
        # the summary says how many were never probed.
        if record.status not in LISTED_STATUSES or not record.video_path:
            return None
        return f"{_relative(record.video_path, base_dir)}{label}\n"
    if not record.frame_dir or record.extract_status in UNLISTED_EXTRACTIONS:
        return None
    count = record.rgb_count if fmt == "rawframes" else record.flow_count
    if not count:
        return None
    return f"{_relative(record.frame_dir, base_dir)} {count}{label}\n"


def _relative(path: str, base_dir: str) -> str:
    prefix = base_dir.rstrip("/") + "/"
    return path[len(prefix):] if path.startswith(prefix) else path


def mmaction_shuffles(sizes: list[int], seed: int | None) -> list[tuple[list[int], list[int]]]:
    """Permutations MMAction2's build_file_list.py applies with `--shuffle --seed N`.

    It seeds Python's `random`, then shuffles each list's RGB and flow variants in turn
    (per split: train RGB, train flow, val RGB, val flow). `sizes` gives the list lengths in
    that order; the result holds (rgb permutation, flow permutation) for each. Reproducing the
    call sequence gives byte-identical shuffled lists.
    """
    rng = random.Random(seed)
    out = []
    for n in sizes:
        rgb, flow = list(range(n)), list(range(n))
        rng.shuffle(rgb)
        rng.shuffle(flow)
        out.append((rgb, flow))
    return out

