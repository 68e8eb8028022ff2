"""`datatools mmaction config --from NAME_OR_PATH`: any MMAction2 recognition config (a zoo
model by name or alias, or a config file of one's own) pointed at a datatools root.

The source config is read with mmengine (its `_base_` files resolved) and written back whole,
with only what depends on the data replaced:
  - each dataloader's dataset by the manifest dataset for the root's split and subset
    (ManifestVideoDataset for VideoDataset, ManifestRawframeDataset for RawframeDataset, RGB
    or Flow as the source's modality), its pipeline kept; frames are decoded through the
    `datatools_packed` backend, which reads folders and packs alike; with --input (or when
    the root holds only the other), an RGB config reads videos or frames, its decode steps
    changed to match;
  - `num_classes` wherever the model has one, from the root's label map;
  - with --finetune, `load_from` is the model's published checkpoint (its URL: nothing is
    downloaded here) and the schedule is shortened (FINETUNE says how);
  - --epochs, --batch-size, --lr, --workers, --crop, --no-flip, --seed override; the total
    batch size the learning rate was set for is kept in `auto_scale_lr.base_batch_size`.
A config the writer cannot adapt is one line saying why, never a config that fails later.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from pathlib import Path

from .. import __version__
from ..core.errors import UserError
from ..datasets.base import TRAIN, VAL
from ..root.manifest import require_manifest
from . import zoo
from .config import holds_samples, require_samples

LOADERS = {"train_dataloader": TRAIN, "val_dataloader": VAL, "test_dataloader": VAL}
# MMAction2's fine-tuning guide (user guide "Finetuning Models"): start from the Kinetics
# weights with a new head, "a smaller learning rate and fewer training epochs"; its example
# (TSN to UCF101) halves both, 0.01 to 0.005 and 100 to 50 epochs, and so does this.
FINETUNE_LR, FINETUNE_EPOCHS = 0.5, 0.5


@dataclass
class AdaptOptions:
    split: int = 1
    finetune: bool = False
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    workers: int | None = None
    crop: int | None = None  # the training crop; every size of the pipelines scales with it
    flip: bool = True  # False: the training pipelines' Flip steps are dropped
    seed: int | None = None
    input: str | None = None  # "videos" or "rawframes"; None: as the source reads


def adapt(source: str, root: Path, opts: AdaptOptions) -> tuple[str, str]:
    """The adapted config's text and a one-line description of what it is."""
    from mmengine.config import Config
    path = Path(source)
    model = None
    if not path.is_file():
        model = zoo.find(source)
        path = model.config
        if not path.is_file():
            raise UserError(f"{model.name}: MMAction2's wheel names this model but does not ship "
                            f"its config ({path.name})")
    try:
        cfg = Config.fromfile(str(path))
    except Exception as exc:  # a config is code: any error in it is the file's
        raise UserError(f"{path}: MMAction2 cannot read this config ({type(exc).__name__}: "
                        f"{_first_line(exc)})") from None
    if not cfg.get("train_dataloader"):
        raise UserError(f"{path}: a config for testing only (no train_dataloader); adapt the "
                        "training config of this model")
    records, meta = require_manifest(root)
    manifest = str((Path(root) / "manifest.parquet").resolve())
    num_classes = len(meta.label_map or [])
    input_ = _input_for(root, records, opts.split, cfg["train_dataloader"]["dataset"], opts.input)
    fmt = None
    for name, subset in LOADERS.items():
        loader = cfg.get(name)
        if not loader:
            continue
        holder = loader
        while holder["dataset"].get("type") in zoo.WRAPPERS:
            holder = holder["dataset"]
        dataset = holder["dataset"]
        holder["dataset"], reads = _manifest_dataset(path, dataset, manifest, opts.split, subset,
                                                     input_)
        fmt = fmt or reads
        if opts.batch_size is not None:
            loader["batch_size"] = opts.batch_size
        if opts.workers is not None:
            loader["num_workers"] = opts.workers
            loader["persistent_workers"] = opts.workers > 0
    require_samples(root, records, opts.split, fmt)  # (the train loader is there: checked above)
    if not set_num_classes(cfg["model"], num_classes):
        counts = sorted(k for k in (cfg["model"].get("cls_head") or {}) if k.endswith("_classes"))
        raise UserError(f"{path}: its model has no num_classes to set" + (
            f" (its head has {', '.join(counts)}: trained on several datasets at once)" if counts
            else " (not a recognizer?)"))
    _schedule(cfg, opts, model, model.name if model else path.stem)
    if opts.crop is not None:
        scale_crop(cfg, path, opts.crop)
    if not opts.flip:
        train = zoo.innermost(cfg["train_dataloader"]["dataset"])
        train["pipeline"] = [s for s in train["pipeline"] if s.get("type") != "Flip"]
    if opts.seed is not None:
        cfg["randomness"] = {**(cfg.get("randomness") or {}), "seed": opts.seed}
    for key in [k for k in cfg.keys() if _source_data_variable(k)]:
        cfg.pop(key)  # the source's pipelines and paths, now held by the datasets above
    imports = list((cfg.get("custom_imports") or {}).get("imports") or [])
    if "datatools.mmaction" not in imports:
        imports.append("datatools.mmaction")  # registers the manifest datasets and the backend
    cfg["custom_imports"] = dict(imports=imports, allow_failed_imports=False)
    what = (f"{model.name if model else path} for {meta.dataset} split {opts.split} "
            f"({fmt}, {num_classes} classes)")
    header = (f"# Generated by `datatools mmaction config --from` (datatools {__version__}): {what}.\n"
              "# The source's model, optimiser and schedule; the datasets read the manifest.\n")
    text = header + cfg.pretty_text
    _check(path, text, opts.crop)
    return text, what


