"""`datatools <dataset> download`: fetch a dataset's files and lay them out under the root.

A run is a list of items, each a file to get (download, or take from --from-dir) and a way to
put its content in place (unpack into videos/, rename into annotations/, sort clips into class
folders). Which items, and how each is placed, the dataset module says (`Dataset.acquire`,
datasets/); this module gives it the means. Items run in a thread pool (--jobs): the work is
network and disk bound, and the hashing and decompression release the GIL. Everything that
finished is recorded in ROOT/downloads/records.jsonl, so a re-run skips it; a part left by an
interruption resumes.
"""

from __future__ import annotations

import os
import re
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import urlsplit

from .. import datasets
from ..core.errors import UserError, one_of
from ..core.fsio import atomic_write, disk_errors
from ..core.records import FileStamp, all_present
from ..root.lock import root_lock
from ..root.quarantine import FOLDER as QUARANTINE
from . import archives
from .http import (
    RECORDS,
    DownloadError,
    Fetched,
    HttpOptions,
    Records,
    Remote,
    check_url,
    encode_url,
    fetch,
    in_threads,
    safe_file_name,
    use_local,
)

WHAT = ("annotations", "videos", "all")
MIRROR_ENV = "DATATOOLS_MIRROR"


@dataclass
class DownloadOptions:
    what: str = "all"
    mirror: str | None = None  # replaces the catalog's base URL
    from_dir: Path | None = None  # archives fetched by hand: verify and unpack, no network
    jobs: int = 4
    keep_archives: bool = False
    checksums: dict[str, str] = field(default_factory=dict)  # file name -> sha256 (--checksums)
    http: HttpOptions = field(default_factory=HttpOptions)

    def __post_init__(self):
        one_of("--what", self.what, WHAT)
        if self.mirror is not None:
            check_url(self.mirror, "--mirror")


@dataclass
class DownloadResult:
    dataset: str
    fetched: list[Fetched] = field(default_factory=list)
    unpacked: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # finished by an earlier run
    missing: dict[str, list[str]] = field(default_factory=dict)  # subset -> clips in no tarball
    unmatched: list[str] = field(default_factory=list)  # files in archives named by no annotation
    failures: list[str] = field(default_factory=list)
    present: list[str] = field(default_factory=list)  # already there, not downloaded (kinds)


@dataclass
class Item:
    """One file to get, and what to do with it once it is verified."""

    remote: Remote
    path: Path  # where the file is kept (or found, with --from-dir)
    place: Callable[[Path, str], None] | None = None  # (file, name): puts the content in place


def read_checksums(path: Path) -> dict[str, str]:
    """A `sha256sum`-style file: `<hex>  <name>` per line; names match by their last part."""
    sums = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        m = re.match(r"^([0-9a-fA-F]{64})\s+\*?(.+)$", line.strip())
        if not m:
            raise UserError(f"{path}:{n}: expected '<sha256>  <file name>', found {line!r}")
        sums[Path(m[2]).name] = m[1].lower()
    return sums


