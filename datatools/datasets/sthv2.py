"""Something-Something V2: JSON lists `{id, label, template, placeholders}` and a labels JSON.

Class = labels[template with '[' and ']' removed]; the test JSON holds only ids. Videos sit flat
in videos/<id>.webm.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from ..core.errors import AnnotationError
from .base import SUBSETS, AnnotatedVideo, Annotations, Dataset

PREFIX = "something-something-v2-"
FILES = {"train": "train", "val": "validation", "test": "test"}


class SthV2(Dataset):
    name = "sthv2"
    list_subsets = SUBSETS
    flat = True

    def parse(self, ann_dir: Path) -> Annotations:
        labels_path = self.find_annotation(ann_dir, [PREFIX + "labels.json"])
        labels = _load_json(labels_path)
        if not isinstance(labels, dict):
            raise AnnotationError(labels_path, None, None, "expected an object {template: id}")
        try:
            by_index = sorted((int(v), k) for k, v in labels.items())
        except (TypeError, ValueError):
            raise AnnotationError(labels_path, None, None, "class ids must be integers") from None
        if [i for i, _ in by_index] != list(range(len(by_index))):
            raise AnnotationError(labels_path, None, None, "class ids must run 0..N-1 without gaps")
        label_map = [name for _, name in by_index]
        index = {name: i for i, name in enumerate(label_map)}
        ann = Annotations(self.name, label_map, str(labels_path), files=[str(labels_path)])
        for subset, stem in FILES.items():
            path = self.find_annotation(ann_dir, [PREFIX + stem + ".json"], required=(subset == "val"))
            if path is None:
                continue
            ann.files.append(str(path))
            items = _load_json(path)
            if not isinstance(items, list):
                raise AnnotationError(path, None, None, "expected a JSON list of {id, template}")
            for order, item in enumerate(items):
                ann.add(_parse_item(path, order, item, subset, index), 1, subset, order,
                        (path, None, f"entry {order}"))
        return ann


    def acquire(self, s) -> None:
        """Numbered parts joined in order form one archive of
        20bn-something-something-v2/<id>.webm, wanted flat in videos/; the labels zip holds
        labels/{labels,train,validation,test}.json, renamed with the something-something-v2-
        prefix that MMAction2 (and the parser above) expect."""
        def flat_into(folder: str, rename=lambda name: name):
            """Every file of the archive, at any depth, into ROOT/folder under its (renamed) name."""
            def place(archive: Path, name: str) -> None:
                staged = s.unpack(archive, name)
                for path in staged.rglob("*"):
                    if path.is_file():
                        s.put(path, s.root / folder / rename(path.name))
                shutil.rmtree(staged)
            return place

        def prefixed(name: str) -> str:
            return PREFIX + name if name.endswith(".json") and not name.startswith(PREFIX) else name

        labels, videos = flat_into("annotations", prefixed), flat_into("videos")
        s.run([s.item(s.remote(src), place=labels) for src in s.sources("annotations")])
        parts = [s.item(s.remote(src)) for src in s.sources("videos")]  # catalog order = numeric
        if parts and not s.result.failures:
            s.run_joined(parts, "20bn-something-something-v2.joined", videos)


def _parse_item(path, order, item, subset, index) -> AnnotatedVideo:
    where = f"entry {order}: {json.dumps(item)[:80]}"
    if not isinstance(item, dict) or "id" not in item:
        raise AnnotationError(path, None, where, "entry has no 'id'")
    video_id = str(item["id"])
    template = item.get("template")
    if template is None:
        if subset != "test":
            raise AnnotationError(path, None, where, "entry has no 'template'")
        return AnnotatedVideo(video_id, None, -1, "")
    name = template.replace("[", "").replace("]", "")
    if name not in index:
        raise AnnotationError(path, None, where, f"template {name!r} is not in the labels JSON")
    return AnnotatedVideo(video_id, name, index[name], "")


def _load_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise AnnotationError(path, exc.lineno, None, f"invalid JSON: {exc.msg}") from None
