"""Resumable, verified HTTP(S) downloads.

Each file is written to `<name>.part`; the server's validators (ETag, Last-Modified) and the
total size go to `<name>.part.json`, so a later run resumes with `Range: bytes=N-` plus
`If-Range`. A 206 whose range starts where the part ends is appended; anything else (a 200
from a server that ignores Range, or a file changed upstream) starts again from byte zero, so
a part is never spliced from two different files. sha256 (and md5 where the catalog publishes
one) is computed while the bytes stream past; a resumed part is hashed from disk first.

Only a verified file is renamed to its final name and recorded in `records.jsonl` beside it;
a file that fails verification is deleted and the error says so. Connection errors, timeouts,
5xx, 408 and 429 answers are retried with exponential backoff and jitter (a server's
Retry-After is honoured); other 4xx answers are not (a 404 will not go away by asking again).
The retry budget counts failures in a row: a try that took the part further than any before
starts it again, so a 100 GB file over a connection that drops every few minutes completes.
"""

from __future__ import annotations

import email.utils
import hashlib
import http.client
import json
import os
import queue
import random
import re
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from .. import __version__
from ..core.console import tracking
from ..core.errors import UserError
from ..core.fsio import (
    DiskError,
    atomic_write,
    disk_error,
    fsync_file,
    is_disk_error,
    rename_into_place,
)
from ..core.records import FileStamp, JsonLog
from ..schedule.threads import map_threads

CHUNK = 1 << 20  # bytes per read: large enough that per-call overhead is invisible
RECORDS = "records.jsonl"


class DownloadError(UserError):
    """A download that cannot complete: the message names the URL and what to do."""


class VerificationError(DownloadError):
    """A downloaded file whose size or checksum is not the published one."""


@dataclass
class Remote:
    """One file to fetch: where from, the name it is recorded under, what it must be."""

    url: str
    name: str
    size: int | None = None
    sha256: str | None = None
    md5: str | None = None


@dataclass
class HttpOptions:
    timeout: float = 30.0  # seconds without a byte (connect or read) before a try fails
    retries: int = 5  # further tries after failed ones in a row (reset when a try gets further)
    backoff: float = 1.0  # seconds before the first retry; doubles each time (with jitter)
    max_wait: float = 600.0  # the longest pause, a server's Retry-After included

    def __post_init__(self):
        if not (self.timeout > 0 and self.timeout != float("inf")):
            raise UserError(f"--timeout {self.timeout}: must be a number of seconds above 0")
        if self.retries < 0:
            raise UserError(f"--retries {self.retries}: must be 0 or more")


SCHEMES = ("http", "https")
RETRY_STATUS = (408, 429)  # and every 5xx: the server asks to come back later


def check_url(url: str, where: str | None = None) -> None:
    """Only http(s) URLs with a host are fetched; anything else is refused at once, before a
    retry loop could spend minutes on it."""
    parts = urlsplit(url.strip())
    source = f"{where}: " if where else ""
    if parts.scheme.lower() not in SCHEMES:
        raise DownloadError(f"{source}{url}: only http:// and https:// URLs can be downloaded"
                            + (f", not {parts.scheme}://" if parts.scheme else
                               " (write the whole URL, e.g. https://host/path/file)"))
    if not parts.hostname:
        raise DownloadError(f"{source}{url}: the URL names no host")