def _source_data_variable(key: str) -> bool:
    """A top-level variable of the source that only fed its datasets (train_pipeline,
    ann_file_val, data_root, dataset_type…): left in, it would show 224-pixel crops and paths
    that the written datasets no longer use."""
    return (key.endswith("_pipeline") or key.startswith(("ann_file", "data_root"))
            or key == "dataset_type")


def _check(source: Path, text: str, crop: int | None = None) -> None:
    """The written config as MMAction2 will use it: loaded, its train and val datasets built
    and their first sample through the pipeline (a transform from a package not installed, a
    pipeline this MMAction2 cannot run), its model built (an operator mmcv-lite lacks, a
    backbone that needs torchvision). Any failure is one line now, not later in training.
    The model is built without init_weights(): nothing is downloaded. With `crop` (the input
    size was changed), two training samples also go through it: a layer sized for the
    source's crop (C3D's fc6) fails here."""
    import tempfile

    from mmaction.registry import DATASETS, MODELS
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    with tempfile.TemporaryDirectory() as folder:
        written = Path(folder) / "config.py"
        written.write_text(text, encoding="utf-8")
        try:
            cfg = Config.fromfile(str(written))
            init_default_scope(cfg.get("default_scope", "mmaction"))
            samples = {name: DATASETS.build(cfg[name]["dataset"])[0]
                       for name in ("train_dataloader", "val_dataloader") if cfg.get(name)}
            model = _build_model(MODELS, cfg["model"], weights=crop is not None)
        except UserError:
            raise
        except Exception as exc:  # MMAction2's own error, whatever its class
            reason = _first_line(exc)
            if isinstance(exc, KeyError) and "registry" in reason:
                reason = reason.strip("'\"")
                # MMAction2 leaves out a module whose own imports fail (MobileOneTSM without
                # mmpretrain), so a name can be unknown for want of a package, or misspelt.
                raise UserError(f"{source}: {reason.split(' is not in the ')[0]} is not registered "
                                "in this MMAction2 (a package its module needs is not installed, "
                                "or the name is misspelt)") from None
            raise UserError(f"{source}: adapted, it does not run in this MMAction2 "
                            f"({type(exc).__name__}: {reason})") from None
    _needs_compiled_ops(source, model)
    if crop is not None:
        try:
            _one_step(model, samples["train_dataloader"])
        except Exception as exc:  # the model's own error, whatever its class
            raise UserError(f"{source}: its model does not take a {crop}-pixel input "
                            f"({type(exc).__name__}: {_first_line(exc)}); leave --crop out") from None


