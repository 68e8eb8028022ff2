"""`datatools <dataset> prepare`: the whole pipeline in one command, on one cluster setting.

Steps, in order: download, validate, lists (videos), extract, frame-lists (rawframes, flow).
Every step is itself resumable (downloads resume, extraction skips finished videos, lists
are rewritten from the manifest), so a prepare that is killed anywhere is finished by
running the same command again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .acquire.session import DownloadOptions
from .errors import UserError
from .extract.options import ExtractOptions
from .lock import root_lock
from .report import console
from .schedule.client import ClusterOptions

STEPS = ("download", "validate", "lists", "extract", "frame-lists")


@dataclass
class PrepareOptions:
    steps: list[str] = field(default_factory=lambda: list(STEPS))
    download: DownloadOptions = field(default_factory=DownloadOptions)
    level: str = "quick"
    extract: ExtractOptions = field(default_factory=ExtractOptions)
    cluster: ClusterOptions = field(default_factory=ClusterOptions)


def parse_steps(text: str) -> list[str]:
    steps = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in steps if s not in STEPS]
    if unknown or not steps:
        raise UserError(f"--steps: unknown {', '.join(unknown) or '(none)'}; choose from "
                        f"{','.join(STEPS)}")
    return [s for s in STEPS if s in steps]  # always in pipeline order


def prepare(name: str, root: Path, opts: PrepareOptions) -> bool:
    """Run the steps; returns False if a step reported problems (the later steps still ran
    on what was good, as each step does on its own)."""
    root = Path(root)
    if "download" in opts.steps:
        root.mkdir(parents=True, exist_ok=True)
    with root_lock(root, "prepare"):
        return _run_steps(name, root, opts)


def _run_steps(name: str, root: Path, opts: PrepareOptions) -> bool:
    from . import datasets, report
    from .acquire.session import download
    from .extract.run import extract
    from .lists.build import build_lists
    from .validate.run import validate

    ok = True
    for n, step in enumerate(opts.steps, start=1):
        console.rule(f"{n}/{len(opts.steps)} {step}")
        if step == "download":
            result = download(name, root, opts.download)
            report.print_download_summary(result, root)
            for failure in result.failures:
                console.print(f"[red]error: {failure}[/red]")
            if result.failures:
                return False  # later steps need the files
        elif step == "validate":
            checked = validate(name, root, opts.level, opts.cluster)
            report.print_validate_summary(checked, datasets.get(name).catalog)
            ok &= not checked.not_ok
        elif step in ("lists", "frame-lists"):
            formats = ["videos"] if step == "lists" else ["videos", "rawframes", "flow"]
            built = build_lists(name, root, formats)
            report.print_build_summary(built, root)
            ok &= not built.problems
        elif step == "extract":
            extracted = extract(root, opts.extract, cluster=opts.cluster)
            report.print_extract_summary(extracted, root)
            ok &= not extracted.failures
    return ok