class _HttpRedirects(urllib.request.HTTPRedirectHandler):
    """Redirects followed only to http(s) URLs with a host: urllib's own handler follows
    ftp:// too, which check_url refuses for the URL asked for."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        check_url(newurl, f"{req.full_url} redirects to it")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


_OPENER = urllib.request.build_opener(_HttpRedirects())


@dataclass
class Fetched:
    path: Path
    size: int
    sha256: str
    verified: str  # what it was checked against: "sha256", "md5", "size" or "none"
    transferred: int  # bytes that came over the network in this run
    skipped: bool = False  # already complete and verified by an earlier run


def encode_url(url: str) -> str:
    """Percent-encode the path of a URL as written in a list file (tarball names in
    published lists contain spaces and parentheses); already-encoded URLs come out unchanged."""
    parts = urlsplit(url.strip())
    path = quote(unquote(parts.path), safe="/")
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, parts.fragment))


def safe_file_name(text: str, source: str) -> str:
    """A file name taken from a URL (its last path segment, percent-decoded), a header or a
    list: always one path component, never a path. What follows the last separator is kept
    (`%2e%2e%2fevil.txt` -> `evil.txt`); a name that is then empty, `.`, `..`, too long, holds a
    NUL or another control character, or is one of the downloader's own (records.jsonl, *.part)
    is refused with one line naming `source`."""
    name = unquote(text).replace("\\", "/").rsplit("/", 1)[-1].strip()
    if name in ("", ".", "..") or any(ord(c) < 32 or c == "\x7f" for c in name) \
            or len(name.encode("utf-8", "surrogateescape")) > 255:
        raise DownloadError(f"{source}: {text!r} gives no usable file name (it must be one "
                            "path component: no '/', no '..', no control characters, at most "
                            "255 bytes); download it under another name")
    if name == RECORDS or name.endswith((".part", ".part.json")):
        raise DownloadError(f"{source}: the file name {name!r} is one this downloader keeps for "
                            "its own records and partial files; download it under another name")
    return name


class Records:
    """`records.jsonl` in a downloads folder: one line per verified file or finished step,
    appended (the last line for a name wins; records.JsonLog: a line cut short by a crash is
    ignored and never glued to the next)."""

    def __init__(self, folder: Path):
        self.path = folder / RECORDS
        self._log = JsonLog(self.path, "download record")
        self._lock = threading.Lock()
        self._by_name: dict[str, dict] = {
            entry["name"]: entry for entry in self._log.read() if isinstance(entry.get("name"), str)}

    def get(self, name: str) -> dict | None:
        return self._by_name.get(name)

    def put(self, name: str, **fields) -> None:
        entry = {"name": name, **fields, "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
        with self._lock:
            self._log.append(entry)
            self._by_name[name] = entry


Progress = Callable[[int], None]  # called with the number of new bytes


def fetch(remote: Remote, final: Path, records: Records, opts: HttpOptions | None = None,
          progress: Progress | None = None, start: Callable[[int | None, int], None] | None = None,
          cancel: threading.Event | None = None) -> Fetched:
    """Download `remote` to the path `final`, resuming a part left by an earlier run.

    `start(total, done)` is called when a try knows the size and where it starts (a bar is
    reset to it), `progress(n)` for every chunk. Setting
    `cancel` stops the transfer at the next chunk, keeping the part for a later resume."""
    opts = opts or HttpOptions()
    done = _already_verified(final, remote, records)
    if done:
        return done
    if final.is_file() and records.get(remote.name) is None and (
            remote.size or remote.sha256 or remote.md5):
        # Put there by hand: used if it matches what is published, fetched again if not (a
        # file with nothing to check it against may be cut short, and is fetched again).
        try:
            return use_local(final, remote, records)
        except VerificationError:
            pass
    check_url(remote.url)
    final.parent.mkdir(parents=True, exist_ok=True)
    part = final.with_name(final.name + ".part")
    received = [0]  # bytes over the network, summed over tries
    failed = 0  # tries in a row that did not take the part further than any try before
    furthest = 0
    tries = 0
    while True:
        tries += 1
        try:
            total, digests = _transfer(remote, part, opts, progress, start, cancel, received)
            break
        except OSError as exc:
            if not is_disk_error(exc):
                raise
            have = part.stat().st_size if part.exists() else 0
            raise disk_error(exc, part, remote.size - have if remote.size else None) from None
        except _Retryable as exc:
            # Progress is the part growing past where it ever was: a server that ignores Range
            # and drops the connection sends bytes each time, and must still run out of tries.
            end = part.stat().st_size if part.exists() else 0
            failed = 1 if end > furthest else failed + 1
            furthest = max(furthest, end)
            if failed > opts.retries:
                raise DownloadError(f"{remote.url}: {exc} (gave up after {failed} failed tries in "
                                    f"a row, {tries} in all; check the server or --mirror, then "
                                    "re-run to resume)") from None
            _wait(cancel, _pause(opts, failed, exc.retry_after))
    fetched = _verify(part, final, remote, total, digests, received[0])
    records.put(remote.name, url=remote.url, size=fetched.size, sha256=fetched.sha256,
                verified=fetched.verified, mtime_ns=final.stat().st_mtime_ns, stage="downloaded")
    return fetched


def use_local(path: Path, remote: Remote, records: Records) -> Fetched:
    """Verify a file the user fetched by hand (--from-dir) as if it had been downloaded."""
    done = _already_verified(path, remote, records)
    if done:
        return done
    sha256, md5 = _hash_file(path, path.stat().st_size, want_md5=remote.md5 is not None)
    fetched = _check(path, remote, path.stat().st_size, sha256, md5, transferred=0)
    records.put(remote.name, url=str(path), size=fetched.size, sha256=sha256,
                verified=fetched.verified, mtime_ns=path.stat().st_mtime_ns, stage="downloaded")
    return fetched


def _already_verified(path: Path, remote: Remote, records: Records) -> Fetched | None:
    """A file verified by an earlier run, unchanged since (same size and mtime)."""
    rec = records.get(remote.name)
    if not rec or rec.get("sha256") is None or rec.get("mtime_ns") is None:
        return None
    now = FileStamp.at(path)
    if not path.is_file() or not FileStamp(rec["size"], rec.get("mtime_ns")).matches(now):
        return None
    if remote.sha256 and remote.sha256.lower() != rec["sha256"]:
        return None
    return Fetched(path, now.size, rec["sha256"], rec["verified"], 0, skipped=True)


class _Retryable(Exception):
    """A failure worth another try: connection refused or reset, timeout, 5xx, 408, 429, a
    short body. `retry_after`: the seconds the server asked for, if it did."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


