"""A real one-node SLURM cluster for the tests: munged, slurmctld and slurmd of Debian's
slurm-wlm, with a slurm.conf written for this host (its CPUs and memory as `slurmd -C`
reports them), private ports, state and logs under a temporary folder. Client commands
(sbatch, squeue, scancel, and dask-jobqueue, which calls them) find it through SLURM_CONF.
There is no accounting database; finished jobs are logged by jobcomp/filetxt instead."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

from nginx import free_port

CONF = """ClusterName=datatools-test
SlurmctldHost={host}
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
SlurmUser=root
AuthType=auth/munge
AuthInfo=socket={base}/munge.sock
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
SlurmctldPidFile={base}/slurmctld.pid
SlurmdPidFile={base}/slurmd.pid
SlurmdSpoolDir={base}/spool
StateSaveLocation={base}/state
SlurmctldLogFile={base}/slurmctld.log
SlurmdLogFile={base}/slurmd.log
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc={base}/jobcomp.log
{node} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""
DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue")


def available() -> bool:
    return all(shutil.which(d) for d in DAEMONS) and Path("/etc/munge/munge.key").exists()


class Slurm:
    def __init__(self, base: Path):
        self.base = base
        for sub in ("spool", "state"):
            (base / sub).mkdir(parents=True, exist_ok=True)
        node = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, check=True)
        node_line = node.stdout.splitlines()[0]  # NodeName=<host> CPUs=… RealMemory=…
        host = node_line.split()[0].split("=", 1)[1]
        self.conf = base / "slurm.conf"
        self.conf.write_text(CONF.format(host=host, base=base, ctld_port=free_port(),
                                         d_port=free_port(), node=node_line))
        self.env = dict(os.environ, SLURM_CONF=str(self.conf))
        subprocess.run(["munged", "--force", f"--socket={base}/munge.sock",
                        "--key-file=/etc/munge/munge.key", f"--pid-file={base}/munged.pid",
                        f"--log-file={base}/munged.log", f"--seed-file={base}/munge.seed"],
                       check=True, capture_output=True)
        for daemon in ("slurmctld", "slurmd"):
            subprocess.run([daemon, "-f", str(self.conf)], check=True, capture_output=True,
                           env=self.env)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            out = self.run("sinfo", "-h", "-o", "%T").stdout.strip()
            if out in ("idle", "mixed", "allocated"):
                return
            time.sleep(0.2)
        raise RuntimeError(f"SLURM did not come up: sinfo says {out!r}; see {base}/slurmctld.log")

    def run(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(list(args), capture_output=True, text=True, env=self.env)

    def finished_jobs(self) -> list[dict[str, str]]:
        """Jobs the controller logged as ended (JobId, Name, JobState, …)."""
        log = self.base / "jobcomp.log"
        jobs = []
        for line in log.read_text().splitlines() if log.exists() else []:
            jobs.append(dict(field.split("=", 1) for field in line.split() if "=" in field))
        return jobs

    def stop(self) -> None:
        self.run("scancel", "--user", "root")
        for name in ("slurmd", "slurmctld", "munged"):
            pid_file = self.base / f"{name}.pid"
            if pid_file.exists():
                try:
                    os.kill(int(pid_file.read_text().strip()), 15)
                except (ProcessLookupError, ValueError):
                    pass
