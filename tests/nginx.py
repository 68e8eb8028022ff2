"""A real nginx on loopback for the download tests, and its access log.

Locations (each serves the same www/ folder):
  /            plain, with Range support (nginx's default)
  /slow/       limit_rate 512k, so that a test can kill a download mid-file
  /slow-norange/  limited and ignoring Range (max_ranges 0): answers 200 with the whole file
  /flaky/      always 503
  /stall/      proxied to a socket that accepts and never answers: the client times out
  /moved/      302 to the same path under / (followed); /to-ftp/ 302 to ftp:// (refused)
The access log records `uri status body_bytes_sent "range"` per request.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

CONF = """
worker_processes 1;
daemon off;
pid {base}/nginx.pid;
error_log {base}/error.log warn;
{user}
events {{ worker_connections 256; }}
http {{
    log_format bytes '$request_uri $status $body_bytes_sent "$http_range"';
    access_log {base}/access.log bytes;
    client_body_temp_path {base}/tmp/body;
    proxy_temp_path {base}/tmp/proxy;
    fastcgi_temp_path {base}/tmp/fastcgi;
    uwsgi_temp_path {base}/tmp/uwsgi;
    scgi_temp_path {base}/tmp/scgi;
    default_type application/octet-stream;
    sendfile on;
    {extra_http}
    server {{
        listen 127.0.0.1:{port};
        root {base}/www;
        location /slow/ {{ alias {base}/www/; limit_rate 512k; }}
        location /slow-norange/ {{ alias {base}/www/; limit_rate 512k; max_ranges 0; }}
        location /flaky/ {{ return 503; }}
        location /stall/ {{ proxy_pass http://127.0.0.1:{silent}/; proxy_read_timeout 120s; }}
        location ~ ^/moved/(.*)$ {{ return 302 /$1; }}
        location ~ ^/to-ftp/(.*)$ {{ return 302 ftp://127.0.0.1:{port}/$1; }}
        {extra_server}
    }}
}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Request:
    uri: str
    status: int
    body_bytes: int
    range: str


class Nginx:
    def __init__(self, base: Path, extra_http: str = "", extra_server: str = "",
                 port: int | None = None):
        self.base = base
        self.www = base / "www"
        self.www.mkdir(parents=True, exist_ok=True)
        (base / "tmp").mkdir(exist_ok=True)
        self.port = port or free_port()
        # The stall target: accepts connections (kernel backlog) and never reads or answers.
        self.silent = socket.socket()
        self.silent.bind(("127.0.0.1", 0))
        self.silent.listen(64)
        conf = base / "nginx.conf"
        conf.write_text(CONF.format(base=base, port=self.port, silent=self.silent.getsockname()[1],
                                    user="user root;" if os.geteuid() == 0 else "",
                                    extra_http=extra_http, extra_server=extra_server))
        self.proc = subprocess.Popen(["nginx", "-c", str(conf), "-p", str(base)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited: {self.proc.stderr.read().decode()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        else:
            raise RuntimeError("nginx did not start listening")

    def url(self, path: str = "") -> str:
        return f"http://127.0.0.1:{self.port}/{path.lstrip('/')}"

    def requests(self, prefix: str = "") -> list[Request]:
        """Access-log entries whose URI starts with `prefix` (log lines are written when a
        request ends, so a test waits for the client to finish before reading)."""
        log = self.base / "access.log"
        out = []
        for line in log.read_text().splitlines() if log.exists() else []:
            uri, status, sent, rng = line.split(" ", 3)
            if uri.startswith(prefix):
                out.append(Request(uri, int(status), int(sent), rng.strip('"')))
        return out

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)
        self.silent.close()
