"""Kinetics-400/600/700: CSVs `label,youtube_id,time_start,time_end,split[,is_cc]`.

Labels with spaces are quoted; the DeepMind re-issue names the val file `validate.csv`; test
CSVs come with or without a label column; YouTube ids may start with '-'. The video id is
`{youtube_id}_{start:06d}_{end:06d}` and, at level 2, videos sit in a folder named after the
label with spaces replaced by '_'. Class index = position in the sorted train-CSV labels
(underscored), MMAction2's rule; without a train CSV the catalog's label map is used.
"""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

from ..core.errors import AnnotationError
from .base import SUBSETS, AnnotatedVideo, Annotations, Dataset, read_lines

REQUIRED = ("youtube_id", "time_start", "time_end")


def class_folder(label: str) -> str:
    """MMAction2's folder / label-key spelling of a Kinetics class."""
    return label.replace('"', "").replace(" ", "_")


class Kinetics(Dataset):
    list_subsets = SUBSETS
    per_subset_dirs = True
    version = ""  # "400", "600", "700"

    def csv_candidates(self, subset: str) -> list[str]:
        official = {"train": ["train.csv"], "val": ["val.csv", "validate.csv"], "test": ["test.csv"]}
        v = self.version
        return ([f"kinetics_{subset}.csv"] + official[subset]
                + [f"kinetics-{v}_{n}" for n in official[subset]]
                + [f"kinetics{v}_{n}" for n in official[subset]])

    def parse(self, ann_dir: Path) -> Annotations:
        paths = {s: self.find_annotation(ann_dir, self.csv_candidates(s), required=(s == "val"))
                 for s in self.list_subsets}
        rows = {s: read_csv_rows(p) if p else [] for s, p in paths.items()}
        if rows["train"]:
            keys = sorted({class_folder(r.label) for r in rows["train"] if r.label is not None})
            label_source = str(paths["train"])
            # The label map reads as the annotations spell the classes (with spaces).
            spelled = {}
            for r in rows["train"]:
                spelled.setdefault(class_folder(r.label), r.label)
            label_map = [spelled[k] for k in keys]
        else:
            label_map = self.catalog.label_map()
            keys = [class_folder(name) for name in label_map]
            label_source = f"catalog label map ({self.name}; no train CSV in {ann_dir})"
        index = {k: i for i, k in enumerate(keys)}
        ann = Annotations(self.name, label_map, label_source,
                          files=[str(p) for p in paths.values() if p])
        for subset in self.list_subsets:
            for order, row in enumerate(rows[subset]):
                where = (paths[subset], row.line, row.text)
                if row.label is None:
                    video = AnnotatedVideo(row.video_id, None, -1, "")
                else:
                    key = class_folder(row.label)
                    if key not in index:
                        raise AnnotationError(*where, f"class {row.label!r} is not in the label map "
                                              f"({label_source})")
                    video = AnnotatedVideo(row.video_id, row.label, index[key], key)
                ann.add(video, 1, subset, order, where)
        return ann


    def acquire(self, s) -> None:
        """Annotation CSVs first (they say where each clip goes), then per subset the list of
        tarball URLs, then every tarball, its clips sorted into videos_<subset>/<class>/."""
        s.run([s.item(s.remote(src), keep_in=s.root / "annotations" / src["rename"])
               for src in s.sources("annotations")])
        if s.opts.what == "annotations" or s.result.failures:
            return
        ann = self.parse(s.root / "annotations")
        index = {subset: {} for subset in self.list_subsets}
        for video in ann.videos.values():
            subset = video.subsets.get(1)
            if subset in index:
                index[subset][video.video_id] = video
        items = []
        for src in s.sources("videos"):
            subset = src["subset"]
            if src["kind"] == "url_list":
                lst = s.item(s.remote(src))
                s.run([lst])
                if s.result.failures:
                    return
                for n, line in enumerate(lst.path.read_text(encoding="utf-8").splitlines(), start=1):
                    if line.strip():
                        name = f"{subset}/{s.name_from_url(line, f'{lst.path}:{n}')}"
                        items.append(s.item(s.remote_at(line, name),
                                            place=self._sort_clips(s, index, [subset])))
            else:  # the K400 replacement tarball: clips of any subset, replacing what is there
                items.append(s.item(s.remote(src), place=self._sort_clips(s, index, list(index))))
        s.run(items)
        for subset, videos in index.items():
            folder = s.root / self.video_dir(subset)
            have = {p.stem for p in folder.rglob("*") if p.is_file()} if folder.is_dir() else set()
            missing = sorted(vid for vid in videos if vid not in have)
            if missing:
                s.note_missing(subset, missing)

    def _sort_clips(self, s, index: dict, subsets: list[str]):
        """A tarball's clips into videos_<subset>/<class>/; clips no annotation names go to
        downloads/unmatched/."""
        def place(archive: Path, name: str) -> None:
            staged = s.unpack(archive, name)
            unmatched = []
            for path in sorted(p for p in staged.rglob("*") if p.is_file()):
                target = None
                for subset in subsets:
                    video = index[subset].get(path.stem)
                    if video is not None:
                        target = s.root / self.video_dir(subset) / (self.key(video, 2) + path.suffix)
                        break
                if target is not None:
                    s.put(path, target)
                    continue
                target = s.downloads / "unmatched" / path.relative_to(staged)
                unmatched.append(str(target.relative_to(s.root)))
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(path, target)  # not part of the layout, so not in the record
            shutil.rmtree(staged)
            s.note_unmatched(unmatched)
        return place

