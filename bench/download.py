"""Benchmark: `datatools fetch` (the downloader under `download`) vs curl, from nginx on loopback.

Cases, each timed for both tools in the same run, alternating, medians of --repeat:
  - one 1 GiB file, unthrottled (CPU-bound): curl -o, then `openssl dgst -sha256` (the fastest
    sha256 command here: coreutils' sha256sum does not use the CPU's SHA instructions and
    takes 3 s per GiB, openssl 0.6 s), vs datatools, which hashes on a second thread while it
    downloads; the checksum is included on both sides;
  - the same file with nginx `limit_rate 50m` per connection, like a real remote server;
  - --jobs 4 over 64 files of 16 MiB, limit_rate 25m per connection: `xargs -P 4` running
    curl + openssl per file vs `datatools fetch --jobs 4`.

    python bench/download.py [--size-mib 1024] [--repeat 3]

Output goes to a folder under bench/out; the served files are written once per run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from nginx import Nginx  # noqa: E402

BIN = Path(sys.executable).parent
SHA = "openssl dgst -sha256 -r"
LIMITED = """
        location /limit50/ { alias %(www)s/; limit_rate 50m; }
        location /limit25/ { alias %(www)s/; limit_rate 25m; }
"""


def write_random(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 64 << 20)
            f.write(os.urandom(n))
            left -= n


def timed(cmd: list[str] | str, shell: bool = False) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, shell=shell, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--files", type=int, default=64)
    ap.add_argument("--file-mib", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    for tool in ("nginx", "curl", "openssl"):
        if not shutil.which(tool):
            sys.exit(f"{tool} is needed for this benchmark")

    out = HERE / "out" / f"download-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True)
    server_dir = out / "server"
    server_dir.mkdir()
    www = server_dir / "www"
    www.mkdir()
    ng = Nginx(server_dir, extra_server=LIMITED % {"www": www})
    try:
        big = www / "big.bin"
        write_random(big, args.size_mib << 20)
        many = [www / "many" / f"part_{i:03d}.bin" for i in range(args.files)]
        many[0].parent.mkdir()
        for path in many:
            write_random(path, args.file_mib << 20)
        # Warm the page cache so that the first timed run does not pay for disk reads.
        subprocess.run(["cat", str(big), *map(str, many)], stdout=subprocess.DEVNULL, check=True)
        rows = []
        for label, prefix in (("1 file, unthrottled", ""), ("1 file, limit_rate 50m", "limit50/")):
            url = ng.url(prefix + "big.bin")
            rows.append((label, args.size_mib, *compare(
                lambda d, url=url: f"curl -s -o {d}/big.bin {url} && {SHA} {d}/big.bin",
                lambda d, url=url: [str(BIN / "datatools"), "fetch", url, "--to", str(d)],
                out, args.repeat)))
        urls = [ng.url("limit25/many/" + p.name) for p in many]
        url_file = out / "urls.txt"
        url_file.write_text("\n".join(urls) + "\n")
        rows.append((f"{args.files} files, --jobs 4, limit_rate 25m", args.files * args.file_mib, *compare(
            lambda d: (f"cd {d} && xargs -P 4 -I{{}} sh -c 'curl -s -O \"$1\" && "
                       f"{SHA} \"$(basename \"$1\")\"' _ {{}} < {url_file}"),
            lambda d: [str(BIN / "datatools"), "fetch", *urls, "--to", str(d), "--jobs", "4"],
            out, args.repeat)))
    finally:
        ng.stop()
        shutil.rmtree(server_dir, ignore_errors=True)

    print(f"\nmedians of {args.repeat}; throughput = MiB / median seconds")
    print(f"{'case':<42}{'MiB':>6}{'curl+openssl s':>18}{'datatools s':>13}{'curl MiB/s':>12}"
          f"{'ours MiB/s':>12}{'ours/curl':>11}")
    for label, mib, curl_s, ours_s in rows:
        print(f"{label:<42}{mib:>6}{curl_s:>18.2f}{ours_s:>13.2f}{mib / curl_s:>12.0f}"
              f"{mib / ours_s:>12.0f}{curl_s / ours_s:>10.2f}x")


def compare(curl_cmd, ours_cmd, out: Path, repeat: int) -> tuple[float, float]:
    curl_t, ours_t = [], []
    for i in range(repeat):
        for name, make, times in (("curl", curl_cmd, curl_t), ("ours", ours_cmd, ours_t)):
            dest = out / f"{name}-{len(list(out.iterdir()))}-{i}"
            dest.mkdir()
            cmd = make(dest)
            times.append(timed(cmd, shell=isinstance(cmd, str)))
            shutil.rmtree(dest)  # large files: deleting them does not slow the next run
        print(f"  run {i + 1}: curl {curl_t[-1]:.2f} s, datatools {ours_t[-1]:.2f} s", flush=True)
    return statistics.median(curl_t), statistics.median(ours_t)


if __name__ == "__main__":
    main()
