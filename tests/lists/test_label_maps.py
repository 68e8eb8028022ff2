"""Class indices follow MMAction2's rules and equal the label maps its data tools use."""

from __future__ import annotations

import pytest
from conftest import ANN, LABEL_MAPS
from trees import hmdb51_root, kinetics_root, sthv2_root, ucf101_root, write_csv

from datatools import datasets
from datatools.datasets import catalog


def mm_map(name):
    return LABEL_MAPS.joinpath(f"label_map_{name}.txt").read_text().splitlines()


def test_ucf101_index_is_classind_minus_one(tmp_path):
    ann = datasets.get("ucf101").parse(ucf101_root(tmp_path, with_videos=False) / "annotations")
    assert ann.label_map == mm_map("ucf101")
    v = ann.videos["v_HandStandPushups_g08_c01"]
    assert (v.class_name, v.class_index) == ("HandstandPushups", 36)  # classInd says 37


def test_hmdb51_index_is_sorted_class_names(tmp_path):
    ann = datasets.get("hmdb51").parse(hmdb51_root(tmp_path) / "annotations")
    assert ann.label_map == mm_map("hmdb51")
    assert len(ann.videos) == 6766


@pytest.mark.parametrize("dataset,val_csv,short", [
    ("kinetics400", ANN / "kinetics400/activitynet_2017/kinetics-400_val.csv", "k400"),
    ("kinetics600", ANN / "kinetics600/kinetics-600_val.csv", "k600"),
])
def test_kinetics_index_is_sorted_train_labels(tmp_path, dataset, val_csv, short):
    root = kinetics_root(tmp_path, dataset, val_csv, videos=False)
    ann = datasets.get(dataset).parse(root / "annotations")
    assert ann.label_map == mm_map(short)
    assert ann.label_map == catalog.load(dataset).label_map()


def test_kinetics700_index_from_a_train_csv_over_its_700_classes(tmp_path):
    # No K700 CSV is available here: one row per class name of the real label map, in
    # reverse order, so that only the sorting rule can produce MMAction2's order.
    names = mm_map("k700")
    rows = [dict(label=n, youtube_id=f"id{i:05d}", time_start=0, time_end=10, split="train")
            for i, n in enumerate(reversed(names))]
    ann_dir = tmp_path / "annotations"
    header = ["label", "youtube_id", "time_start", "time_end", "split"]
    write_csv(ann_dir / "kinetics_train.csv", rows, header)
    val = [dict(r, youtube_id="v" + r["youtube_id"]) for r in rows[:3]]
    write_csv(ann_dir / "kinetics_val.csv", val, header)
    ann = datasets.get("kinetics700").parse(ann_dir)
    assert ann.label_map == names
    assert catalog.load("kinetics700").label_map() == names


def test_kinetics_without_train_csv_uses_the_catalog_label_map(tmp_path):
    ann_dir = tmp_path / "annotations"
    ann_dir.mkdir()
    (ann_dir / "validate.csv").write_bytes(
        (ANN / "kinetics400/deepmind/validate.csv").read_bytes())
    ann = datasets.get("kinetics400").parse(ann_dir)
    assert ann.label_map == mm_map("k400")
    assert "catalog" in ann.label_source
    assert len(ann.videos) == 17770


def test_sthv2_index_is_the_labels_json(tmp_path):
    ann = datasets.get("sthv2").parse(sthv2_root(tmp_path, videos=False) / "annotations")
    assert ann.label_map == mm_map("sthv2")
    v = ann.videos["74225"]  # "Spinning [something] that quickly stops spinning"
    assert v.class_name == "Spinning something that quickly stops spinning"
    assert v.class_index == mm_map("sthv2").index(v.class_name)


@pytest.mark.parametrize("name,classes", [("ucf101", 101), ("hmdb51", 51), ("kinetics400", 400),
                                          ("kinetics600", 600), ("kinetics700", 700),
                                          ("sthv2", 174)])
def test_catalog_class_counts(name, classes):
    assert catalog.load(name).num_classes == classes