def _build_model(registry, model_cfg: dict, weights: bool):
    """The model; without `weights` (no forward pass to come) built on the meta device: every
    layer made, no memory filled, a ViT-L in milliseconds rather than seconds. A model whose
    constructor reads a tensor's value (Swin's drop-path rates) cannot be made there, and is
    built for real."""
    import torch
    if not weights:
        try:
            with torch.device("meta"):
                return registry.build(model_cfg)
        except (RuntimeError, NotImplementedError) as exc:
            if "meta" not in str(exc):
                raise
    return registry.build(model_cfg)


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else ""


def _one_step(model, sample) -> None:
    """The model's loss on a batch of the sample twice (BatchNorm needs two), no gradients."""
    import torch
    from mmengine.dataset import pseudo_collate
    batch = (sample if isinstance(sample, list) else [sample]) * 2
    model.train()
    with torch.no_grad():
        model(**model.data_preprocessor(pseudo_collate(batch), training=True), mode="loss")


def _needs_compiled_ops(source: Path, model) -> None:
    """mmcv-lite has none of mmcv's compiled operators, and a module that calls one imports
    it only when it runs (TIN's temporal shift): found by reading the model's own modules."""
    import importlib.util
    import inspect
    import sys
    if importlib.util.find_spec("mmcv._ext") is not None:
        return
    for module in {type(m).__module__ for m in model.modules()}:
        if module.startswith(("torch.", "mmcv.", "mmengine.")):
            continue
        if "mmcv.ops" in inspect.getsource(sys.modules[module]):
            raise UserError(f"{source}: its model needs mmcv's compiled operators ({module} imports "
                            "mmcv.ops), which mmcv-lite lacks: install the full mmcv")


def _manifest_dataset(path: Path, dataset: dict, manifest: str, split: int, subset: str,
                      input_: str | None = None):
    """The manifest dataset standing for `dataset`, and the list format it reads: as the
    source reads (input_ None), or from "videos" or "rawframes" with the decode steps changed
    to match (the rest of the pipeline kept)."""
    kind = dataset.get("type")
    pipeline = copy.deepcopy(dataset.get("pipeline") or [])
    common = dict(manifest=manifest, split=split, subset=subset, pipeline=pipeline,
                  test_mode=bool(dataset.get("test_mode", False)))
    if kind == "ConcatDataset":  # one dataset in several parts (Kinetics-710: 400+600+700)
        parts = dataset.get("datasets") or []
        if parts and all(_same_but_files(p, parts[0]) for p in parts):
            return _manifest_dataset(path, parts[0], manifest, split, subset, input_)
    if kind == "RepeatAugDataset":  # each video decoded once, its augmentations repeated
        if input_ == "rawframes":
            raise UserError(f"{path}: its RepeatAugDataset decodes videos with decord only; "
                            "adapt it with --input videos")
        repeats = {k: dataset[k] for k in ("num_repeats", "sample_once") if k in dataset}
        del common["test_mode"]  # a training dataset only: it sets test_mode itself
        return dict(type="ManifestRepeatAugDataset", **common, **repeats), "videos"
    if kind == "VideoDataset" and input_ != "rawframes":
        return dict(type="ManifestVideoDataset", **common), "videos"
    if kind == "VideoDataset":
        common["pipeline"] = _frames_decode(pipeline)
        return dict(type="ManifestRawframeDataset", modality="RGB", **common), "rawframes"
    if kind == "RawframeDataset":
        modality = "Flow" if str(dataset.get("modality", "RGB")).lower() == "flow" else "RGB"
        if input_ == "videos":
            if modality == "Flow":
                raise UserError(f"{path}: a flow config reads flow frames, not videos")
            common["pipeline"] = _video_decode(pipeline)
            return dict(type="ManifestVideoDataset", **common), "videos"
        common["pipeline"] = _frames_decode(pipeline)
        return (dict(type="ManifestRawframeDataset", modality=modality, **common),
                "flow" if modality == "Flow" else "rawframes")
    raise UserError(f"{path}: its dataset is {kind}; datatools adapts configs that read "
                    "VideoDataset, RepeatAugDataset or RawframeDataset (or a ConcatDataset of one of them)")


def _is_video_decode(step: dict) -> tuple[bool, bool]:
    """(opens a video, decodes its frames): DecordInit/OpenCVInit/PyAVInit…, …Decode."""
    kind = str(step.get("type", ""))
    return kind.endswith("Init"), kind.endswith("Decode") and kind != "RawFrameDecode"


