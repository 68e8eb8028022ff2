"""MMAction2 datasets that read `manifest.parquet` directly. Configs load them with

    custom_imports = dict(imports=['datatools.mmaction'], allow_failed_imports=False)

and name them like MMAction2's own:

    dataset=dict(type='ManifestVideoDataset', manifest='data/ucf101/manifest.parquet',
                 split=1, subset='train', pipeline=train_pipeline)
    dataset=dict(type='ManifestRawframeDataset', manifest=..., modality='Flow', ...)

They subclass MMAction2's VideoDataset / RawframeDataset and only replace where the samples
come from, so every MMAction2 pipeline applies unchanged. File-name templates, start index and
frame counts come from the manifest (what `extract` wrote), so 0- or 1-based names can no
longer disagree with the config. Which videos are in is decided by the same rule that writes
the text lists (`manifest.listed`): a dataset and the list of the same split and subset
hold the same samples. Videos left out are counted by status in one log line, never dropped
silently.

Importing it also makes `import mmaction.models` work on the MMAction2 1.2.0 wheel
and lets torch >= 2.6 load MMEngine's checkpoints (see compat.py).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from .compat import allow_mmengine_checkpoints, hue_jitter_for_numpy2, provide_missing_drn

provide_missing_drn()
allow_mmengine_checkpoints()
hue_jitter_for_numpy2()

from mmaction.datasets import RawframeDataset, RepeatAugDataset, VideoDataset  # noqa: E402
from mmaction.registry import DATASETS  # noqa: E402
from mmengine.logging import print_log  # noqa: E402

from ..core.errors import UserError, one_of  # noqa: E402
from ..datasets.base import SUBSETS  # noqa: E402
from ..root.manifest import VideoRecord, listed, require_manifest, split_members  # noqa: E402
from ..root.status import COMPLETE, LISTED  # noqa: E402

FORMAT = {"RGB": "rawframes", "Flow": "flow"}  # modality -> the list format it reads


def manifest_root(manifest: str | Path) -> Path:
    """The data root of a manifest given as the file or its folder."""
    path = Path(manifest)
    return path.parent if path.suffix == ".parquet" else path


@dataclass
class Selection:
    root: Path
    records: list[VideoRecord]  # in list order
    num_classes: int
    left_out: Counter  # reason -> count


def select(manifest: str | Path, split: int, subset: str, fmt: str,
           who: str = "datatools") -> Selection:
    """The records of one split's subset that a `fmt` list would hold, in list order; logs
    what was left out and why."""
    one_of(f"{who}: subset", subset, SUBSETS)
    one_of(f"{who}: split", split, (1, 2, 3))
    root = manifest_root(manifest)
    records, meta = require_manifest(root)
    members = split_members(records, split, subset)
    kept = [r for r in members if listed(r, fmt)]
    left_out = Counter(_why_left_out(r, fmt) for r in members if not listed(r, fmt))
    summary = ", ".join(f"{n} {why}" for why, n in sorted(left_out.items()))
    print_log(f"{who}: {meta.dataset} split {split} {subset} ({fmt}): {len(kept)} samples"
              + (f"; left out {sum(left_out.values())} ({summary})" if left_out else ""),
              logger="current")
    if not kept:
        raise UserError(f"{who}: {root} split {split} {subset} has no {fmt} samples"
                        + (f" ({summary})" if summary else "")
                        + ("; run `datatools extract` first" if fmt != "videos" else ""))
    return Selection(root, kept, len(meta.label_map or []), left_out)


def _why_left_out(r: VideoRecord, fmt: str) -> str:
    if fmt == "videos" or r.status not in LISTED:
        return f"status {r.status}"
    if r.extract_status and r.extract_status not in COMPLETE:
        return f"extraction {r.extract_status}"
    return "not extracted"


def _one(records: list[VideoRecord], field: str, who: str):
    values = {getattr(r, field) for r in records}
    if len(values) != 1:
        raise UserError(f"{who}: the selected frame folders disagree on {field} ({sorted(map(str, values))});"
                        " re-run `datatools extract --force` with one --naming")
    return values.pop()


class _ManifestVideos:
    """The `ok` videos of one split's subset of a manifest, for a VideoDataset subclass."""

    def __init__(self, manifest: str, pipeline: list, split: int = 1, subset: str = "train",
                 **kwargs):
        self.selection = select(manifest, split, subset, "videos", type(self).__name__)
        kwargs.setdefault("num_classes", self.selection.num_classes or None)
        super().__init__(ann_file=str(manifest), pipeline=pipeline, data_prefix=dict(video=""),
                         **kwargs)

    def load_data_list(self) -> list[dict]:
        root = self.selection.root
        return [dict(filename=str(root / r.video_path), label=r.class_index)
                for r in self.selection.records]


@DATASETS.register_module()
class ManifestVideoDataset(_ManifestVideos, VideoDataset):
    """MMAction2's VideoDataset over the `ok` videos of one split's subset of a manifest."""


@DATASETS.register_module()
class ManifestRepeatAugDataset(_ManifestVideos, RepeatAugDataset):
    """MMAction2's RepeatAugDataset (each video decoded once, its augmentations repeated:
    MViT's training) over the same videos."""


@DATASETS.register_module()
class ManifestRawframeDataset(RawframeDataset):
    """MMAction2's RawframeDataset over the extracted frame folders of one split's subset:
    RGB (`img_…`) or Flow (`flow_x_…`/`flow_y_…`), with the manifest's template, start index
    and counts."""

    def __init__(self, manifest: str, pipeline: list, split: int = 1, subset: str = "train",
                 modality: str = "RGB", **kwargs):
        if modality not in ("RGB", "Flow"):
            raise UserError(f"{type(self).__name__}: modality must be 'RGB' or 'Flow', not {modality!r}")
        who = type(self).__name__
        self.selection = sel = select(manifest, split, subset, FORMAT[modality], who)
        self.count_field = "rgb_count" if modality == "RGB" else "flow_count"
        template = _one(sel.records, "rgb_template" if modality == "RGB" else "flow_template", who)
        kwargs.setdefault("num_classes", sel.num_classes or None)
        super().__init__(ann_file=str(manifest), pipeline=pipeline, data_prefix=dict(img=""),
                         filename_tmpl=template, start_index=_one(sel.records, "start_index", who),
                         modality=modality, **kwargs)

    def load_data_list(self) -> list[dict]:
        root = self.selection.root
        return [dict(frame_dir=str(root / r.frame_dir), total_frames=getattr(r, self.count_field),
                     label=r.class_index) for r in self.selection.records]
