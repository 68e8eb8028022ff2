"""The dataset catalog: facts about each known dataset (title, classes, splits, expected counts,
download sources), read from `<name>.json` in a package's data: manifests/ (shipped as
`datatools.catalog_data`) for the datasets of datatools, a plugin's own package for its."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

CATALOG_PACKAGE = "datatools.catalog_data"


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

    package: str = CATALOG_PACKAGE  # whose data holds the entry (and its label map)

    def label_map(self) -> list[str] | None:
        """The published label map shipped with the catalog, if this dataset has one."""
        rel = self.raw.get("label_map")
        if not rel:
            return None
        text = resources.files(self.package).joinpath(rel).read_text(encoding="utf-8")
        return [line.rstrip("\r\n") for line in text.splitlines() if line.strip()]


@lru_cache(maxsize=None)
def load(name: str, package: str = CATALOG_PACKAGE) -> CatalogEntry:
    raw = json.loads(resources.files(package).joinpath(f"{name}.json").read_text(encoding="utf-8"))
    return CatalogEntry(
        name=raw["name"],
        title=raw["title"],
        num_classes=raw["num_classes"],
        splits=raw["splits"],
        expected=raw.get("expected", {}),
        base_url=raw.get("base_url"),
        sources=raw.get("sources", []),
        raw=raw,
        package=package,
    )
