"""UCF101: classInd.txt (1-based ids) and trainlist0N / testlist0N, as the official zip ships them.

Quirks handled here: CRLF endings; test lists carry no label (the class is the folder);
class `HandstandPushups` holds files named `v_HandStandPushups_*` (nothing to do: the folder
in the list path is what counts); MMAction2's index is classInd - 1.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from ..core.errors import AnnotationError
from .base import AnnotatedVideo, Annotations, Dataset, read_lines

# The official zip unpacks into ucfTrainTestlist/; MMAction2 expects the files flat.
SUBDIRS = ("", "ucfTrainTestlist/")


class UCF101(Dataset):
    name = "ucf101"

    def _find(self, ann_dir: Path, name: str) -> Path:
        return self.find_annotation(ann_dir, [sub + name for sub in SUBDIRS])

    def parse(self, ann_dir: Path) -> Annotations:
        class_file = self._find(ann_dir, "classInd.txt")
        label_map = parse_class_index(class_file)
        index = {name: i for i, name in enumerate(label_map)}
        ann = Annotations(self.name, label_map, str(class_file), files=[str(class_file)])
        for split in range(1, 4):
            for subset, stem, labelled in (("train", "trainlist", True), ("val", "testlist", False)):
                path = self._find(ann_dir, f"{stem}{split:02d}.txt")
                ann.files.append(str(path))
                for order, (lineno, text) in enumerate(_content_lines(path)):
                    video = _parse_split_line(path, lineno, text, index, labelled)
                    ann.add(video, split, subset, order, (path, lineno, text))
        return ann


def parse_class_index(path: Path) -> list[str]:
    """classInd.txt -> class names in MMAction2 index order (id - 1)."""
    names: dict[int, str] = {}
    for lineno, text in _content_lines(path):
        parts = text.split()
        if len(parts) != 2 or not parts[0].isdigit():
            raise AnnotationError(path, lineno, text, "expected '<id> <ClassName>'")
        class_id = int(parts[0])
        if class_id in names:
            raise AnnotationError(path, lineno, text, f"class id {class_id} is used twice")
        names[class_id] = parts[1]
    if sorted(names) != list(range(1, len(names) + 1)):
        raise AnnotationError(path, None, None, "class ids must run 1..N without gaps")
    return [names[i] for i in range(1, len(names) + 1)]


def _content_lines(path: Path):
    for lineno, text in enumerate(read_lines(path), start=1):
        if text.strip():
            yield lineno, text


def _parse_split_line(path, lineno, text, index, labelled) -> AnnotatedVideo:
    parts = text.split()
    if len(parts) not in (1, 2) or (len(parts) == 2 and not parts[1].isdigit()):
        raise AnnotationError(path, lineno, text, "expected '<Class>/<video>.avi [<id>]'")
    rel = PurePosixPath(parts[0])
    class_name = rel.parent.name
    if class_name not in index:
        raise AnnotationError(path, lineno, text, f"class {class_name!r} is not in classInd.txt")
    if labelled and len(parts) == 2 and int(parts[1]) != index[class_name] + 1:
        raise AnnotationError(path, lineno, text, f"label {parts[1]} disagrees with classInd.txt "
                              f"({class_name} is {index[class_name] + 1})")
    return AnnotatedVideo(video_id=rel.stem, class_name=class_name,
                          class_index=index[class_name], class_dir=class_name)
