"""A real Dask cluster of separate processes, as a lab starts one by hand: `dask scheduler`
and `dask worker` commands on loopback, each in a process group of its own, ended by PID."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from nginx import free_port

DASK = Path(sys.executable).parent / "dask"


class DaskProcesses:
    def __init__(self, logs: Path):
        self.logs = logs
        logs.mkdir(parents=True, exist_ok=True)
        self.address = f"tcp://127.0.0.1:{free_port()}"
        self.procs: list[subprocess.Popen] = []
        self._start("scheduler", ["scheduler", "--host", "127.0.0.1",
                                  "--port", self.address.rsplit(":", 1)[1], "--no-dashboard"])

    def _start(self, name: str, args: list[str], env: dict | None = None) -> None:
        log = open(self.logs / f"{name}-{len(self.procs)}.log", "wb")
        self.procs.append(subprocess.Popen([str(DASK), *args], stdout=log, stderr=log,
                                           env={**os.environ, **(env or {})},
                                           start_new_session=True))

    def add_workers(self, n: int, nthreads: int = 1, resources: str | None = None,
                    name: str = "cpu", env: dict | None = None) -> None:
        """`n` worker processes under one `dask worker` command (named `name-0`…)."""
        args = ["worker", self.address, "--nworkers", str(n), "--nthreads", str(nthreads),
                "--name", name, "--no-dashboard", "--memory-limit", "0"]
        if resources:
            args += ["--resources", resources]
        self._start(f"worker-{name}", args, env)

    def wait_for(self, client, n: int, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while len(client.scheduler_info(n_workers=-1)["workers"]) < n:
            assert time.monotonic() < deadline, f"fewer than {n} workers joined; see {self.logs}"
            time.sleep(0.2)

    def stop(self) -> None:
        for proc in reversed(self.procs):
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
        for proc in self.procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
