"""HMDB51: 153 files `<class>_test_split{1,2,3}.txt`, lines `<video>.avi <tag> ` (trailing space).

Tag 1 = train, 2 = test (MMAction2 calls it val), 0 = unused: unused clips are recorded in the
manifest but never listed. Class index = position in the sorted class names (MMAction2 sorts
the class folders, which are the same names). Video names contain `! [ ] ( ) & #`.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from ..core.errors import AnnotationError, MissingAnnotationError, UserError
from .base import TRAIN, UNUSED, VAL, AnnotatedVideo, Annotations, Dataset, read_lines

SPLIT_FILE = re.compile(r"^(?P<cls>.+)_test_split(?P<split>[123])\.txt$")
TAGS = {"1": TRAIN, "2": VAL, "0": UNUSED}
# test_train_splits.rar unpacks into testTrainMulti_7030_splits/; MMAction2 expects them flat.
SUBDIRS = ("", "testTrainMulti_7030_splits")


class HMDB51(Dataset):
    name = "hmdb51"

    def _split_files(self, ann_dir: Path) -> dict[str, dict[int, Path]]:
        for sub in SUBDIRS:
            folder = ann_dir / sub
            found: dict[str, dict[int, Path]] = {}
            if folder.is_dir():
                for path in sorted(folder.iterdir()):
                    m = SPLIT_FILE.match(path.name)
                    if m and path.is_file():
                        found.setdefault(m["cls"], {})[int(m["split"])] = path
            if found:
                return found
        raise MissingAnnotationError(ann_dir / "<class>_test_split1.txt", self.name)

    def parse(self, ann_dir: Path) -> Annotations:
        files = self._split_files(ann_dir)
        label_map = sorted(files)
        ann = Annotations(self.name, label_map, "sorted class names of the split files")
        for split in (1, 2, 3):
            order = 0
            for class_index, class_name in enumerate(label_map):
                path = files[class_name].get(split)
                if path is None:
                    raise MissingAnnotationError(
                        next(iter(files[class_name].values())).with_name(
                            f"{class_name}_test_split{split}.txt"), self.name)
                ann.files.append(str(path))
                for lineno, text in enumerate(read_lines(path), start=1):
                    if not text.strip():
                        continue
                    parts = text.split()
                    if len(parts) != 2 or parts[1] not in TAGS:
                        raise AnnotationError(path, lineno, text,
                                              "expected '<video>.avi <0|1|2>' (1 train, 2 test, 0 unused)")
                    video = AnnotatedVideo(video_id=Path(parts[0]).stem, class_name=class_name,
                                           class_index=class_index, class_dir=class_name)
                    subset = TAGS[parts[1]]
                    ann.add(video, split, subset, order if subset != UNUSED else -1,
                            (path, lineno, text))
                    if subset != UNUSED:
                        order += 1
        return ann


    def acquire(self, s) -> None:
        """hmdb51_org.rar holds one archive per class (<class>.rar -> <class>/*.avi);
        test_train_splits.rar holds testTrainMulti_7030_splits/*.txt, wanted flat in
        annotations/."""
        def annotations(archive: Path, name: str) -> None:
            staged = s.unpack(archive, name)
            dest = s.root / "annotations"
            dest.mkdir(parents=True, exist_ok=True)
            for path in staged.rglob("*_test_split*.txt"):
                s.put(path, dest / path.name)
            shutil.rmtree(staged)

        def videos(archive: Path, name: str) -> None:
            outer = s.unpack(archive, name)
            inner = sorted(p for p in outer.rglob("*") if p.is_file())
            for n, path in enumerate(inner):
                if not s.is_archive(path):
                    raise UserError(f"{archive}: member {path.relative_to(outer)} is not an "
                                    "archive; expected one archive per class")
                staged = s.unpack_file(path, outer / f".inner-{n}")
                top = s.top_folder(staged)
                # <class>.rar normally wraps <class>/; name the folder after the archive if not.
                cls = top.name if top != staged else path.name.split(".")[0]
                s.merge_into(top, s.root / "videos" / cls)
                shutil.rmtree(staged)
                path.unlink()
            shutil.rmtree(outer)

        items = [s.item(s.remote(src), place=annotations) for src in s.sources("annotations")]
        items += [s.item(s.remote(src), place=videos) for src in s.sources("videos")]
        s.run(items)
