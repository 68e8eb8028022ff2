"""`datatools mmaction config`: write a short MMAction2 config that trains from a manifest.

The model comes from MMAction2's own config zoo (in its wheel under `mmaction/.mim/configs`,
inherited as `mmaction::_base_/models/<model>.py`); this module only writes what depends on
the data: the datasets (datatools' registered manifest datasets), the pipelines matching the
model's input (2D: a few 1-frame clips, NCHW; 3D: one clip of T frames, NCTHW; TSN flow:
stacks of 5 flow pairs, 10 input channels, as MMAction2's flow config), `num_classes` from
the manifest's label map, and a schedule.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .. import __version__
from ..core.errors import UserError, one_of
from ..datasets.base import TRAIN, VAL
from ..root.manifest import listed, require_manifest, split_members

INPUTS = ("videos", "rawframes")
FLOW_CLIP = 5  # flow pairs stacked per TSN input, MMAction2's flow config


@dataclass(frozen=True)
class ModelSpec:
    base: str  # file under MMAction2's configs/_base_/models/
    dims: int  # 2: Recognizer2D (NCHW), 3: Recognizer3D (NCTHW)
    clip_len: int
    frame_interval: int
    num_clips: int
    flow: bool  # MMAction2 has a flow recipe for it
    backbone_extra: tuple = ()  # backbone keys that must follow num_clips, etc.


MODELS = {
    "tsn": ModelSpec("tsn_r50.py", 2, 1, 1, 3, flow=True),
    "tsm": ModelSpec("tsm_r50.py", 2, 1, 1, 8, flow=False, backbone_extra=("num_segments",)),
    "i3d": ModelSpec("i3d_r50.py", 3, 32, 2, 1, flow=False),
    "slowonly": ModelSpec("slowonly_r50.py", 3, 8, 8, 1, flow=False),
}
DEPTHS = (18, 34, 50, 101)


@dataclass
class ConfigOptions:
    model: str = "tsn"
    modality: str = "rgb"  # rgb or flow
    input: str = "videos"  # videos or rawframes (flow always reads rawframes)
    split: int = 1
    depth: int = 50
    pretrained: bool = True  # ImageNet weights as the zoo's config says; off: from scratch
    crop: int = 224
    num_clips: int | None = None
    epochs: int = 50
    batch_size: int = 8
    workers: int = 2  # dataloader processes
    lr: float = 0.01
    # Horizontal flips in training: off for classes told apart by direction (left vs right,
    # Something-Something's "pushing from left to right"), which a flip turns into each other.
    flip: bool = True
    seed: int | None = None  # MMEngine's random seed: a run that can be repeated


def write_config(root: Path, opts: ConfigOptions, out: Path) -> Path:
    text = make_config(root, opts)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    return out


def make_config(root: Path, opts: ConfigOptions) -> str:
    spec = _check(opts)
    records, meta = require_manifest(root)
    if records:
        from .. import datasets
        datasets.get(records[0].dataset).check_selection(opts.split)
    fmt = "flow" if opts.modality == "flow" else opts.input
    require_samples(root, records, opts.split, fmt)
    manifest = (root / "manifest.parquet").resolve()
    num_classes = len(meta.label_map or [])
    clips = opts.num_clips or spec.num_clips
    clip_len = FLOW_CLIP if opts.modality == "flow" else spec.clip_len
    short = round(opts.crop * 256 / 224)

    backbone = {"depth": opts.depth}
    if not opts.pretrained:
        backbone["pretrained"] = None
        if spec.dims == 3 and opts.model == "i3d":
            backbone["pretrained2d"] = False
    if opts.modality == "flow":
        backbone["in_channels"] = 2 * FLOW_CLIP
    for key in spec.backbone_extra:
        backbone[key] = clips
    head = {"num_classes": Expr("num_classes"), "in_channels": 512 if opts.depth < 50 else 2048}
    if opts.model == "tsm":
        head["num_segments"] = clips
    model = {"backbone": backbone, "cls_head": head}
    if opts.modality == "flow":
        pairs = Expr(f"[128, 128] * {FLOW_CLIP}")  # as MMAction2's flow config: 2 channels per pair
        model["data_preprocessor"] = {"mean": pairs, "std": pairs}

    fmt_shape = "NCHW" if spec.dims == 2 else "NCTHW"
    decode = ([_call("DecordInit")] if fmt == "videos" else [])
    if fmt == "videos":
        decoder = _call("DecordDecode")
    else:
        # Folders and packs alike (mmaction/packed.py): the config still reads the root after
        # `datatools pack` or `unpack`, and a root half packed.
        decoder = _call("RawFrameDecode", io_backend="datatools_packed")
    sample = dict(clip_len=clip_len, frame_interval=spec.frame_interval, num_clips=clips)
    train_pipeline = decode + [
        _call("SampleFrames", **sample), decoder,
        _call("Resize", scale=(-1, short)), _call("RandomResizedCrop"),
        _call("Resize", scale=(opts.crop, opts.crop), keep_ratio=False),
        *([_call("Flip", flip_ratio=0.5)] if opts.flip else []),
        _call("FormatShape", input_format=fmt_shape),
        _call("PackActionInputs")]
    val_pipeline = decode + [
        _call("SampleFrames", **sample, test_mode=True), decoder,
        _call("Resize", scale=(-1, short)), _call("CenterCrop", crop_size=opts.crop),
        _call("FormatShape", input_format=fmt_shape), _call("PackActionInputs")]

    if fmt == "videos":
        dataset = "dict(type='ManifestVideoDataset', manifest=manifest, split=split, subset={subset!r},"
    else:
        modality = "Flow" if fmt == "flow" else "RGB"
        dataset = (f"dict(type='ManifestRawframeDataset', manifest=manifest, modality='{modality}',"
                   "\n                 split=split, subset={subset!r},")
    persistent = opts.workers > 0

    def loader(subset: str, shuffle: bool, pipeline: str, test_mode: bool) -> str:
        ds = (dataset.format(subset=subset) + f"\n                 pipeline={pipeline}"
              + (", test_mode=True" if test_mode else "") + ")")
        return (f"dict(\n    batch_size={opts.batch_size}, num_workers={opts.workers}, "
                f"persistent_workers={persistent},\n"
                f"    sampler=dict(type='DefaultSampler', shuffle={shuffle}),\n"
                f"    dataset={ds})")

    lines = [
        f"# Generated by `datatools mmaction config` (datatools {__version__}): {opts.model}, "
        f"{opts.modality} from {fmt},",
        f"# {meta.dataset} split {opts.split}. The datasets read the manifest directly "
        "(datatools.mmaction); no text lists.",
        f"_base_ = ['mmaction::_base_/models/{spec.base}', 'mmaction::_base_/default_runtime.py']",
        "custom_imports = dict(imports=['datatools.mmaction'], allow_failed_imports=False)",
        "",
        f"manifest = {str(manifest)!r}",
        f"split = {opts.split}",
        f"num_classes = {num_classes}  # the manifest's label map ({meta.label_source})",
        "",
        "model = dict(\n" + "".join(f"    {k}={_render(v)},\n" for k, v in model.items()) + ")",
        "",
        "train_pipeline = [\n" + "".join(f"    {p},\n" for p in train_pipeline) + "]",
        "val_pipeline = [\n" + "".join(f"    {p},\n" for p in val_pipeline) + "]",
        "",
        f"train_dataloader = {loader('train', True, 'train_pipeline', False)}",
        f"val_dataloader = {loader('val', False, 'val_pipeline', True)}",
        "test_dataloader = val_dataloader",
        "val_evaluator = dict(type='AccMetric')",
        "test_evaluator = val_evaluator",
        "",
        f"train_cfg = dict(type='EpochBasedTrainLoop', max_epochs={opts.epochs}, val_begin=1, "
        "val_interval=1)",
        "val_cfg = dict(type='ValLoop')",
        "test_cfg = dict(type='TestLoop')",
        f"optim_wrapper = dict(optimizer=dict(type='SGD', lr={opts.lr}, momentum=0.9, "
        "weight_decay=0.0001),\n                     clip_grad=dict(max_norm=40, norm_type=2))",
        f"param_scheduler = [dict(type='CosineAnnealingLR', T_max={opts.epochs}, eta_min=0, "
        f"by_epoch=True, begin=0, end={opts.epochs})]",
        "default_hooks = dict(checkpoint=dict(interval=1, max_keep_ckpts=2), "
        "logger=dict(interval=10))",
        f"auto_scale_lr = dict(enable=False, base_batch_size={opts.batch_size})",
        *([f"randomness = dict(seed={opts.seed}, deterministic=False)"] if opts.seed is not None else []),
        "",
    ]
    return "\n".join(lines)


def _subset_holds(records, split: int, subset: str, fmt: str) -> bool:
    return any(listed(r, fmt) for r in split_members(records, split, subset))


def holds_samples(records, split: int, fmt: str) -> bool:
    """Whether the split's train and val subsets both hold samples of `fmt`."""
    return all(_subset_holds(records, split, subset, fmt) for subset in (TRAIN, VAL))


