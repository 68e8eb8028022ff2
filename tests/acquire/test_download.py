"""`datatools <dataset> download` against a real nginx on loopback serving each dataset's files
in their real layout (tests/served.py), run as a user runs it: the console script in a
subprocess. After each download, `validate` and `build-lists` must find the root clean."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import served
from conftest import ANN, datatools, kill_group, require_tool
from nginx import Nginx, free_port
from trees import video_id

from datatools.lists.build import build_lists
from datatools.schedule.client import ClusterOptions
from datatools.validate.run import validate

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    require_tool("nginx")
    ng = Nginx(tmp_path_factory.mktemp("nginx"))
    yield ng
    ng.stop()


def assert_clean(dataset: str, root: Path, n_videos: int) -> None:
    """What the issue asks of a downloaded root: validate and build-lists find nothing wrong."""
    checked = validate(dataset, root, "quick", ClusterOptions(workers=1))
    assert len(checked.records) == n_videos
    assert not checked.not_ok, [(r.key, r.status, r.error) for r in checked.not_ok]
    built = build_lists(dataset, root, ["videos"], 2, False, None)
    assert not built.missing and not built.extra
    assert sum(lf.lines for lf in built.lists) > 0


def records(root: Path) -> dict[str, dict]:
    lines = (root / "downloads" / "records.jsonl").read_text().splitlines()
    return {e["name"]: e for e in map(json.loads, lines)}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_ucf101_unpacks_into_its_layout_and_a_rerun_fetches_nothing(server, tmp_path):
    clips = served.ucf101(server.www / "ucf")
    root = tmp_path / "ucf101"
    r = datatools("ucf101", "download", "--root", root, "--mirror", server.url("ucf/"))
    assert r.returncode == 0, r.stdout + r.stderr
    videos = root / "videos"
    assert {p.relative_to(videos).as_posix() for p in videos.rglob("*.avi")} == clips
    for name in ("classInd.txt", "trainlist02.txt"):  # as published, CRLF kept
        assert (root / "annotations" / name).read_bytes().startswith(
            (ANN / "ucf101" / name).read_bytes()[:40])
    assert not (root / "downloads" / "UCF101.rar").exists()  # removed once unpacked
    rec = records(root)
    assert rec["UCF101.rar"]["sha256"] == sha256(server.www / "ucf" / "UCF101.rar")
    assert rec["UCF101.rar"]["stage"] == "unpacked"
    assert_clean("ucf101", root, len(clips))

    asked = len(server.requests("/ucf/"))
    again = datatools("ucf101", "download", "--root", root, "--mirror", server.url("ucf/"))
    assert again.returncode == 0 and "2 already done" in again.stdout, again.stdout
    assert len(server.requests("/ucf/")) == asked


def test_an_unpacked_archive_is_trusted_only_while_the_files_it_placed_are_there(server, tmp_path):
    clips = served.ucf101(server.www / "ucf-again")
    root = tmp_path / "ucf101"
    get = ("ucf101", "download", "--root", root, "--mirror", server.url("ucf-again/"))
    assert datatools(*get).returncode == 0
    assert records(root)["UCF101.rar"]["placed"] == sorted(f"videos/{c}" for c in clips)
    one = sorted(clips)[0]
    aside = root / "quarantine" / "videos" / one  # where validate --quarantine puts it
    aside.parent.mkdir(parents=True)
    os.replace(root / "videos" / one, aside)
    asked = len(server.requests("/ucf-again/UCF101.rar"))
    again = datatools(*get)
    assert again.returncode == 0 and "2 already done" in again.stdout, again.stdout
    aside.unlink()  # gone for good: the archive is fetched and unpacked again
    again = datatools(*get)
    assert again.returncode == 0, again.stdout + again.stderr
    assert (root / "videos" / one).is_file() and "1 already done" in again.stdout, again.stdout
    assert len(server.requests("/ucf-again/UCF101.rar")) > asked


def test_hmdb51_nested_class_archives_and_flat_split_files(server, tmp_path):
    clips = served.hmdb51(server.www / "hmdb")
    root = tmp_path / "hmdb51"
    r = datatools("hmdb51", "download", "--root", root, "--mirror", server.url("hmdb/"), "--keep-archives")
    assert r.returncode == 0, r.stdout + r.stderr
    videos = root / "videos"
    assert {p.relative_to(videos).as_posix() for p in videos.rglob("*.avi")} == clips
    assert sorted(p.name for p in (root / "annotations").iterdir()) == sorted(
        f"{c}_test_split{s}.txt" for c in ("brush_hair", "cartwheel") for s in (1, 2, 3))
    assert (root / "downloads" / "hmdb51_org.rar").is_file()  # --keep-archives
    assert_clean("hmdb51", root, len(clips))


def test_kinetics400_tarballs_are_sorted_into_class_folders(server, tmp_path):
    www = server.www / "k400"
    k400 = ANN / "kinetics400" / "activitynet_2017"
    got = served.kinetics(www, "kinetics400", k400 / "kinetics-400_val.csv", k400 / "kinetics-400_test.csv",
                          ["abseiling", "air drumming", "zumba"], per_class=2,
                          tarball_of=lambda subset, i, row: f"part_{i % 2}.tar.gz",
                          leave_out=1)
    # The replacement tarball brings the clip left out of the val tarballs, plus a file that
    # no CSV names (reported, kept aside, not mixed into the class folders).
    served.tar_of(www / "replacement_for_corrupted_k400.tgz",
                  {f"replacement/{vid}.mp4": served.SHORT for vid in got["left_out"]}
                  | {"replacement/notinanycsv_000000_000010.mp4": served.SHORT})
    root = tmp_path / "kinetics400"
    r = datatools("kinetics400", "download", "--root", root, "--mirror", server.url("k400/"), "--jobs", "3")
    assert r.returncode == 0, r.stdout + r.stderr
    for subset, rows in got["rows"].items():
        for row in rows:
            folder = root / f"videos_{subset}" / (row["label"].replace(" ", "_") if "label" in row else "")
            assert (folder / f"{video_id(row)}.mp4").is_file(), (subset, row)
    assert (root / "downloads/unmatched/replacement/notinanycsv_000000_000010.mp4").is_file()
    assert "1 file(s) in the archives are in no annotation" in r.stdout
    tarball_requests = [q for q in server.requests("/k400/") if q.uri.endswith(".tar.gz")]
    assert len(tarball_requests) == 6  # 2 parts per subset
    assert_clean("kinetics400", root, sum(len(rows) for rows in got["rows"].values()))


def test_kinetics600_names_with_spaces_and_parentheses_and_missing_clips_reported(server, tmp_path):
    www = server.www / "k600"
    k600 = ANN / "kinetics600"
    classes = ["passing american football (not in game)", "playing ice hockey"]
    got = served.kinetics(www, "kinetics600", k600 / "kinetics-600_val.csv", k600 / "kinetics-600_test.csv",
                          classes, tarball_of=lambda subset, i, row: f"{row.get('label', 'test')}.tar.gz",
                          leave_out=1)
    root = tmp_path / "kinetics600"
    r = datatools("kinetics600", "download", "--root", root, "--mirror", server.url("k600/"))
    assert r.returncode == 0, r.stdout + r.stderr
    encoded = "/k600/val/passing%20american%20football%20%28not%20in%20game%29.tar.gz"
    assert [q.status for q in server.requests(encoded)] == [200]
    folder = root / "videos_val" / "passing_american_football_(not_in_game)"
    expected = [video_id(r) for r in got["rows"]["val"]
                if r["label"] == classes[0] and video_id(r) not in got["left_out"]]
    assert sorted(p.stem for p in folder.glob("*.mp4")) == sorted(expected)
    assert (root / "downloads" / "missing_val.txt").read_text().split() == got["left_out"]
    assert "1 val clip(s) named in the annotations were in no archive" in r.stdout
    built = build_lists("kinetics600", root, ["videos"], 2, False, None)
    assert [rec.video_id for rec in built.missing] == got["left_out"]


def test_sthv2_parts_from_dir_are_joined_by_magic_and_labels_renamed(tmp_path):
    require_tool("ffmpeg")
    manual = tmp_path / "manual"
    ids = served.sthv2(manual)
    root = tmp_path / "sthv2"
    no_source = datatools("sthv2", "download", "--root", root)
    assert no_source.returncode == 2 and "--from-dir" in no_source.stderr
    r = datatools("sthv2", "download", "--root", root, "--from-dir", manual)
    assert r.returncode == 0, r.stdout + r.stderr
    assert sorted(p.stem for p in (root / "videos").iterdir()) == sorted(ids)
    assert sorted(p.name for p in (root / "annotations").iterdir()) == [
        f"something-something-v2-{n}.json" for n in ("labels", "test", "train", "validation")]
    assert all(p.exists() for p in manual.iterdir())  # the user's files are left alone
    assert_clean("sthv2", root, len(ids))


def _kill_mid_file(server, prefix: str, root: Path, terminate: bool = False) -> int:
    """Start a download through a rate-limited location, stop it mid-file (SIGKILL, or with
    `terminate` SIGTERM as a batch system sends at walltime); returns the size of the part it
    left."""
    part = root / "downloads" / "UCF101.rar.part"
    proc = subprocess.Popen([str(BIN / "datatools"), "ucf101", "download", "--root", str(root),
                             "--mirror", server.url(prefix)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 30
    while not (part.exists() and part.stat().st_size > 300_000):
        assert proc.poll() is None and time.monotonic() < deadline, "download ended before the kill"
        time.sleep(0.02)
    if terminate:
        os.kill(proc.pid, signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 143, out + err
        assert "Traceback" not in out + err
        # The splits zip is small and done first; the archive is cut mid-file.
        assert "terminated: 1 of 2 files done in download; run the same command again to " \
               "resume" in err.splitlines(), err
    else:
        kill_group(proc)  # the driver and every worker, mid-run
        proc.communicate()
    time.sleep(0.5)  # nginx logs the cut request once it notices the closed connection
    return part.stat().st_size


@pytest.mark.slow
def test_a_terminated_download_says_how_far_it_got_and_resumes_only_the_remainder(server, tmp_path):
    clips = served.ucf101(server.www / "resume", quota=(("trainlist01.txt", 4), ("testlist01.txt", 2)))
    archive = server.www / "resume" / "UCF101.rar"
    root = tmp_path / "ucf101"
    left = _kill_mid_file(server, "slow/resume/", root, terminate=True)
    assert 0 < left < archive.stat().st_size
    r = datatools("ucf101", "download", "--root", root, "--mirror", server.url("slow/resume/"))
    assert r.returncode == 0, r.stdout + r.stderr
    asked = server.requests("/slow/resume/UCF101.rar")
    assert len(asked) == 2 and asked[1].range == f"bytes={left}-" and asked[1].status == 206
    assert asked[1].body_bytes == archive.stat().st_size - left
    assert records(root)["UCF101.rar"]["sha256"] == sha256(archive)
    assert len(list((root / "videos").rglob("*.avi"))) == len(clips)


def test_a_server_ignoring_range_restarts_from_zero_not_a_spliced_file(server, tmp_path):
    served.ucf101(server.www / "norange", quota=(("trainlist01.txt", 4), ("testlist01.txt", 2)))
    archive = server.www / "norange" / "UCF101.rar"
    root = tmp_path / "ucf101"
    _kill_mid_file(server, "slow-norange/norange/", root)
    r = datatools("ucf101", "download", "--root", root, "--mirror", server.url("slow-norange/norange/"))
    assert r.returncode == 0, r.stdout + r.stderr
    asked = server.requests("/slow-norange/norange/UCF101.rar")
    assert asked[-1].status == 200 and asked[-1].body_bytes == archive.stat().st_size
    assert records(root)["UCF101.rar"]["sha256"] == sha256(archive)


def test_checksum_mismatch_fails_clearly_and_the_file_is_not_used(server, tmp_path):
    served.ucf101(server.www / "badsum")
    sums = tmp_path / "SHA256SUMS"
    sums.write_text(f"{'0' * 64}  UCF101.rar\n")
    root = tmp_path / "ucf101"
    r = datatools("ucf101", "download", "--root", root, "--mirror", server.url("badsum/"),
                  "--checksums", sums)
    assert r.returncode == 1
    assert "UCF101.rar: checksum mismatch: sha256" in r.stderr
    assert not list((root / "downloads").glob("UCF101.rar*"))
    assert not (root / "videos").exists()
    assert (root / "annotations" / "classInd.txt").is_file()  # the other file was fine


@pytest.mark.parametrize("where, options, message", [
    ("nothing-here/", [], "HTTP 404 Not Found"),
    ("flaky/", ["--retries", "1"], "HTTP 503"),
    ("stall/", ["--timeout", "1", "--retries", "0"], "timed out waiting for the server"),
    (None, ["--retries", "1"], "connection refused (gave up after 2 failed tries"),
])
def test_server_errors_give_clear_errors_and_a_nonzero_exit(server, tmp_path, where, options, message):
    mirror = server.url(where) if where else f"http://127.0.0.1:{free_port()}/"
    started = time.monotonic()
    r = datatools("ucf101", "download", "--root", tmp_path / "ucf101", "--mirror", mirror, *options)
    assert r.returncode == 1
    failures = [line for line in r.stderr.splitlines() if not line.startswith("log: ")]
    assert len(failures) == 2 and all(ln.startswith("error: ") and message in ln for ln in failures), \
        r.stderr
    assert time.monotonic() - started < 20


def test_a_hostile_archive_from_the_server_is_refused_and_nothing_escapes(server, tmp_path):
    www = server.www / "hostile"
    served.ucf101(www)
    served.zip_of(www / "UCF101.rar", {"UCF101/Archery/ok.avi": served.CLIP,
                                       "../../escaped.avi": served.CLIP})
    root = tmp_path / "deep" / "ucf101"
    r = datatools("ucf101", "download", "--root", root, "--mirror", server.url("hostile/"))
    assert r.returncode == 1
    assert "member '../../escaped.avi' contains '..'; nothing was extracted" in r.stderr
    assert not list(tmp_path.rglob("escaped.avi")) and not list(tmp_path.rglob("ok.avi"))
    assert not (root / "videos").exists()


def test_an_archive_not_laid_out_as_the_dataset_publishes_is_refused(server, tmp_path):
    """A UCF101.rar without UCF101/<Class>/*.avi (here: the clips flat) is not unpacked into
    videos/ with exit 0: it is refused, saying what was expected."""
    www = server.www / "flat"
    served.ucf101(www)
    served.zip_of(www / "UCF101.rar", {"UCF101/v_Archery_g01_c01.avi": served.CLIP,
                                       "UCF101/v_Archery_g02_c01.avi": served.CLIP})
    root = tmp_path / "ucf101"
    r = datatools("ucf101", "download", "--root", root, "--mirror", server.url("flat/"))
    assert r.returncode == 1, r.stdout + r.stderr
    (line,) = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert "UCF101.rar: refused, it does not hold ucf101's videos as published (expected " \
           "<Class>/<name>.<ext> videos, found 2 video(s), e.g. v_Archery_g01_c01.avi)" in line
    assert not (root / "videos").exists() and not (root / "downloads" / "UCF101.rar").exists()


def test_fetch_downloads_plain_urls_in_parallel_and_checks_a_given_sha256(server, tmp_path):
    www = server.www / "plain"
    www.mkdir()
    files = {"a b (1).bin": os.urandom(300_000), "c.bin": os.urandom(200_000)}
    for name, data in files.items():
        (www / name).write_bytes(data)
    urls = [server.url(f"plain/{name}") for name in files]  # spaces and parentheses as typed
    r = datatools("fetch", *urls, "--to", tmp_path / "got", "--jobs", "2")
    assert r.returncode == 0, r.stdout + r.stderr
    for name, data in files.items():
        assert (tmp_path / "got" / name).read_bytes() == data
        assert f"{hashlib.sha256(data).hexdigest()}  {tmp_path / 'got' / name}" in r.stdout
    bad = datatools("fetch", urls[1], "--to", tmp_path / "bad", "--sha256", "f" * 64)
    assert bad.returncode == 1 and "c.bin: checksum mismatch: sha256" in bad.stderr
    assert not list((tmp_path / "bad").glob("c.bin*"))


def test_a_line_cut_by_a_crash_in_the_records_loses_no_later_entry(server, tmp_path):
    """A crash can cut the last line of downloads/records.jsonl short; the next download's
    entry must start a line of its own (glued to the cut one it would be lost, and the file
    fetched again by every later run)."""
    www = server.www / "records"
    www.mkdir()
    for name in ("first.bin", "second.bin"):
        (www / name).write_bytes(os.urandom(100_000))
    downloads = tmp_path / "root" / "downloads"
    assert datatools("fetch", server.url("records/first.bin"), "--to", downloads).returncode == 0
    log = downloads / "records.jsonl"
    whole = log.read_bytes()
    with open(log, "ab") as f:  # an append a crash stopped: half an entry, no newline
        f.write(b'{"name": "third.bin", "url": "http://127.0.0.1/th')
    r = datatools("fetch", server.url("records/second.bin"), "--to", downloads)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = log.read_bytes().splitlines(keepends=True)
    assert log.read_bytes().startswith(whole) and len(lines) == 2
    assert [json.loads(line)["name"] for line in lines] == ["first.bin", "second.bin"]
    asked = {n: len(server.requests(f"/records/{n}")) for n in ("first.bin", "second.bin")}
    again = datatools("fetch", server.url("records/first.bin"), server.url("records/second.bin"),
                "--to", downloads)
    assert again.returncode == 0, again.stdout + again.stderr
    time.sleep(0.3)  # nginx writes a request's log line when it ends
    assert {n: len(server.requests(f"/records/{n}")) for n in asked} == asked  # nothing fetched again


def test_redirects_are_followed_only_to_http_urls(server, tmp_path):
    """A 302 to another http path is followed; one to ftp:// is refused in one line, as
    the same URL typed would be, and nothing is written."""
    www = server.www / "redirected"
    www.mkdir()
    (www / "clip.bin").write_bytes(b"the file")
    moved = datatools("fetch", server.url("moved/redirected/clip.bin"), "--to", tmp_path / "got")
    assert moved.returncode == 0, moved.stdout + moved.stderr
    assert (tmp_path / "got" / "clip.bin").read_bytes() == b"the file"
    ftp = datatools("fetch", server.url("to-ftp/redirected/clip.bin"), "--to", tmp_path / "ftp",
                    "--retries", "0")
    assert ftp.returncode == 1, ftp.stdout + ftp.stderr
    errors = [ln for ln in ftp.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1 and "redirects to it" in errors[0] and "not ftp://" in errors[0], ftp.stderr
    assert not [p.name for p in tmp_path.glob("ftp/**/clip.bin*")]


