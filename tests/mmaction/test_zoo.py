"""`datatools mmaction models`: MMAction2's recognition zoo read from the installed wheel's
metafiles, one line per model, and which of them a root can feed now."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import datatools, require_module

mmaction = require_module("mmaction")
import yaml  # noqa: E402
from mmengine.config import Config  # noqa: E402

from datatools.core.errors import UserError  # noqa: E402
from datatools.extract.options import ExtractOptions  # noqa: E402
from datatools.extract.run import extract  # noqa: E402
from datatools.mmaction import zoo  # noqa: E402
from datatools.schedule.client import ClusterOptions  # noqa: E402

RECOGNITION = Path(mmaction.__file__).parent / ".mim" / "configs" / "recognition"


def metafile_models() -> dict[str, dict]:
    """Every model the wheel's recognition metafiles name, read here on its own (TSM's
    metafile names one model twice: the first entry counts)."""
    found = {}
    for metafile in sorted(RECOGNITION.glob("*/metafile.yml")):
        for entry in yaml.safe_load(metafile.read_text())["Models"]:
            found.setdefault(entry["Name"], entry)
    return found


def table(*args) -> list[dict[str, str]]:
    r = datatools("mmaction", "models", *args)  # piped: one tab-separated line per model
    assert r.returncode == 0, r.stdout + r.stderr
    header, *lines = r.stdout.splitlines()
    columns = header.split("\t")
    return [dict(zip(columns, line.split("\t"), strict=True)) for line in lines]


def test_every_model_of_the_wheels_metafiles_is_listed_once_with_its_published_top1():
    published = metafile_models()
    rows = table()
    assert len(published) > 100 and [r["model"] for r in rows] == list(published)
    for row in rows:
        entry = published[row["model"]]
        top1 = entry.get("Results", [{}])[0].get("Metrics", {}).get("Top 1 Accuracy")
        assert row["top-1"] == (f"{float(top1):.2f}" if top1 is not None else "-")
        assert row["family"] == entry["In Collection"]
    slowfast = next(r for r in rows if r["model"] == "slowfast_r50_8xb8-4x16x1-256e_kinetics400-rgb")
    # its config samples 32 frames 2 apart (the slow path takes 4 of them, the fast path 32)
    assert (slowfast["family"], slowfast["input"], slowfast["clip"]) == ("SlowFast", "videos", "32x2x1")
    inputs = {r["input"] for r in rows}
    assert {"videos", "frames"} <= inputs
    # what each config reads, from the config as mmengine loads it (its _base_ files included)
    for row in rows:
        if row["input"] in ("frames", "videos"):
            cfg = Config.fromfile(str(zoo.find(row["model"]).config))
            dataset = (cfg.get("train_dataloader") or cfg.test_dataloader).dataset
            while dataset.type == "RepeatDataset":
                dataset = dataset.dataset
            if dataset.type == "ConcatDataset":  # Kinetics-710: parts of one kind
                assert len({d.type for d in dataset.datasets}) == 1
                dataset = dataset.datasets[0]
            wanted = {"RawframeDataset"} if row["input"] == "frames" else {"VideoDataset", "RepeatAugDataset"}
            assert dataset.type in wanted, row["model"]


def test_a_model_is_found_by_its_name_or_its_alias_and_an_unknown_one_is_one_line():
    published = metafile_models()
    aliased = {alias: name for name, e in published.items() for alias in e.get("Alias") or ()}
    assert aliased and all(zoo.find(alias).name == name for alias, name in aliased.items())
    model = zoo.find("slowfast_r50_8xb8-4x16x1-256e_kinetics400-rgb")
    assert model.weights == published[model.name]["Weights"] and model.config.is_file()
    with pytest.raises(UserError, match="not a model of MMAction2's recognition zoo; did you mean slowfast"):
        zoo.find("slowfast_r50")


def test_with_a_root_each_model_says_whether_the_root_feeds_it_and_which_step_would(clips_root):
    root = clips_root(["short_32f.mp4"])
    before = {r["model"]: r for r in table("--root", root)}
    videos = [r for r in before.values() if r["input"] == "videos"]
    frames = [r for r in before.values() if r["input"] == "frames"]
    assert videos and all(r["this root"] == "yes" for r in videos)
    # a frames config reads the videos (config --from switches its decode steps)
    assert frames and all(r["this root"] == "yes, from its videos" for r in frames)
    trn = next(m for m in zoo.models() if m.input == "frames")
    assert zoo.can_feed(trn, {"videos": False, "frames": False, "flow": False}) == \
        "no rawframes yet: run `datatools extract --task rgb`"
    others = [r for r in before.values() if r["input"].startswith("(")]
    assert all(r["this root"].startswith("no: its config reads") for r in others)
    extract(root, ExtractOptions(task="rgb"), cluster=ClusterOptions(workers=1))
    from datatools.lists.build import build_lists
    build_lists("ucf101", root, ["videos", "rawframes"])
    after = {r["model"]: r for r in table("--root", root)}
    assert all(after[r["model"]]["this root"] == "yes" for r in frames)
