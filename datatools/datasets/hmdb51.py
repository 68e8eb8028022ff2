"""HMDB51: 153 files `<class>_test_split{1,2,3}.txt`, lines `<video>.avi <tag> ` (trailing space).

Tag 1 = train, 2 = test (MMAction2 calls it val), 0 = unused: unused clips are recorded in the
manifest but never listed. Class index = position in the sorted class names (MMAction2 sorts
the class folders, which are the same names). Video names contain `! [ ] ( ) & #`.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import AnnotationError, MissingAnnotationError
from .base import AnnotatedVideo, Annotations, Dataset, read_lines

SPLIT_FILE = re.compile(r"^(?P<cls>.+)_test_split(?P<split>[123])\.txt$")
TAGS = {"1": "train", "2": "val", "0": "unused"}
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
                    ann.add(video, split, subset, order if subset != "unused" else -1,
                            (path, lineno, text))
                    if subset != "unused":
                        order += 1
        return ann
