"""Each step's summary: a table of what it did, then the first few offenders by problem."""

from __future__ import annotations

from rich.table import Table

from ..core.console import SHOW, console, log_lines, name_some, plain, warn
from ..core.errors import shell_word
from ..datasets.base import UNUSED
from ..root.status import DONE, EXTRA, MISSING, OK, UNCHECKED, VIDEO_STATUSES


def print_build_summary(result, root) -> None:
    table = Table(title=f"{result.dataset}: lists written to {root}", show_edge=False)
    for col in ("list", "lines", "in annotations"):
        table.add_column(col, justify="right" if col != "list" else "left")
    for lf in result.lists:
        table.add_row(lf.name, f"{lf.lines:,}", f"{lf.expected:,}")
    console.print(table)
    console.print(f"label map: {result.label_source}")
    if result.rebuilt_from is not None:
        warn(f"the manifest was unreadable: kept aside as {result.rebuilt_from}, "
             "rebuilt from the annotations, the files on disk and the completion "
             "records")
    if result.unchecked:
        console.print(f"{result.unchecked:,} listed video(s) were never checked (status "
                      f"unchecked); `datatools {result.dataset} validate --root {shell_word(root)}` checks "
                      "them and later lists leave out the bad ones")
    if result.bad:
        warn(name_some(result.bad, "video(s) left out of the lists as bad "
                       "(empty or failed validate; see status and error in the manifest)",
                       "video_path"))
    if result.incomplete:
        warn(name_some(result.incomplete, "frame folders hold fewer files "
                       "than their completion record counts, or were made from an earlier "
                       "version of the video (extract_status incomplete or stale; not listed; "
                       "re-run `datatools extract`)", "frame_dir"))
    if result.not_utf8:
        warn(name_some(result.not_utf8, "file(s) or folder(s) left out: their names are not "
                       "UTF-8, which no manifest or MMAction2 list can hold (rename them)", None))
    if result.unusable:
        warn(name_some(result.unusable, "files at packs' names are not datatools packs "
                       "(extract_status unusable, the reason in extract_error and the log; not "
                       "listed, left as they are: move them away, then extract again)",
                       "frame_dir", ".zip"))
        log_lines([r.extract_error or "" for r in result.unusable])
    if result.missing:
        warn(name_some(result.missing, "videos in a split but missing on "
                       "disk (status=missing in the manifest)"))
    if result.extra:
        console.print(name_some(result.extra, "files on disk in no split (status=extra, not listed)",
                                "video_path"))
    if result.no_extraction:
        plain(f"no frames extracted yet under {root}: the rawframes and flow lists are empty; "
              f"run `datatools extract --root {shell_word(root)}`, then build-lists again")
    if result.no_frames:
        warn(name_some(result.no_frames, "frame folders with no img_ "
                       "files (not listed; run `datatools extract`)", "frame_dir"))
    if result.flow_mismatch:
        warn(name_some(result.flow_mismatch, "frame folders whose flow_x "
                       "and flow_y counts differ (no flow listed)", "frame_dir"))


def print_validate_summary(result, catalog) -> None:
    table = Table(title=f"{result.dataset}: videos by status", show_edge=False)
    table.add_column("status")
    table.add_column("videos", justify="right")
    for status in VIDEO_STATUSES:
        if result.counts.get(status):
            table.add_row(status, f"{result.counts[status]:,}")
    console.print(table)
    if result.kept:
        console.print(f"{result.probed:,} video(s) probed; {result.kept:,} unchanged since an earlier "
                      "probe at this level or deeper kept its verdict (--force probes them again)")
    bad = [r for r in result.records if r.status not in (OK, MISSING, EXTRA, UNCHECKED)]
    log_lines([f"{r.status}: {r.video_path}: {r.error}" for r in bad])
    for r in bad[:SHOW]:
        plain(f"  {r.status}: {r.video_path}: {r.error}")
    if len(bad) > SHOW:
        console.print(f"  … and {len(bad) - SHOW} more (see the manifest's status and error columns)")
    missing = [r for r in result.records if r.status == MISSING]
    if missing:
        console.print(name_some(missing, "missing"))
    extra = [r for r in result.records if r.status == EXTRA]
    if extra:
        console.print(name_some(extra, "on disk in no split (extra)", "video_path"))
    splits = Table(title="per split: ok / in the annotations / the catalog expects", show_edge=False)
    for col in ("split", "subset", "ok", "annotated", "catalog"):
        splits.add_column(col, justify="right")
    for split in range(1, catalog.splits + 1):
        subsets = sorted({r.subset(split) for r in result.records if r.subset(split)} - {UNUSED})
        for subset in subsets:
            members = [r for r in result.records if r.subset(split) == subset]
            ok = sum(r.status == OK for r in members)
            expected = catalog.expected_count(split, subset)
            splits.add_row(str(split), subset, f"{ok:,}", f"{len(members):,}",
                           f"{expected:,}" if expected else "-")
    console.print(splits)
    annotated = [r for r in result.records if r.status != EXTRA]
    ok = sum(r.status == OK for r in annotated)
    total = catalog.raw.get("total_videos")
    line = f"{catalog.title}: {ok:,} of {len(annotated):,} annotated videos ok"
    if total:
        line += f" (the full dataset has {total:,})"
    console.print(line)
    held = [r for r in result.records if r.video_path and not r.exists and r.status != MISSING]
    if held:
        console.print(f"{len(held)} file(s) in quarantine/ (see quarantine/records.jsonl; "
                      "`validate --restore` puts them back)")
    if result.quarantined:
        console.print(f"{len(result.quarantined)} file(s) moved to quarantine/ "
                      f"(records in quarantine/records.jsonl; undo with --restore)")


