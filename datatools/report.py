"""End-of-step summaries printed for the user: short tables and the first few offenders."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

SHOW = 5  # offenders named per problem before "... and N more"

console = Console(stderr=False, highlight=False)


def name_some(records, what: str, attr: str = "key") -> str:
    names = [getattr(r, attr) for r in records[:SHOW]]
    more = f", … and {len(records) - SHOW} more" if len(records) > SHOW else ""
    return f"{len(records)} {what}: {', '.join(names)}{more}"


def print_build_summary(result, root) -> None:
    table = Table(title=f"{result.dataset}: lists written to {root}", show_edge=False)
    for col in ("list", "lines", "in annotations"):
        table.add_column(col, justify="right" if col != "list" else "left")
    for lf in result.lists:
        table.add_row(lf.name, f"{lf.lines:,}", f"{lf.expected:,}")
    console.print(table)
    console.print(f"label map: {result.label_source}")
    if result.missing:
        console.print("[yellow]" + name_some(result.missing, "videos in a split but missing on "
                      "disk (status=missing in the manifest)") + "[/yellow]")
    if result.extra:
        console.print(name_some(result.extra, "files on disk in no split (status=extra, not listed)",
                                "video_path"))
    if result.no_frames:
        console.print("[yellow]" + name_some(result.no_frames, "frame folders with no img_ "
                      "files (not listed; run `datatools extract`)", "frame_dir") + "[/yellow]")
    if result.flow_mismatch:
        console.print("[yellow]" + name_some(result.flow_mismatch, "frame folders whose flow_x "
                      "and flow_y counts differ (no flow listed)", "frame_dir") + "[/yellow]")
