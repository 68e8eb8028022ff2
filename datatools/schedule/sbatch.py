"""`datatools cluster sbatch`: a SLURM batch script that runs one datatools command as the
driver job. The driver is small (it schedules and writes the manifest); with `--cluster slurm`
in its command it submits its own worker jobs, which do the work."""

from __future__ import annotations

import shlex
import shutil
import sys
from pathlib import Path

from ..core.errors import UserError


def batch_script(command: list[str], job_name: str = "datatools", partition: str | None = None,
                 account: str | None = None, time: str = "24:00:00", cpus: int = 1,
                 mem: str = "4G", extra: list[str] = (), workdir: Path | None = None) -> str:
    if not command:
        raise UserError("give the datatools command to run after `--`, e.g. "
                        "`-- ucf101 prepare --root data/ucf101 --cluster slurm`")
    exe = shutil.which("datatools") or str(Path(sys.executable).with_name("datatools"))
    workdir = (workdir or Path.cwd()).resolve()
    lines = ["#!/bin/bash",
             f"#SBATCH --job-name={job_name}",
             f"#SBATCH --time={time}",
             f"#SBATCH --cpus-per-task={cpus}",
             f"#SBATCH --mem={mem}",
             f"#SBATCH --output={workdir}/{job_name}-%j.log"]
    if partition:
        lines.append(f"#SBATCH --partition={partition}")
    if account:
        lines.append(f"#SBATCH --account={account}")
    lines += [f"#SBATCH {d}" if not d.startswith("#SBATCH") else d for d in extra]
    lines += ["",
              "# The driver: schedules the work and writes the manifest. With --cluster slurm",
              "# it submits its worker jobs itself; they end when it ends.",
              "set -euo pipefail",
              f"cd {shlex.quote(str(workdir))}",
              "exec " + " ".join(shlex.quote(a) for a in [exe, *command]),
              ""]
    return "\n".join(lines)