def _frames_decode(pipeline: list) -> list:
    """Frames read from the root's folders or packs (the datatools_packed backend reads
    both): a video's open step dropped, its decode step RawFrameDecode."""
    out = []
    for step in pipeline:
        opens, decodes = _is_video_decode(step)
        if opens:
            continue
        if step.get("type") == "RawFrameDecode":
            step = {**step, "io_backend": "datatools_packed"}
        elif decodes:
            step = dict(type="RawFrameDecode", io_backend="datatools_packed")
        out.append(step)
    return out


def _video_decode(pipeline: list) -> list:
    """Frames decoded from the videos with decord: opened first (the samplers need the
    frame count), decoded where the frames were read."""
    out = [dict(type="DecordInit")]
    for step in pipeline:
        out.append(dict(type="DecordDecode") if step.get("type") == "RawFrameDecode" else step)
    return out


def _input_for(root: Path, records, split: int, dataset: dict, asked: str | None) -> str | None:
    """What the datasets read: as asked (--input), else as the source unless the root holds
    only the other (videos gone after extraction, or frames not made)."""
    if asked is not None:
        return asked
    dataset = zoo.innermost(dataset)
    if dataset.get("type") not in ("VideoDataset", "RawframeDataset") or \
            str(dataset.get("modality", "RGB")).lower() == "flow":
        return None
    source = "videos" if dataset["type"] == "VideoDataset" else "rawframes"
    other = "rawframes" if source == "videos" else "videos"
    if holds_samples(records, split, source) or not holds_samples(records, split, other):
        return None
    return other


def _same_but_files(a: dict, b: dict) -> bool:
    """Two datasets that differ only in the files they list."""
    files = ("ann_file", "data_prefix")
    return {k: v for k, v in a.items() if k not in files} == {k: v for k, v in b.items() if k not in files}


def set_num_classes(node, n: int) -> bool:
    found = False
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "num_classes":
                node[key] = n
                found = True
            else:
                found |= set_num_classes(value, n)
    elif isinstance(node, (list, tuple)):
        for value in node:
            found |= set_num_classes(value, n)
    return found


def _schedule(cfg, opts: AdaptOptions, model, name: str) -> None:
    train = cfg.get("train_cfg") or {}
    source_epochs = train.get("max_epochs")
    optimizer = (cfg.get("optim_wrapper") or {}).get("optimizer")
    epochs, lr = opts.epochs, opts.lr
    if opts.finetune:
        if model is None or not model.weights:
            raise UserError("--finetune: the source has no published checkpoint (name a zoo "
                            "model, not a file)")
        cfg["load_from"] = model.weights
        if source_epochs and epochs is None:
            epochs = max(1, round(source_epochs * FINETUNE_EPOCHS))
        if optimizer and "lr" in optimizer and lr is None:
            lr = optimizer["lr"] * FINETUNE_LR  # still for the source's total batch
    if epochs is not None and not source_epochs:
        raise UserError("--epochs: the source trains by iterations (no train_cfg.max_epochs); "
                        "set its max_iters in the written config")
    if epochs is not None:
        train["max_epochs"] = epochs
        _rescale_schedule(cfg, epochs / source_epochs)
    if lr is not None:
        if optimizer is None or "lr" not in optimizer:
            raise UserError("--lr: the source's optimiser has no lr to set")
        optimizer["lr"] = lr
    # auto_scale_lr (when enabled) scales the lr by the run's GPUs x batch over the total
    # batch the lr was set for, so that total is recorded: a learning rate given with --lr is
    # for one GPU at this batch size; otherwise the source's lr (or the fine-tuning share of
    # it) stays paired with the source's total, which the zoo's names say ("8xb8": 8 GPUs
    # of 8) where the config does not.
    batch = (cfg.get("train_dataloader") or {}).get("batch_size")
    total = batch if opts.lr is not None else _source_total_batch(cfg, name)
    if total:
        cfg["auto_scale_lr"] = {"enable": False, **(cfg.get("auto_scale_lr") or {}),
                                "base_batch_size": total}


def _source_total_batch(cfg, name: str) -> int | None:
    scale = cfg.get("auto_scale_lr") or {}
    if scale.get("base_batch_size"):
        return scale["base_batch_size"]
    match = re.search(r"(\d+)xb(\d+)", name)
    return int(match[1]) * int(match[2]) if match else None


