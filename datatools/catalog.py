"""The dataset catalog: facts about each known dataset, read from the JSON files in manifests/."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources


@dataclass(frozen=True)
class CatalogEntry:
    name: str
    title: str
    num_classes: int
    splits: int
    expected: dict  # {"1": {"train": n, "val": n, ...}, ...}; None where unpublished
    base_url: str | None
    sources: list
    raw: dict

    def expected_count(self, split: int, subset: str) -> int | None:
        return self.expected.get(str(split), {}).get(subset)

    def label_map(self) -> list[str] | None:
        """The published label map shipped with the catalog, if this dataset has one."""
        rel = self.raw.get("label_map")
        if not rel:
            return None
        text = _catalog_files().joinpath(rel).read_text(encoding="utf-8")
        return [line.rstrip("\r\n") for line in text.splitlines() if line.strip()]


def _catalog_files():
    return resources.files("datatools.catalog_data")


@lru_cache(maxsize=None)
def load(name: str) -> CatalogEntry:
    raw = json.loads(_catalog_files().joinpath(f"{name}.json").read_text(encoding="utf-8"))
    return CatalogEntry(
        name=raw["name"],
        title=raw["title"],
        num_classes=raw["num_classes"],
        splits=raw["splits"],
        expected=raw.get("expected", {}),
        base_url=raw.get("base_url"),
        sources=raw.get("sources", []),
        raw=raw,
    )
