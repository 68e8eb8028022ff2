"""Dataset modules: one per dataset over a small shared base. Adding a dataset = adding a file."""

from __future__ import annotations

from .base import AnnotatedVideo, Annotations, Dataset
from .hmdb51 import HMDB51
from .kinetics import Kinetics400, Kinetics600, Kinetics700
from .sthv2 import SthV2
from .ucf101 import UCF101

DATASETS: dict[str, type[Dataset]] = {
    cls.name: cls for cls in (UCF101, HMDB51, Kinetics400, Kinetics600, Kinetics700, SthV2)
}


def get(name: str) -> Dataset:
    return DATASETS[name]()


__all__ = ["DATASETS", "get", "Dataset", "Annotations", "AnnotatedVideo"]