def require_samples(root: Path, records, split: int, fmt: str) -> None:
    """A config trains on the split's train subset and validates on its val subset: each must
    hold samples of `fmt` (videos, rawframes, flow), or the step that makes them is named."""
    for subset in (TRAIN, VAL):
        if not _subset_holds(records, split, subset, fmt):
            raise UserError(f"{root}: split {split} {subset} has no {fmt} samples"
                            + ("; run `datatools extract` first" if fmt != "videos" else ""))


def _check(opts: ConfigOptions) -> ModelSpec:
    one_of("--model", opts.model, MODELS)
    spec = MODELS[opts.model]
    one_of("--modality", opts.modality, ("rgb", "flow"))
    if opts.modality == "flow" and not spec.flow:
        raise UserError(f"--modality flow: MMAction2 has a flow recipe for tsn only, not {opts.model}")
    one_of("--input", opts.input, INPUTS)
    one_of("--depth", opts.depth, DEPTHS)
    return spec


def _call(type_: str, **kwargs) -> str:
    args = "".join(f", {k}={v!r}" for k, v in kwargs.items())
    return f"dict(type={type_!r}{args})"


class Expr(str):
    """Config text written as is (a variable name, an expression), not as a string literal."""


def _render(value) -> str:
    """A nested dict as `dict(k=v, ...)`."""
    if isinstance(value, dict):
        return "dict(" + ", ".join(f"{k}={_render(v)}" for k, v in value.items()) + ")"
    if isinstance(value, Expr):
        return str(value)
    return repr(value)
