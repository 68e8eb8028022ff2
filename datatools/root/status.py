"""The manifest's status words: one meaning each, written here once (README: The manifest).

`status`: what a video is now.
  unchecked        on disk, not probed since it last changed (listed: MMAction2's tool lists
                   every file it finds)
  ok               probed, and it decodes
  empty, unreadable, not_video, no_video_stream, corrupt
                   a probe's verdict against it (a 0-byte file is `empty` without a probe)
  missing          named by the annotations, not on disk
  extra            on disk, in no split (its probe verdict, if any, is in `probe_status`)

`extract_status`: what a video's frame folder is.
  done             complete, its completion record trusted
  skipped          complete, made by an earlier run with the same parameters; the last
                   extract left it as it was (a scan then says `done`)
  refused          holds parts made with another frame size or naming, which one folder
                   cannot mix; left as it was (`extract_error` names what --force deletes)
  incomplete       fewer files than its record counts (not listed)
  stale            made from an earlier version of the video (not listed)
  failed           the last extraction of it failed (`extract_error` says why)
  unusable         a file at its pack's name that is not a datatools pack (`extract_error`
                   says which rule it breaks); not listed, never read, moved or deleted
"""

from __future__ import annotations

UNCHECKED, OK, MISSING, EXTRA = "unchecked", "ok", "missing", "extra"
EMPTY, UNREADABLE, NOT_VIDEO, NO_VIDEO_STREAM, CORRUPT = (
    "empty", "unreadable", "not_video", "no_video_stream", "corrupt")
BAD = (EMPTY, UNREADABLE, NOT_VIDEO, NO_VIDEO_STREAM, CORRUPT)
# In the order the summaries list them.
VIDEO_STATUSES = (OK, UNCHECKED, MISSING, *BAD, EXTRA)
LISTED = (OK, UNCHECKED)  # the video statuses a videos list holds

DONE, SKIPPED, REFUSED = "done", "skipped", "refused"
COMPLETE = (DONE, SKIPPED)  # a frame folder its completion record vouches for (made or kept)
INCOMPLETE, STALE, FAILED, UNUSABLE = "incomplete", "stale", "failed", "unusable"
UNLISTED_EXTRACTIONS = (INCOMPLETE, STALE, UNUSABLE)  # frame folders no rawframes/flow list holds

# How deep a probe looked (the manifest's probe_level; validate's --check): a `full` probe
# stands for a `quick` one, not the other way round.
PROBE_LEVELS = ("quick", "full")