class CsvRow:
    __slots__ = ("label", "video_id", "line", "text")

    def __init__(self, label, video_id, line, text):
        self.label, self.video_id, self.line, self.text = label, video_id, line, text


def read_csv_rows(path: Path) -> list[CsvRow]:
    """Rows of a Kinetics CSV, each with the line it came from, for error messages."""
    lines = read_lines(path)
    if not lines:
        raise AnnotationError(path, 1, None, "empty file; expected a header 'label,youtube_id,...'")
    header = next(csv.reader([lines[0]]))
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise AnnotationError(path, 1, lines[0], f"header lacks column(s) {', '.join(missing)}")
    col = {name: i for i, name in enumerate(header)}
    i_id, i_start, i_end = col["youtube_id"], col["time_start"], col["time_end"]
    i_label = col.get("label")
    rows = []
    # One reader over all lines (fast). Kinetics fields never span lines, so a row that made
    # the reader consume more than one line has an unterminated quote.
    def checked_lines():
        for n, text in enumerate(lines[1:], start=2):
            if '"' in text and text.count('"') % 2:
                raise AnnotationError(path, n, text, "unterminated quote")
            yield text

    reader = csv.reader(checked_lines())
    lineno = 1
    for fields in reader:
        lineno += 1
        if reader.line_num + 1 != lineno:
            raise AnnotationError(path, lineno, lines[lineno - 1], "unterminated quote")
        if not fields:
            continue
        if len(fields) != len(header):
            raise AnnotationError(path, lineno, lines[lineno - 1], f"expected {len(header)} "
                                  f"fields ({','.join(header)}), found {len(fields)}")
        try:
            start, end = int(float(fields[i_start])), int(float(fields[i_end]))
        except ValueError:
            raise AnnotationError(path, lineno, lines[lineno - 1],
                                  "time_start/time_end are not numbers") from None
        ytid = fields[i_id]
        label = fields[i_label] if i_label is not None else None
        if not ytid or (label is not None and not label.strip()):
            raise AnnotationError(path, lineno, lines[lineno - 1], "empty youtube_id or label")
        rows.append(CsvRow(label, f"{ytid}_{start:06d}_{end:06d}", lineno, lines[lineno - 1]))
    return rows


class Kinetics400(Kinetics):
    name = "kinetics400"
    version = "400"


class Kinetics600(Kinetics):
    name = "kinetics600"
    version = "600"


class Kinetics700(Kinetics):
    name = "kinetics700"
    version = "700"
