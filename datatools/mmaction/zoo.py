"""MMAction2's recognition zoo as its wheel ships it: every model its metafiles name
(`mmaction/.mim/configs/recognition/<family>/metafile.yml`), with its config file, published
weights and Kinetics top-1, and what its config reads (videos, frames or flow; the clip it
samples), so that `datatools mmaction models` can say which of them a root can feed.

Read from the installed wheel, never from a list kept here: a newer MMAction2 brings its
models with it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from ..core.errors import UserError
from ..root.manifest import listed

VIDEOS, FRAMES, FLOW = "videos", "frames", "flow"
# What a root needs for each input, and the step that makes it.
NEEDS = {VIDEOS: ("videos", "`datatools <dataset> validate` (or build-lists)"),
         FRAMES: ("rawframes", "`datatools extract --task rgb`"),
         FLOW: ("flow", "`datatools extract --task flow`")}
WRAPPERS = ("RepeatDataset",)  # holds the real dataset in `dataset`
# The datasets whose samples a manifest dataset can stand for (RepeatAugDataset: a
# VideoDataset that repeats each video's augmentations, MViT's and VideoMAE's).
INPUTS = {"VideoDataset": VIDEOS, "RepeatAugDataset": VIDEOS, "RawframeDataset": FRAMES}
SAMPLERS = ("SampleFrames", "DenseSampleFrames", "UniformSample", "UniformSampleFrames")


class Reads(NamedTuple):
    """What a config reads."""
    dataset_type: str | None  # its training (else test) dataset
    input: str | None  # VIDEOS, FRAMES or FLOW; None: a dataset the zoo reads another way
    clip: str  # clip_len x frame_interval x num_clips ("u8": 8 frames sampled uniformly)
    trains: bool  # it has a training loader (some configs are for testing only)


@dataclass(eq=False)
class ZooModel:
    name: str
    family: str
    config: Path
    weights: str | None  # the published checkpoint's URL
    top1: float | None  # on the dataset it was trained on (Kinetics, mostly)
    trained_on: str | None
    aliases: tuple[str, ...]

    # What the config reads, from the config itself: read when first asked (finding a model
    # by name need not load the zoo's 120 configs).
    @functools.cached_property
    def _reads(self) -> Reads:
        return _reads(self.config)

    @property
    def trains(self) -> bool:
        return self._reads.trains

    @property
    def dataset_type(self) -> str | None:
        return self._reads.dataset_type

    @property
    def input(self) -> str | None:
        return self._reads.input

    @property
    def clip(self) -> str:
        return self._reads.clip


def configs_folder() -> Path:
    import mmaction
    return Path(mmaction.__file__).parent / ".mim" / "configs" / "recognition"


@functools.lru_cache(maxsize=1)
def models() -> tuple[ZooModel, ...]:
    """Every recognition model of the installed wheel, in its families' order, each once (a
    metafile may name one twice: MMAction2 1.2.0's TSM does; the first entry counts)."""
    import yaml
    found, names = [], set()
    for metafile in sorted(configs_folder().glob("*/metafile.yml")):
        data = yaml.safe_load(metafile.read_text(encoding="utf-8")) or {}
        for entry in data.get("Models") or []:
            if entry["Name"] in names:
                continue
            names.add(entry["Name"])
            config = configs_folder() / Path(entry["Config"]).relative_to("configs/recognition")
            if config.suffix != ".py":  # some metafiles name the config without its suffix
                config = config.with_name(config.name + ".py")
            while config.name.endswith(".py.py"):  # or with it twice (1.2.0's Swin-B)
                config = config.with_name(config.name[:-3])
            results = (entry.get("Results") or [{}])[0]
            top1 = (results.get("Metrics") or {}).get("Top 1 Accuracy")
            found.append(ZooModel(
                name=entry["Name"], family=entry.get("In Collection") or metafile.parent.name,
                config=config, weights=entry.get("Weights"),
                top1=float(top1) if top1 is not None else None, trained_on=results.get("Dataset"),
                aliases=tuple(entry.get("Alias") or ())))
    return tuple(found)


def find(name: str) -> ZooModel:
    """A model by its name or one of its aliases, else by its family's name (`tsn`,
    `slowfast`, `videomaev2`: the family's model MMAction2 aliases, else its first training
    config that reads videos or frames, else its first); one line naming close ones otherwise."""
    for model in models():
        if name == model.name or name in model.aliases:
            return model
    family = [m for m in models() if m.family.lower() == name.lower()]
    if family:
        aliased = [m for m in family if name.lower() in (a.lower() for a in m.aliases)]
        trainable = [m for m in family if m.trains and m.input is not None]
        return (aliased or trainable or family)[0]
    close = [m.name for m in models() if name.lower() in m.name.lower()][:5]
    raise UserError(f"{name!r}: not a model of MMAction2's recognition zoo"
                    + (f"; did you mean {', '.join(close)}?" if close else "")
                    + "; `datatools mmaction models` lists them")


def _reads(config: Path) -> Reads:
    from mmengine.config import Config
    if not config.is_file():
        return Reads("no config in the wheel", None, "", False)
    cfg = Config.fromfile(str(config))
    loader = cfg.get("train_dataloader") or cfg.get("test_dataloader") or {}
    dataset = loader.get("dataset") or {}
    dataset = innermost(dataset)
    kind = dataset.get("type")
    input_ = INPUTS.get(kind)
    if input_ == FRAMES and str(dataset.get("modality", "RGB")).lower() == "flow":
        input_ = FLOW
    clip = ""
    for step in dataset.get("pipeline") or []:
        if step.get("type") in SAMPLERS:
            length, clips = step.get("clip_len"), step.get("num_clips", 1)
            if step["type"].startswith("Uniform"):
                clip = f"u{length}" + (f"x{clips}" if clips != 1 else "")
            else:
                clip = f"{length}x{step.get('frame_interval', 1)}x{clips}"
            break
    return Reads(kind, input_, clip, bool(cfg.get("train_dataloader")))


def innermost(dataset: dict) -> dict:
    """The dataset that holds the samples and their pipeline: inside a RepeatDataset, or the
    first part of a ConcatDataset (parts of one kind: Kinetics-710 is 400, 600 and 700)."""
    while True:
        if dataset.get("type") in WRAPPERS and dataset.get("dataset"):
            dataset = dataset["dataset"]
        elif dataset.get("type") == "ConcatDataset" and dataset.get("datasets"):
            dataset = dataset["datasets"][0]
        else:
            return dataset


def root_has(root: Path) -> dict[str, bool]:
    """Which inputs a root's lists would hold now: videos, frames, flow."""
    from ..root.manifest import require_manifest
    records, _ = require_manifest(root)
    return {input_: any(listed(r, fmt) for r in records) for input_, (fmt, _) in NEEDS.items()}


def can_feed(model: ZooModel, has: dict[str, bool]) -> str:
    """'yes', or what is missing and the step that makes it."""
    if model.input is None:
        return f"no: its config reads {model.dataset_type or 'no dataset'}, not videos or frames"
    if has[model.input]:
        return "yes"
    # An RGB config reads videos or frames alike (`config --from` switches to what the root
    # holds), except RepeatAugDataset, which decodes with decord only.
    other = {VIDEOS: FRAMES, FRAMES: VIDEOS}.get(model.input)
    if other and has[other] and model.dataset_type != "RepeatAugDataset":
        return f"yes, from its {NEEDS[other][0]}"
    fmt, step = NEEDS[model.input]
    return f"no {fmt} yet: run {step}"