def print_extract_summary(result, root) -> None:
    counts = result.counts
    table = Table(title=f"{result.dataset}: extraction in {root}", show_edge=False)
    for col in ("videos", "done", "skipped (already done)", "failed", "refused", "not ok"):
        table.add_column(col, justify="right")
    frames = sum(o.written_rgb for _, o in result.outcomes if o.status == DONE)
    pairs = sum(o.written_flow for _, o in result.outcomes if o.status == DONE)
    table.add_row(f"{len(result.outcomes) + len(result.not_ok):,}", f"{counts['done']:,}",
                  f"{counts['skipped']:,}", f"{counts['failed']:,}", f"{counts['refused']:,}",
                  f"{len(result.not_ok):,}")
    console.print(table)
    console.print(f"written now: {frames:,} RGB frames, {pairs:,} flow pairs")
    if result.failures:  # each was said on its own line as it happened
        plain(f"{len(result.failures):,} video(s) failed or refused, each named above with "
              "why (extract_error in the manifest; tracebacks in the log)")
    if result.not_ok:
        console.print(name_some(result.not_ok, "selected videos skipped because their status is "
                                "not ok (see validate)"))


def print_download_summary(result, root) -> None:
    if result.present:
        plain(f"{' and '.join(result.present)} already in {root} (not downloaded by datatools): "
              "used as they are, not downloaded")
    fetched = sum(f.transferred for f in result.fetched)
    console.print(f"{result.dataset}: {len(result.fetched)} file(s) fetched "
                  f"({fetched / 2**20:,.1f} MiB over the network), {len(result.unpacked)} "
                  f"unpacked, {len(result.skipped)} already done (downloads/records.jsonl)")
    unverified = [f.path.name for f in result.fetched if f.verified in ("none", "size")]
    if unverified:
        console.print(f"{len(unverified)} file(s) had no published checksum: sha256 computed and "
                      "recorded in downloads/records.jsonl")
    for subset, missing in result.missing.items():
        warn(f"{len(missing):,} {subset} clip(s) named in the annotations were in "
             f"no archive: listed in {root}/downloads/missing_{subset}.txt")
    if result.unmatched:
        console.print(f"{len(result.unmatched):,} file(s) in the archives are in no annotation: "
                      f"moved to {root}/downloads/unmatched/")


def print_datasets(rows: list[tuple[str, str, str]]) -> None:
    """(name, title, module) per dataset: what `datatools datasets` prints."""
    table = Table(show_edge=False)
    for col in ("dataset", "title", "module"):
        table.add_column(col)
    for row in rows:
        table.add_row(*row)
    console.print(table)


def print_models(rows: list[tuple], feeds: bool) -> None:
    """`datatools mmaction models`: a table on a terminal; piped, one line per model, its
    columns separated by tabs (for grep, cut and awk)."""
    columns = ["model", "family", "input", "clip", "top-1"] + (["this root"] if feeds else [])
    if not console.is_terminal:
        for row in [columns, *rows]:  # print: Rich would expand the tabs
            print("\t".join(row))
        return
    table = Table(show_edge=False)
    for col in columns:
        table.add_column(col, justify="right" if col == "top-1" else "left")
    for row in rows:
        table.add_row(*row)
    console.print(table)