def test_a_name_from_a_url_is_one_component_never_a_path(server, tmp_path):
    www = server.www / "names"
    (www / "sub").mkdir(parents=True)
    (www / "evil.txt").write_bytes(b"served")  # nginx resolves sub/../evil.txt to this file
    dest = tmp_path / "a" / "dest"
    dest.mkdir(parents=True)
    r = datatools("fetch", server.url("names/sub/%2e%2e%2fevil.txt"), "--to", dest)
    assert r.returncode == 0, r.stderr
    assert (dest / "evil.txt").read_bytes() == b"served"
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")
                  if not p.name.startswith(".") and p.name != "records.jsonl") == \
        ["a", "a/dest", "a/dest/evil.txt"]
    for url, why in [("names/%2e%2e", "gives no usable file name (it must be one path component"),
                     ("names/sub/%2e%2e%2f", "gives no usable file name"),
                     ("names/a%00b.txt", "gives no usable file name"),
                     ("names/%2e", "gives no usable file name"),
                     (f"names/{'x' * 256}", "gives no usable file name"),
                     ("names/records.jsonl", "is one this downloader keeps for its own records"),
                     ("names/big.iso.part", "is one this downloader keeps for its own records")]:
        bad = datatools("fetch", server.url(url), "--to", dest)
        assert bad.returncode == 1
        (line,) = [ln for ln in bad.stderr.splitlines() if ln.startswith("error:")]
        assert why in line
    assert sorted(p.name for p in dest.iterdir() if not p.name.startswith(".")) == \
        ["evil.txt", "records.jsonl"]


