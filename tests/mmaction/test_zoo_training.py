"""One model of each family of MMAction2's recognition zoo, built with the root's classes,
takes one training step (forward, loss, backward) on the CPU on samples decoded from the root.

Where `--from` adapts the family's config, the samples come through the adapted config's
training pipeline. Where it refuses (a config for testing only, or a training pipeline that
needs pytorchvideo), the model is the zoo's and the samples come through its test pipeline cut
to one view: the model still has to train from the root's data."""

from __future__ import annotations

import copy
import importlib.util

import pytest
from conftest import require_module

require_module("mmaction")
import torch  # noqa: E402
from mmaction.registry import DATASETS, MODELS  # noqa: E402
from mmengine.config import Config  # noqa: E402
from mmengine.dataset import pseudo_collate  # noqa: E402
from mmengine.registry import init_default_scope  # noqa: E402

from datatools.core.errors import UserError  # noqa: E402
from datatools.mmaction import zoo  # noqa: E402
from datatools.mmaction.adapt import AdaptOptions, adapt, scale_crop, set_num_classes  # noqa: E402

# family -> (its smallest model, the crop it trains at here: 112 where the model allows it;
# C3D's fully connected layers are laid out for its 112 crop already)
FAMILIES = {
    "tsn": ("tsn_imagenet-pretrained-r50_8xb32-1x1x3-100e_kinetics400-rgb", 112),
    "tsm": ("tsm_imagenet-pretrained-r50_8xb16-1x1x8-50e_kinetics400-rgb", 112),
    "tin": ("tin_imagenet-pretrained-r50_8xb6-1x1x8-40e_sthv1-rgb", 112),
    "tanet": ("tanet_imagenet-pretrained-r50_8xb8-dense-1x1x8-100e_kinetics400-rgb", 112),
    "trn": ("trn_imagenet-pretrained-r50_8xb16-1x1x8-50e_sthv1-rgb", 112),
    "tpn": ("tpn-tsm_imagenet-pretrained-r50_8xb8-1x1x8-150e_sthv1-rgb", 112),
    "i3d": ("i3d_imagenet-pretrained-r50_8xb8-32x2x1-100e_kinetics400-rgb", 112),
    "c2d": ("c2d_r50-in1k-pre_8xb32-8x8x1-100e_kinetics400-rgb", 112),
    "c3d": ("c3d_sports1m-pretrained_8xb30-16x1x1-45e_ucf101-rgb", None),
    "csn": ("ircsn_ig65m-pretrained-r50-bnfrozen_8xb12-32x2x1-58e_kinetics400-rgb", 112),
    "r2plus1d": ("r2plus1d_r34_8xb8-8x8x1-180e_kinetics400-rgb", 112),
    "x3d": ("x3d_s_13x6x1_facebook-kinetics400-rgb", 112),
    "slowonly": ("slowonly_r50_8xb16-4x16x1-256e_kinetics400-rgb", 112),
    "slowfast": ("slowfast_r50_8xb8-4x16x1-256e_kinetics400-rgb", 112),
    "timesformer": ("timesformer_spaceOnly_8xb8-8x32x1-15e_kinetics400-rgb", 112),
    "swin": ("swin-tiny-p244-w877_in1k-pre_8xb8-amp-32x2x1-30e_kinetics400-rgb", 112),
    "mvit": ("mvit-small-p244_32xb16-16x4x1-200e_kinetics400-rgb", 112),
    "uniformer": ("uniformer-small_imagenet1k-pre_16x4x1_kinetics400-rgb", 112),
    "uniformerv2": ("uniformerv2-base-p16-res224_clip_8xb32-u8_kinetics400-rgb", 112),
    "videomae": ("vit-base-p16_videomae-k400-pre_16x4x1_kinetics-400", 112),
    "videomaev2": ("vit-small-p16_videomaev2-vit-g-dist-k710-pre_16x4x1_kinetics-400", 112),
}
MULTI_VIEW = ("ThreeCrop", "TenCrop")
# What a family needs that this install lacks: mmcv-lite has no compiled operators, and TIN's
# temporal interlace shift is one (mmcv.ops.tin_shift). Its config is refused in one line.
NEEDS_MMCV_OPS = {"tin"}