def _rescale_schedule(cfg, ratio: float) -> None:
    """The learning-rate schedule stretched to the new number of epochs: a warm-up over the
    first 34 of 256 epochs takes the same share of a shorter run, a step at epoch 40 of 50
    comes at the same point of it. A scheduler converted to iterations takes fractions of an
    epoch (as MMEngine allows), one counted in whole epochs whole epochs; none ends before
    its first epoch does."""
    epochs = cfg["train_cfg"]["max_epochs"]
    for step in cfg.get("param_scheduler") or []:
        if not step.get("by_epoch", True):
            continue  # counted in iterations: its length does not follow the epochs
        fractional = bool(step.get("convert_to_iter_based"))
        if _number(step.get("begin")):
            step["begin"] = _epoch_at(step["begin"] * ratio, epochs, 0, fractional)
        if _number(step.get("end")):
            # at least an epoch: MMEngine counts a converted step in whole iterations, and a
            # small root's epoch may be two of them (end 0.13 of an epoch would be none)
            step["end"] = _epoch_at(step["end"] * ratio, epochs, step.get("begin", 0) + 1,
                                    fractional)
        if _number(step.get("T_max")):  # a length, not an epoch
            step["T_max"] = _epoch_at(step["T_max"] * ratio, epochs, 1, fractional)
        if isinstance(step.get("milestones"), list):
            # each milestone decays once, repeats included (MultiStepLR counts them)
            step["milestones"] = sorted(m for m in (_epoch_at(m * ratio, epochs, 0, fractional)
                                                    for m in step["milestones"]) if m > 0)


def _epoch_at(epoch: float, epochs: int, least: float, fractional: bool) -> float:
    """An epoch of the new schedule, within [least, epochs]: whole unless its scheduler
    counts iterations."""
    value = min(epochs, max(least, epoch))
    return round(value, 3) if fractional else max(least, round(value))


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# Where a pipeline step holds a spatial size, and the backbone arguments that must match the
# input size (position embeddings are laid out for it).
SIZES = {"Resize": "scale", "CenterCrop": "crop_size", "ThreeCrop": "crop_size",
         "TenCrop": "crop_size", "MultiScaleCrop": "input_size", "RandomCrop": "size"}
BACKBONE_SIZES = ("img_size", "spatial_size", "input_resolution")


def scale_crop(cfg, path: Path, crop: int) -> None:
    """--crop: the training crop becomes `crop` pixels, and every other size of every
    pipeline (the short side resized to, the test crops) scales by the same ratio, so that
    what the model sees keeps the source's proportions."""
    source = _training_crop(zoo.innermost(cfg["train_dataloader"]["dataset"])["pipeline"])
    if source is None:
        raise UserError(f"{path}: --crop: its training pipeline has no crop size to change")
    ratio = crop / source
    for name in LOADERS:
        dataset = zoo.innermost((cfg.get(name) or {}).get("dataset") or {})
        for step in dataset.get("pipeline") or []:
            key = SIZES.get(step.get("type"))
            if key in step:
                step[key] = _scaled(step[key], ratio)
    backbone = cfg["model"].get("backbone") or {}
    for key in _backbone_size_args(backbone.get("type")):
        backbone[key] = crop


def _training_crop(pipeline: list) -> int | None:
    """The side of the square the training pipeline feeds the model."""
    for step in reversed(pipeline):
        kind, value = step.get("type"), step.get(SIZES.get(step.get("type"), ""))
        if kind == "Resize" and isinstance(value, (tuple, list)) and value[0] == value[1] > 0:
            return int(value[0])
        if kind in ("MultiScaleCrop", "RandomCrop", "CenterCrop") and value:
            return int(value if isinstance(value, int) else value[0])
    return None


def _scaled(value, ratio: float):
    if isinstance(value, (tuple, list)):
        return type(value)(v if v == -1 else max(1, round(v * ratio)) for v in value)
    return max(1, round(value * ratio))


def _backbone_size_args(kind: str | None) -> list[str]:
    """The backbone's arguments that fix its input size (by its signature, not a list of
    models: a new backbone with `img_size` is covered)."""
    import inspect

    from mmaction.registry import MODELS
    cls = MODELS.get(kind) if kind else None
    if cls is None:
        return []
    return [k for k in inspect.signature(cls).parameters if k in BACKBONE_SIZES]
