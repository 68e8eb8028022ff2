"""Each step run, summarised and judged in one place, for the command line, `prepare` and the
demo alike: a step runs, prints its summary (and one line per failed item), and returns a
StepOutcome saying what the run's exit makes of it.

Two kinds of bad news, kept apart everywhere: a step that *failed* on items (a download, a
video's extraction) makes the run exit 1; *problems* in the data (videos missing or bad,
frame folders incomplete) are counted, and make the run exit 1 only with --strict.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .. import datasets
from ..core.console import DownloadProgress, report_failure
from ..core.errors import EXIT_PROBLEMS, ProblemsFound
from .summaries import (
    print_build_summary,
    print_download_summary,
    print_extract_summary,
    print_validate_summary,
)


@dataclass
class StepOutcome:
    failed: str | None = None  # what failed ("3 video(s) failed to extract"): exit 1
    problems: str | None = None  # what is wrong with the data ("2 video(s) not ok"): counted

    def exit_code(self, strict: bool = False) -> int:
        """The exit a command ending with this step has: problems with `strict` are one line
        (ProblemsFound); failures were named as they happened, so they only set the code."""
        if strict and self.problems:
            raise ProblemsFound(f"{self.problems} (--strict)")
        return EXIT_PROBLEMS if self.failed else 0


def download(name: str, root: Path, opts) -> StepOutcome:
    from ..acquire.session import download as run
    with DownloadProgress() as ui:
        result = run(name, root, opts, ui)
    print_download_summary(result, root)
    for failure in result.failures:  # one line each, never wrapped
        report_failure(f"error: {failure}", stderr=True)
    return StepOutcome(failed=f"the download step failed on {len(result.failures)} file(s)"
                       if result.failures else None)


def validate(name: str, root: Path, check: str, cluster, quarantine: bool = False,
             force: bool = False) -> StepOutcome:
    from ..validate.run import validate as run
    result = run(name, root, check, cluster, quarantine, force)
    print_validate_summary(result, datasets.get(name).catalog)
    return StepOutcome(problems=f"{len(result.not_ok):,} video(s) not ok" if result.not_ok else None)


def build_lists(name: str, root: Path, formats: list[str], listing) -> StepOutcome:
    from ..lists.build import build_lists as run
    result = run(name, root, formats, listing.level, listing.shuffle, listing.seed)
    print_build_summary(result, root)
    return StepOutcome(problems=f"{result.problems:,} problem(s) in the lists" if result.problems else None)


def extract(root: Path, opts, selection, cluster, force: bool = False) -> StepOutcome:
    from ..extract.run import extract as run
    result = run(root, opts, selection, cluster, force)
    print_extract_summary(result, root)
    return StepOutcome(failed=f"{len(result.failures):,} video(s) failed to extract"
                       if result.failures else None)
