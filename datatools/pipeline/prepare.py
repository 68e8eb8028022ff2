"""`datatools <dataset> prepare`: the whole pipeline in one command, on one cluster setting.

Steps, in order: download, validate, lists (videos), extract, frame-lists (rawframes, flow).
Every step is itself resumable (downloads resume, extraction skips finished videos, lists
are rewritten from the manifest), so a prepare that is killed anywhere is finished by
running the same command again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .. import datasets
from ..acquire.session import DownloadOptions
from ..core.console import heading, plain
from ..core.errors import UserError
from ..extract.options import ExtractOptions
from ..extract.run import Selection
from ..lists.build import ListOptions
from ..root.lock import root_lock
from ..schedule.client import ClusterOptions
from ..validate.run import ValidateOptions

STEPS = ("download", "validate", "lists", "extract", "frame-lists")


@dataclass
class PrepareOptions:
    steps: list[str] = field(default_factory=lambda: list(STEPS))
    download: DownloadOptions = field(default_factory=DownloadOptions)
    validating: ValidateOptions = field(default_factory=ValidateOptions)
    listing: ListOptions = field(default_factory=ListOptions)
    extract: ExtractOptions = field(default_factory=ExtractOptions)
    selection: Selection = field(default_factory=Selection)
    cluster: ClusterOptions = field(default_factory=ClusterOptions)
    strict: bool = False  # missing or bad videos make the run fail, as with each step's --strict
    force: bool = False  # validate probes all again; extract redoes other parameters' folders


def parse_steps(text: str) -> list[str]:
    steps = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in steps if s not in STEPS]
    if unknown or not steps:
        raise UserError(f"--steps: unknown {', '.join(unknown) or '(none)'}; choose from "
                        f"{','.join(STEPS)}")
    return [s for s in STEPS if s in steps]  # always in pipeline order


def prepare(name: str, root: Path, opts: PrepareOptions) -> bool:
    """Run the steps; returns False if a step failed on some items (a download, a video's
    extraction), or with `strict` if videos are missing or bad. Missing videos alone are a
    count in the summary: Kinetics always has some."""
    root = Path(root)
    datasets.get(name).check_selection(opts.selection.split, opts.selection.subset)
    if "download" in opts.steps:
        root.mkdir(parents=True, exist_ok=True)
    with root_lock(root, "prepare"):
        return _run_steps(name, root, opts)


def _run_steps(name: str, root: Path, opts: PrepareOptions) -> bool:
    from . import steps as run

    failed: list[str] = []  # what failed, per step, for the last line
    problems: list[str] = []  # missing or bad videos: counted; a failure only with --strict
    for n, step in enumerate(opts.steps, start=1):
        heading(f"{n}/{len(opts.steps)} {step}")
        if step == "download":
            outcome = run.download(name, root, opts.download)
            if outcome.failed:
                later = ",".join(s for s in opts.steps if s != "download")
                plain(f"error: {outcome.failed}; if the data is already under {root}, skip it "
                      f"with --steps {later}")
                return False  # later steps need the files
        elif step == "validate":
            outcome = run.validate(name, root, opts.validating.check, opts.cluster,
                                   opts.validating.quarantine, opts.force)
        elif step in ("lists", "frame-lists"):
            formats = ["videos"] if step == "lists" else ["videos", "rawframes", "flow"]
            outcome = run.build_lists(name, root, formats, opts.listing)
        else:
            outcome = run.extract(root, opts.extract, opts.selection, opts.cluster, opts.force)
        if outcome.failed:
            failed.append(outcome.failed)
        if outcome.problems:
            problems.append(f"{outcome.problems} ({step})")
    heading("done")
    said = failed + problems
    plain(f"prepare {name}: {len(opts.steps)} step(s) run"
          + (f"; {'; '.join(said)}" if said else "; no problems")
          + ("" if failed or not problems or opts.strict else " (counted, not failures; "
             "--strict makes them fail the run)"))
    return not failed and not (opts.strict and problems)