def test_the_families_are_the_zoos():
    """The table above names a model of each family the wheel has, and every family."""
    families = {m.family.lower() for m in zoo.models()}
    assert set(FAMILIES) == families
    for family, (name, _) in FAMILIES.items():
        assert zoo.find(name).family.lower() == family


def training_config(name: str, root, crop: int | None, tmp_path) -> tuple[Config, dict, str]:
    """The model's config with the root's classes, the dataset its batch comes from, and
    which pipeline that is."""
    try:
        text, _ = adapt(name, root, AdaptOptions(crop=crop, batch_size=2, workers=0))
    except UserError as exc:
        reason = str(exc)
        assert any(why in reason for why in ("for testing only", "pytorchvideo", "torchvision")), reason
    else:
        path = tmp_path / "adapted.py"
        path.write_text(text)
        cfg = Config.fromfile(str(path))
        return cfg, cfg.train_dataloader.dataset, "the adapted training pipeline"
    model = zoo.find(name)
    cfg = Config.fromfile(str(model.config))
    assert set_num_classes(cfg.model, 4)
    trains = bool(cfg.get("train_dataloader"))
    source = cfg.train_dataloader if trains else (cfg.get("val_dataloader") or cfg.test_dataloader)
    pipeline = []
    for step in copy.deepcopy(zoo.innermost(source.dataset).pipeline):
        if step.type == "PytorchVideoWrapper":  # (RandAugment, from pytorchvideo)
            continue
        if not trains and "num_clips" in step and step.get("clip_len", 1) > 1:
            step.num_clips = 1  # one view of a 3D model
        if step.type in MULTI_VIEW:
            step = dict(type="CenterCrop", crop_size=step.crop_size)
        pipeline.append(step)
    cfg.train_dataloader = dict(dataset=dict(pipeline=pipeline))
    cfg.val_dataloader = cfg.test_dataloader = None  # (not scaled twice)
    if crop is not None:
        scale_crop(cfg, model.config, crop)
    dataset = dict(type="ManifestVideoDataset", manifest=str(root / "manifest.parquet"), split=1,
                   subset="train", pipeline=cfg.train_dataloader.dataset.pipeline)
    how = ("its training pipeline" + (" without pytorchvideo's RandAugment" if "pytorchvideo"
                                      in reason else "")) if trains else "its test pipeline cut to one view"
    return cfg, dataset, how


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_one_model_of_each_family_trains_a_step_on_the_roots_samples(family, zoo_root, tmp_path):
    name, crop = FAMILIES[family]
    if family in NEEDS_MMCV_OPS and importlib.util.find_spec("mmcv._ext") is None:
        with pytest.raises(UserError, match=r"mmcv\.ops") as refused:
            adapt(name, zoo_root, AdaptOptions())
        assert "\n" not in str(refused.value)
        print(f"{family}: {name} needs mmcv's compiled operators (mmcv-lite here): refused")
        return
    cfg, dataset_cfg, how = training_config(name, zoo_root, crop, tmp_path)
    init_default_scope("mmaction")
    torch.manual_seed(0)
    if "pretrained" in cfg.model.get("backbone", {}):
        cfg.model.backbone.pretrained = None  # (TANet loads ImageNet weights when built)
    model = MODELS.build(cfg.model)  # no init_weights(): nothing is downloaded
    dataset = DATASETS.build(dataset_cfg)
    samples = []
    for i in range(2):  # two videos: a batch BatchNorm can train on
        sample = dataset[i]
        samples += sample if isinstance(sample, list) else [sample]
    model.train()
    data = model.data_preprocessor(pseudo_collate(samples), training=True)
    losses = model(**data, mode="loss")
    loss, _ = model.parse_losses(losses)
    loss.backward()
    print(f"{family}: {name}, {tuple(data['inputs'].shape)} through {how}: loss {loss.item():.3f}")
    assert torch.isfinite(loss) and loss.item() > 0
    head = model.cls_head
    assert head.num_classes == 4
    grads = [p.grad for p in head.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)