class Session:
    """One download run for one dataset under one root."""

    def __init__(self, name: str, root: Path, opts: DownloadOptions, ui=None):
        self.dataset = datasets.get(name)
        self.root = root
        self.opts = opts
        self.ui = ui  # report.DownloadProgress or None
        self.downloads = root / "downloads"
        self.downloads.mkdir(parents=True, exist_ok=True)
        self.records = Records(self.downloads)
        self.result = DownloadResult(name)
        self.cancel = threading.Event()
        self._lock = threading.Lock()
        self._placed = threading.local()  # per item (one thread each): what it put in place
        self.catalog_base = self.dataset.catalog.base_url
        self.base = opts.mirror or self.catalog_base
        if self.base is None and opts.from_dir is None:
            hint = self.dataset.catalog.raw.get("manual_download", "pass --from-dir DIR")
            raise UserError(f"{name} has no public download URL: {hint} "
                            "(or --mirror URL if you host a copy)")

    # --- building items ------------------------------------------------------------------
    def url(self, rel: str) -> str:
        return encode_url(self.base.rstrip("/") + "/" + rel)

    def rewrite(self, url: str) -> str:
        """A URL from a list file, moved to the mirror when one is given."""
        url = url.strip()
        if self.opts.mirror and self.catalog_base and url.startswith(self.catalog_base):
            url = self.opts.mirror.rstrip("/") + "/" + url[len(self.catalog_base):]
        return encode_url(url)

    def remote(self, source: dict, url: str | None = None, name: str | None = None) -> Remote:
        name = name or source["name"]
        base = Path(name).name
        return Remote(url=url or (self.url(source["name"]) if self.base else ""), name=name,
                      size=source.get("size"),
                      sha256=self.opts.checksums.get(base) or source.get("sha256"),
                      md5=source.get("md5"))

    def item(self, remote: Remote, keep_in: Path | None = None, place=None) -> Item:
        """An item whose file is kept at keep_in (default downloads/<name>), or found in
        --from-dir by its file name."""
        if self.opts.from_dir is not None:
            return Item(remote, self.opts.from_dir / Path(remote.name).name, place)
        return Item(remote, keep_in or self.downloads / remote.name, place)

    # --- running -----------------------------------------------------------------------
    def get(self, item: Item) -> Fetched:
        if self.opts.from_dir is not None:
            if not item.path.is_file():
                raise DownloadError(f"{item.path}: not found in --from-dir; download "
                                    f"{Path(item.remote.name).name} there by hand first")
            return use_local(item.path, item.remote, self.records)
        bar = self.ui.file(item.remote.name) if self.ui else None
        try:
            return fetch(item.remote, item.path, self.records, self.opts.http,
                         progress=bar.advance if bar else None,
                         start=bar.start if bar else None, cancel=self.cancel)
        finally:
            if bar:
                bar.close()

    def still_placed(self, name: str) -> bool:
        """Whether the record says `name` was unpacked and the files it placed are still
        there (or moved to quarantine on purpose). A record of an older version, which did
        not list them, is taken at its word."""
        rec = self.records.get(name)
        if not rec or rec.get("stage") != "unpacked":
            return False
        placed = rec.get("placed")
        return placed is None or all_present(self.root, placed, [self.root / QUARANTINE])

    def run_item(self, item: Item) -> None:
        if item.place is not None and self.still_placed(item.remote.name):
            with self._lock:
                self.result.skipped.append(item.remote.name)
            return
        fetched = self.get(item)
        with self._lock:
            if fetched.skipped:
                self.result.skipped.append(item.remote.name)
            else:
                self.result.fetched.append(fetched)
        if item.place is None:
            return
        try:
            placed = self.placing(item.place, fetched.path, item.remote.name)
        except archives.ArchiveError as exc:
            raise self.reject(item, exc) from None
        kept = FileStamp.at(item.path)  # --keep-archives, --from-dir: verified, reusable
        self.records.put(item.remote.name, size=fetched.size, sha256=fetched.sha256,
                         verified=fetched.verified, stage="unpacked", placed=placed,
                         mtime_ns=kept.mtime_ns if kept else None)
        with self._lock:
            self.result.unpacked.append(item.remote.name)
        if not self.opts.keep_archives and self.opts.from_dir is None and item.path.is_relative_to(
                self.downloads):
            item.path.unlink(missing_ok=True)

    def reject(self, item: Item, exc: archives.ArchiveError) -> UserError:
        """An archive that verified but cannot be unpacked (cut short, damaged, hostile) is
        not kept as good: it is recorded as failed, and a file this tool downloaded is deleted
        so that the next run fetches it again. A file from --from-dir is the user's: left."""
        ours = self.opts.from_dir is None and item.path.is_relative_to(self.downloads)
        if ours:
            item.path.unlink(missing_ok=True)
        self.records.put(item.remote.name, stage="failed", reason=str(exc))
        then = ("it was deleted; re-run to fetch it again" if ours
                else "replace the file in --from-dir, then re-run")
        return UserError(f"{exc} ({then})")

    def run(self, items: list[Item]) -> None:
        """Run items in parallel; a failing item is recorded and does not stop the others."""
        self.result.failures += in_threads(self.run_item, items, self.opts.jobs, self.cancel)

    # --- placing content -----------------------------------------------------------------
    def placing(self, place: Callable[[Path, str], None], archive: Path, name: str) -> list[str]:
        """Run `place`; returns the files it put in the root's layout (put, merge_into), which
        the completion record lists (relative to the root)."""
        self._placed.paths = []
        try:
            place(archive, name)
            return sorted(self._placed.paths)
        finally:
            del self._placed.paths

    def put(self, src: Path, dest: Path) -> None:
        """Move one file into the root's layout, replacing what is there."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, dest)
        self._note_placed([dest])

    def _note_placed(self, paths) -> None:
        noted = getattr(self._placed, "paths", None)
        if noted is None:  # a record without these files would be trusted forever
            raise RuntimeError("Session.put/merge_into called outside Session.placing, or from "
                               "another thread than the one placing")
        noted.extend(Path(p).relative_to(self.root).as_posix() for p in paths)

    def staging(self, name: str) -> Path:
        """A private folder per item name (names are unique; file names are not: one
        dataset has train/part_0.tar.gz and val/part_0.tar.gz)."""
        return self.downloads / ".staging" / name.replace("/", "__")

    def unpack(self, archive: Path, name: str) -> Path:
        return archives.extract(archive, self.staging(name))

    def unpack_into(self, dest: Path, layout: Callable[[Path], str | None] | None = None
                    ) -> Callable[[Path, str], None]:
        """Unpack, drop the one folder the archive wraps everything in, merge into dest.
        `layout(folder)` says what is wrong with the content, if anything: an archive that is
        not what the dataset publishes is refused before anything reaches dest."""
        def place(archive: Path, name: str) -> None:
            staged = self.unpack(archive, name)
            top = archives.single_top(staged)
            problem = layout(top) if layout is not None else None
            if problem:
                shutil.rmtree(staged)
                raise archives.ArchiveError(
                    f"{name}: refused, it does not hold {self.dataset.name}'s videos as published "
                    f"({problem}); nothing was put in {dest}")
            self.merge_into(top, dest)
            shutil.rmtree(staged)
        return place

    def sources(self, what: str) -> list[dict]:
        return [s for s in self.dataset.catalog.sources
                if s["what"] == what and self.opts.what in (what, "all")]


    # --- what a dataset's acquire() uses besides the above ---------------------------------
    def unpack_file(self, archive: Path, dest: Path) -> Path:
        """Unpack one archive found inside another (an archive of per-class archives)."""
        return archives.extract(archive, dest)

    @staticmethod
    def is_archive(path: Path) -> bool:
        return archives.sniff(path) is not None

    @staticmethod
    def top_folder(staged: Path) -> Path:
        return archives.single_top(staged)

    def merge_into(self, src: Path, dest: Path) -> None:
        """Move folder src's contents into dest, merging (archives.move_into)."""
        files = [dest / p.relative_to(src) for p in src.rglob("*") if p.is_file() and not p.is_symlink()]
        archives.move_into(src, dest)
        self._note_placed(files)

    def remote_at(self, url: str, name: str) -> Remote:
        """A file named by a URL in a list the dataset downloads (moved to the mirror)."""
        return Remote(self.rewrite(url), name)

    @staticmethod
    def name_from_url(url: str, where: str) -> str:
        """The file name a URL's last path segment gives, made safe (http.safe_file_name)."""
        return safe_file_name(urlsplit(url.strip()).path.rsplit("/", 1)[-1], where)

    def note_unmatched(self, paths: list[str]) -> None:
        with self._lock:
            self.result.unmatched.extend(paths)

    def note_missing(self, subset: str, video_ids: list[str]) -> None:
        """Videos the annotations name that no archive brought: reported, and listed in
        downloads/missing_<subset>.txt."""
        self.result.missing[subset] = video_ids
        atomic_write(self.downloads / f"missing_{subset}.txt", "\n".join(video_ids) + "\n")

    def run_joined(self, parts: list[Item], joined_name: str, place: Callable[[Path, str], None]) -> None:
        """Numbered parts that joined in catalog order form one archive: get every part,
        place the whole, read as one stream part after part (archives.Parts: no joined copy,
        so the free space needed is what it unpacks to), once: a re-run skips what was
        placed."""
        if self.still_placed(joined_name):
            self.result.skipped.append(joined_name)
            return
        self.run(parts)
        if self.result.failures:
            return
        whole = archives.Parts([part.path for part in parts], str(self.downloads / joined_name))
        placed = self.placing(place, whole, joined_name)
        self.records.put(joined_name, stage="unpacked", parts=[p.remote.name for p in parts],
                         placed=placed)
        self.result.unpacked.append(joined_name)
        if not self.opts.keep_archives and self.opts.from_dir is None:
            for part in parts:
                part.path.unlink(missing_ok=True)