def _pause(opts: HttpOptions, failed: int, retry_after: float | None) -> float:
    """Seconds before the next try: the server's Retry-After if it gave one, else exponential
    backoff with jitter, between half and all of it (so that many clients dropped together do
    not come back together)."""
    if retry_after is not None:
        return min(retry_after, opts.max_wait)
    ceiling = min(opts.backoff * 2 ** (failed - 1), opts.max_wait)
    return random.uniform(ceiling / 2, ceiling)


def _wait(cancel: threading.Event | None, seconds: float) -> None:
    if cancel is None:
        time.sleep(seconds)
    elif cancel.wait(seconds):
        raise KeyboardInterrupt  # another item failed or the user stopped the run


def _retry_after(value: str | None) -> float | None:
    """A Retry-After header: seconds, or an HTTP date (RFC 9110)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time()) if when else None


def _transfer(remote, part, opts, progress, start, cancel,
              received: list[int]) -> tuple[int | None, tuple[str, str | None]]:
    """One try: request the rest of the part and append it. Returns the total size and the
    part's digests (sha256, md5)."""
    meta_path = part.with_name(part.name + ".json")
    meta = _read_meta(meta_path) if part.exists() else None
    offset = part.stat().st_size if meta and meta.get("url") == remote.url else 0
    headers = {"User-Agent": f"datatools/{__version__}", "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
        validator = meta.get("etag") or meta.get("last_modified")
        if validator:
            headers["If-Range"] = validator
    try:
        resp = _OPENER.open(urllib.request.Request(remote.url, headers=headers),
                            timeout=opts.timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset and meta and meta.get("total") == offset:
            # The part is already whole (killed between its last byte and the rename).
            return offset, _hash_file(part, offset, want_md5=remote.md5 is not None)
        if exc.code == 416:
            _discard(part, meta_path)
            raise _Retryable("the server rejected the resume range; starting again") from None
        if exc.code >= 500 or exc.code in RETRY_STATUS:
            raise _Retryable(f"HTTP {exc.code} {exc.reason}",
                             _retry_after(exc.headers.get("Retry-After"))) from None
        raise DownloadError(f"{remote.url}: HTTP {exc.code} {exc.reason}"
                            + (" (no such file on this server; check --mirror)" if exc.code == 404
                               else "")) from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        raise _Retryable(_describe(exc)) from None
    with resp:
        start_at, total = _range_of(resp, offset)
        _write_meta(meta_path, remote.url, resp, total)
        if start is not None:
            start(total, start_at)
        hasher = _Hasher(want_md5=remote.md5 is not None)
        try:
            if start_at:
                hasher.prefix(part, start_at)
            end = _stream(resp, part, start_at, progress, cancel, received, hasher)
        finally:
            digests = hasher.digests()
    if total is not None and end < total:
        raise _Retryable(f"connection closed after {end:,} of {total:,} bytes")
    return (total if total is not None else end), digests


def _range_of(resp, offset: int) -> tuple[int, int | None]:
    """Where the body starts in the file, and the file's total size if the server says."""
    length = resp.headers.get("Content-Length")
    if resp.status == 206:
        m = re.match(r"bytes (\d+)-(\d+)/(\d+|\*)", resp.headers.get("Content-Range", ""))
        if m:
            total = int(m[3]) if m[3] != "*" else None
            return int(m[1]), total
    # A 200 is the whole file: the server ignored Range, or If-Range said it changed.
    return 0, int(length) if length is not None else None


def _stream(resp, part: Path, start_at: int, progress, cancel, received: list[int],
            hasher: _Hasher) -> int:
    """Write the body into the part from `start_at`; returns where the part ends."""
    fd = os.open(part, os.O_WRONLY | os.O_CREAT, 0o666)
    try:
        os.ftruncate(fd, start_at)
        os.lseek(fd, start_at, os.SEEK_SET)
        end = start_at
        while True:
            if cancel is not None and cancel.is_set():
                raise KeyboardInterrupt
            buf = hasher.buffer()
            view = memoryview(buf)
            try:
                n = resp.readinto(view)
            except (OSError, http.client.HTTPException) as exc:
                raise _Retryable(_describe(exc)) from None
            if not n:
                return end
            written = 0
            while written < n:
                written += os.write(fd, view[written:n])
            hasher.submit(buf, n)
            end += n
            received[0] += n
            if progress:
                progress(n)
    finally:
        os.close(fd)


class _Hasher:
    """sha256 (and md5) of what the download thread has just written, computed on a thread of
    its own: hashlib releases the GIL, so hashing overlaps the network and the disk instead
    of adding to them. Buffers circulate between the two threads; none is copied."""

    def __init__(self, want_md5: bool, buffers: int = 4):
        self.sha = hashlib.sha256()
        self.md5 = hashlib.md5() if want_md5 else None
        self.free: queue.Queue = queue.Queue()
        for _ in range(buffers):
            self.free.put(bytearray(CHUNK))
        self.full: queue.Queue = queue.Queue()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (item := self.full.get()) is not None:
            buf, n = item
            view = memoryview(buf)[:n]
            self.sha.update(view)
            if self.md5:
                self.md5.update(view)
            self.free.put(buf)

    def prefix(self, path: Path, size: int) -> None:
        """Hash the first `size` bytes already on disk (a resumed part)."""
        with open(path, "rb", buffering=0) as f:
            while size:
                buf = self.buffer()
                n = f.readinto(memoryview(buf)[:min(size, CHUNK)])
                if not n:
                    break
                self.submit(buf, n)
                size -= n

    def buffer(self) -> bytearray:
        return self.free.get()

    def submit(self, buf: bytearray, n: int) -> None:
        self.full.put((buf, n))

    def digests(self) -> tuple[str, str | None]:
        self.full.put(None)
        self.thread.join()
        return self.sha.hexdigest(), self.md5.hexdigest() if self.md5 else None


def _verify(part: Path, final: Path, remote: Remote, total: int | None,
            digests: tuple[str, str | None], transferred: int) -> Fetched:
    size = part.stat().st_size
    sha256, md5 = digests
    if total is not None and size != total:
        _discard(part, part.with_name(part.name + ".json"))
        raise VerificationError(f"{remote.url}: got {size:,} bytes, the server announced "
                                f"{total:,}; the file was deleted, re-run to fetch it again")
    fetched = _check(part, remote, size, sha256, md5, transferred)
    fsync_file(part)  # verified bytes on disk before its record and its final name say so
    rename_into_place(part, final)
    part.with_name(part.name + ".json").unlink(missing_ok=True)
    fetched.path = final
    return fetched


def _check(path: Path, remote: Remote, size: int, sha256: str, md5: str | None,
           transferred: int) -> Fetched:
    """Compare with what the catalog (or --checksums) publishes; the first mismatch is fatal."""
    problems = []
    if remote.size is not None and size != remote.size:
        problems.append(f"size {size:,} bytes, expected {remote.size:,}")
    if remote.sha256 and sha256 != remote.sha256.lower():
        problems.append(f"sha256 {sha256}, expected {remote.sha256.lower()}")
    if remote.md5 and md5 != remote.md5.lower():
        problems.append(f"md5 {md5}, expected {remote.md5.lower()}")
    if problems:
        downloaded = path.name.endswith(".part")
        if downloaded:
            _discard(path, path.with_name(path.name + ".json"))
        what = ("the download was deleted; re-run to fetch it again" if downloaded
                else "the file was not used; fetch it again")
        raise VerificationError(f"{remote.name}: checksum mismatch: {'; '.join(problems)}; {what}")
    verified = "sha256" if remote.sha256 else "md5" if remote.md5 else "size" if remote.size else "none"
    return Fetched(path, size, sha256, verified, transferred)


def _hash_file(path: Path, size: int, want_md5: bool) -> tuple[str, str | None]:
    """sha256 (and md5) of a file; reads in large blocks, hashlib releases the GIL on them."""
    sha = hashlib.sha256()
    md5 = hashlib.md5() if want_md5 else None
    with open(path, "rb", buffering=0) as f:
        buf = bytearray(8 * CHUNK)
        view = memoryview(buf)
        left = size
        while left:
            n = f.readinto(view[:min(left, len(buf))])
            if not n:
                break
            sha.update(view[:n])
            if md5:
                md5.update(view[:n])
            left -= n
    return sha.hexdigest(), md5.hexdigest() if md5 else None


def _read_meta(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def _write_meta(path: Path, url: str, resp, total: int | None) -> None:
    meta = {"url": url, "etag": resp.headers.get("ETag"),
            "last_modified": resp.headers.get("Last-Modified"), "total": total}
    # Weak ETags cannot validate a range (RFC 9110); fall back to the date.
    if meta["etag"] and meta["etag"].startswith("W/"):
        meta["etag"] = None
    if meta["last_modified"] and not email.utils.parsedate_to_datetime(meta["last_modified"]):
        meta["last_modified"] = None
    atomic_write(path, json.dumps(meta))


def _discard(part: Path, meta_path: Path) -> None:
    part.unlink(missing_ok=True)
    meta_path.unlink(missing_ok=True)


def _describe(exc: BaseException) -> str:
    reason = getattr(exc, "reason", exc)
    if isinstance(reason, (socket.timeout, TimeoutError)):
        return "timed out waiting for the server"
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, socket.gaierror):
        return f"cannot resolve the host name ({reason.strerror})"
    if isinstance(reason, ConnectionResetError):
        return "connection reset by the server"
    if isinstance(exc, http.client.RemoteDisconnected):
        return "the server closed the connection without answering"
    return str(reason) or type(reason).__name__


def in_threads(work: Callable, items: Iterable, jobs: int, cancel: threading.Event,
               step: str = "download") -> list[str]:
    """Run `work(item)` for each item on `jobs` threads (downloads wait on the network and
    hashlib releases the GIL, so threads suffice). A UserError costs its item only and comes
    back as a message; anything else, Ctrl-C included, sets `cancel` (transfers stop at the
    next chunk, parts are kept for a resume) and is raised once running items have stopped; so
    is a full disk (DiskError), which no other item would get past either. The items finished
    are counted for the line an interruption prints (console.tracking)."""
    failures = []
    items = list(items)
    with tracking(step, len(items), "files") as finished, \
            closing(map_threads(work, items, jobs, on_stop=cancel.set)) as done:
        for _, _, exc in done:
            finished.add()
            if isinstance(exc, UserError) and not isinstance(exc, DiskError):
                failures.append(str(exc))
            elif exc is not None:
                raise exc
    return failures


def fetch_urls(urls: list[str], folder: Path, jobs: int = 4, opts: HttpOptions | None = None,
               sha256: str | None = None, ui=None) -> tuple[list[Fetched], list[str]]:
    """`datatools fetch`: download plain URLs into a folder, each under its own file name.
    Every URL is checked before the first is fetched."""
    for url in urls:
        check_url(url)
    records = Records(folder)
    cancel = threading.Event()
    fetched: list[Fetched] = []

    def one(url: str) -> None:
        path = urlsplit(url).path
        name = safe_file_name(path.rsplit("/", 1)[-1], url) if path.rsplit("/", 1)[-1] else "index.html"
        bar = ui.file(name) if ui else None
        try:
            fetched.append(fetch(Remote(encode_url(url), name, sha256=sha256), folder / name,
                                 records, opts, progress=bar.advance if bar else None,
                                 start=bar.start if bar else None, cancel=cancel))
        finally:
            if bar:
                bar.close()

    return fetched, in_threads(one, urls, jobs, cancel, "fetch")