@pytest.mark.parametrize("text, name", [("%2e%2e%2fevil.txt", "evil.txt"), ("a%2Fb%5Cc.txt", "c.txt"),
                                        ("..%2f..%2f..%2fetc%2fpasswd", "passwd"),
                                        ("clip%20(1).mp4", "clip (1).mp4")])
def test_names_from_urls_keep_only_their_last_component(text, name):
    from datatools.acquire.http import safe_file_name
    assert safe_file_name(text, "test") == name


def test_a_truncated_archive_is_not_kept_and_is_fetched_again(server, tmp_path):
    www = server.www / "cut"
    served.ucf101(www)
    splits = www / "UCF101TrainTestSplits-RecognitionTask.zip"
    whole = splits.read_bytes()
    splits.write_bytes(whole[: len(whole) // 2])  # the mirror holds a cut copy
    root = tmp_path / "ucf101"
    r = datatools("ucf101", "download", "--root", root, "--mirror", server.url("cut/"))
    assert r.returncode == 1
    (line,) = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert f"{splits.name}: cannot read the zip archive" in line
    assert line.endswith("(it was deleted; re-run to fetch it again)") and "Traceback" not in r.stderr
    assert not (root / "downloads" / splits.name).exists()
    assert records(root)[splits.name]["stage"] == "failed"
    splits.write_bytes(whole)  # the mirror is mended
    asked = len(server.requests(f"/cut/{splits.name}"))
    again = datatools("ucf101", "download", "--root", root, "--mirror", server.url("cut/"))
    assert again.returncode == 0, again.stderr
    assert len(server.requests(f"/cut/{splits.name}")) == asked + 1
    assert (root / "annotations" / "classInd.txt").is_file()
    assert records(root)[splits.name]["stage"] == "unpacked"


# --- servers that drop connections and ask to come back later ------------------------------

class CuttingRelay:
    """nginx's upstream for /cut/: forwards each request to nginx's plain location and cuts
    the connection after `cut` bytes of the answer. nginx (unbuffered) then closes its client's
    connection mid-body, as a flaky server or network does."""

    def __init__(self, upstream_port: int, cut: int, prefix: bytes = b""):
        import socket
        import threading
        self.upstream, self.cut, self.prefix = upstream_port, cut, prefix
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.cuts = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        import socket
        import threading
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._relay, args=(client, socket), daemon=True).start()

    def _relay(self, client, socket) -> None:
        with client, socket.create_connection(("127.0.0.1", self.upstream)) as up:
            request = b""
            while b"\r\n\r\n" not in request:
                chunk = client.recv(65536)
                if not chunk:
                    return
                request += chunk
            method, rest = request.split(b" ", 1)
            up.sendall(method + b" " + self.prefix + rest)  # under nginx's `prefix` location
            sent = 0
            while sent < self.cut:
                chunk = up.recv(min(65536, self.cut - sent))
                if not chunk:
                    return  # the whole answer fitted
                client.sendall(chunk)
                sent += len(chunk)
            self.cuts += 1

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(scope="module")
def flaky_server(tmp_path_factory):
    """nginx with /cut/ (through CuttingRelay, 2 MiB per connection), /cut-norange/ (the same,
    ignoring Range) and /busy/ (one request per 2 s; more get 429 with Retry-After: 2)."""
    require_tool("nginx")
    base = tmp_path_factory.mktemp("flaky")
    port = free_port()
    relay = CuttingRelay(port, 2 << 20)
    norange = CuttingRelay(port, 2 << 20, prefix=b"/norange")
    ng = Nginx(base, extra_http="limit_req_zone $binary_remote_addr zone=busy:1m rate=30r/m;",
               extra_server=f"""
        location /cut/ {{ proxy_pass http://127.0.0.1:{relay.port}/; proxy_buffering off; }}
        location /norange/ {{ alias {base}/www/; max_ranges 0; }}
        location /cut-norange/ {{ proxy_pass http://127.0.0.1:{norange.port}/;
                                 proxy_buffering off; }}
        location /busy/ {{ alias {base}/www/; limit_req zone=busy nodelay; limit_req_status 429;
                          add_header Retry-After 2 always; }}""", port=port)
    yield ng, relay
    ng.stop()
    relay.close()
    norange.close()


@pytest.mark.slow
def test_a_download_cut_more_often_than_the_retry_budget_completes_byte_identical(flaky_server, tmp_path):
    """12 MiB through a server that drops every connection after 2 MiB: seven tries, more
    than --retries 2 allows in a row; each try brings bytes and resets the budget."""
    server, relay = flaky_server
    data = os.urandom(12 << 20)
    (server.www / "big.bin").write_bytes(data)
    r = datatools("fetch", server.url("cut/big.bin"), "--to", tmp_path, "--retries", "2", timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "big.bin").read_bytes() == data
    assert f"{hashlib.sha256(data).hexdigest()}  {tmp_path / 'big.bin'}" in r.stdout
    tries = server.requests("/cut/big.bin")
    assert relay.cuts >= 5 and len(tries) >= 6, tries
    assert all(t.range.startswith("bytes=") for t in tries[1:])  # each try resumed


def test_a_server_that_ignores_range_and_drops_still_runs_out_of_tries(flaky_server, tmp_path):
    """Every try starts again from byte 0 and is cut at 2 MiB: bytes arrive each time, but the
    part never gets further, so --retries 2 ends it after three tries, not never."""
    server, _ = flaky_server
    (server.www / "big2.bin").write_bytes(os.urandom(6 << 20))
    r = datatools("fetch", server.url("cut-norange/big2.bin"), "--to", tmp_path, "--retries", "2",
            timeout=120)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "gave up after 3 failed tries in a row, 3 in all" in r.stderr
    assert len(server.requests("/cut-norange/big2.bin")) == 3
    assert not (tmp_path / "big2.bin").exists()


def test_a_busy_server_is_asked_again_when_its_retry_after_says(flaky_server, tmp_path):
    """429 with Retry-After: 2. With a backoff of 10 ms, five quick retries would all be
    refused inside nginx's 2 s window; waiting what the server said gets the file."""
    import urllib.request

    from datatools.acquire.http import HttpOptions, Records, Remote, fetch
    server, _ = flaky_server
    data = os.urandom(100_000)
    (server.www / "small.bin").write_bytes(data)
    urllib.request.urlopen(server.url("busy/small.bin")).read()  # takes the window's one request
    started = time.monotonic()
    got = fetch(Remote(server.url("busy/small.bin"), "small.bin"), tmp_path / "small.bin",
                Records(tmp_path), HttpOptions(retries=5, backoff=0.01))
    assert got.path.read_bytes() == data
    statuses = [t.status for t in server.requests("/busy/small.bin")]
    assert statuses[0] == 200 and 429 in statuses and statuses[-1] == 200, statuses
    assert statuses.count(429) <= 2, statuses  # asked again when told, not in a tight loop
    assert time.monotonic() - started >= 1.5