def download(name: str, root: Path, opts: DownloadOptions, ui=None) -> DownloadResult:
    root = Path(root)
    with disk_errors(root):
        root.mkdir(parents=True, exist_ok=True)
    with root_lock(root, "download"):
        todo, present = _not_yet_there(name, root, opts)
        if todo is None:  # nothing to get: no network at all
            return DownloadResult(name, present=present)
        session = Session(name, root, todo, ui)
        session.result.present = present
        session.dataset.acquire(session)
        return session.result


def _not_yet_there(name: str, root: Path, opts: DownloadOptions) -> tuple[DownloadOptions | None, list[str]]:
    """In a root this tool has never downloaded into (no records), annotations and videos
    that are already there (unpacked by hand, copied from elsewhere, MMAction2's layout) are
    used as they are: only what is missing is fetched, and nothing when nothing is. Where
    there are records, they say what is done, and a half-unpacked archive is finished; with
    --from-dir, the archives named are unpacked."""
    if (root / "downloads" / RECORDS).exists() or opts.from_dir is not None:
        return opts, []  # records say what is done; --from-dir asks for its archives
    wanted = {"annotations", "videos"} if opts.what == "all" else {opts.what}
    present = sorted(datasets.get(name).present(root) & wanted)
    left = wanted - set(present)
    if not left:
        return None, present
    return replace(opts, what=left.pop() if len(left) == 1 else "all"), present
